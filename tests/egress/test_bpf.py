"""The eBPF collector, for real: bursts from another network namespace counted exactly,
attribution of short-lived direct-to-MX scripts after they exited, ports changed at run time,
systemd units and containers from the cgroup, and the committed object matching its source."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mailwarden.egress.attribute import Attributor
from mailwarden.egress.bpf import BpfCollector, RawEvent
from mailwarden.egress.enrich import cgroup2_mount, load_tables
from mailwarden.events import EgressConnect

from .conftest import EgressNet, why_no_bpf

ROOT = Path(__file__).resolve().parents[2]
WHY = why_no_bpf()
pytestmark = [pytest.mark.root, pytest.mark.skipif(bool(WHY), reason=WHY or "ok")]
PY = "/usr/bin/python3"


def drain(
    c: BpfCollector,
    attr: Attributor,
    keep: Callable[[EgressConnect], bool],
    want: int,
    timeout: float = 20.0,
) -> list[EgressConnect]:
    out: list[EgressConnect] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out += [e for e in (attr.from_bpf(r) for r in c.poll(100)) if keep(e)]
        if len(out) >= want:
            # anything beyond `want` would be a bug (duplicates): give it a chance to show
            out += [e for e in (attr.from_bpf(r) for r in c.poll(200)) if keep(e)]
            break
    return out


@pytest.fixture
def attributor() -> Attributor:
    return Attributor(load_tables(), [pwd.getpwnam("postfix").pw_uid])


def test_committed_object_matches_source(tmp_path: Path) -> None:
    if not shutil.which("clang") or not shutil.which("llvm-strip"):
        pytest.skip("clang/llvm-strip not installed: cannot rebuild bpf/")
    p = subprocess.run(
        ["make", "-s", "-C", str(ROOT / "bpf"), "check"], capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr + p.stdout


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["tp_btf", "tracepoint"])
def test_burst_of_1000_connects_all_reported_with_pid_uid_exe(
    egress_net: EgressNet, attributor: Attributor, mode: str
) -> None:
    net = egress_net
    ns = net.netns_inode()
    nobody = pwd.getpwnam("nobody").pw_uid
    with BpfCollector([25, 465, 587, 2525], mode=mode) as c:
        assert c.mode == mode
        procs = [
            net.popen_as("nobody", [PY, str(net.clients / "burst.py"), host, str(port), "250"])
            for host, port in ((net.b4, 25), (net.b6, 25), (net.c4, 2525), (net.c6, 2525))
        ]
        results = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            results.append(__import__("json").loads(out))
        evs = drain(c, attributor, lambda e: e.netns == ns and e.uid == nobody, 1000)
        emitted, dropped = c.stats()
    assert sum(r["ok"] for r in results) == 500
    assert sum(r["refused"] for r in results) == 500  # refused attempts are reported too
    assert len(evs) == 1000
    assert dropped == 0
    by_pid = {r["pid"]: r for r in results}
    assert {e.pid for e in evs} == set(by_pid)
    for pid, r in by_pid.items():
        assert sum(1 for e in evs if e.pid == pid) == r["ok"] + r["refused"] + r["other"]
    exe = os.path.realpath(PY)
    assert all(e.exe == exe and e.comm == "python3" and e.gid == nobody for e in evs)
    assert all(e.script == str(net.clients / "burst.py") and e.user == "nobody" for e in evs)
    assert {(e.daddr, e.dport, e.family) for e in evs} == {
        (net.b4, 25, 4),
        (net.b6, 25, 6),
        (net.c4, 2525, 4),
        (net.c6, 2525, 6),
    }
    assert not any(e.mta for e in evs)
    assert emitted >= 1000


@pytest.mark.parametrize(
    ("user", "argv", "script"),
    [
        ("www-data", [PY, "mx_send.py"], "mx_send.py"),  # relative path: resolved with the cwd
        ("nobody", ["/usr/bin/perl", "mx_send.pl"], "mx_send.pl"),
        ("www-data", ["/bin/bash", "./mx_send.sh"], "mx_send.sh"),
        ("nobody", ["/usr/bin/python3", "-u", "-W", "ignore", "mx_send.py"], "mx_send.py"),
    ],
)
def test_short_lived_direct_to_mx_script_is_attributed_after_it_exited(
    egress_net: EgressNet, attributor: Attributor, user: str, argv: list[str], script: str
) -> None:
    net = egress_net
    ns = net.netns_inode()
    pw = pwd.getpwnam(user)
    with BpfCollector([25, 465, 587, 2525]) as c:
        r = net.run_as(user, [*argv, net.b4, "587"], cwd=net.clients)
        assert r["result"] == "ok:220"
        # the script has exited: everything below comes from what the kernel captured
        assert not Path(f"/proc/{r['pid']}").exists()
        evs = drain(c, attributor, lambda e: e.netns == ns and e.uid == pw.pw_uid, 1, 5)
    assert len(evs) == 1
    e = evs[0]
    assert e.pid == r["pid"]
    assert e.script == str(net.clients / script)
    assert e.cwd == str(net.clients)
    assert e.exe == os.path.realpath(argv[0])
    assert e.cmdline[: len(argv)] == tuple(argv)
    assert (e.uid, e.gid, e.user) == (pw.pw_uid, pw.pw_gid, user)
    assert (e.daddr, e.dport) == (net.b4, 587)
    assert e.parents and e.ppid == e.parents[0][0]


def test_postfix_connects_are_marked_mta(egress_net: EgressNet, attributor: Attributor) -> None:
    net = egress_net
    uid = pwd.getpwnam("postfix").pw_uid
    with BpfCollector([25]) as c:
        net.run_as("postfix", [PY, str(net.clients / "mx_send.py"), net.b6, "25"])
        evs = drain(c, attributor, lambda e: e.netns == net.netns_inode() and e.uid == uid, 1, 5)
    assert len(evs) == 1 and evs[0].mta and evs[0].family == 6


def test_watched_ports_change_at_run_time(egress_net: EgressNet, attributor: Attributor) -> None:
    net = egress_net
    ns = net.netns_inode()
    burst = [PY, str(net.clients / "burst.py")]
    with BpfCollector([25]) as c:
        net.run_as("nobody", [*burst, net.b4, "587", "3"])
        net.run_as("nobody", [*burst, net.b4, "25", "2"])
        first = drain(c, attributor, lambda e: e.netns == ns, 2, 5)
        c.set_ports([587, 465])
        assert c.ports == [465, 587]
        net.run_as("nobody", [*burst, net.b4, "25", "2"])
        net.run_as("nobody", [*burst, net.b4, "587", "3"])
        second = drain(c, attributor, lambda e: e.netns == ns, 3, 5)
    assert [e.dport for e in first] == [25, 25]
    assert [e.dport for e in second] == [587, 587, 587]


@pytest.mark.parametrize(
    ("cgroup", "unit", "container"),
    [
        ("mwtest.slice/mw-egress-test-{n}.service", "mw-egress-test-{n}.service", ""),
        (
            "mwtest.slice/docker-{hex}.scope",
            "docker-{hex}.scope",
            "docker:{hex}",
        ),
    ],
)
def test_unit_and_container_from_the_cgroup_of_an_exited_process(
    egress_net: EgressNet, attributor: Attributor, cgroup: str, unit: str, container: str
) -> None:
    root = cgroup2_mount()
    if root is None:
        pytest.skip("no cgroup v2 hierarchy mounted")
    hexid = os.urandom(32).hex()
    n = os.getpid()
    rel = cgroup.format(n=n, hex=hexid)
    d = root / rel
    d.mkdir(parents=True, exist_ok=True)
    net = egress_net
    pw = pwd.getpwnam("www-data")
    try:
        with BpfCollector([465]) as c:
            cmd = (
                f"echo $$ > {d}/cgroup.procs && exec ip netns exec {net.a} setpriv "
                f"--reuid={pw.pw_uid} --regid={pw.pw_gid} --clear-groups {PY} "
                f"{net.clients}/mx_send.py {net.b4} 465"
            )
            p = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=30)
            assert p.returncode == 0, p.stderr
            evs = drain(c, attributor, lambda e: e.uid == pw.pw_uid and e.dport == 465, 1, 5)
    finally:
        for sub in (d, d.parent):
            with contextlib.suppress(OSError):
                sub.rmdir()
    assert len(evs) == 1
    e = evs[0]
    assert e.cgroup == "/" + rel
    assert e.unit == unit.format(n=n, hex=hexid)
    assert e.container == container.format(hex=hexid)


def test_raw_event_mirrors_the_c_struct() -> None:
    # field order/offsets the C side relies on (a change on one side only must fail here)
    assert RawEvent.daddr.offset == 48
    assert RawEvent.comm.offset == 64
    assert RawEvent.args.offset == 104
    assert RawEvent.exe.offset == 104 + 512
    src = (ROOT / "bpf" / "smtp_egress.bpf.c").read_text()
    for name, _ in RawEvent._fields_:
        assert f" {name}" in src or f"*{name}" in src, name


CGI_WORKER = """
import os, socket, sys, time, json
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
time.sleep(0.3)
s.close()
print(json.dumps({"pid": os.getpid()}))
"""

FPM_WORKER = r"""
use IO::Socket::IP;
$0 = "php-fpm: pool shop_2";
my $s = IO::Socket::IP->new(PeerHost => $ARGV[0], PeerPort => $ARGV[1], Timeout => 5) or die;
select(undef, undef, undef, 0.3);
close $s;
print "{\"pid\": $$}\n";
"""


def test_cgi_worker_script_from_its_environment(
    egress_net: EgressNet, attributor: Attributor
) -> None:
    net = egress_net
    uid = pwd.getpwnam("www-data").pw_uid
    with BpfCollector([25]) as c:
        p = net.popen_as(
            "www-data",
            [
                "/usr/bin/env",
                "SCRIPT_FILENAME=/var/www/shop/contact.php",
                "GATEWAY_INTERFACE=CGI/1.1",
                PY,
                "-c",
                CGI_WORKER,
                net.b4,
                "25",
            ],
        )
        # read the event while the worker still runs, as the collector does
        evs = drain(c, attributor, lambda e: e.uid == uid and e.netns == net.netns_inode(), 1, 5)
        p.communicate(timeout=10)
    assert len(evs) == 1
    assert evs[0].script == "/var/www/shop/contact.php"


def test_php_fpm_style_worker_title_gives_the_pool(
    egress_net: EgressNet, attributor: Attributor
) -> None:
    net = egress_net
    uid = pwd.getpwnam("www-data").pw_uid
    with BpfCollector([587]) as c:
        r = net.run_as("www-data", ["/usr/bin/perl", "-e", FPM_WORKER, net.b6, "587"])
        evs = drain(c, attributor, lambda e: e.uid == uid and e.netns == net.netns_inode(), 1, 5)
    assert len(evs) == 1
    e = evs[0]
    assert e.pid == r["pid"]
    assert e.cmdline[0] == "php-fpm: pool shop_2"  # the title the worker set, read in the kernel
    assert e.pool == "shop_2"
