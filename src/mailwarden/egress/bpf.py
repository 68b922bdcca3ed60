"""The eBPF collector: loads the prebuilt CO-RE object through a small ctypes binding to the
system ``libbpf.so.1`` (no compiler, no kernel headers, no Python extension at run time).

The object (``smtp_egress.bpf.o``, built from ``bpf/smtp_egress.bpf.c``) holds two programs on the
``sock:inet_sock_set_state`` tracepoint: ``on_state_btf`` (``tp_btf``, needs kernel BTF only) and
``on_state_tp`` (classic tracepoint, needs tracefs, mounted here when missing). Exactly one is
loaded. Watched ports live in the ``ports`` map and can be changed while running; events arrive
through the ``events`` ring buffer as :class:`RawEvent` (the mirror of ``struct event``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import subprocess
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from mailwarden.egress.validate import port as valid_port

OBJECT_NAME = "smtp_egress.bpf.o"
TRACEFS = Path("/sys/kernel/tracing")
BTF_VMLINUX = Path("/sys/kernel/btf/vmlinux")
ARGS_MAX = 512
PATH_DEPTH = 10
NAME_MAX = 48


class CollectorUnavailable(Exception):
    """A collector cannot run on this host; the message says why (shown by ``egress doctor``)."""


class RawEvent(ctypes.Structure):
    """Mirror of ``struct event`` in bpf/smtp_egress.bpf.c (same order, natural alignment)."""

    _fields_ = (
        ("ts_ns", ctypes.c_uint64),
        ("cgroup_id", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("ppid", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("gid", ctypes.c_uint32),
        ("sk_uid", ctypes.c_uint32),
        ("netns", ctypes.c_uint32),
        ("family", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("daddr", ctypes.c_uint8 * 16),
        ("comm", ctypes.c_char * 16),
        ("pcomm", ctypes.c_char * 16),
        ("args_len", ctypes.c_uint16),
        ("exe_depth", ctypes.c_uint8),
        ("cwd_depth", ctypes.c_uint8),
        ("_pad", ctypes.c_uint32),
        ("args", ctypes.c_char * ARGS_MAX),
        ("exe", (ctypes.c_char * NAME_MAX) * PATH_DEPTH),
        ("cwd", (ctypes.c_char * NAME_MAX) * PATH_DEPTH),
    )


EVENT_SIZE = 1576
assert ctypes.sizeof(RawEvent) == EVENT_SIZE, "RawEvent no longer mirrors struct event"


def object_path() -> Path:
    """The shipped CO-RE object."""
    return Path(str(resources.files("mailwarden.egress") / OBJECT_NAME))


def join_components(comps: Any, depth: int) -> str:
    """Turn leaf-first dentry components into an absolute path (``…/`` prefix if truncated)."""
    n = min(depth, PATH_DEPTH)
    parts = []
    for i in range(n):
        raw = bytes(comps[i].value)
        # a name that filled its slot was cut by the kernel side: say so rather than mislead
        parts.append(raw.decode("utf-8", "replace") + ("…" if len(raw) >= NAME_MAX - 1 else ""))
    path = "/" + "/".join(reversed(parts))
    return ("…" + path) if depth > PATH_DEPTH else path


def split_args(raw: bytes) -> tuple[str, ...]:
    """Split a raw argv block (NUL separated) into arguments."""
    if not raw:
        return ()
    return tuple(a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0"))


_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_RB_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


class _Lib:
    """The few libbpf 1.x entry points we use, with their C signatures."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
        except OSError:
            try:
                lib = ctypes.CDLL(name, use_errno=True)
            except OSError as exc:
                raise CollectorUnavailable(
                    f"libbpf.so.1 not found ({exc}); install the libbpf1 package"
                ) from exc
        self.lib = lib
        vp, cp, i, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t
        sigs: dict[str, tuple[Any, list[Any]]] = {
            "bpf_object__open_file": (vp, [cp, vp]),
            "bpf_object__load": (i, [vp]),
            "bpf_object__close": (None, [vp]),
            "bpf_object__find_program_by_name": (vp, [vp, cp]),
            "bpf_object__find_map_by_name": (vp, [vp, cp]),
            "bpf_program__set_autoload": (i, [vp, ctypes.c_bool]),
            "bpf_program__attach": (vp, [vp]),
            "bpf_link__destroy": (i, [vp]),
            "bpf_map__fd": (i, [vp]),
            "bpf_map__set_max_entries": (i, [vp, ctypes.c_uint32]),
            "bpf_map_update_elem": (i, [i, vp, vp, ctypes.c_uint64]),
            "bpf_map_delete_elem": (i, [i, vp]),
            "bpf_map_lookup_elem": (i, [i, vp, vp]),
            "bpf_map_get_next_key": (i, [i, vp, vp]),
            "ring_buffer__new": (vp, [i, _RB_FN, vp, vp]),
            "ring_buffer__poll": (i, [vp, i]),
            "ring_buffer__consume": (i, [vp]),
            "ring_buffer__epoll_fd": (i, [vp]),
            "ring_buffer__free": (None, [vp]),
            "libbpf_set_print": (vp, [_PRINT_FN]),
        }
        for fn, (res, args) in sigs.items():
            f = getattr(lib, fn)
            f.restype = res
            f.argtypes = args
        libc = ctypes.CDLL(None)
        self.vsnprintf = libc.vsnprintf
        self.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, vp]
        self.vsnprintf.restype = ctypes.c_int
        self.messages: list[str] = []

        def _print(level: int, fmt: bytes, args: int) -> int:
            buf = ctypes.create_string_buffer(1024)
            self.vsnprintf(buf, 1024, fmt, args)
            text = buf.value.decode("utf-8", "replace").rstrip()
            if text and level <= 1:  # warnings and info; not debug
                self.messages.append(text)
                del self.messages[:-200]
            return 0

        self._print_cb = _PRINT_FN(_print)  # keep a reference: libbpf keeps the pointer
        lib.libbpf_set_print(self._print_cb)
        _ = sz


_LIB: _Lib | None = None


def _lib() -> _Lib:
    global _LIB
    if _LIB is None:
        _LIB = _Lib()
    return _LIB


def _err(what: str, code: int | None = None) -> CollectorUnavailable:
    e = abs(code) if code else ctypes.get_errno()
    lib = _lib()
    detail = "; ".join(m for m in lib.messages[-6:] if m)
    msg = f"{what}: {os.strerror(e) if e else 'failed'}"
    return CollectorUnavailable(msg + (f" (libbpf: {detail})" if detail else ""))


def ensure_tracefs() -> None:
    """Mount tracefs on /sys/kernel/tracing when it is not (classic tracepoints need it)."""
    if (TRACEFS / "events").is_dir():
        return
    proc = subprocess.run(
        ["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True, text=True
    )
    if proc.returncode != 0 or not (TRACEFS / "events").is_dir():
        raise CollectorUnavailable(f"cannot mount tracefs on {TRACEFS}: {proc.stderr.strip()}")


class BpfCollector:
    """Load, attach and read the eBPF connect tracer.

    ``mode`` is ``"auto"`` (tp_btf, else classic tracepoint), ``"tp_btf"`` or ``"tracepoint"``.
    After :meth:`open`, :attr:`mode` says which one is attached. Not thread-safe: one reader.
    """

    def __init__(
        self,
        ports: Iterable[int] = (25, 465, 587, 2525),
        *,
        mode: str = "auto",
        path: Path | None = None,
        ring_bytes: int = 1 << 24,
    ) -> None:
        self.ports = sorted({valid_port(p) for p in ports})
        self.mode = mode
        self.path = path or object_path()
        # the kernel wants a power-of-two multiple of the page size
        self.ring_bytes = max(1 << 16, 1 << (max(ring_bytes, 1) - 1).bit_length())
        self._obj: int | None = None
        self._link: int | None = None
        self._rb: int | None = None
        self._ports_fd = -1
        self._stats_fd = -1
        self._batch: list[RawEvent] = []
        self._cb = _RB_FN(self._on_event)

    # -- life cycle ------------------------------------------------------------------------

    def open(self) -> BpfCollector:
        if os.geteuid() != 0:
            raise CollectorUnavailable("needs root (CAP_BPF and CAP_PERFMON)")
        if not self.path.is_file():
            raise CollectorUnavailable(f"BPF object missing: {self.path} (run make -C bpf)")
        if not BTF_VMLINUX.exists():
            raise CollectorUnavailable(f"kernel has no BTF ({BTF_VMLINUX} missing): CO-RE needs it")
        modes = ["tp_btf", "tracepoint"] if self.mode == "auto" else [self.mode]
        errors: list[str] = []
        for m in modes:
            try:
                self._open_mode(m)
                self.mode = m
                return self
            except CollectorUnavailable as exc:
                self.close()
                errors.append(f"{m}: {exc}")
        raise CollectorUnavailable("; ".join(errors))

    def _open_mode(self, mode: str) -> None:
        lib = _lib()
        L = lib.lib
        lib.messages.clear()
        if mode == "tracepoint":
            ensure_tracefs()
        obj = L.bpf_object__open_file(str(self.path).encode(), None)
        if not obj:
            raise _err(f"cannot open {self.path}")
        self._obj = obj
        keep, drop = (
            (b"on_state_btf", b"on_state_tp")
            if mode == "tp_btf"
            else (b"on_state_tp", b"on_state_btf")
        )
        L.bpf_program__set_autoload(L.bpf_object__find_program_by_name(obj, drop), False)
        rb_map = L.bpf_object__find_map_by_name(obj, b"events")
        L.bpf_map__set_max_entries(rb_map, self.ring_bytes)
        rc = L.bpf_object__load(obj)
        if rc != 0:
            raise _err("BPF load refused", rc)
        self._ports_fd = L.bpf_map__fd(L.bpf_object__find_map_by_name(obj, b"ports"))
        self._stats_fd = L.bpf_map__fd(L.bpf_object__find_map_by_name(obj, b"stats"))
        self.set_ports(self.ports)
        link = L.bpf_program__attach(L.bpf_object__find_program_by_name(obj, keep))
        if not link:
            raise _err(f"cannot attach {keep.decode()}")
        self._link = link
        rb = L.ring_buffer__new(L.bpf_map__fd(rb_map), self._cb, None, None)
        if not rb:
            raise _err("cannot create ring buffer reader")
        self._rb = rb

    def close(self) -> None:
        L = _lib().lib
        if self._rb:
            L.ring_buffer__free(self._rb)
            self._rb = None
        if self._link:
            L.bpf_link__destroy(self._link)
            self._link = None
        if self._obj:
            L.bpf_object__close(self._obj)
            self._obj = None

    def __enter__(self) -> BpfCollector:
        return self.open() if self._obj is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- run time --------------------------------------------------------------------------

    def set_ports(self, ports: Iterable[int]) -> None:
        """Replace the watched ports (takes effect for the next connect)."""
        wanted = sorted({valid_port(p) for p in ports})
        L = _lib().lib
        current: list[int] = []
        key, nxt = ctypes.c_uint16(0), ctypes.c_uint16(0)
        prev: Any = None
        while L.bpf_map_get_next_key(self._ports_fd, prev, ctypes.byref(nxt)) == 0:
            current.append(nxt.value)
            key.value = nxt.value
            prev = ctypes.byref(key)
        one = ctypes.c_uint8(1)
        for p in wanted:
            if L.bpf_map_update_elem(
                self._ports_fd, ctypes.byref(ctypes.c_uint16(p)), ctypes.byref(one), 0
            ):
                raise _err(f"cannot watch port {p}")
        for p in current:
            if p not in wanted:
                L.bpf_map_delete_elem(self._ports_fd, ctypes.byref(ctypes.c_uint16(p)))
        self.ports = wanted

    def stats(self) -> tuple[int, int]:
        """(events emitted, events dropped because the ring buffer was full) since load."""
        L = _lib().lib
        out = []
        for idx in (0, 1):
            v = ctypes.c_uint64(0)
            L.bpf_map_lookup_elem(
                self._stats_fd, ctypes.byref(ctypes.c_uint32(idx)), ctypes.byref(v)
            )
            out.append(v.value)
        return out[0], out[1]

    def fileno(self) -> int:
        """An epoll fd that becomes readable when events are waiting."""
        if not self._rb:
            raise CollectorUnavailable("collector not open")
        return int(_lib().lib.ring_buffer__epoll_fd(self._rb))

    def _on_event(self, _ctx: int, data: int, size: int) -> int:
        if size >= EVENT_SIZE:
            self._batch.append(RawEvent.from_buffer_copy(ctypes.string_at(data, EVENT_SIZE)))
        return 0

    def poll(self, timeout_ms: int = 100) -> list[RawEvent]:
        """Wait up to ``timeout_ms`` for events and return those read (maybe none)."""
        if not self._rb:
            raise CollectorUnavailable("collector not open")
        rc = _lib().lib.ring_buffer__poll(self._rb, timeout_ms)
        if rc < 0 and -rc != errno.EINTR:
            raise _err("ring buffer poll failed", rc)
        out, self._batch = self._batch, []
        return out
