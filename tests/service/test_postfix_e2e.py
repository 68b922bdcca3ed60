"""The daemon against a real Postfix (tests/fixtures/postfix.py) delivering to fake receivers
behind real MX records: ``mailwarden run`` follows Postfix's own log, is killed with SIGKILL
mid-stream and restarted, serves /metrics; the store then holds exactly what a one-shot
``mailwarden analyze`` of the same stretch of the log holds, every recipient we sent to is
in it with the receiver's verdict, and the SASL-less local submissions are attributed."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fixtures.mail import make_message, sendmail, smtp_submit
from fixtures.slot import free_port
from fixtures.smtp import REPLIES, at_rcpt
from service.helpers import DaemonProc, checkpoint_offset, same_as_one_shot, wait_for
from service.helpers import write_config as _write_config

pytestmark = [pytest.mark.slow, pytest.mark.postfix]


def _send(postfix: Any, n0: int, n: int) -> list[str]:
    rcpts = []
    for i in range(n0, n0 + n):
        batch = [f"reader{i}@gmail.com", f"kunde{i}@bluewin.ch"]
        msg = make_message("news@example.test", batch, subject=f"issue {i}")
        if i % 2:
            sendmail(postfix, msg, batch, sender="news@example.test", user="www-data")
        else:
            assert smtp_submit(postfix, msg, batch, sender="news@example.test") == {}
        rcpts += batch
    return rcpts


def test_daemon_follows_real_postfix_across_a_kill(
    tmp_path: Path, postfix: Any, fake_mx: Any
) -> None:
    fake_mx.provider("google", publish=False)
    swiss = fake_mx.provider("swisscom", at_rcpt(REPLIES["swisscom/not-allowed"]), publish=False)
    fake_mx.publish()
    postfix.wait_until_quiet(timeout=60)
    start = postfix.log_size()
    url = f"sqlite:///{tmp_path / 'd.db'}"
    web_port = free_port()
    cfg = _write_config(
        tmp_path / "mw.toml",
        tmp_path / "state",
        url,
        log={"files": [str(postfix.log_path)]},
        breaker={"enabled": False, "postfix_config": str(postfix.config_dir)},
        service={"web": True},
        web={"bind": f"127.0.0.1:{web_port}", "token": "e2e-token-0123456789abcdef"},
    )
    d = DaemonProc(cfg, tmp_path / "etc", ["--no-socketmap"], tmp_path / "run.log")
    log = str(postfix.log_path)
    sent: list[str] = []
    try:
        d.start()
        wait_for(lambda: checkpoint_offset(url, log) >= start, 60, "following from the end")
        sent += _send(postfix, 0, 10)
        postfix.wait_until_quiet(timeout=90)
        wait_for(lambda: checkpoint_offset(url, log) == postfix.log_size(), 30, "part 1")
        sent += _send(postfix, 10, 6)
        d.kill9()  # while Postfix is still delivering the second part
        sent += _send(postfix, 16, 6)  # and more while the daemon is down
        d.start()
        sent += _send(postfix, 22, 6)
        postfix.wait_until_quiet(timeout=90)
        wait_for(lambda: checkpoint_offset(url, log) == postfix.log_size(), 60, "caught up")
        req = urllib.request.Request(f"http://127.0.0.1:{web_port}/metrics")
        req.add_header("Authorization", "Bearer e2e-token-0123456789abcdef")
        wait_for(lambda: _up(web_port), 30, "dashboard")
        with urllib.request.urlopen(req, timeout=10) as r:
            metrics = r.read().decode()
        assert d.term() == 0
    finally:
        d.stop()
    end = postfix.log_size()
    piece = tmp_path / "piece.log"
    with open(postfix.log_path, "rb") as f:
        f.seek(start)
        piece.write_bytes(f.read(end - start))
    got, _ = same_as_one_shot(piece, url, d.env, tmp_path / "ref.db")
    # every recipient is there with the receiver's verdict
    final = {a[3]: (a[5], a[6], a[9]) for a in got["attempts"]}
    # (the sender gets the bounce notifications: Postfix's own messages, origin "bounce")
    assert set(final) - {"news@example.test"} == set(sent)
    assert any(m[3] == "bounce" for m in got["messages"])
    assert {v for k, v in final.items() if "gmail" in k} == {("sent", "google", None)}
    assert {v for k, v in final.items() if "bluewin" in k} == {("bounced", "swisscom", "blocked")}
    assert sum(len(mx.rcpt_codes()) for mx in swiss) == 28
    origins = {(m[3], m[4]) for m in got["messages"]}
    assert ("uid", "33") in origins  # www-data's sendmail
    assert any(k == "client" for k, _ in origins)  # the SMTP submissions
    assert 'provider="swisscom",status="bounced"' in metrics


def _up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False
