"""The review app's routers, one per area (FastAPI "bigger applications" layout).

* `signin` — ``/login``, ``/healthz``, ``/`` (public);
* `cases` — the case list, case and upload pages, review marks, ECG upload;
* `media` — ECG drawings and cine sprites / GIFs of cases;
* `api` — background jobs (generation, predictions) and the predictions fragment;
* `study` — reader-study pages and their autosave API (the study's own tokens);
* `study_admin` — the study summary and CSV export (the admin token).

`ROUTERS` lists them in the order `create_app` includes them. Every router
carries `require_csrf`; the review routers also `require_review_session`.
"""

from __future__ import annotations

from cardiacnets.review.routes import api, cases, media, signin, study, study_admin

ROUTERS = (signin.router, cases.router, media.router, api.router, study.router, study_admin.router)
