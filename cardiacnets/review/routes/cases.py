"""Case routes: the case list with its filters, case and upload pages, review marks and ECG upload."""

from __future__ import annotations

import math
import shutil
from typing import Annotated
from urllib.parse import quote, urlencode

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from cardiacnets.errors import InputError
from cardiacnets.review.display import (
    LEAD_NAMES,
    MEASUREMENT_FIELDS,
    VIEW_TITLES,
    fmt,
    icd10_text,
    label_title,
    number,
    prediction_rows,
    sex_letter,
)
from cardiacnets.review.state import Case, ReviewState, subject_key
from cardiacnets.review.uploads import UPLOAD_KINDS, store_upload
from cardiacnets.review.web import Problem, State, form_text, page, require_csrf, require_review_session

router = APIRouter(dependencies=[Depends(require_review_session), Depends(require_csrf)])


# --------------------------------------------------------------------------- case list

def _selected(state: ReviewState, q: str, label: str, split: str, reviewed: str) -> tuple[np.ndarray, np.ndarray]:
    """Manifest rows matching the filters, and every row's reviewed flag."""
    frame = state.manifest
    mask = np.ones(len(frame), bool)
    if q:
        hit = frame["subject_id"].str.contains(q, case=False, regex=False).to_numpy(dtype=bool, copy=True)
        if "icd10" in frame.columns:
            hit = hit | frame["icd10"].fillna("").astype(str).str.contains(q, case=False, regex=False).to_numpy(bool)
        mask &= hit
    if label == "none" and state.label_columns:
        mask &= ~frame[state.label_columns].astype(bool).any(axis=1).to_numpy()
    elif label in state.label_columns:
        mask &= frame[label].astype(bool).to_numpy()
    if split:
        mask &= (frame["split"] == split).to_numpy()
    marks = state.reviews()
    is_reviewed = np.array([marks.get(subject_key(s), (False, ""))[0] for s in frame["subject_id"]], bool)
    if reviewed == "yes":
        mask &= is_reviewed
    elif reviewed == "no":
        mask &= ~is_reviewed
    return np.flatnonzero(mask), is_reviewed


def _list_row(state: ReviewState, row, reviewed: bool) -> dict:
    return {
        "subject_id": row["subject_id"], "url": f"/cases/{quote(row['subject_id'], safe='')}",
        "split": row["split"], "age": number(row.get("age_years")), "sex": sex_letter(row.get("sex_male")),
        "labels": [label_title(c) for c in state.label_columns if bool(row[c])],
        "icd10": icd10_text(row.get("icd10")),
        "cines": [v for v in VIEW_TITLES if bool(row.get(f"has_{v}", False))],
        "reviewed": reviewed,
    }


@router.get("/cases", response_class=HTMLResponse)
def case_list(request: Request, state: State, q: str = "", label: str = "", split: str = "", reviewed: str = "",
              page_number: Annotated[int, Query(alias="page")] = 1):
    q = q.strip()
    selected, is_reviewed = _selected(state, q, label, split, reviewed)
    frame, per_page = state.manifest, state.settings.cases_per_page
    n_pages = max(1, math.ceil(len(selected) / per_page))
    page_number = min(max(page_number, 1), n_pages)
    rows = [_list_row(state, frame.iloc[i], bool(is_reviewed[i]))
            for i in selected[(page_number - 1) * per_page: page_number * per_page]]
    filters = {"q": q, "label": label, "split": split, "reviewed": reviewed}
    page_links = {p: "/cases?" + urlencode({**{k: v for k, v in filters.items() if v}, "page": p})
                  for p in (page_number - 1, page_number + 1) if 1 <= p <= n_pages}
    return page(request, "cases.html", rows=rows, filters=filters, page=page_number, n_pages=n_pages,
                n_selected=len(selected), n_total=len(frame), page_links=page_links,
                labels=[(c, label_title(c)) for c in state.label_columns],
                splits=sorted(frame["split"].dropna().unique()), uploads=state.uploads())


# --------------------------------------------------------------------------- case pages

def _cine_panels(state: ReviewState, case: Case) -> list[dict]:
    panels = []
    for view in VIEW_TITLES:
        real = state.real_cine(case, view)
        has_generator = view in state.models.generator_views
        if real is None and not has_generator and not (case.row is not None and f"cmr_{view}" in state.data.arrays):
            continue
        panel = {"view": view, "title": VIEW_TITLES[view], "real": None, "generated": None,
                 "has_generator": has_generator}
        if real is not None:
            panel["real"] = {"url": f"/media/{case.key}/real/{view}", "frames": len(real),
                             "frame_ms": state.frame_ms(case, len(real))}
        if has_generator:
            generated = state.generated_cine(case, view)
            if generated is not None:
                panel["generated"] = {"url": f"/media/{case.key}/generated/{view}", "frames": len(generated),
                                      "frame_ms": state.frame_ms(case, len(generated))}
            else:
                panel["start_url"] = f"/api/cases/{case.key}/generate/{view}"
        panels.append(panel)
    return panels


def _facts(case: Case) -> list[tuple[str, str]]:
    row = case.row
    if row is not None:
        return [("Split", row["split"]), ("Age", fmt(row.get("age_years"), 0)), ("Sex", sex_letter(row.get("sex_male"))),
                ("ICD-10", icd10_text(row.get("icd10"), "none"))]
    kind = UPLOAD_KINDS.get(".xml" if case.upload.kind == "xml" else ".zip")
    return [("Upload", case.upload.original_name), ("Format", kind)]


def case_page(request: Request, state: ReviewState, case: Case):
    """A case: its ECG, real and generated cines, predictions and review mark."""
    try:
        ecg = state.ecg_view(case)
    except InputError as err:
        return page(request, "error.html", status=400, message=str(err))
    has_heads = state.models.has_heads
    predictions = prediction_rows(state.predictions(case), state.reference, ecg.sex_male) if has_heads else None
    labels = [label_title(c) for c in state.label_columns if case.row is not None and bool(case.row[c])]
    measurements = [(title, ecg.measurements.get(name), unit) for name, title, unit in MEASUREMENT_FIELDS
                    if ecg.measurements.get(name) is not None]
    reviewed, note = state.reviews().get(case.key, (False, ""))
    return page(request, "case.html", case=case, panels=_cine_panels(state, case), predictions=predictions,
                predict_url=f"/api/cases/{case.key}/predict" if has_heads and predictions is None else None,
                facts=_facts(case), labels=labels, measurements=measurements, interpretation=ecg.interpretation,
                reviewed=reviewed, note=note, ecg_url=f"/media/{case.key}/ecg.svg",
                absent_leads=[name for name, ok in zip(LEAD_NAMES, ecg.lead_mask) if not ok])


@router.get("/cases/{subject_id}", response_class=HTMLResponse)
def subject_page(request: Request, subject_id: str, state: State):
    case = state.case_by_subject(subject_id)
    if case is None:
        raise Problem(404, f"no subject {subject_id!r} in the data set")
    return case_page(request, state, case)


@router.get("/uploads/{upload_id}", response_class=HTMLResponse)
def upload_page(request: Request, upload_id: str, state: State):
    case = state.case_by_upload(upload_id)
    if case is None:
        raise Problem(404, "no such upload")
    return case_page(request, state, case)


@router.post("/cases/{case_key}/review")
async def mark_reviewed(request: Request, case_key: str, state: State):
    case = state.case_by_key(case_key)
    if case is None:
        raise Problem(404, "no such case")
    form = await request.form()
    state.set_review(case.key, form_text(form, "reviewed") == "yes", form_text(form, "note"))
    return RedirectResponse(case.url, status_code=303)


# --------------------------------------------------------------------------- upload

@router.get("/upload", response_class=HTMLResponse)
def upload_form(request: Request):
    return page(request, "upload.html")


@router.post("/upload")
async def upload(request: Request, state: State):
    limit = state.settings.max_upload_bytes
    form = await request.form(max_files=1, max_fields=4)
    item = form.get("ecg")
    if item is None or not hasattr(item, "read"):
        return page(request, "upload.html", status=400, error="choose an ECG file to upload")
    data = await item.read(limit + 1)
    try:
        stored = store_upload(state.uploads_dir, item.filename, data, limit)
    except InputError as err:
        return page(request, "upload.html", status=413 if "limit" in err.problem else 400, error=str(err))
    case = Case("u" + stored.upload_id, stored.original_name, upload=stored)
    try:
        state.ecg_view(case)  # parse and standardise now: a bad file is refused here
    except InputError as err:
        shutil.rmtree(stored.folder, ignore_errors=True)
        return page(request, "upload.html", status=400, error=str(err))
    state.add_upload(stored)
    for view in state.models.generator_views:
        state.request_generation(case, view, priority=5)
    if state.models.has_heads:
        state.request_predictions(case, priority=1)
    return RedirectResponse(case.url, status_code=303)
