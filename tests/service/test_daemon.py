"""``mailwarden run`` as a real subprocess: SIGHUP reload without losing state, the socketmap
server restarted when it dies (and gone when the daemon is killed), egress events recorded
from a collector socket and alerted through the one dispatcher, clear errors for bad input."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fixtures.alerts import WebhookSink
from mailwarden.egress.wire import encode, encode_msg
from mailwarden.events import EgressConnect
from service.helpers import (
    DaemonProc,
    checkpoint_offset,
    daemon_on,
    genlog,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.slow]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _lookup(port: int, provider_key: str = "transport", name: str = "gmail.com") -> bytes:
    """One socketmap request (netstring) -> the raw answer."""
    req = f"{provider_key} {name}".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(str(len(req)).encode() + b":" + req + b",")
        return s.recv(4096)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _socketmap_port(cfg: Path) -> int:
    for line in cfg.read_text().splitlines():
        if line.startswith("socketmap_port"):
            return int(line.split("=")[1])
    raise AssertionError("no port")


def test_socketmap_restarted_when_it_dies_and_gone_with_the_daemon(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    genlog(log, 300, seed=5)
    url = f"sqlite:///{tmp_path / 'd.db'}"
    hook = WebhookSink()
    cfg = write_config(
        tmp_path / "mw.toml", tmp_path / "state", url, alerts={"webhook_url": hook.url()}
    )
    port = _socketmap_port(cfg)
    pidfile = tmp_path / "state" / "socketmap.pid"
    d = DaemonProc(cfg, tmp_path / "etc", [str(log)], tmp_path / "run.log")
    try:
        d.start()
        wait_for(lambda: _port_open(port), 60, "socketmap listening")
        assert _lookup(port).endswith(b",")  # a netstring answer
        first = int(pidfile.read_text())
        os.kill(first, signal.SIGKILL)
        wait_for(
            lambda: pidfile.exists() and int(pidfile.read_text() or 0) not in (0, first),
            30,
            "a new socketmap server",
        )
        wait_for(lambda: _port_open(port), 30, "socketmap back")
        wait_for(lambda: len(hook.requests) > 0, 30, "an alert about it")
        alert = hook.requests[0].json()
        assert alert["kind"] == "service" and alert["severity"] == "critical"
        assert alert["data"]["component"] == "socketmap"
        # a malformed request is dropped, the server goes on answering the others
        with socket.create_connection(("127.0.0.1", port), timeout=2) as bad:
            bad.sendall(b"999999999999:junk,")
            assert bad.recv(100) == b""
        assert _lookup(port).endswith(b",")
        second = int(pidfile.read_text())
        d.kill9()  # the child must not outlive the daemon (it would keep the port)
        wait_for(lambda: not _pid_alive(second), 10, "socketmap child gone")
        assert not _port_open(port)
        d.start()  # and a restarted daemon gets the port again
        wait_for(lambda: _port_open(port), 60, "socketmap listening again")
        assert d.term() == 0
        assert not _port_open(port) and not pidfile.exists()
    finally:
        d.stop()
        hook.close()
    events = d.events()
    assert all("raw" not in e for e in events), [e for e in events if "raw" in e][:3]
    assert any(e.get("logger") == "mailwarden.socketmap" for e in events)  # its lines, relayed
    restarts = [e for e in events if e.get("msg") == "child exited; restarting"]
    assert restarts and restarts[0]["component"] == "socketmap"


def test_sighup_reloads_config_and_rules_keeping_state(tmp_path: Path) -> None:
    lines, _, log, url, d = daemon_on(tmp_path, 1200, seed=9, head=600)
    cfg, etc = d.config, tmp_path / "etc"
    try:
        d.start()
        wait_for(lambda: checkpoint_offset(url, str(log)) == log.stat().st_size, 60, "ingested")
        # 1. a broken config file: refused, the daemon keeps running as it was
        good = cfg.read_text()
        cfg.write_text(good + "\n[service]\nlog_format = 'xml'\n")
        d.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        wait_for(
            lambda: any(
                e.get("msg") == "reload refused; the running configuration stays"
                for e in d.events()
            ),
            20,
            "refused",
        )
        assert d.alive()
        # 2. a good one: logfmt from now on, and a local breaker rule table is taken
        cfg.write_text(
            good.replace('"commit_interval"', '"commit_interval"').replace(
                "[service]", '[service]\nlog_format = "logfmt"'
            )
        )
        (etc / "breaker").mkdir(parents=True)
        (etc / "breaker" / "default.toml").write_text(
            (
                Path(__file__).resolve().parents[2] / "src/mailwarden/data/breaker/default.toml"
            ).read_text()
        )
        d.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        wait_for(lambda: 'msg="configuration reloaded"' in d.log.read_text(), 20, "reloaded")
        wait_for(
            lambda: "breaker rules and data tables reloaded" in d.log.read_text(),
            20,
            "rules reloaded by the log thread",
        )
        with log.open("ab") as f:  # following goes on where it was
            f.write(b"".join(lines[600:]))
        wait_for(lambda: checkpoint_offset(url, str(log)) == log.stat().st_size, 60, "rest")
        assert d.term() == 0
    finally:
        d.stop()
    text = d.log.read_text()
    after = text[text.index("configuration reloaded") :].splitlines()[1:]
    assert after and all(line.startswith("ts=") for line in after if line.strip()), after[:3]
    assert sum(1 for e in d.events() if e.get("msg") == "following the log") == 1  # not restarted


class FakeCollector:
    """The privileged collector's side of the egress socket, speaking the real wire format."""

    def __init__(self, path: Path, events: list[EgressConnect]) -> None:
        self.path = path
        self.events = events
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(str(path))
        self.srv.listen(4)
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self) -> None:
        self.srv.settimeout(0.2)
        while not self.stop.is_set():
            try:
                c, _ = self.srv.accept()
            except TimeoutError:
                continue
            with c:
                c.sendall(encode_msg("hello", version=1, collectors=["sockdiag"], ports=[25]))
                c.sendall(b"this is not json\n")  # malformed: skipped, not fatal
                for ev in self.events:
                    c.sendall(encode(ev))
                self.stop.wait(30)

    def close(self) -> None:
        self.stop.set()
        self.t.join(5)
        self.srv.close()


def test_egress_events_recorded_and_alerted_through_the_dispatcher(tmp_path: Path) -> None:
    from sqlalchemy import func, select

    from mailwarden.store.db import open_engine
    from mailwarden.store.egress import egress_events
    from mailwarden.store.service import alerts

    sock = tmp_path / "egress.sock"
    now = time.time()
    evs = [
        EgressConnect(
            now,
            "sockdiag",
            "198.51.100.7",
            25,
            pid=4242,
            uid=33,
            user="www-data",
            comm="php-fpm8.2",
            exe="/usr/sbin/php-fpm8.2",
            script="/var/www/shop/mailer.php",
        ),
        EgressConnect(
            now,
            "sockdiag",
            "198.51.100.8",
            25,
            pid=100,
            uid=107,
            user="postfix",
            comm="smtp",
            exe="/usr/lib/postfix/sbin/smtp",
            mta=True,
        ),
    ]
    coll = FakeCollector(sock, evs)
    hook = WebhookSink()
    log = tmp_path / "mail.log"
    log.write_text("")
    url = f"sqlite:///{tmp_path / 'd.db'}"
    cfg = write_config(
        tmp_path / "mw.toml",
        tmp_path / "state",
        url,
        service={"egress": True},
        egress={"socket": str(sock)},
        alerts={"webhook_url": hook.url()},
        dns={"nameservers": ["127.0.0.1"], "port": 9, "timeout": 0.2},
    )
    d = DaemonProc(cfg, tmp_path / "etc", ["--no-socketmap", str(log)], tmp_path / "run.log")
    try:
        d.start()
        wait_for(lambda: len(hook.requests) >= 1, 60, "egress alert delivered")
        assert d.term() == 0
    finally:
        d.stop()
        coll.close()
        hook.close()
    body = hook.requests[0].json()
    assert body["kind"] == "egress" and body["data"]["script"] == "/var/www/shop/mailer.php"
    assert len(hook.requests) == 1  # the MTA's own connection is counted, never alerted on
    e = open_engine(url)
    with e.connect() as c:
        assert c.execute(select(func.count()).select_from(egress_events)).scalar() == 2
        assert c.execute(select(alerts.c.kind)).scalars().all() == ["egress"]
        host = c.execute(select(alerts.c.host)).scalar()
        # the recorded events carry the daemon's host, as its alert does
        assert set(c.execute(select(egress_events.c.host)).scalars()) == {host}
    # the daily report (from the egress tables' own host column) shows it for the fleet and
    # for the host that raised it, not for others
    from mailwarden.report.daily import build_report

    fleet = build_report(e, since=now - 3600, until=time.time() + 1)
    mine = build_report(e, since=now - 3600, until=time.time() + 1, hosts=[host])
    other = build_report(e, since=now - 3600, until=time.time() + 1, hosts=["elsewhere"])
    assert [x["script"] for x in fleet["egress"]] == ["/var/www/shop/mailer.php"]
    assert [x["script"] for x in mine["egress"]] == ["/var/www/shop/mailer.php"]
    assert other["egress"] == []


def test_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "mw.toml"
    cfg.write_text("[service]\ncommit_interval = -1\n")
    env = {**os.environ, "MAILWARDEN_CONFIG": str(cfg), "MAILWARDEN_ETC": str(tmp_path / "etc")}
    p = subprocess.run(
        [sys.executable, "-m", "mailwarden.cli", "run", str(tmp_path / "x.log")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "commit_interval" in p.stderr
    cfg.write_text("")
    p = subprocess.run(
        [sys.executable, "-m", "mailwarden.cli", "run", "--journal", "a.log"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "not both" in p.stderr
    p = subprocess.run(
        [sys.executable, "-m", "mailwarden.cli", "run", "--db", "mysql://x/y", "a.log"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "unsupported database" in p.stderr


def test_dashboard_and_metrics_served_by_the_daemon(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    from fixtures.slot import free_port

    log = tmp_path / "mail.log"
    genlog(log, 600, seed=4)
    url = f"sqlite:///{tmp_path / 'd.db'}"
    port = free_port()
    cfg = write_config(
        tmp_path / "mw.toml",
        tmp_path / "state",
        url,
        service={"web": True},
        web={"bind": f"127.0.0.1:{port}", "token": "t0ken-for-the-test-0123456789"},
    )
    d = DaemonProc(
        cfg, tmp_path / "etc", ["--from-start", "--no-socketmap", str(log)], tmp_path / "run.log"
    )

    def get(path: str, token: str = "") -> tuple[int, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    try:
        d.start()
        wait_for(lambda: checkpoint_offset(url, str(log)) == log.stat().st_size, 60, "ingested")
        wait_for(lambda: _port_open(port), 60, "dashboard listening")
        assert get("/healthz")[0] == 200
        code, body = get("/metrics")
        assert code == 401 and "Bearer" in body  # unauthenticated: a clear refusal
        assert get("/metrics", "wrong")[0] == 401
        code, body = get("/metrics", "t0ken-for-the-test-0123456789")
        assert code == 200
        assert 'mailwarden_deliveries_total{host="vm"' in body
        parsed = [
            ln
            for ln in body.splitlines()
            if ln.startswith('mailwarden_log_lines_total{result="parsed"}')
        ]
        assert parsed and float(parsed[0].split()[-1]) > 500
        assert get("/?days=notanumber")[0] in (401, 422)
        assert d.term() == 0
    finally:
        d.stop()
    assert not _port_open(port)
