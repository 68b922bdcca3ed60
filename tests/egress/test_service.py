"""End to end: the privileged collector (eBPF + the rule's NFLOG verdicts) publishing on a unix
socket, the unprivileged ingester recording summaries and alerts, the CLI views; and the NFLOG /
sock_diag fallbacks on their own. Clients run as nobody, www-data and postfix in namespace A."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.alerts import WebhookSink
from mailwarden.config import EgressSettings
from mailwarden.egress.client import ProviderResolver, ingest
from mailwarden.egress.firewall import Firewall, Policy
from mailwarden.egress.service import EgressService
from mailwarden.egress.summary import Alert, Recorder, alerts, top
from mailwarden.events import EgressConnect
from mailwarden.store.db import open_engine

from .conftest import EgressNet, requires_net, why_no_bpf

pytestmark = [pytest.mark.root, requires_net]
PY = "/usr/bin/python3"
MW = str(Path(sys.executable).parent / "mailwarden")


class Captured:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def notify(self, alert: Alert) -> None:
        self.alerts.append(alert)


class Running:
    """An EgressService and an ingester, each in a thread."""

    def __init__(self, net: EgressNet, tmp: Path, collectors: list[str]) -> None:
        self.sock = str(tmp / "egress.sock")
        self.settings = EgressSettings(socket=self.sock, collectors=collectors, poll_interval=0.1)
        self.svc = EgressService(self.settings, netns=net.a)
        self.engine = open_engine(f"sqlite:///{tmp / 'mw.db'}")
        self.captured = Captured()
        self.rec = Recorder(self.engine, notifier=self.captured)
        self.svc_thread = threading.Thread(target=self.svc.run, daemon=True)
        self.svc_thread.start()
        assert self.svc.ready.wait(10)
        deadline = time.monotonic() + 5
        while not os.path.exists(self.sock) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.recorded = 0
        self.hello: dict[str, object] = {}
        self.ing_thread = threading.Thread(target=self._ingest, daemon=True)
        self.ing_thread.start()
        deadline = time.monotonic() + 5
        while not self.hello and time.monotonic() < deadline:
            time.sleep(0.02)

    def _ingest(self) -> None:
        res = ProviderResolver(lambda host, ip: "")
        self.recorded = ingest(
            self.sock, self.rec, resolver=res, on_hello=lambda m: self.hello.update(m)
        )

    def stop(self) -> None:
        self.svc.stop()
        self.svc_thread.join(10)
        self.ing_thread.join(10)


@pytest.fixture
def enforced(clean_rules: EgressNet) -> Iterator[EgressNet]:
    fw = Firewall(
        Policy.make(ports=[25, 465, 587, 2525], users=["postfix"]), "nft", netns=clean_rules.a
    )
    fw.apply()
    yield clean_rules
    fw.remove()


def rows(engine) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    from sqlalchemy import select

    from mailwarden.store.egress import egress_events

    with engine.connect() as c:
        return [dict(r) for r in c.execute(select(egress_events)).mappings()]


@pytest.mark.skipif(bool(why_no_bpf()), reason=why_no_bpf() or "ok")
def test_collector_to_store_with_verdicts_alerts_and_views(
    enforced: EgressNet, tmp_path: Path
) -> None:
    net = enforced
    run = Running(net, tmp_path, ["ebpf", "nflog"])
    try:
        assert run.hello["collectors"] == ["ebpf:tp_btf", "nflog"]
        watch = subprocess.Popen(
            [MW, "egress", "watch", "--socket", run.sock, "--json", "--count", "4"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert watch.stdout is not None
        hello = watch.stdout.readline()  # connected: events from now on reach it
        assert json.loads(hello)["type"] == "hello"
        c = net.clients
        r1 = net.run_as("nobody", [PY, "mx_send.py", net.b4, "25"], cwd=c)
        r2 = net.run_as("www-data", ["/usr/bin/perl", "mx_send.pl", net.b6, "587"], cwd=c)
        r3 = net.run_as("postfix", ["/bin/bash", "mx_send.sh", net.b4, "465"], cwd=c)
        r4 = net.run_as("nobody", [PY, "burst.py", net.b4, "2525", "5"], cwd=c)
        watched, _ = watch.communicate(timeout=15)
        time.sleep(1.0)
    finally:
        run.stop()
    assert [r1["result"], r2["result"], r3["result"]] == ["refused", "refused", "ok:220"]
    assert r4["refused"] == 5
    evs = [e for e in rows(run.engine) if e["netns"] == net.netns_inode()]
    by_pid: dict[int, list[dict]] = {}  # type: ignore[type-arg]
    for e in evs:
        by_pid.setdefault(e["pid"], []).append(e)
    assert sorted(len(v) for v in by_pid.values()) == [1, 1, 1, 5], [
        (e["pid"], e["source"], e["verdict"], e["uid"], e["daddr"], e["dport"]) for e in evs
    ]
    (e1,), (e2,), (e3,) = by_pid[r1["pid"]], by_pid[r2["pid"]], by_pid[r3["pid"]]
    assert (e1["source"], e1["verdict"], e1["user"]) == ("ebpf", "blocked", "nobody")
    assert e1["script"] == str(c / "mx_send.py")
    assert (e2["verdict"], e2["user"], e2["script"]) == (
        "blocked",
        "www-data",
        str(c / "mx_send.pl"),
    )
    assert (e3["verdict"], e3["user"], e3["mta"]) == ("allowed", "postfix", True)
    assert all(e["verdict"] == "blocked" for e in by_pid[r4["pid"]])
    # one alert per (who, port): nobody/mx_send.py/25, www-data/mx_send.pl/587, nobody/burst.py/2525
    got = sorted((a.user, Path(a.script).name, a.port) for a in run.captured.alerts)
    assert got == [
        ("nobody", "burst.py", 2525),
        ("nobody", "mx_send.py", 25),
        ("www-data", "mx_send.pl", 587),
    ]
    stored = {a["port"]: a for a in alerts(run.engine)}
    assert stored[2525]["count"] == 5 and stored[2525]["blocked"] == 5
    assert stored[25]["evidence"]["pid"] == r1["pid"]
    assert stored[25]["evidence"]["cmdline"] == [PY, "mx_send.py", net.b4, "25"]
    t = {(r["user"], r["port"]): r for r in top(run.engine)}
    assert t[("postfix", 465)]["allowed"] is True and t[("nobody", 2525)]["count"] == 5
    assert t[("nobody", 2525)]["allowed"] is False and t[("nobody", 2525)]["destinations"] == 1
    assert set(t[("nobody", 25)]) == {
        "host",
        "uid",
        "user",
        "exe",
        "unit",
        "script",
        "port",
        "provider",
        "allowed",
        "count",
        "first_seen",
        "last_seen",
        "destinations",
    }
    lines = [json.loads(x) for x in watched.splitlines()]
    assert sum(1 for m in lines if m["type"] == "connect") == 4


def test_nflog_fallback_alone_attributes_uid_and_verdict(
    enforced: EgressNet, tmp_path: Path
) -> None:
    net = enforced
    run = Running(net, tmp_path, ["nflog"])
    try:
        net.run_as("www-data", [PY, str(net.clients / "mx_send.py"), net.b6, "25"])
        net.run_as("postfix", [PY, str(net.clients / "mx_send.py"), net.b4, "587"])
        time.sleep(1.0)
    finally:
        run.stop()
    got = sorted(
        (e["source"], e["user"], e["daddr"], e["dport"], e["verdict"]) for e in rows(run.engine)
    )
    assert got == [
        ("nflog", "postfix", net.b4, 587, "allowed"),
        ("nflog", "www-data", net.b6, 25, "blocked"),
    ]


def test_sockdiag_fallback_alone_sees_held_sessions(clean_rules: EgressNet, tmp_path: Path) -> None:
    net = clean_rules
    run = Running(net, tmp_path, ["sockdiag"])
    try:
        r = net.run_as("www-data", [PY, str(net.clients / "hold.py"), net.b4, "25", "0.3"])
        time.sleep(0.5)
    finally:
        run.stop()
    (e,) = rows(run.engine)
    assert (e["source"], e["user"], e["pid"], e["daddr"], e["dport"]) == (
        "sockdiag",
        "www-data",
        r["pid"],
        net.b4,
        25,
    )
    assert e["sport"] and e["saddr"] == net.a4
    assert [a.user for a in run.captured.alerts] == ["www-data"]


def test_cli_top_json_reads_the_store(tmp_path: Path) -> None:
    cfg = tmp_path / "mailwarden.toml"
    cfg.write_text(f'state_dir = "{tmp_path}"\n')
    eng = open_engine(f"sqlite:///{tmp_path / 'mailwarden.db'}")
    now = time.time()
    Recorder(eng, notifier=Captured()).record(
        [
            EgressConnect(
                ts=now,
                source="ebpf",
                daddr="192.0.2.7",
                dport=25,
                uid=33,
                user="www-data",
                exe="/usr/bin/php8.2",
                script="/var/www/shop/mail.php",
                pid=7,
            ),
            EgressConnect(
                ts=now + 1,
                source="ebpf",
                daddr="192.0.2.8",
                dport=25,
                uid=33,
                user="www-data",
                exe="/usr/bin/php8.2",
                script="/var/www/shop/mail.php",
                pid=8,
            ),
        ]
    )
    env = dict(os.environ, MAILWARDEN_CONFIG=str(cfg))
    p = subprocess.run([MW, "egress", "top", "--json"], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    (row,) = json.loads(p.stdout)["rows"]
    assert row["count"] == 2 and row["destinations"] == 2 and row["uid"] == 33
    assert row["script"] == "/var/www/shop/mail.php" and row["allowed"] is True
    p = subprocess.run([MW, "egress", "alerts", "--json"], capture_output=True, text=True, env=env)
    (a,) = json.loads(p.stdout)["alerts"]
    assert a["count"] == 2 and a["evidence"]["destinations"] == ["192.0.2.7", "192.0.2.8"]


def test_doctor_reports_collectors(tmp_path: Path) -> None:
    cfg = tmp_path / "mailwarden.toml"
    cfg.write_text(f'state_dir = "{tmp_path}"\n[egress]\nsocket = "{tmp_path}/none.sock"\n')
    env = dict(os.environ, MAILWARDEN_CONFIG=str(cfg))
    p = subprocess.run([MW, "egress", "doctor", "--json"], capture_output=True, text=True, env=env)
    probes = {x["name"]: x for x in json.loads(p.stdout)["probes"]}
    ebpf_ok = not why_no_bpf()
    assert probes["ebpf:tp_btf"]["ok"] is ebpf_ok
    assert p.returncode == (0 if ebpf_ok else 1)
    assert probes["sockdiag"]["ok"] is True
    assert probes["socket"]["ok"] is False and "not running" in probes["socket"]["detail"]
    _ = pwd


SENDERS = [
    ([PY, "mx_send.py"], "mx_send.py"),
    (["/usr/bin/perl", "mx_send.pl"], "mx_send.pl"),
    (["/bin/bash", "mx_send.sh"], "mx_send.sh"),
]


@pytest.mark.slow
@pytest.mark.skipif(bool(why_no_bpf()), reason=why_no_bpf() or "ok")
def test_every_attempt_attributed_and_every_non_mta_attempt_refused(
    enforced: EgressNet, tmp_path: Path
) -> None:
    """The namespace scenario across users, ports, families and sender languages."""
    net = enforced
    run = Running(net, tmp_path, ["ebpf", "nflog"])
    attempts = []
    try:
        i = 0
        for user in ("nobody", "www-data", "daemon", "mail", "postfix"):
            for port in (25, 465, 587, 2525):
                argv, script = SENDERS[i % len(SENDERS)]
                host = net.b4 if i % 2 else net.b6
                r = net.run_as(user, [*argv, host, str(port)], cwd=net.clients)
                attempts.append((user, port, host, script, r))
                i += 1
        time.sleep(1.0)
    finally:
        run.stop()
    evs = {e["pid"]: e for e in rows(run.engine) if e["netns"] == net.netns_inode()}
    assert len(evs) == len(attempts)
    for user, port, host, script, r in attempts:
        e = evs[r["pid"]]
        mta = user == "postfix"
        assert r["result"] == ("ok:220" if mta else "refused"), (user, port, r)
        assert (e["user"], e["dport"], e["daddr"]) == (user, port, host)
        assert e["uid"] == pwd.getpwnam(user).pw_uid
        assert e["script"] == str(net.clients / script)
        assert e["verdict"] == ("allowed" if mta else "blocked")
        assert bool(e["mta"]) is mta
    assert len(run.captured.alerts) == 4 * 4  # one per non-MTA (who, port)


@pytest.mark.skipif(bool(why_no_bpf()), reason=why_no_bpf() or "ok")
def test_reload_changes_watched_ports_while_running(clean_rules: EgressNet, tmp_path: Path) -> None:
    net = clean_rules
    got: list[EgressConnect] = []
    s = EgressSettings(socket=str(tmp_path / "s.sock"), collectors=["ebpf"], ports=[25])
    svc = EgressService(s, on_event=got.append)
    t = threading.Thread(target=svc.run, daemon=True)
    t.start()
    assert svc.ready.wait(10)
    burst = [PY, str(net.clients / "burst.py")]
    try:
        net.run_as("nobody", [*burst, net.b4, "587", "2"])
        net.run_as("nobody", [*burst, net.b4, "25", "1"])
        time.sleep(0.3)
        svc.reload(s.model_copy(update={"ports": [587]}))
        time.sleep(0.3)
        net.run_as("nobody", [*burst, net.b4, "25", "1"])
        net.run_as("nobody", [*burst, net.b4, "587", "3"])
        time.sleep(0.5)
    finally:
        svc.stop()
        t.join(10)
    mine = [e.dport for e in got if e.netns == net.netns_inode()]
    assert mine == [25, 587, 587, 587]


@pytest.mark.skipif(bool(why_no_bpf()), reason=why_no_bpf() or "ok")
def test_cli_run_ingest_top_as_separate_processes(
    egress_net: EgressNet, tmp_path: Path, webhook_sink: WebhookSink
) -> None:
    """`egress run` (root) and `egress ingest` (here also root, any user that may read the
    socket works) as the two processes they are in production; the alert takes the one alert
    path (the [alerts] webhook, a real HTTP receiver), tagged with this host."""
    net = egress_net
    sock = tmp_path / "egress.sock"
    cfg = tmp_path / "mailwarden.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path}"\n[log]\nhost = "mx-egress"\n'
        f'[egress]\nsocket = "{sock}"\ncollectors = ["ebpf"]\n'
        f'[alerts]\nwebhook_url = "{webhook_sink.url()}"\n'
    )
    env = dict(os.environ, MAILWARDEN_CONFIG=str(cfg))
    run = subprocess.Popen([MW, "egress", "run"], env=env, stderr=subprocess.PIPE, text=True)
    ing = None
    first = ""
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sock.exists(), run.stderr.read() if run.poll() is not None and run.stderr else ""
        assert oct(sock.stat().st_mode & 0o777) == "0o600"
        ing = subprocess.Popen(
            [MW, "egress", "ingest", "--once"], env=env, stderr=subprocess.PIPE, text=True
        )
        assert ing.stderr is not None
        first = ing.stderr.readline()  # printed once connected (the hello line arrived)
        assert first.startswith("egress: recording events of"), first
        r = net.run_as("www-data", ["/usr/bin/perl", "mx_send.pl", net.b4, "465"], cwd=net.clients)
        time.sleep(1.0)
    finally:
        run.terminate()
        run.wait(10)
        if ing is not None:
            ing.wait(10)
    err = first + (ing.stderr.read() if ing is not None and ing.stderr else "")
    assert ing is not None and ing.returncode == 0, err + (run.stderr.read() if run.stderr else "")
    assert "connected to remote SMTP port 465" in err
    p = subprocess.run([MW, "egress", "top", "--json"], capture_output=True, text=True, env=env)
    rows_ = [x for x in json.loads(p.stdout)["rows"] if x["user"] == "www-data"]
    assert [(x["port"], x["script"], x["count"]) for x in rows_] == [
        (465, str(net.clients / "mx_send.pl"), 1)
    ]
    assert r["result"] == "ok:220"
    [hook] = [q.json() for q in webhook_sink.requests if q.json()["kind"] == "egress"]
    assert hook["host"] == "mx-egress" and hook["key"].startswith("egress:mx-egress:")
    assert hook["data"]["port"] == 465 and hook["data"]["script"] == str(net.clients / "mx_send.pl")
    assert rows_ and all(x["host"] == "mx-egress" for x in json.loads(p.stdout)["rows"])


def test_views_print_process_text_inertly(tmp_path: Path) -> None:
    """argv and paths come from other users: no terminal escapes, no rich markup."""
    cfg = tmp_path / "mailwarden.toml"
    cfg.write_text(f'state_dir = "{tmp_path}"\n')
    eng = open_engine(f"sqlite:///{tmp_path / 'mailwarden.db'}")
    evil = "/w/[red]x\x1b[2J\x07.php"
    Recorder(eng, notifier=Captured()).record(
        [
            EgressConnect(
                ts=time.time(),
                source="ebpf",
                daddr="192.0.2.7",
                dport=25,
                uid=33,
                user="www-data",
                exe="/usr/bin/php",
                script=evil,
                cmdline=("php", evil),
            )
        ]
    )
    env = dict(os.environ, MAILWARDEN_CONFIG=str(cfg), COLUMNS="300")
    for cmd in (["egress", "top"], ["egress", "alerts"]):
        p = subprocess.run([MW, *cmd], capture_output=True, text=True, env=env)
        assert p.returncode == 0, p.stderr
        assert "\x1b" not in p.stdout and "\x07" not in p.stdout
        assert "[red]x?[2J?.php" in p.stdout


def test_ingest_waits_for_the_collector_unless_once(tmp_path: Path) -> None:
    cfg = tmp_path / "mailwarden.toml"
    cfg.write_text(f'state_dir = "{tmp_path}"\n[egress]\nsocket = "{tmp_path}/absent.sock"\n')
    env = dict(os.environ, MAILWARDEN_CONFIG=str(cfg))
    p = subprocess.run([MW, "egress", "ingest", "--once"], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "cannot connect to the egress collector" in p.stderr
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([MW, "egress", "ingest"], capture_output=True, text=True, env=env, timeout=4)
