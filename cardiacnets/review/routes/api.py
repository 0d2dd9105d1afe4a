"""API routes of the case pages: start generation or predictions, poll a job, fetch the predictions fragment."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from cardiacnets.review.display import prediction_rows
from cardiacnets.review.state import ReviewState
from cardiacnets.review.web import State, require_csrf, require_review_session

router = APIRouter(dependencies=[Depends(require_review_session), Depends(require_csrf)])


def job_json(state: ReviewState, job, ready_url: str | None = None) -> dict:
    """A job as JSON (state, progress, message, queue position); a cached result (``job`` None) is done."""
    if job is None:
        return {"state": "done", "progress": 1.0, "message": "ready", "ready_url": ready_url}
    data = job.as_dict()
    data["queue_position"] = state.runner.queue_position(job) if job.state == "queued" else 0
    if ready_url:
        data["ready_url"] = ready_url
    return data


@router.post("/api/cases/{case_key}/generate/{view}")
def start_generation(case_key: str, view: str, state: State):
    case = state.case_by_key(case_key)
    if case is None or view not in state.models.generator_views:
        return JSONResponse({"error": "no such case or generator"}, status_code=404)
    job = state.request_generation(case, view)
    return JSONResponse(job_json(state, job, ready_url=f"/media/{case.key}/generated/{view}.png"))


@router.post("/api/cases/{case_key}/predict")
def start_prediction(case_key: str, state: State):
    case = state.case_by_key(case_key)
    if case is None or not state.models.has_heads:
        return JSONResponse({"error": "no such case or heads"}, status_code=404)
    job = state.request_predictions(case)
    return JSONResponse(job_json(state, job, ready_url=f"/fragments/{case.key}/predictions"))


@router.get("/api/jobs/{job_id}")
def job_status(job_id: str, state: State):
    job = state.runner.get(job_id)
    if job is None:
        return JSONResponse({"error": "no such job"}, status_code=404)
    return JSONResponse(job_json(state, job))


@router.get("/fragments/{case_key}/predictions", response_class=HTMLResponse)
def predictions_fragment(request: Request, case_key: str, state: State):
    case = state.case_by_key(case_key)
    if case is None:
        return Response(status_code=404)
    rows = prediction_rows(state.predictions(case), state.reference, state.ecg_view(case).sex_male)
    return request.app.state.templates.TemplateResponse(request, "_predictions.html", {"predictions": rows})
