"""Turn what a collector saw (eBPF event, NFLOG record, sock_diag socket) into an
:class:`~mailwarden.events.EgressConnect`, enriched at event time (see :mod:`.enrich`)."""

from __future__ import annotations

import ctypes
import ipaddress
import time
from collections.abc import Iterable
from pathlib import Path

from mailwarden.egress.enrich import (
    CgroupIndex,
    EgressTables,
    ProcInfo,
    cgroup2_mount,
    container_of,
    find_script,
    parent_chain,
    read_proc,
    unit_of,
    user_name,
)
from mailwarden.egress.fpm import StatusPages
from mailwarden.events import EgressConnect


def boottime_offset() -> float:
    """Seconds to add to CLOCK_BOOTTIME to get wall-clock (POSIX) time."""
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


def addr_text(family: int, raw: bytes) -> str:
    """Printable address from 4 or 16 raw bytes (family is AF_INET=2 / AF_INET6=10 or 4/6)."""
    if family in (2, 4):
        return str(ipaddress.IPv4Address(bytes(raw[:4])))
    a = ipaddress.IPv6Address(bytes(raw[:16]))
    return str(a.ipv4_mapped) if a.ipv4_mapped else str(a)


def is_remote(addr: str) -> bool:
    """True unless the address is loopback or unspecified (local submission is not egress)."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return True
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    return not (ip.is_loopback or ip.is_unspecified)


class _BurstCache:
    """The enrichment of one process image, reused for a second: bursts come from few
    processes, so /proc is read (and the event decoded) once per burst. A PHP-FPM worker's is
    never kept: it runs another script with every request."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._d: dict[tuple[object, ...], tuple[float, dict[str, object]]] = {}

    def get(self, key: tuple[object, ...]) -> dict[str, object] | None:
        hit = self._d.get(key)
        return hit[1] if hit is not None and time.monotonic() - hit[0] < 1.0 else None

    def put(self, key: tuple[object, ...], who: dict[str, object]) -> None:
        if not who["pool"]:
            if len(self._d) > self.max_entries:
                self._d.clear()
            self._d[key] = (time.monotonic(), who)


class Attributor:
    """Builds enriched events. ``mta_uids``: the MTA's users (events marked ``mta=True``)."""

    def __init__(
        self,
        tables: EgressTables,
        mta_uids: Iterable[int],
        *,
        proc: Path = Path("/proc"),
        fpm_status: list[str] | None = None,
        fpm_status_path: str = "/status",
    ) -> None:
        self.tables = tables
        self.mta_uids = frozenset(mta_uids)
        self.proc = proc
        self.cgroups = CgroupIndex(cgroup2_mount())
        self.offset = boottime_offset()
        self.fpm = StatusPages(fpm_status, fpm_status_path) if fpm_status else None
        self._cache = _BurstCache(4096)  # by process image (pid, argv, exe, cwd, parent, cgroup)
        self._raw_cache = _BurstCache(1024)  # by the eBPF event's process bytes, before decoding

    def _who(
        self,
        pid: int | None,
        *,
        argv: tuple[str, ...] = (),
        exe: str = "",
        cwd: str = "",
        ppid: int | None = None,
        pcomm: str = "",
        cgroup_id: int | None = None,
        at_boot: float | None = None,
    ) -> dict[str, object]:
        key = (pid, argv, exe, cwd, ppid, cgroup_id)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        info = read_proc(pid, self.proc) if pid else ProcInfo(alive=False)
        # /proc/<pid> is the connecting process only if it started before the connect (the pid
        # may have been reused since) and has not exec'd something else meanwhile.
        same = (
            info.alive
            and (at_boot is None or info.start is None or info.start <= at_boot + 0.05)
            and (
                not argv
                or bool(info.cmdline and info.cmdline[: len(argv)] == argv[: len(info.cmdline)])
            )
        )
        if not same:
            info = ProcInfo(alive=False)
        else:
            argv = argv or info.cmdline
            if not exe or exe.startswith("…"):
                exe = info.exe or exe
            if not cwd or cwd.startswith("…"):
                cwd = info.cwd or cwd
            ppid = ppid or info.ppid
        cgroup = info.cgroup
        if not cgroup and cgroup_id:
            cgroup = self.cgroups.path_of(cgroup_id)
        script, pool = find_script(argv, exe=exe, cwd=cwd, env=info.env, tables=self.tables)
        if pool and not script and pid and self.fpm is not None:
            # a PHP-FPM worker: its pool's status page says which script it ran at the connect
            script = self.fpm.script_of(pid, at_boot)[0]
        who: dict[str, object] = {
            "cmdline": argv,
            "exe": exe,
            "cwd": cwd,
            "ppid": ppid,
            "parents": parent_chain(ppid, self.proc, first_comm=pcomm),
            "cgroup": cgroup,
            "unit": unit_of(cgroup, self.tables),
            "container": container_of(cgroup, self.tables),
            "script": script,
            "pool": pool,
        }
        self._cache.put(key, who)
        return who

    def from_bpf(self, raw: object) -> EgressConnect:
        """From a :class:`mailwarden.egress.bpf.RawEvent`."""
        from mailwarden.egress.bpf import EVENT_SIZE, RawEvent, join_components, split_args

        assert isinstance(raw, RawEvent)
        # The process image part of the event (argv, exe, cwd) as one bytes key: bursts from
        # one process skip decoding and enrichment entirely.
        base = ctypes.addressof(raw)
        blob = ctypes.string_at(base + RawEvent.args.offset, EVENT_SIZE - RawEvent.args.offset)
        key = (raw.pid, raw.ppid, raw.cgroup_id, raw.args_len, raw.exe_depth, raw.cwd_depth, blob)
        who = self._raw_cache.get(key)
        if who is None:
            args = split_args(ctypes.string_at(base + RawEvent.args.offset, raw.args_len))
            exe = join_components(raw.exe, raw.exe_depth) if raw.exe_depth else ""
            cwd = join_components(raw.cwd, raw.cwd_depth) if raw.cwd_depth else ""
            who = self._who(
                raw.pid,
                argv=args,
                exe=exe,
                cwd=cwd,
                ppid=raw.ppid or None,
                pcomm=raw.pcomm.decode("utf-8", "replace"),
                cgroup_id=raw.cgroup_id,
                at_boot=raw.ts_ns / 1e9,
            )
            self._raw_cache.put(key, who)
        family = 4 if raw.family == 2 else 6
        return EgressConnect(
            ts=self.offset + raw.ts_ns / 1e9,
            source="ebpf",
            daddr=addr_text(raw.family, bytes(raw.daddr)),
            dport=raw.dport,
            family=family,
            pid=raw.pid,
            uid=raw.uid,
            sk_uid=raw.sk_uid,
            gid=raw.gid,
            user=user_name(raw.uid),
            comm=raw.comm.decode("utf-8", "replace"),
            netns=raw.netns,
            mta=raw.uid in self.mta_uids,
            **who,  # type: ignore[arg-type]
        )

    def from_socket(
        self,
        *,
        ts: float,
        source: str,
        family: int,
        daddr: str,
        dport: int,
        saddr: str = "",
        sport: int | None = None,
        uid: int | None,
        gid: int | None = None,
        pid: int | None = None,
        verdict: str = "",
        netns: int | None = None,
    ) -> EgressConnect:
        """From an NFLOG record or a sock_diag socket (pid known only when resolved)."""
        who: dict[str, object] = {}
        comm = ""
        if pid:
            who = self._who(pid)
            st = read_proc(pid, self.proc)
            comm = st.comm
            if gid is None and st.alive:
                gid = _gid_of(self.proc, pid)
        return EgressConnect(
            ts=ts,
            source=source,
            daddr=daddr,
            dport=dport,
            family=family,
            saddr=saddr,
            sport=sport,
            pid=pid,
            uid=uid,
            sk_uid=uid,
            gid=gid,
            user=user_name(uid) if uid is not None else "",
            comm=comm,
            verdict=verdict,
            netns=netns,
            mta=uid in self.mta_uids if uid is not None else False,
            **who,  # type: ignore[arg-type]
        )


def _gid_of(proc: Path, pid: int) -> int | None:
    try:
        for line in (proc / str(pid) / "status").read_text().splitlines():
            if line.startswith("Gid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None
