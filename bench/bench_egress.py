#!/usr/bin/env python3
"""Egress benchmarks (root, this machine): run ``python bench/bench_egress.py [--quick]``.

Measures, in two network namespaces of its own (10.249.N.0/24, never anything else):

* capture: events the collector publishes of a 20,000-connect parallel burst (8 processes,
  half refused), target 100 %;
* latency: added time per connect with the collector running (5,000 sequential connects);
* alert: connect-to-alert time through collector -> socket -> ingester -> store -> notifier,
  target < 1 s;
* cpu: CPU of ``mailwarden egress run`` (a separate process) at 1,000 connects/s;
* sockdiag: cost of one sock_diag poll with 10,000 open sockets (all matching, and 10,000
  non-matching plus a few matching), and of the first poll's inode -> pid resolution.

Results go to bench/out/egress.json and are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mailwarden.config import EgressSettings  # noqa: E402
from mailwarden.egress.netns import in_netns  # noqa: E402

PY = "/usr/bin/python3"
N = os.getpid() % 250
NS_A, NS_B = f"mwb{N}a", f"mwb{N}b"
A4, B4 = f"10.249.{N}.1", f"10.249.{N}.2"

BURST = """
import os, socket, sys, json
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = ref = 0
for _ in range(n):
    s = socket.socket()
    try:
        s.connect((host, port)); ok += 1
    except OSError:
        ref += 1
    s.close()
print(json.dumps({"pid": os.getpid(), "ok": ok, "refused": ref}))
"""
RATE = """
import socket, sys, time
host, port, rate, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
t0 = time.monotonic(); n = 0
while True:
    due = t0 + n / rate
    now = time.monotonic()
    if now - t0 >= secs: break
    if due > now: time.sleep(due - now)
    s = socket.socket()
    try: s.connect((host, port))
    except OSError: pass
    s.close(); n += 1
print(n)
"""
ONE = """
import json, os, socket, sys, time
t0 = time.time()
s = socket.socket()
try: s.connect((sys.argv[1], int(sys.argv[2])))
except OSError: pass
s.close()
print(json.dumps({"t0": t0, "pid": os.getpid()}))
"""
LISTEN = """
import socket, sys, threading
for port in map(int, sys.argv[2:]):
    l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((sys.argv[1], port)); l.listen(4096)
    def loop(l=l):
        while True:
            c, _ = l.accept(); c.close()
    threading.Thread(target=loop, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def as_nobody(argv: list[str]) -> list[str]:
    pw = pwd.getpwnam("nobody")
    return [
        "ip",
        "netns",
        "exec",
        NS_A,
        "setpriv",
        f"--reuid={pw.pw_uid}",
        f"--regid={pw.pw_gid}",
        "--clear-groups",
        *argv,
    ]


class Env:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mw-bench-egress-", dir="/tmp"))
        self.dir.chmod(0o755)
        for name, text in (("burst.py", BURST), ("rate.py", RATE), ("one.py", ONE)):
            (self.dir / name).write_text(text)
            (self.dir / name).chmod(0o755)
        for ns in (NS_A, NS_B):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            sh("ip", "netns", "add", ns)
        sh(
            "ip",
            "link",
            "add",
            f"{NS_A}-v",
            "netns",
            NS_A,
            "type",
            "veth",
            "peer",
            "name",
            f"{NS_B}-v",
            "netns",
            NS_B,
        )
        for ns, dev, addr in ((NS_A, f"{NS_A}-v", A4), (NS_B, f"{NS_B}-v", B4)):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        self.listener = subprocess.Popen(
            ["ip", "netns", "exec", NS_B, PY, "-c", LISTEN, B4, "25"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.listener.stdout and self.listener.stdout.readline().strip() == "ready"
        self.ino = os.stat(f"/run/netns/{NS_A}").st_ino

    def close(self) -> None:
        self.listener.terminate()
        self.listener.wait(5)
        for ns in (NS_A, NS_B):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def start_service(env: Env, collectors: list[str], on_event=None):  # type: ignore[no-untyped-def]
    from mailwarden.egress.service import EgressService

    s = EgressSettings(
        socket=str(env.dir / f"egress-{time.monotonic_ns()}.sock"), collectors=collectors
    )
    svc = EgressService(s, on_event=on_event)
    t = threading.Thread(target=svc.run, daemon=True)
    t.start()
    svc.ready.wait(10)
    return svc, t


def bench_capture(env: Env, total: int) -> dict[str, object]:
    per = total // 8
    seen = 0
    lock = threading.Lock()
    nobody = pwd.getpwnam("nobody").pw_uid

    def count(ev):  # type: ignore[no-untyped-def]
        nonlocal seen
        if ev.netns == env.ino and ev.uid == nobody:
            with lock:
                seen += 1

    svc, t = start_service(env, ["ebpf"], count)
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(
            as_nobody([PY, str(env.dir / "burst.py"), B4, "25" if i % 2 else "2525", str(per)]),
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    done = [json.loads(p.communicate()[0]) for p in procs]
    burst_s = time.monotonic() - t0
    deadline = time.monotonic() + 30
    while seen < per * 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    lag = time.monotonic() - t0 - burst_s
    svc.stop()
    t.join(10)
    attempts = sum(d["ok"] + d["refused"] for d in done)
    return {
        "connects": attempts,
        "captured": seen,
        "percent": round(100 * seen / attempts, 3),
        "burst_seconds": round(burst_s, 2),
        "drain_after_burst_s": round(lag, 2),
        "ebpf_emitted": svc.ebpf_stats[0],
        "ebpf_dropped": svc.ebpf_stats[1],
    }


def bench_capture_enforced(env: Env, total: int) -> dict[str, object]:
    """The same burst with the egress rule enforcing in the clients' namespace: every attempt
    is rejected by the rule, logged to NFLOG and joined to its eBPF event (the verdict)."""
    from mailwarden.egress.firewall import Firewall, Policy
    from mailwarden.egress.service import EgressService

    fw = Firewall(Policy.make(ports=[25, 465, 587, 2525], users=["postfix"]), "nft", netns=NS_A)
    fw.apply()
    per = total // 8
    verdicts: dict[tuple[str, str], int] = {}
    lock = threading.Lock()
    nobody = pwd.getpwnam("nobody").pw_uid

    def count(ev):  # type: ignore[no-untyped-def]
        if ev.uid == nobody and (ev.netns == env.ino):
            with lock:
                k = (ev.source, ev.verdict)
                verdicts[k] = verdicts.get(k, 0) + 1

    s = EgressSettings(socket=str(env.dir / "enf.sock"), collectors=["ebpf", "nflog"])
    svc = EgressService(s, netns=NS_A, on_event=count)
    t = threading.Thread(target=svc.run, daemon=True)
    t.start()
    svc.ready.wait(10)
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(
            as_nobody([PY, str(env.dir / "burst.py"), B4, "25", str(per)]),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    done = [json.loads(p.communicate()[0]) for p in procs]
    burst_s = time.monotonic() - t0
    deadline = time.monotonic() + 30
    while sum(verdicts.values()) < per * 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)  # let unmatched NFLOG records (if any) come out
    svc.stop()
    t.join(10)
    counters = fw.check().counters
    fw.remove()
    return {
        "connects": sum(d["ok"] + d["refused"] for d in done),
        "refused": sum(d["refused"] for d in done),
        "burst_seconds": round(burst_s, 2),
        "events": {f"{k[0]}/{k[1] or 'none'}": v for k, v in sorted(verdicts.items())},
        "rule_block_packets": counters.get("block", {}).get("packets"),
        "ebpf_emitted": svc.ebpf_stats[0],
        "ebpf_dropped": svc.ebpf_stats[1],
    }


def _timed(env: Env, n: int) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        as_nobody([PY, str(env.dir / "burst.py"), B4, "2525", str(n)]),
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t0


def bench_latency(env: Env, n: int) -> dict[str, object]:
    base = [_timed(env, n) for _ in range(3)]
    svc, t = start_service(env, ["ebpf"])
    withc = [_timed(env, n) for _ in range(3)]
    svc.stop()
    t.join(10)
    b, w = statistics.median(base), statistics.median(withc)
    return {
        "connects": n,
        "without_s": round(b, 3),
        "with_s": round(w, 3),
        "added_us_per_connect": round((w - b) / n * 1e6, 1),
    }


def bench_alert(env: Env, rounds: int) -> dict[str, object]:
    from mailwarden.egress.client import ProviderResolver, ingest
    from mailwarden.egress.summary import Recorder
    from mailwarden.store.db import open_engine

    got: dict[str, float] = {}

    class Clock:
        def notify(self, alert):  # type: ignore[no-untyped-def]
            got[Path(alert.script).name] = time.time()

    svc, t = start_service(env, ["ebpf"])
    rec = Recorder(open_engine(f"sqlite:///{env.dir / 'bench.db'}"), notifier=Clock())
    ing = threading.Thread(
        target=ingest,
        args=(svc.socket_path, rec),
        kwargs={"resolver": ProviderResolver(lambda h, i: "")},
        daemon=True,
    )
    ing.start()
    time.sleep(0.5)
    lat = []
    for i in range(rounds):
        name = f"send{i}.py"
        shutil.copy(env.dir / "one.py", env.dir / name)
        out = subprocess.run(
            as_nobody([PY, str(env.dir / name), B4, "25"]),
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        t0 = json.loads(out)["t0"]
        deadline = time.monotonic() + 5
        while name not in got and time.monotonic() < deadline:
            time.sleep(0.005)
        if name in got:
            lat.append(got[name] - t0)
    svc.stop()
    t.join(10)
    return {
        "rounds": rounds,
        "alerted": len(lat),
        "median_ms": round(statistics.median(lat) * 1000, 1) if lat else None,
        "max_ms": round(max(lat) * 1000, 1) if lat else None,
    }


def _cpu(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def bench_cpu(env: Env, secs: float) -> dict[str, object]:
    mw = str(Path(sys.executable).parent / "mailwarden")
    sock = str(env.dir / "cpu.sock")
    proc = subprocess.Popen(
        [mw, "egress", "run", "--collector", "ebpf", "--socket", sock],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not os.path.exists(sock) and time.monotonic() < deadline:
        time.sleep(0.05)
    reader = subprocess.Popen(
        [mw, "egress", "watch", "--json", "--socket", sock],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    c0, t0 = _cpu(proc.pid), time.monotonic()
    out = subprocess.run(
        as_nobody([PY, "-c", RATE, B4, "2525", "1000", str(secs)]),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    c1, t1 = _cpu(proc.pid), time.monotonic()
    reader.terminate()
    proc.terminate()
    proc.wait(10)
    reader.wait(10)
    n = int(out.strip())
    return {
        "connects": n,
        "rate_per_s": round(n / (t1 - t0)),
        "collector_cpu_percent_of_one_core": round(100 * (c1 - c0) / (t1 - t0), 1),
    }


def bench_sockdiag(n_sockets: int) -> dict[str, object]:
    from mailwarden.egress.sockdiag import SockDiagPoller

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (max(soft, n_sockets + 2000), max(hard, n_sockets + 2000))
    )
    held: list[socket.socket] = []

    def open_pairs(port: int, pairs: int) -> None:
        ls = socket.socket()
        ls.bind(("127.0.0.1", port))
        ls.listen(pairs + 10)
        held.append(ls)
        for _ in range(pairs):
            c = socket.create_connection(("127.0.0.1", port))
            s, _ = ls.accept()
            held.extend((c, s))

    out: dict[str, object] = {}
    try:
        in_netns(NS_A, lambda: open_pairs(25, n_sockets // 2))
        p = SockDiagPoller([25, 465, 587, 2525], netns=NS_A)
        snaps = []
        for _ in range(20):
            t0 = time.perf_counter()
            found = p.snapshot()
            snaps.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        first = p.poll()
        first_s = time.perf_counter() - t0
        steady = []
        for _ in range(20):
            t0 = time.perf_counter()
            p.poll()
            steady.append(time.perf_counter() - t0)
        out["all_matching"] = {
            "sockets": n_sockets,
            "matches": len(found),
            "snapshot_ms": round(statistics.median(snaps) * 1000, 1),
            "first_poll_with_pid_resolution_ms": round(first_s * 1000, 1),
            "resolved": sum(1 for s in first if s.pid),
            "steady_poll_ms": round(statistics.median(steady) * 1000, 1),
        }
        p.close()
        for s in held:
            s.close()
        held.clear()
        in_netns(NS_A, lambda: open_pairs(8080, n_sockets // 2))
        in_netns(NS_A, lambda: open_pairs(587, 5))
        p = SockDiagPoller([25, 465, 587, 2525], netns=NS_A)
        snaps = []
        for _ in range(20):
            t0 = time.perf_counter()
            found = p.snapshot()
            snaps.append(time.perf_counter() - t0)
        p.close()
        out["mostly_other_ports"] = {
            "sockets": n_sockets + 10,
            "matches": len(found),
            "snapshot_ms": round(statistics.median(snaps) * 1000, 2),
        }
    finally:
        for s in held:
            s.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller numbers, for a smoke run")
    ap.add_argument(
        "--only", default="", help="comma list: capture,capture_enforced,latency,alert,cpu,sockdiag"
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_egress: needs root (eBPF, network namespaces); skipped", file=sys.stderr)
        return
    q = args.quick
    only = set(args.only.split(",")) if args.only else None
    env = Env()
    res: dict[str, object] = {"host": os.uname().release, "cpus": os.cpu_count()}
    try:
        for name, fn in (
            ("capture", lambda: bench_capture(env, 2000 if q else 20000)),
            ("capture_enforced", lambda: bench_capture_enforced(env, 2000 if q else 20000)),
            ("latency", lambda: bench_latency(env, 1000 if q else 5000)),
            ("alert", lambda: bench_alert(env, 5 if q else 20)),
            ("cpu", lambda: bench_cpu(env, 3 if q else 10)),
            ("sockdiag", lambda: bench_sockdiag(2000 if q else 10000)),
        ):
            if only and name not in only:
                continue
            res[name] = fn()
            print(name, json.dumps(res[name]), flush=True)
    finally:
        env.close()
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "egress.json").write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
