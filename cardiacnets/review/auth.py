"""Tokens and signed session cookies of the review app.

The app folder holds a random 32-byte secret (``APP_DIR/secret.key``, created
on first start, readable by its owner only); cookies carry a small JSON payload
and its HMAC-SHA256 under that secret, so sessions survive restarts and cannot
be forged or edited (a reader cannot turn their cookie into another reader's).
Token comparisons are constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import time
from pathlib import Path

SECRET_FILE = "secret.key"


def load_secret(app_dir: Path) -> bytes:
    """The app folder's signing secret, created on first use (mode 0600)."""
    path = Path(app_dir) / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
    data = path.read_bytes()
    if len(data) < 32:
        raise ValueError(f"{path}: signing secret is too short; delete it to make a new one")
    return data


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: bytes, payload: dict) -> str:
    """``payload`` (plus its issue time) as ``base64(json).base64(hmac)``."""
    body = _b64(json.dumps({**payload, "iat": int(time.time())}, separators=(",", ":")).encode())
    mac = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def unsign(secret: bytes, text: str | None, max_age_s: float) -> dict | None:
    """The payload of a signed value, or None when missing, forged, malformed or older than ``max_age_s``."""
    if not text or text.count(".") != 1:
        return None
    body, mac = text.split(".")
    expected = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(expected, _unb64(mac)):
            return None
        payload = json.loads(_unb64(body))
    except (ValueError, TypeError):
        return None
    if not isinstance(payload, dict) or time.time() - payload.get("iat", 0) > max_age_s:
        return None
    return payload


def tokens_equal(given: str | None, expected: str | None) -> bool:
    """Constant-time token comparison; an unset expected token matches nothing."""
    if not expected or given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def token_fingerprint(token: str) -> str:
    """A short hash of a token, put in cookies so that changing the token ends old sessions."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def is_loopback(host: str) -> bool:
    """Whether a bind address only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
