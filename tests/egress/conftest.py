"""Egress fixtures: two network namespaces joined by a veth pair (sender ``A``, receiver ``B``)
with aiosmtpd receivers in ``B``, and helpers to run client scripts in ``A`` as other users.

Addresses come from this session's slot N (see fixtures/slot.py): 10.250.N.1/2 and fd25:N::1/2;
namespace names carry N too, so parallel sessions never collide. Everything is removed at the
end of the session. Nothing here addresses anything but these namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.slot import Slot

HERE = Path(__file__).resolve().parent
LISTEN_PORTS = (25, 465, 587, 2525)  # aiosmtpd on b4/b6; nothing listens on c4/c6 (refused)


def _why_no_root_net() -> str:
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables)"
    for tool in ("ip", "setpriv", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    return ""


def why_no_bpf() -> str:
    """Why the eBPF collector cannot load here ("" if it can)."""
    if os.geteuid() != 0:
        return "eBPF needs root (CAP_BPF, CAP_PERFMON)"
    from mailwarden.egress.bpf import BpfCollector, CollectorUnavailable

    try:
        BpfCollector([2525]).open().close()
    except CollectorUnavailable as exc:
        return f"eBPF cannot load here: {exc}"
    return ""


requires_net = pytest.mark.skipif(bool(_why_no_root_net()), reason=_why_no_root_net() or "ok")


def sh(*cmd: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, **kw)  # type: ignore[call-overload]


@dataclass
class EgressNet:
    a: str  # sender namespace (clients, firewall rule, NFLOG readers)
    b: str  # receiver namespace (aiosmtpd)
    a4: str
    b4: str
    a6: str
    b6: str
    c4: str  # an address of B where nothing listens: connects are refused
    c6: str
    clients: Path  # client scripts, readable by every user

    def run_as(
        self,
        user: str,
        argv: list[str],
        *,
        cwd: Path | None = None,
        timeout: float = 60,
        ns: str | None = "A",
    ) -> dict[str, object]:
        """Run ``argv`` as ``user`` in namespace A (default) and parse its JSON output."""
        pw = pwd.getpwnam(user)
        prefix = ["ip", "netns", "exec", self.a] if ns == "A" else []
        cmd = [
            *prefix,
            "setpriv",
            f"--reuid={pw.pw_uid}",
            f"--regid={pw.pw_gid}",
            "--clear-groups",
            *argv,
        ]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout)
        assert p.returncode == 0, f"{cmd} failed: {p.stderr}"
        return json.loads(p.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def popen_as(
        self, user: str, argv: list[str], *, cwd: Path | None = None
    ) -> subprocess.Popen[str]:
        pw = pwd.getpwnam(user)
        cmd = [
            "ip",
            "netns",
            "exec",
            self.a,
            "setpriv",
            f"--reuid={pw.pw_uid}",
            f"--regid={pw.pw_gid}",
            "--clear-groups",
            *argv,
        ]
        return subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd
        )

    def netns_inode(self) -> int:
        return os.stat(f"/run/netns/{self.a}").st_ino


@pytest.fixture(scope="session")
def egress_net(mw_slot: Slot) -> Iterator[EgressNet]:
    why = _why_no_root_net()
    if why:
        pytest.skip(why)
    n = mw_slot.index
    a, b = f"mwe{n}a", f"mwe{n}b"
    for ns in (a, b):
        sh("ip", "netns", "del", ns, check=False)
    # pytest's tmp dirs are 0700: the clients run as other users, so use a world-readable one
    clients = Path(tempfile.mkdtemp(prefix=f"mw-egress-{n}-", dir="/tmp"))
    clients.chmod(0o755)
    for f in (HERE / "clients").iterdir():
        if f.is_file():
            shutil.copy(f, clients / f.name)
            (clients / f.name).chmod(0o755)
    net = EgressNet(
        a,
        b,
        f"10.250.{n}.1",
        f"10.250.{n}.2",
        f"fd25:{n}::1",
        f"fd25:{n}::2",
        f"10.250.{n}.3",
        f"fd25:{n}::3",
        clients,
    )
    listener: subprocess.Popen[bytes] | None = None
    try:
        sh("ip", "netns", "add", a)
        sh("ip", "netns", "add", b)
        sh(
            "ip",
            "link",
            "add",
            f"{a}-v",
            "netns",
            a,
            "type",
            "veth",
            "peer",
            "name",
            f"{b}-v",
            "netns",
            b,
        )
        for ns, dev, v4, v6 in ((a, f"{a}-v", net.a4, net.a6), (b, f"{b}-v", net.b4, net.b6)):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
            sh("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", b, "addr", "add", f"{net.c4}/24", "dev", f"{b}-v")
        sh("ip", "-n", b, "addr", "add", f"{net.c6}/64", "dev", f"{b}-v", "nodad")
        ready = clients / "listener.ready"
        targets = [f"{net.b4}:{p}" for p in LISTEN_PORTS] + [
            f"[{net.b6}]:{p}" for p in LISTEN_PORTS
        ]
        listener = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                b,
                sys.executable,
                str(HERE / "mx_listener.py"),
                str(ready),
                *targets,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 15
        while not ready.exists():
            if listener.poll() is not None or time.monotonic() > deadline:
                err = listener.stderr.read().decode() if listener.stderr else ""
                raise RuntimeError(f"MX listener did not start: {err}")
            time.sleep(0.05)
        yield net
    finally:
        if listener is not None:
            listener.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                listener.wait(5)
            if listener.poll() is None:
                listener.kill()
        for ns in (a, b):
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(clients, ignore_errors=True)


@pytest.fixture
def clean_rules(egress_net: EgressNet) -> Iterator[EgressNet]:
    """Namespace A without any ruleset before and after the test."""
    sh("ip", "netns", "exec", egress_net.a, "nft", "flush", "ruleset")
    yield egress_net
    sh("ip", "netns", "exec", egress_net.a, "nft", "flush", "ruleset")
