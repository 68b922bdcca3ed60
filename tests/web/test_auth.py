"""Password hashes, signed cookies, sessions and the login throttle."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mailwarden.errors import ConfigError
from mailwarden.web.auth import (
    Credentials,
    LoginThrottle,
    PasswordHash,
    Sessions,
    Signer,
    csrf_ok,
    hash_password,
    load_secret,
    verify_password,
)

FAST = 2**10  # scrypt cost for tests; the default is 2**15


def test_password_hash_round_trip() -> None:
    h = hash_password("s3cret pass", n=FAST)
    assert h.startswith(f"scrypt${FAST}$8$1$")
    assert verify_password("s3cret pass", h)
    assert not verify_password("s3cret pass ", h)
    assert not verify_password("", h)
    assert hash_password("s3cret pass", n=FAST) != h  # salted


def test_default_cost_hash_verifies() -> None:
    h = hash_password("pw")
    assert PasswordHash.parse(h).n == 2**15 and verify_password("pw", h)


@pytest.mark.parametrize(
    "bad",
    [
        "plain-text-password",
        "bcrypt$2b$12$abc",
        "scrypt$1000$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",  # N not a power of two
        "scrypt$1024$8$1$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA",  # salt too short
        "scrypt$1024$8$1$c2FsdHNhbHQ$",  # no hash
        "scrypt$x$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
        "scrypt$" + str(2**30) + "$64$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",  # memory bomb
    ],
)
def test_malformed_hash_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"password_hash is malformed.*--hash-password"):
        PasswordHash.parse(bad)


def test_credentials() -> None:
    with pytest.raises(ConfigError, match="needs \\[web\\] token or \\[web\\] password_hash"):
        Credentials()
    with pytest.raises(ConfigError, match="too short"):
        Credentials("short")
    c = Credentials("t" * 20, hash_password("pw", n=FAST))
    assert c.check("t" * 20) and c.check("pw")
    assert not c.check("t" * 19) and not c.check("") and not c.check("x" * 5000)
    only_pw = Credentials("", hash_password("pw", n=FAST))
    assert only_pw.check("pw") and not only_pw.check("")
    assert Credentials("t" * 20).fingerprint != Credentials("u" * 20).fingerprint


def test_signer_rejects_tampering_expiry_and_other_keys() -> None:
    s = Signer(b"k" * 32, "session")
    v = s.sign({"a": 1, "exp": 2000.0})
    assert s.unsign(v, now=1000) == {"a": 1, "exp": 2000.0}
    assert s.unsign(v, now=2001) is None  # expired
    body, sig = v.split(".")
    assert s.unsign(body + "." + sig[:-1] + ("A" if sig[-1] != "A" else "B"), now=1000) is None
    assert Signer(b"j" * 32, "session").unsign(v, now=1000) is None  # other key
    assert Signer(b"k" * 32, "login").unsign(v, now=1000) is None  # other purpose
    for junk in ("", ".", "a.b.c", "no-dot", "%%%.%%%", "x" * 5000):
        assert s.unsign(junk, now=1000) is None
    no_exp = s.sign({"a": 1})
    assert s.unsign(no_exp, now=0) is None


def test_sessions_issue_read_revoke() -> None:
    creds = Credentials("t" * 20)
    ss = Sessions(b"k" * 32, creds, lifetime=60)
    sess, cookie = ss.issue(now=1_000)
    assert ss.read(cookie, now=1_030) == sess
    assert ss.read(cookie, now=1_061) is None
    ss.revoke(sess)
    assert ss.read(cookie, now=1_030) is None
    # a new token ends old sessions
    s2, c2 = ss.issue()
    assert Sessions(b"k" * 32, Credentials("u" * 20), lifetime=60).read(c2) is None
    assert csrf_ok(s2, s2.csrf) and not csrf_ok(s2, "") and not csrf_ok(s2, None)
    assert not csrf_ok(s2, s2.csrf + "x")


def test_login_nonce() -> None:
    ss = Sessions(b"k" * 32, Credentials("t" * 20), lifetime=60)
    nonce, cookie = ss.login_nonce()
    assert ss.check_login_nonce(cookie, nonce)
    assert not ss.check_login_nonce(cookie, nonce + "x")
    assert not ss.check_login_nonce(None, nonce)
    assert not ss.check_login_nonce(cookie, "")


def test_secret_file_is_made_private_and_reused(tmp_path: Path) -> None:
    p = tmp_path / "state" / "web-secret"
    k = load_secret(p)
    assert len(k) == 32 and stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert load_secret(p) == k
    p.write_bytes(b"short")  # a truncated key is replaced, never used
    assert load_secret(p) != b"short"


def test_secret_file_unwritable_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"cannot (read|write) the web secret .*web-secret"):
        load_secret(tmp_path / "file" / "web-secret")


def test_throttle() -> None:
    t = LoginThrottle(limit=3, window=100)
    for i in range(3):
        assert t.blocked("a", now=10 + i) == 0
        t.failed("a", now=10 + i)
    assert t.blocked("a", now=20) == pytest.approx(90)
    assert t.blocked("b", now=20) == 0  # per client
    assert t.blocked("a", now=111) == 0  # the window moved on
    t.failed("b", now=1)
    t.succeeded("b")
    assert t.blocked("b", now=2) == 0
