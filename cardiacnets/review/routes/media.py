"""Media routes of cases: the 12-lead ECG drawing and real or generated cines (PNG sprite sheet or GIF).

Generated cines are stamped SYNTHETIC in their pixels and marked synthetic in the file's metadata; real ones are not.
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Depends
from fastapi.responses import Response

from cardiacnets.review import render
from cardiacnets.review.display import VIEW_TITLES, filter_note
from cardiacnets.review.state import ReviewState
from cardiacnets.review.web import State, require_csrf, require_review_session

router = APIRouter(dependencies=[Depends(require_review_session), Depends(require_csrf)])
CINE_SCALE = 3
CINE_FORMATS = ("png", "gif")


def ecg_response(state: ReviewState, key: tuple, ecg, title: str | None, cache_control: str) -> Response:
    """An ECG drawn in the clinical layout as SVG, cached in memory under ``key``."""
    svg = state.media(key, lambda: render.ecg_svg(
        ecg.signal_mV, ecg.sampling_rate_hz, lead_mask=ecg.lead_mask, sample_mask=ecg.sample_mask,
        title=title, note=filter_note(state.ecg_config)).encode())
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": cache_control})


def cine_response(state: ReviewState, key: tuple, cine: np.ndarray, ext: str, synthetic: bool,
                  frame_ms: float) -> Response:
    """A cine as a PNG sprite sheet (frames side by side, count and timing in ``X-Frames``/``X-Frame-Ms``) or a GIF.

    ``synthetic`` stamps SYNTHETIC into the pixels of every frame and marks the file's metadata (PNG text
    chunks, GIF comment; `cardiacnets.io.previews`); a real cine is sent with neither.
    """
    if ext == "png":
        data = state.media(key, lambda: render.cine_sprite_png(cine, scale=CINE_SCALE, synthetic=synthetic))
        return Response(data, media_type="image/png", headers={
            "X-Frames": str(len(cine)), "X-Frame-Ms": f"{frame_ms:.1f}", "Cache-Control": "private, max-age=300"})
    data = state.media(key, lambda: render.cine_gif(cine, frame_ms=frame_ms, scale=CINE_SCALE, synthetic=synthetic))
    return Response(data, media_type="image/gif", headers={"Cache-Control": "private, max-age=300"})


@router.get("/media/{case_key}/ecg.svg")
def case_ecg(case_key: str, state: State):
    case = state.case_by_key(case_key)
    if case is None:
        return Response(status_code=404)
    return ecg_response(state, ("ecg", case.key), state.ecg_view(case), case.title, "private, max-age=300")


@router.get("/media/{case_key}/{source}/{view}.{ext}")
def case_cine(case_key: str, source: str, view: str, ext: str, state: State):
    case = state.case_by_key(case_key)
    if case is None or source not in ("real", "generated") or view not in VIEW_TITLES or ext not in CINE_FORMATS:
        return Response(status_code=404)
    cine = state.real_cine(case, view) if source == "real" else state.generated_cine(case, view)
    if cine is None:
        return Response(status_code=404)
    synthetic = source == "generated"
    return cine_response(state, (case.key, source, view, ext), cine, ext, synthetic, state.frame_ms(case, len(cine)))
