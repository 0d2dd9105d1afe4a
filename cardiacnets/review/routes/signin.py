"""Public routes: the review pages' sign-in form, the health check and the root redirect."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse

from cardiacnets.review.auth import tokens_equal
from cardiacnets.review.web import (
    REVIEW_LOGIN,
    State,
    client_of,
    form_text,
    page,
    require_csrf,
    review_cookie,
    set_session_cookie,
    throttle,
)

router = APIRouter(dependencies=[Depends(require_csrf)])


def safe_next(target: str) -> str:
    """Only local absolute paths (no scheme, no host, no ``//``, no control characters) are followed after sign-in."""
    local = target.startswith("/") and not target.startswith("//") and "\\" not in target
    return target if local and target.isprintable() else "/cases"


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/cases"):
    return page(request, "login.html", next=safe_next(next))


@router.post("/login")
async def login(request: Request, state: State):
    form = await request.form()
    target = safe_next(form_text(form, "next", "/cases"))
    throttle(request, state, REVIEW_LOGIN, "login.html", {"next": target})
    if not tokens_equal(form_text(form, "token"), state.token):
        state.limiter.failed(REVIEW_LOGIN, client_of(request))
        return page(request, "login.html", status=403, next=target, error="wrong token")
    state.limiter.succeeded(REVIEW_LOGIN, client_of(request))
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(request, response, *review_cookie(state))
    return response


@router.get("/healthz", response_class=PlainTextResponse)
def healthz():
    return "ok"


@router.get("/")
def index():
    return RedirectResponse("/cases", status_code=303)
