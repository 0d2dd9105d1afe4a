"""Request guards of the review app: Host allow-list, cross-site refusal, CSRF tokens, body limits, login throttle.

Each guard answers before the routes run, so no route can forget one:

* `allowed_hosts` feeds Starlette's ``TrustedHostMiddleware``: a request for
  any other ``Host`` gets 400, which defeats DNS rebinding (a hostile page whose
  name resolves to 127.0.0.1 still sends its own name);
* `CrossSiteGuard` refuses (403) a state-changing request whose ``Origin``,
  ``Referer`` or ``Sec-Fetch-Site`` says it comes from another site;
* `SecurityHeaders` adds the Content-Security-Policy and friends, and gives
  every browser a random CSRF cookie; pages embed `csrf_token` of it (an HMAC
  under the app secret) in forms and in ``<meta name="csrf-token">``, and the
  routes' `require_csrf` dependency (``review.web``) compares it on every POST;
* `BodyLimit` answers 413 to a JSON or form body over its limit before the app
  reads it, and holds uploads to theirs (with a ``Content-Length``, else 411);
* `LoginLimiter` counts wrong tokens per client and per sign-in form; past the
  limit the form answers 429 until the minute has passed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cardiacnets.errors import ConfigError

CSRF_COOKIE = "cn_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_CSRF_COOKIE_RE = re.compile(r"[A-Za-z0-9_-]{32,64}")
_HOST_NAME_RE = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


# --------------------------------------------------------------------------- hosts and origins

def allowed_hosts(bind_host: str, extra: Iterable[str] = ()) -> list[str]:
    """The ``Host`` names the app answers: loopback, the bind address unless a wildcard, and ``extra``.

    Args:
        bind_host: the address the server binds (``0.0.0.0`` and ``::`` add nothing).
        extra: names or addresses from ``--allowed-host`` (``study.example.org``,
            ``*.example.org``, ``192.168.1.20``).

    Returns:
        Lower-case names for ``TrustedHostMiddleware`` (IPv6 addresses in brackets).

    Raises:
        ConfigError: an entry is not a host name or address (a URL, a port, ``*``).
    """
    names = list(LOOPBACK_NAMES)
    candidates = [(bind_host, "--host")] if bind_host not in ("0.0.0.0", "::", "") else []
    candidates += [(name, "--allowed-host") for name in extra]
    for name, option in candidates:
        entry = _host_entry(name.strip().lower())
        if entry is None:
            raise ConfigError(f"{option} {name!r}: give a host name or an IP address (no scheme, port or path; "
                              "'*.example.org' allows the subdomains)")
        if entry not in names:
            names.append(entry)
    return names


def _host_entry(name: str) -> str | None:
    try:
        address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return name if _HOST_NAME_RE.fullmatch(name) else None
    return f"[{address}]" if address.version == 6 else str(address)


def _host_port(netloc: str, default_port: int | None) -> tuple[str, int | None] | None:
    """(lower-case host, port) of ``host[:port]``; None when malformed."""
    try:
        parts = urlsplit("//" + netloc)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    return host.lower(), port if port is not None else default_port


def same_origin(url: str, host_header: str) -> bool:
    """Whether ``url`` (an ``Origin`` or ``Referer``) names the host and port the request was sent to.

    The scheme is not compared: behind a TLS proxy the browser's origin is
    ``https://`` while the app itself is reached over http.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    default = 443 if parts.scheme == "https" else 80
    origin = _host_port(parts.netloc.rsplit("@", 1)[-1], default)
    target = _host_port(host_header, None)
    if origin is None or target is None:
        return False
    # A Host without a port was reached on its scheme's default port (443 behind a TLS proxy).
    return origin[0] == target[0] and origin[1] in ((80, 443) if target[1] is None else (target[1],))


def cross_site_reason(method: str, headers: Headers) -> str | None:
    """Why a request must be refused as cross-site, or None.

    Safe methods pass. Otherwise ``Sec-Fetch-Site`` must not say
    ``cross-site``/``same-site``, and ``Origin`` (else ``Referer``), when the
    browser sends one, must be this host; a request with neither (a script,
    ``curl``) still needs the CSRF token.
    """
    if method in SAFE_METHODS:
        return None
    host = headers.get("host", "")
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site in ("cross-site", "same-site"):
        return f"Sec-Fetch-Site: {fetch_site}"
    origin = headers.get("origin")
    if origin is not None:
        return None if same_origin(origin, host) else f"Origin {origin[:100]!r}"
    referer = headers.get("referer")
    if referer is not None:
        return None if same_origin(referer, host) else "a Referer from another site"
    return None


def _wants_json(scope: Scope) -> bool:
    path = scope.get("path", "")
    return path.startswith("/api/") or "/api/" in path or "json" in Headers(scope=scope).get("content-type", "")


def _refusal(scope: Scope, status: int, message: str, headers: dict | None = None) -> Response:
    if _wants_json(scope):
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    return PlainTextResponse(message, status_code=status, headers=headers)


class CrossSiteGuard:
    """ASGI middleware: 403 for a state-changing request from another site (see `cross_site_reason`)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            reason = cross_site_reason(scope["method"], Headers(scope=scope))
            if reason is not None:
                message = f"cross-site request refused ({reason}); use the app's own pages"
                await _refusal(scope, 403, message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


# --------------------------------------------------------------------------- CSRF tokens and headers

def csrf_token(secret: bytes, cookie_value: str) -> str:
    """The token pages embed for a browser's CSRF cookie: HMAC-SHA256 under the app secret, hex."""
    return hmac.new(secret, b"csrf|" + cookie_value.encode(), hashlib.sha256).hexdigest()


def csrf_matches(secret: bytes, cookie_value: str | None, given: str | None) -> bool:
    """Whether ``given`` is the token of the request's own CSRF cookie (constant time)."""
    if not cookie_value or not given or not _CSRF_COOKIE_RE.fullmatch(cookie_value):
        return False
    return hmac.compare_digest(csrf_token(secret, cookie_value).encode(), given.encode("utf-8", "surrogatepass"))


def _cookie_value(headers: Headers, name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


class SecurityHeaders:
    """ASGI middleware: security headers on every response and a CSRF cookie for every browser.

    Puts ``csrf_token`` (for the templates) in the request state; a browser
    without a valid ``cn_csrf`` cookie gets a new random one with its next HTML
    page. Cookies are ``Secure`` when the request came over https (a TLS proxy
    that sets ``X-Forwarded-Proto``).

    Args:
        app: the wrapped app.
        secret: the app's signing secret.
        max_age_s: lifetime of the CSRF cookie.
    """

    def __init__(self, app: ASGIApp, secret: bytes, max_age_s: int):
        self.app, self.secret, self.max_age_s = app, secret, max_age_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cookie = _cookie_value(Headers(scope=scope), CSRF_COOKIE)
        fresh = cookie is None or not _CSRF_COOKIE_RE.fullmatch(cookie)
        if fresh:
            cookie = secrets.token_urlsafe(32)
        scope.setdefault("state", {})["csrf_token"] = csrf_token(self.secret, cookie)
        secure = "; Secure" if scope.get("scheme") == "https" else ""

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = CSP
                headers["X-Content-Type-Options"] = "nosniff"
                # same-origin (not no-referrer): browsers then send this app's Origin with its own POSTs.
                headers["Referrer-Policy"] = "same-origin"
                headers["X-Frame-Options"] = "DENY"
                headers.setdefault("Cache-Control", "no-store")
                if fresh and headers.get("content-type", "").startswith("text/html"):
                    headers.append("set-cookie", f"{CSRF_COOKIE}={cookie}; Max-Age={self.max_age_s}; Path=/; "
                                                 f"HttpOnly; SameSite=Lax{secure}")
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --------------------------------------------------------------------------- body limits

class BodyLimit:
    """ASGI middleware: request-body limits.

    Bodies of ``upload_path`` POSTs need a ``Content-Length`` (411 without) of
    at most ``max_upload_bytes`` (plus multipart overhead); ``too_large_upload``
    renders their 413. Every other body (JSON, forms) is read here, up to
    ``max_body_bytes``, before the app sees it: 413 beyond, whether or not a
    ``Content-Length`` announced it.

    Args:
        app: the wrapped app.
        max_body_bytes: limit of JSON and form bodies.
        upload_path: the upload route.
        max_upload_bytes: the upload limit.
        too_large_upload: ``f(scope) -> Response`` for an upload over the limit.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, upload_path: str, max_upload_bytes: int,
                 too_large_upload: Callable[[Scope], Response]):
        self.app = app
        self.max_body_bytes, self.upload_path = max_body_bytes, upload_path
        self.max_upload_bytes, self.too_large_upload = max_upload_bytes, too_large_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        if scope["method"] == "POST" and scope["path"] == self.upload_path:
            if length is None:
                await PlainTextResponse("uploads need a Content-Length", status_code=411)(scope, receive, send)
            elif not length.isdigit() or int(length) > self.max_upload_bytes + 64 * 1024:
                await self.too_large_upload(scope)(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        limit_text = f"the request body is larger than the limit ({self.max_body_bytes / 1e6:.2f} MB)"
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await _refusal(scope, 413, limit_text)(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _refusal(scope, 413, limit_text)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would say it

        await self.app(scope, replay, send)


# --------------------------------------------------------------------------- login throttle

class LoginLimiter:
    """Wrong-token counter of the sign-in forms.

    A client may get ``per_client`` tokens wrong per ``window_s`` on one form
    (the review sign-in, a study's reader or admin sign-in); all clients
    together ``per_form``. Past either limit the form answers 429 whatever the
    token, until the oldest counted failure leaves the window. Memory is
    bounded: stale entries are dropped, and at most ``max_keys`` clients are
    tracked.

    Args:
        per_client: wrong tokens per client, form and window.
        per_form: wrong tokens per form and window, all clients together.
        window_s: the window, seconds.
        clock: monotonic time in seconds (tests pass a fake one).
    """

    def __init__(self, per_client: int = 5, per_form: int = 50, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000):
        self.per_client, self.per_form, self.window_s = per_client, per_form, window_s
        self.clock, self.max_keys = clock, max_keys
        self._failures: dict[tuple[str, str | None], deque] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str | None], now: float) -> deque:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and now - times[0] >= self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, form: str, client: str) -> int | None:
        """Seconds until ``client`` may try ``form`` again, or None when it may now."""
        with self._lock:
            now = self.clock()
            waits = []
            for key, limit in (((form, client), self.per_client), ((form, None), self.per_form)):
                times = self._recent(key, now)
                if len(times) >= limit:
                    waits.append(self.window_s - (now - times[-limit]))
            return max(1, int(max(waits) + 0.999)) if waits else None

    def failed(self, form: str, client: str) -> None:
        """Count one wrong token."""
        with self._lock:
            now = self.clock()
            if len(self._failures) >= self.max_keys:
                for key in list(self._failures):
                    self._recent(key, now)
                while len(self._failures) >= self.max_keys:
                    self._failures.pop(next(iter(self._failures)))
            for key in ((form, client), (form, None)):
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, form: str, client: str) -> None:
        """Forget a client's failures on a form after a right token."""
        with self._lock:
            self._failures.pop((form, client), None)
