"""Dashboard authentication: password hashes, signed session cookies, CSRF tokens, login throttle.

* A person logs in with the ``[web] token`` or the password whose ``[web] password_hash`` is
  configured (``mailwarden web --hash-password`` makes one: scrypt, a random salt, stdlib only).
* The session is a cookie signed with HMAC-SHA256 under a key kept in ``<state_dir>/web-secret``
  (0600, made on first start). It carries a random session id, the session's CSRF token, an
  expiry, and a fingerprint of the credentials, so changing the token or password ends every
  session. Logging out revokes the session id server-side as well as clearing the cookie.
* Every state-changing request is a POST carrying the session's CSRF token in a form field,
  compared server-side in constant time; cookies are ``HttpOnly`` and ``SameSite=Strict``.
* The login form itself carries a pre-session nonce (cookie + field) so another site cannot log
  a browser in, and failures are throttled per client address.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailwarden.errors import ConfigError

SESSION_COOKIE = "mw_session"
LOGIN_COOKIE = "mw_login"

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
MAX_SECRET_LEN = 4096  # longer login input is refused before hashing


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# ------------------------------------------------------------------------------ passwords


def hash_password(password: str, *, n: int = _SCRYPT_N) -> str:
    """``scrypt$N$r$p$salt$hash`` (salt and hash base64url): what ``[web] password_hash`` holds."""
    if not password:
        raise ConfigError("an empty password cannot be hashed")
    salt = os.urandom(16)
    dk = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=_SCRYPT_R, p=_SCRYPT_P, maxmem=_SCRYPT_MAXMEM
    )
    return f"scrypt${n}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(dk)}"


@dataclass(frozen=True, slots=True)
class PasswordHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        """Read a stored hash; a malformed one is a :class:`ConfigError` naming the format."""
        parts = text.strip().split("$")
        try:
            if len(parts) != 6 or parts[0] != "scrypt":
                raise ValueError("not scrypt$N$r$p$salt$hash")
            n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 or n * r > 2**24:
                raise ValueError("scrypt parameters out of range")
            salt, digest = _unb64(parts[4]), _unb64(parts[5])
            if len(salt) < 8 or len(digest) < 16:
                raise ValueError("salt or hash too short")
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"[web] password_hash is malformed ({exc}); make one with "
                "`mailwarden web --hash-password`"
            ) from None
        return cls(n, r, p, salt, digest)

    def verify(self, password: str) -> bool:
        if not password or len(password) > MAX_SECRET_LEN:
            return False
        dk = hashlib.scrypt(
            password.encode(),
            salt=self.salt,
            n=self.n,
            r=self.r,
            p=self.p,
            maxmem=_SCRYPT_MAXMEM,
            dklen=len(self.digest),
        )
        return hmac.compare_digest(dk, self.digest)


def verify_password(password: str, stored: str) -> bool:
    return PasswordHash.parse(stored).verify(password)


# ------------------------------------------------------------------------------ credentials


class Credentials:
    """What a login may present: the token and/or the password (either one is enough)."""

    def __init__(self, token: str = "", password_hash: str = "") -> None:
        if token and len(token) < 16:
            raise ConfigError("[web] token is too short: use at least 16 random characters")
        self.token = token
        self.password = PasswordHash.parse(password_hash) if password_hash else None
        if not token and self.password is None:
            raise ConfigError("the dashboard needs [web] token or [web] password_hash")
        # Sessions remember this: a new token or password ends the old sessions.
        self.fingerprint = hashlib.sha256(f"{token}\0{password_hash}".encode()).hexdigest()[:16]

    def check(self, secret: str) -> bool:
        if not secret or len(secret) > MAX_SECRET_LEN:
            return False
        ok = bool(self.token) and hmac.compare_digest(secret.encode(), self.token.encode())
        if not ok and self.password is not None:
            ok = self.password.verify(secret)
        return ok


def load_secret(path: Path) -> bytes:
    """The cookie-signing key at ``path``; created (32 random bytes, mode 0600) if missing."""
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot read the web secret {path}: {exc.strerror}") from exc
    key = secrets.token_bytes(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        os.chmod(path, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot write the web secret {path}: {exc.strerror}") from exc
    return key


# ------------------------------------------------------------------------------ signing


class Signer:
    """HMAC-SHA256 signed, expiring JSON values (``body.signature``, both base64url)."""

    def __init__(self, key: bytes, purpose: str) -> None:
        self._key = hmac.new(key, purpose.encode(), hashlib.sha256).digest()

    def sign(self, payload: dict[str, Any]) -> str:
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        sig = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        return f"{body}.{_b64(sig)}"

    def unsign(self, value: str, *, now: float | None = None) -> dict[str, Any] | None:
        """The payload, or None when the value is forged, malformed or expired (``exp``)."""
        if not value or len(value) > 4096 or value.count(".") != 1:
            return None
        body, _, sig = value.partition(".")
        want = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(_unb64(sig), want):
                return None
            payload = json.loads(_unb64(body))
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(payload, dict):
            return None
        exp = payload.get("exp")
        if not isinstance(exp, int | float) or exp < (time.time() if now is None else now):
            return None
        return payload


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    csrf: str
    exp: float


class Sessions:
    """Issue, read and revoke session cookies."""

    def __init__(self, key: bytes, credentials: Credentials, *, lifetime: float) -> None:
        self._signer = Signer(key, "mailwarden.session")
        self._login = Signer(key, "mailwarden.login")
        self.credentials = credentials
        self.lifetime = lifetime
        self._revoked: dict[str, float] = {}  # sid -> expiry
        self._lock = threading.Lock()

    def issue(self, now: float | None = None) -> tuple[Session, str]:
        t = time.time() if now is None else now
        s = Session(secrets.token_urlsafe(18), secrets.token_urlsafe(24), t + self.lifetime)
        cookie = self._signer.sign(
            {"sid": s.sid, "csrf": s.csrf, "exp": s.exp, "cred": self.credentials.fingerprint}
        )
        return s, cookie

    def read(self, cookie: str | None, now: float | None = None) -> Session | None:
        if not cookie:
            return None
        p = self._signer.unsign(cookie, now=now)
        if p is None or p.get("cred") != self.credentials.fingerprint:
            return None
        sid, csrf = p.get("sid"), p.get("csrf")
        if not isinstance(sid, str) or not isinstance(csrf, str):
            return None
        with self._lock:
            if sid in self._revoked:
                return None
        return Session(sid, csrf, float(p["exp"]))

    def revoke(self, session: Session) -> None:
        now = time.time()
        with self._lock:
            self._revoked = {k: v for k, v in self._revoked.items() if v > now}
            self._revoked[session.sid] = session.exp

    def login_nonce(self, now: float | None = None) -> tuple[str, str]:
        """A nonce for the login form and the signed cookie that vouches for it (15 min)."""
        t = time.time() if now is None else now
        nonce = secrets.token_urlsafe(18)
        return nonce, self._login.sign({"n": nonce, "exp": t + 900})

    def check_login_nonce(self, cookie: str | None, field: str) -> bool:
        p = self._login.unsign(cookie or "")
        n = p.get("n") if p else None
        return isinstance(n, str) and bool(field) and hmac.compare_digest(n, field)


def csrf_ok(session: Session, submitted: str | None) -> bool:
    return bool(submitted) and hmac.compare_digest(
        session.csrf.encode(), (submitted or "").encode()
    )


class LoginThrottle:
    """At most ``limit`` failed logins per client address in ``window`` seconds."""

    def __init__(self, limit: int = 10, window: float = 600.0) -> None:
        self.limit = limit
        self.window = window
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, client: str, now: float | None = None) -> float:
        """Seconds until ``client`` may try again (0: now)."""
        t = time.monotonic() if now is None else now
        with self._lock:
            q = self._fails.get(client)
            if not q:
                return 0.0
            while q and q[0] <= t - self.window:
                q.popleft()
            if len(q) < self.limit:
                return 0.0
            return q[0] + self.window - t

    def failed(self, client: str, now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        with self._lock:
            if len(self._fails) > 10_000:  # a flood of addresses: forget the oldest state
                self._fails.clear()
            self._fails.setdefault(client, deque()).append(t)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._fails.pop(client, None)
