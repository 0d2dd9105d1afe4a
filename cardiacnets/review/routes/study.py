"""Reader-study routes: sign-in with a name and the study's reader token, blinded readings with autosave, media.

Every route resolves the study from the path first (`get_study`: 404 when it
is not served); reader pages then need the reader's signed cookie
(`PageReader`: else the sign-in page), the autosave and preparation APIs answer
401 without it (`APIReader`), and the study's media answer an empty 404
(`MediaReader`). Readings are reached in order: a reader may reopen earlier
(locked) readings and the current one, never skip ahead.
"""

from __future__ import annotations

import math
import os

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from cardiacnets.errors import ConfigError
from cardiacnets.review.auth import sign, token_fingerprint, tokens_equal
from cardiacnets.review.display import match_display
from cardiacnets.review.routes.media import CINE_FORMATS, cine_response, ecg_response
from cardiacnets.review.state import StudyRuntime
from cardiacnets.review.study import check_reader_name
from cardiacnets.review.study_store import AnswerError, StudyStore, required_answers
from cardiacnets.review.web import (
    APIReader,
    MediaReader,
    OptionalReader,
    PageReader,
    State,
    StudyDep,
    client_of,
    current_url,
    form_text,
    get_study,
    page,
    readable,
    require_csrf,
    set_session_cookie,
    study_cookie,
    throttle,
)

router = APIRouter(prefix="/study/{name}", dependencies=[Depends(get_study), Depends(require_csrf)])
ANSWER_FIELDS = ("diagnosis", "confidence", "realism", "free_text")
MAX_ACTIVE_MS_DIGITS = 12


def reading_page(request: Request, study: StudyRuntime, reader: str, readings: list, number: int, reading=None,
                 status: int = 200, error: str | None = None):
    """The reading page: ECG, the image when the arm shows one, and the questions (locked once submitted)."""
    definition, name = study.config, study.config.name
    reading = reading or readings[number - 1]
    next_url = f"/study/{name}/readings/{number + 1}" if number < len(readings) else f"/study/{name}/done"
    return page(request, "study_reading.html", status=status, error=error, study=definition, reader=reader,
                reading=reading, number=number, n_readings=len(readings),
                n_submitted=sum(r.submitted for r in readings), choices=list(definition.questions.diagnosis.choices),
                required=required_answers(study.store.meta()["definition"], reading.shows_image),
                visit_id=os.urandom(16).hex(), base=f"/study/{name}/readings/{number}",
                show_synthetic_label=(not definition.blind_image_source and reading.arm == "ecg_generated_cmr"),
                next_url=next_url)


@router.get("/", response_class=HTMLResponse)
def study_home(request: Request, study: StudyDep, reader: OptionalReader):
    if reader is None:
        return page(request, "study_signin.html", study=study.config)
    return RedirectResponse(current_url(study, reader), status_code=303)


@router.post("/signin")
async def study_signin(request: Request, study: StudyDep, state: State):
    form = await request.form()
    given_name, form_key = form_text(form, "name"), f"study:{study.config.name}:reader"
    throttle(request, state, form_key, "study_signin.html", {"study": study.config, "name": given_name})
    reader, error = None, None
    if not tokens_equal(form_text(form, "token"), study.config.reader_token):
        state.limiter.failed(form_key, client_of(request))
        error = "wrong study token"
    else:
        state.limiter.succeeded(form_key, client_of(request))
        try:
            reader = check_reader_name(given_name)
        except ConfigError:
            error = "enter your name (1-64 characters)"
        if error is None and study.config.readers and reader not in study.config.readers:
            error = "this name is not on the study's list of readers"
    if error:
        return page(request, "study_signin.html", status=403, study=study.config, error=error, name=given_name)
    study.store.ensure_reader(reader)
    response = RedirectResponse(current_url(study, reader), status_code=303)
    cookie = sign(state.secret, {"study": study.config.name, "reader": reader,
                                 "t": token_fingerprint(study.config.reader_token)})
    set_session_cookie(request, response, study_cookie(study), cookie, path=f"/study/{study.config.name}/")
    return response


@router.post("/signout")
def study_signout(study: StudyDep):
    response = RedirectResponse(f"/study/{study.config.name}/", status_code=303)
    response.delete_cookie(study_cookie(study), path=f"/study/{study.config.name}/")
    return response


@router.get("/preparing", response_class=HTMLResponse)
def study_preparing(request: Request, study: StudyDep, _reader: PageReader, state: State):
    ready, total, _ = state.study_generation_jobs(study)
    if ready == total:
        return RedirectResponse(f"/study/{study.config.name}/", status_code=303)
    return page(request, "study_preparing.html", study=study.config, ready=ready, total=total)


@router.get("/api/preparation")
def study_preparation(study: StudyDep, reader: APIReader, state: State):
    ready, total, jobs = state.study_generation_jobs(study)
    failed = [j.message for j in jobs if j.state == "failed"]
    running = [j for j in jobs if j.state == "running" and j.progress is not None]
    fraction = (ready + sum(j.progress for j in running)) / total if total else 1.0
    return JSONResponse({"ready": ready, "total": total, "fraction": fraction, "done": ready == total,
                         "failed": len(failed)})


@router.get("/readings/{number}", response_class=HTMLResponse)
def study_reading(request: Request, number: int, study: StudyDep, reader: PageReader, state: State):
    readings = study.store.readings(reader)
    if not readable(readings, number):
        return RedirectResponse(current_url(study, reader), status_code=303)
    ready, total, _ = state.study_generation_jobs(study)
    if ready < total:
        return RedirectResponse(f"/study/{study.config.name}/preparing", status_code=303)
    study.store.mark_opened(reader, number - 1)
    return reading_page(request, study, reader, readings, number)


def _is_text(value) -> bool:
    """A string that SQLite can store (JSON may carry lone surrogates, which UTF-8 cannot encode)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _autosave_problem(body) -> str | None:
    """What is wrong with an autosave body, or None."""
    if not isinstance(body, dict) or not isinstance(body.get("answer", {}), dict):
        return "expected {answer: {...}, visit, active_ms}"
    for key, value in body.get("answer", {}).items():
        if (value is not None and not isinstance(value, (str, int))) or (isinstance(value, str) and not _is_text(value)):
            return f"answer {key!r}: expected text, a whole number or null"
    visit, active = body.get("visit"), body.get("active_ms")
    if visit is not None and not (isinstance(visit, str) and _is_text(visit)):
        return "visit: expected text"
    if active is not None and (isinstance(active, bool) or not isinstance(active, int)):
        if not (isinstance(active, float) and math.isfinite(active)):
            return "active_ms: expected a number of milliseconds"
    return None


@router.post("/api/readings/{number}")
async def study_autosave(request: Request, number: int, study: StudyDep, reader: APIReader):
    try:
        body = await request.json()
    except (ValueError, RecursionError):
        return JSONResponse({"error": "expected JSON"}, status_code=400)
    problem = _autosave_problem(body)
    if problem:
        return JSONResponse({"error": problem}, status_code=400)
    readings = study.store.readings(reader)
    if not readable(readings, number):
        return JSONResponse({"error": "no such reading"}, status_code=404)
    active = body.get("active_ms")
    try:
        reading = study.store.save_answer(reader, number - 1, body.get("answer", {}), visit_id=body.get("visit"),
                                          active_ms=None if active is None else int(active))
    except AnswerError as err:
        return JSONResponse({"error": str(err)}, status_code=409 if "submitted" in str(err) else 422)
    return JSONResponse({"saved": True, "updated_at": reading.updated_at, "submitted": reading.submitted})


@router.post("/readings/{number}")
async def study_submit(request: Request, number: int, study: StudyDep, reader: PageReader):
    form = await request.form()
    readings = study.store.readings(reader)
    if not readable(readings, number):
        return RedirectResponse(current_url(study, reader), status_code=303)
    position = number - 1
    fields = {k: form_text(form, k) for k in ANSWER_FIELDS if k in form}
    visit, active = form_text(form, "visit"), form_text(form, "active_ms")
    try:
        if not readings[position].submitted:
            whole = active.isascii() and active.isdigit() and len(active) <= MAX_ACTIVE_MS_DIGITS
            study.store.save_answer(reader, position, fields, visit_id=visit or None,
                                    active_ms=int(active) if whole else None)
        study.store.submit(reader, position)
    except AnswerError as err:
        reading = study.store.reading(reader, position)
        return reading_page(request, study, reader, readings, number, reading=reading, status=422, error=str(err))
    return RedirectResponse(current_url(study, reader), status_code=303)


@router.get("/done", response_class=HTMLResponse)
def study_done(request: Request, study: StudyDep, reader: PageReader):
    readings = study.store.readings(reader)
    if StudyStore.current_position(readings) is not None:
        return RedirectResponse(current_url(study, reader), status_code=303)
    return page(request, "study_done.html", study=study.config, reader=reader, n_readings=len(readings))


def _reading_for_media(study: StudyRuntime, reader: str, number: int):
    readings = study.store.readings(reader)
    return readings[number - 1] if readable(readings, number) else None


@router.get("/readings/{number}/ecg.svg")
def study_ecg(number: int, study: StudyDep, reader: MediaReader, state: State):
    reading = _reading_for_media(study, reader, number)
    if reading is None:
        return Response(status_code=404)
    case = state.case_by_subject(reading.case_id)
    return ecg_response(state, ("study-ecg", case.key), state.ecg_view(case), None, "no-store")


@router.get("/readings/{number}/{view}.{ext}")
def study_cine(number: int, view: str, ext: str, study: StudyDep, reader: MediaReader, state: State):
    reading = _reading_for_media(study, reader, number)
    if reading is None or not reading.shows_image or view not in study.config.views or ext not in CINE_FORMATS:
        return Response(status_code=404)
    case = state.case_by_subject(reading.case_id)
    real = state.real_cine(case, view)
    if reading.arm == "ecg_real_cmr":
        cine = real
    else:
        cine = state.generated_cine(case, view)
        if cine is not None and real is not None:
            cine = match_display(cine, real.shape)
    if cine is None:
        return Response(status_code=404)
    synthetic = reading.arm == "ecg_generated_cmr" and not study.config.blind_image_source
    n_frames = len(real) if real is not None else len(cine)
    response = cine_response(state, ("study", case.key, reading.arm, view, ext, synthetic), cine, ext, synthetic,
                             state.frame_ms(case, n_frames))
    response.headers["Cache-Control"] = "no-store"
    return response
