"""Web plumbing shared by the review app's routers: templates, page rendering, errors and the guards.

The guards are FastAPI dependencies, declared once and attached to routers or
parameters:

* `require_review_session` — the review pages' sign-in (a signed cookie, or the
  launch URL's ``?token=``); a missing session redirects pages to ``/login``
  and answers API calls 401;
* `require_csrf` — every state-changing request carries the CSRF token of its
  browser's cookie, in ``X-CSRF-Token`` or the form field ``csrf_token``; 403
  otherwise;
* `get_study` — the study named in the path (404 when none);
* `page_reader`, `api_reader`, `media_reader` — the signed-in reader of that
  study, or a redirect to its sign-in page, 401, or an empty 404;
* `admin_flag` and `admin_guard` — the study's administrator session.

Routes raise `Problem` (a 4xx as the error page, JSON, text or empty) and
`Redirect`; `install_error_handlers` turns them, and the package's user errors,
into responses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from cardiacnets.errors import CardiacNetsError
from cardiacnets.review.auth import sign, token_fingerprint, tokens_equal, unsign
from cardiacnets.review.display import INDEX_TITLES, VIEW_TITLES, fmt
from cardiacnets.review.security import CSRF_COOKIE, CSRF_FIELD, CSRF_HEADER, csrf_matches
from cardiacnets.review.state import ReviewState, StudyRuntime
from cardiacnets.review.study import ARM_TITLES
from cardiacnets.review.study_store import StudyStore

PACKAGE_DIR = Path(__file__).resolve().parent
REVIEW_COOKIE = "cn_review"
SESSION_MAX_AGE_S = 7 * 24 * 3600
REVIEW_LOGIN = "review"


# --------------------------------------------------------------------------- pages and errors

def make_templates() -> Jinja2Templates:
    """The app's Jinja2 templates, with its titles, the ``fmt`` filter and each request's ``csrf_token``."""
    templates = Jinja2Templates(directory=str(PACKAGE_DIR / "templates"),
                                context_processors=[lambda request: {"csrf_token": csrf_of(request)}])
    templates.env.globals.update(view_titles=VIEW_TITLES, arm_titles=ARM_TITLES, index_titles=INDEX_TITLES)
    templates.env.filters["fmt"] = fmt
    return templates


def csrf_of(request: Request) -> str:
    """The CSRF token of the request's browser (set by `SecurityHeaders`), for forms and ``<meta>``."""
    return getattr(request.state, "csrf_token", "")


def page(request: Request, template: str, status: int = 200, headers: dict | None = None, **context) -> Response:
    """Render ``template`` with the app's common context (models, studies, no error unless given)."""
    state: ReviewState = request.app.state.review
    context.setdefault("error", None)
    context.update(models=state.models.describe(), studies=sorted(state.studies))
    return request.app.state.templates.TemplateResponse(request, template, context, status_code=status, headers=headers)


class Problem(Exception):
    """A client error answered as the error page (``kind="page"``), JSON, plain text or an empty body.

    Args:
        status: the HTTP status (4xx).
        message: what went wrong, for the reader.
        kind: ``page``, ``json``, ``text`` or ``empty``.
        template, context: another page to render (``page`` kind), e.g. a sign-in form with its error.
        headers: extra response headers (``Retry-After``).
    """

    def __init__(self, status: int, message: str = "", *, kind: str = "page", template: str = "error.html",
                 context: dict | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
        self.template, self.context, self.headers = template, context or {}, headers


class Redirect(Exception):
    """A 303 to ``url``, optionally setting signed session cookies ``(name, value, path)``."""

    def __init__(self, url: str, cookies: tuple = ()):
        super().__init__(url)
        self.url, self.cookies = url, cookies


def set_session_cookie(request: Request, response: Response, name: str, value: str, path: str = "/") -> None:
    """An HttpOnly, SameSite=Strict session cookie; Secure when the request came over https."""
    response.set_cookie(name, value, max_age=SESSION_MAX_AGE_S, httponly=True, samesite="strict", path=path,
                        secure=request.url.scheme == "https")


def install_error_handlers(app: FastAPI) -> None:
    """Answer `Problem`, `Redirect` and the package's user errors (`CardiacNetsError`, 400 page)."""

    @app.exception_handler(Problem)
    async def on_problem(request: Request, err: Problem):
        if err.kind == "json":
            return JSONResponse({"error": err.message}, status_code=err.status, headers=err.headers)
        if err.kind == "text":
            return PlainTextResponse(err.message, status_code=err.status, headers=err.headers)
        if err.kind == "empty":
            return Response(status_code=err.status, headers=err.headers)
        context = {"message": err.message, **err.context}
        return page(request, err.template, status=err.status, headers=err.headers, **context)

    @app.exception_handler(Redirect)
    async def on_redirect(request: Request, err: Redirect):
        response = RedirectResponse(err.url, status_code=303)
        for name, value, path in err.cookies:
            set_session_cookie(request, response, name, value, path)
        return response

    @app.exception_handler(CardiacNetsError)
    async def on_user_error(request: Request, err: CardiacNetsError):
        return page(request, "error.html", status=400, message=str(err))


# --------------------------------------------------------------------------- guards

def get_state(request: Request) -> ReviewState:
    """The app's shared state."""
    return request.app.state.review


State = Annotated[ReviewState, Depends(get_state)]


def client_of(request: Request) -> str:
    """The client's address (the proxy's, unless uvicorn trusts its ``X-Forwarded-For``)."""
    return request.client.host if request.client else "unknown"


def throttle(request: Request, state: ReviewState, form: str, template: str = "error.html",
             context: dict | None = None) -> None:
    """Answer 429 (``template`` with the error, ``Retry-After``) while ``form`` is locked for this client."""
    wait = state.limiter.retry_after(form, client_of(request))
    if wait is not None:
        message = f"too many wrong tokens; try again in {wait} s"
        raise Problem(429, message, template=template, context={**(context or {}), "error": message},
                      headers={"Retry-After": str(wait)})


def review_signed_in(request: Request, state: ReviewState) -> bool:
    """Whether the request carries a review session cookie signed for the token in force."""
    payload = unsign(state.secret, request.cookies.get(REVIEW_COOKIE), SESSION_MAX_AGE_S)
    return bool(payload and payload.get("k") == "review" and payload.get("t") == token_fingerprint(state.token))


def review_cookie(state: ReviewState) -> tuple[str, str, str]:
    """The review session cookie ``(name, value, path)``."""
    return REVIEW_COOKIE, sign(state.secret, {"k": "review", "t": token_fingerprint(state.token)}), "/"


def require_review_session(request: Request, state: State) -> None:
    """The review pages' guard: a session cookie, or the launch URL's ``?token=`` (then the cookie is set)."""
    if review_signed_in(request, state):
        return
    path = request.url.path
    given = request.query_params.get("token")
    if given is not None and request.method == "GET":
        throttle(request, state, REVIEW_LOGIN, "login.html", {"next": path})
        if tokens_equal(given, state.token):
            state.limiter.succeeded(REVIEW_LOGIN, client_of(request))
            rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            raise Redirect(path + ("?" + rest if rest else ""), cookies=(review_cookie(state),))
        state.limiter.failed(REVIEW_LOGIN, client_of(request))
        raise Problem(403, "wrong token", template="login.html", context={"next": path, "error": "wrong token"})
    if path.startswith("/api/") or request.method != "GET":
        raise Problem(401, "sign in first", kind="json")
    raise Redirect(f"/login?{urlencode({'next': path})}")


async def require_csrf(request: Request, state: State) -> None:
    """Every state-changing request carries its browser's CSRF token (header or form field); 403 otherwise."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    given = request.headers.get(CSRF_HEADER)
    content_type = request.headers.get("content-type", "")
    if given is None and content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form(max_files=1, max_fields=16)
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not csrf_matches(state.secret, request.cookies.get(CSRF_COOKIE), given):
        message = "the form has expired or did not come from this app (no valid CSRF token); reload the page and retry"
        json_wanted = "/api/" in request.url.path or content_type.startswith("application/json")
        raise Problem(403, message, kind="json" if json_wanted else "page")


def get_study(name: str, state: State) -> StudyRuntime:
    """The study named in the path, or the 404 page."""
    study = state.studies.get(name)
    if study is None:
        raise Problem(404, "no such study")
    return study


StudyDep = Annotated[StudyRuntime, Depends(get_study)]


def study_cookie(study: StudyRuntime) -> str:
    """Name of a study's reader cookie (``_admin`` appended: its administrator's)."""
    return f"cn_study_{study.config.name}"


def optional_reader(request: Request, study: StudyDep, state: State) -> str | None:
    """The reader signed in to the study (None when nobody is, or their name left the reader list)."""
    payload = unsign(state.secret, request.cookies.get(study_cookie(study)), SESSION_MAX_AGE_S)
    if not payload or payload.get("study") != study.config.name \
            or payload.get("t") != token_fingerprint(study.config.reader_token):
        return None
    reader = payload.get("reader")
    if study.config.readers and reader not in study.config.readers:
        return None
    return reader if isinstance(reader, str) else None


OptionalReader = Annotated[str | None, Depends(optional_reader)]


def page_reader(study: StudyDep, reader: OptionalReader) -> str:
    """The signed-in reader, or a redirect to the study's sign-in page."""
    if reader is None:
        raise Redirect(f"/study/{study.config.name}/")
    return reader


def api_reader(reader: OptionalReader) -> str:
    """The signed-in reader, or 401 JSON."""
    if reader is None:
        raise Problem(401, "sign in first", kind="json")
    return reader


def media_reader(reader: OptionalReader) -> str:
    """The signed-in reader, or an empty 404 (images do not say why)."""
    if reader is None:
        raise Problem(404, kind="empty")
    return reader


PageReader = Annotated[str, Depends(page_reader)]
APIReader = Annotated[str, Depends(api_reader)]
MediaReader = Annotated[str, Depends(media_reader)]


def admin_flag(request: Request, study: StudyDep, state: State) -> bool:
    """Whether the request carries the study's administrator session."""
    payload = unsign(state.secret, request.cookies.get(study_cookie(study) + "_admin"), SESSION_MAX_AGE_S)
    return bool(payload and payload.get("study") == study.config.name
                and payload.get("t") == token_fingerprint(study.config.admin_token))


IsAdmin = Annotated[bool, Depends(admin_flag)]


def admin_guard(kind: str):
    """A dependency refusing non-administrators with 403 as ``kind`` (``text`` or ``json``)."""

    def guard(is_admin: IsAdmin) -> None:
        if not is_admin:
            raise Problem(403, "admin sign-in required", kind=kind)

    return guard


def current_url(study: StudyRuntime, reader: str) -> str:
    """The reader's next unsubmitted reading, or the study's done page."""
    readings = study.store.ensure_reader(reader)
    current = StudyStore.current_position(readings)
    return f"/study/{study.config.name}/done" if current is None else f"/study/{study.config.name}/readings/{current + 1}"


def readable(readings: list, number: int) -> bool:
    """Whether reading ``number`` (1-based) exists and is not past the reader's current one."""
    current = StudyStore.current_position(readings)
    position = number - 1
    return 0 <= position < len(readings) and (current is None or position <= current)



def form_text(form, name: str, default: str = "") -> str:
    """A form field as text (``default`` when absent, or when a file was sent under that name)."""
    value = form.get(name)
    return value if isinstance(value, str) else default
