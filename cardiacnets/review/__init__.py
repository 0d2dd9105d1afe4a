"""Clinician review and reader studies in the browser.

`cardiacnets review` serves a FastAPI app (`app.create_app`, which wires the
routers of `routes` with the guards of `web` and `security`) over a training
set and, optionally, a run folder with a generator and heads: a case browser,
case pages with the 12-lead ECG in the clinical layout (`render.ecg_svg`), real
and generated cines side by side (generated ones labelled ``SYNTHETIC``), the
heads' predictions, ECG upload, and blinded reader studies defined in YAML
(`study`), whose answers autosave to SQLite and are summarised by
`cardiacnets study summary`.
"""
