"""Tokens, signed session cookies and private files of the review app.

The app folder holds a random 32-byte secret (``APP_DIR/secret.key``, created
on first start, readable by its owner only); cookies carry a small JSON payload
and its HMAC-SHA256 under that secret, so sessions survive restarts and cannot
be forged or edited (a reader cannot turn their cookie into another reader's).
Token comparisons are constant-time. Configured tokens need `MIN_TOKEN_CHARS`
characters; when none is given the app makes one per launch (`generate_token`).
The app folder is created owner-only (0700) and refused when every user may
write to it; its databases and the secret are created 0600 (`private_file`).
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

from cardiacnets.errors import ConfigError

SECRET_FILE = "secret.key"
MIN_TOKEN_CHARS = 16
PRIVATE_FILE_MODE = 0o600
PRIVATE_FOLDER_MODE = 0o700


def generate_token() -> str:
    """A random URL-safe token (32 bytes of entropy) for one launch of the app."""
    return secrets.token_urlsafe(32)


def check_token_strength(token: str, where: str) -> None:
    """Refuse a configured token shorter than `MIN_TOKEN_CHARS` characters.

    Args:
        token: the token.
        where: what set it (a config file and key, or an option), named in the error.

    Raises:
        ConfigError: the token is too short.
    """
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"{where}: the token must have at least {MIN_TOKEN_CHARS} characters (it has {len(token)}); "
                          "make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'")


def private_folder(path: Path) -> Path:
    """Create ``path`` owner-only (0700), or check that an existing one is not writable by every user.

    Raises:
        ConfigError: the folder is world-writable (anyone could replace the databases or the secret).
    """
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=PRIVATE_FOLDER_MODE, exist_ok=True)
        os.chmod(path, PRIVATE_FOLDER_MODE)  # mkdir's mode is masked by the umask
    if not path.is_dir():
        raise ConfigError(f"{path}: the app folder is not a folder")
    if path.stat().st_mode & 0o002:
        raise ConfigError(f"{path}: the app folder is writable by every user; choose a private folder (--app-dir) "
                          "or run chmod o-w on it")
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty with mode 0600 when missing; tighten an existing file to 0600.

    SQLite gives its ``-wal`` and ``-shm`` files the database file's mode, so
    calling this before the first connection keeps all three owner-only.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    except FileExistsError:
        pass
    for companion in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if companion.is_file() and companion.stat().st_mode & 0o077:
            os.chmod(companion, PRIVATE_FILE_MODE)
    return path


def load_secret(app_dir: Path) -> bytes:
    """The app folder's signing secret, created on first use (mode 0600)."""
    path = Path(app_dir) / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
    elif path.stat().st_mode & 0o077:
        os.chmod(path, PRIVATE_FILE_MODE)
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
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


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
