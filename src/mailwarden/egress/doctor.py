"""``egress doctor``: which collectors work on this host, and why the others do not.

Each probe really tries (load and attach the BPF program, bind the NFLOG group, run a sock_diag
dump) and releases what it took at once.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from mailwarden.config import EgressSettings


@dataclass(frozen=True, slots=True)
class Probe:
    name: str
    ok: bool
    detail: str


def _kernel_config(option: str) -> str:
    import gzip

    try:
        with gzip.open("/proc/config.gz", "rt") as fh:
            for line in fh:
                if line.startswith(option + "=") or line.startswith(f"# {option} is not set"):
                    return line.strip()
    except OSError:
        return ""
    return ""


def probe_all(s: EgressSettings) -> list[Probe]:
    from mailwarden.egress.bpf import BTF_VMLINUX, TRACEFS, BpfCollector, CollectorUnavailable
    from mailwarden.egress.nflog import NflogError, NflogReader
    from mailwarden.egress.sockdiag import SockDiagPoller

    out: list[Probe] = []
    root = os.geteuid() == 0
    out.append(
        Probe(
            "root",
            root,
            "running as root"
            if root
            else "not root: eBPF, NFLOG and the firewall need CAP_BPF/CAP_PERFMON/CAP_NET_ADMIN",
        )
    )
    out.append(
        Probe(
            "btf",
            BTF_VMLINUX.exists(),
            f"{BTF_VMLINUX} present"
            if BTF_VMLINUX.exists()
            else f"{BTF_VMLINUX} missing (kernel without CONFIG_DEBUG_INFO_BTF): no CO-RE",
        )
    )
    for mode in ("tp_btf", "tracepoint"):
        try:
            c = BpfCollector(s.ports, mode=mode).open()
            c.close()
            extra = " (tracefs mounted)" if mode == "tracepoint" else " (no tracefs needed)"
            out.append(Probe(f"ebpf:{mode}", True, "loads and attaches" + extra))
        except CollectorUnavailable as exc:
            out.append(Probe(f"ebpf:{mode}", False, str(exc)))
    kp = _kernel_config("CONFIG_KPROBES")
    if kp.startswith("#"):
        out.append(Probe("kprobes", False, "kernel built without kprobes (not used by mailwarden)"))
    out.append(
        Probe(
            "tracefs",
            (TRACEFS / "events").is_dir(),
            "mounted" if (TRACEFS / "events").is_dir() else "not mounted",
        )
    )
    for g in (s.nflog_allow_group, s.nflog_block_group):
        try:
            NflogReader(g).close()
            out.append(Probe(f"nflog:{g}", True, f"group {g} can be bound"))
        except (NflogError, OSError) as exc:
            out.append(Probe(f"nflog:{g}", False, str(exc)))
    try:
        p = SockDiagPoller(s.ports)
        n = len(p.snapshot())
        p.close()
        out.append(Probe("sockdiag", True, f"dump with kernel port filter works ({n} sockets now)"))
    except OSError as exc:
        out.append(Probe("sockdiag", False, f"sock_diag dump failed: {exc}"))
    for tool, pkg in (("nft", "nftables"), ("iptables", "iptables")):
        path = shutil.which(tool)
        out.append(
            Probe(f"firewall:{tool}", bool(path), path or f"{tool} not found (install {pkg})")
        )
    sock = Path(s.socket)
    out.append(
        Probe(
            "socket",
            sock.exists(),
            f"{sock} exists (egress run is up)"
            if sock.exists()
            else f"{sock} absent (egress run not running)",
        )
    )
    return out
