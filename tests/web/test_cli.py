"""``mailwarden web`` as a command: password hashes, bind errors, the one-time token."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fixtures.slot import free_port
from mailwarden.cli.web import is_loopback, parse_bind
from mailwarden.errors import ConfigError
from mailwarden.web.auth import verify_password

from .conftest import Imported


def run_cli(args: list[str], env: dict[str, str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailwarden.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def env(tmp_path: Path, store: Imported) -> dict[str, str]:
    cfg = tmp_path / "mailwarden.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[store]\nurl = "{store.url}"\n'
        f'[breaker]\npostfix_config = "{tmp_path / "no-postfix"}"\nreload_on_trip = false\n'
    )
    return {**os.environ, "MAILWARDEN_CONFIG": str(cfg), "MAILWARDEN_ETC": str(tmp_path / "etc")}


def test_hash_password_from_stdin(env: dict[str, str]) -> None:
    r = run_cli(["web", "--hash-password"], env, input="my long password\n")
    assert r.returncode == 0, r.stderr
    m = re.fullmatch(r'password_hash = "(scrypt\$[^"]+)"\n', r.stdout)
    assert m and verify_password("my long password", m[1])
    r = run_cli(["web", "--hash-password"], env, input="\n")
    assert r.returncode == 2 and "empty password" in r.stderr


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("127.0.0.1:8025", ("127.0.0.1", 8025)),
        ("[::1]:9000", ("::1", 9000)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_parse_bind(value: str, want: tuple[str, int]) -> None:
    assert parse_bind(value) == want


@pytest.mark.parametrize(
    "value", ["8025", "127.0.0.1", "1.2.3.4:0", "h:70000", "[zz::1]:80", "a b:1"]
)
def test_parse_bind_errors(value: str) -> None:
    with pytest.raises(ConfigError):
        parse_bind(value)


def test_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1") and not is_loopback("x")


def test_bad_bind_and_taken_port_exit_2(env: dict[str, str]) -> None:
    r = run_cli(["web", "--bind", "everywhere"], env)
    assert r.returncode == 2 and "bad bind address 'everywhere'" in r.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_cli(["web", "--bind", f"127.0.0.1:{port}"], env)
    assert r.returncode == 2, r.stderr
    assert f"could not listen on 127.0.0.1:{port}" in r.stderr
    assert "Traceback" not in r.stderr


def test_one_time_token_when_none_is_configured(env: dict[str, str]) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailwarden.cli", "web", "--bind", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        token = ""
        deadline = time.monotonic() + 60
        while not token and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            if line.startswith("    ") and len(line.strip()) >= 24:
                token = line.strip()
        assert token, "no one-time token printed"
        base = f"http://127.0.0.1:{port}"
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(base + "/healthz", timeout=2).close()
                break
            except OSError:
                time.sleep(0.2)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base + "/metrics", timeout=5)
        assert e.value.code == 401
        req = urllib.request.Request(
            base + "/metrics", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert b"mailwarden_deliveries_total" in r.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    assert rc in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean shutdown


def test_serving_from_a_thread(store: Imported, tmp_path: Path) -> None:
    """How the daemon serves the dashboard beside its own loop."""
    from mailwarden.config import Settings
    from mailwarden.web.app import create_app
    from mailwarden.web.server import start_in_thread

    s = Settings.model_validate(
        {"state_dir": str(tmp_path), "store": {"url": store.url}, "web": {"token": "t" * 20}}
    )
    app = create_app(s, health=lambda full: [])
    port = free_port()
    running = start_in_thread(app, "127.0.0.1", port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.read() == b"ok\n"
        with pytest.raises(ConfigError, match="could not listen"):
            start_in_thread(app, "127.0.0.1", port, timeout=5)
    finally:
        running.stop()
    assert not running.thread.is_alive()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
