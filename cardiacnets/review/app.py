"""The review web app: case browser, case pages, ECG upload and reader studies (FastAPI).

`create_app` wires a FastAPI application with server-rendered pages (Jinja2
templates and a little vanilla JavaScript and CSS served from the package, so
it runs with no internet) from one router per area (`cardiacnets.review.routes`):

* ``/cases`` — the data set's subjects and the uploads, with search (subject id,
  ICD-10 code) and filters (label, split, reviewed or not);
* ``/cases/<subject_id>`` and ``/uploads/<id>`` — a case: the 12-lead ECG in
  the clinical layout, the real cine(s) of the data set, the generated cine(s)
  (computed on demand by the background worker, with a progress bar, cached,
  and labelled ``SYNTHETIC`` in the page and in the pixels), the heads'
  predicted indices with units and normal ranges and the screening
  probabilities, and a reviewed mark with a note;
* ``/upload`` — an ECG file (UK Biobank XML, or a WFDB record as a .zip) becomes
  a case; generation starts at once and the case page shows its progress;
* ``/study/<name>/...`` — reader studies (`cardiacnets.review.study`): sign-in
  with a name and the study's token, blinded readings in each reader's own
  order with autosave, and the summary and CSV export behind the study's admin
  token.

Security (see SECURITY.md): the command binds 127.0.0.1 by default and the
review pages always need a token (one made per launch when none is given; the
command prints the URL that carries it). Requests for any ``Host`` but
loopback, the bind address and ``--allowed-host`` names get 400; state-changing
requests from another site get 403, and every one needs its browser's CSRF
token; bodies are size-limited; sign-in forms are throttled (429). Sessions are
HMAC-signed cookies (HttpOnly, SameSite=Strict). Uploads are limited in size
and type and stored under generated names (`cardiacnets.review.uploads`).
Every response carries a strict Content-Security-Policy (no inline scripts,
nothing from other origins).
"""

from __future__ import annotations

import contextlib

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from cardiacnets.review.display import match_display, reference_ranges
from cardiacnets.review.display import prediction_rows as _prediction_rows
from cardiacnets.review.jobs import ReviewModels
from cardiacnets.review.routes import ROUTERS
from cardiacnets.review.security import BodyLimit, CrossSiteGuard, SecurityHeaders
from cardiacnets.review.state import Case, ECGView, ReviewSettings, ReviewState, StudyRuntime, subject_key
from cardiacnets.review.web import PACKAGE_DIR, SESSION_MAX_AGE_S, install_error_handlers, make_templates, page

# Names other modules and the tests import from here.
__all__ = ["Case", "ECGView", "ReviewSettings", "ReviewState", "StudyRuntime", "_prediction_rows", "create_app",
           "match_display", "reference_ranges", "subject_key"]
UPLOAD_PATH = "/upload"


def create_app(settings: ReviewSettings, models: ReviewModels | None = None) -> FastAPI:
    """Build the review app.

    Args:
        settings: data set, app folder, host, tokens, studies, limits.
        models: the run's generators and heads (None: the data set alone).

    Returns:
        A FastAPI application; ``app.state.review`` is its `ReviewState` (with
        the token in force, ``.token``). Its background worker starts and stops
        with the app's lifespan (``uvicorn`` or ``TestClient`` as a context manager).

    Raises:
        ConfigError / InputError: a missing or weak token, a bad host name, a
            world-writable app folder, a bad data set, study definition or model folder.
    """
    state = ReviewState(settings, models)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        state.runner.start()
        if settings.prefetch_studies:
            for study in state.studies.values():
                state.study_generation_jobs(study)
        yield
        state.runner.stop()

    app = FastAPI(title="cardiacnets review", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.review = state
    app.state.templates = make_templates()
    app.mount("/static", StaticFiles(directory=str(PACKAGE_DIR / "static")), name="static")
    for router in ROUTERS:
        app.include_router(router)
    install_error_handlers(app)

    def too_large_upload(scope):
        limit_mb = settings.max_upload_bytes / 1e6
        return page(Request(scope), "upload.html", status=413, error=f"the file is larger than the limit ({limit_mb:.1f} MB)")

    # Added innermost first: a request meets the Host check, the security headers and CSRF cookie,
    # the cross-site check, then the body limits.
    app.add_middleware(BodyLimit, max_body_bytes=settings.max_body_bytes, upload_path=UPLOAD_PATH,
                       max_upload_bytes=settings.max_upload_bytes, too_large_upload=too_large_upload)
    app.add_middleware(CrossSiteGuard)
    app.add_middleware(SecurityHeaders, secret=state.secret, max_age_s=SESSION_MAX_AGE_S)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=state.allowed_hosts, www_redirect=False)
    return app
