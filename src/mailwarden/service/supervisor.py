"""Supervision: every component of the daemon runs under a supervisor that restarts it with
backoff when it dies.

* :class:`ThreadComponent`: a function ``run(stop)`` in a thread; it should return only when
  ``stop`` is set. An exception, or returning early, is a death: logged, counted, and the
  function is called again after a backoff (0.2 s doubling up to ``backoff_max``; reset once the
  component has lived 30 s).
* :class:`ProcessComponent`: a child process (the socketmap lookup server: while it is down
  Postfix defers every message, so it must come back at once). Its pid is written to a pid file.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("mailwarden.service")

_STABLE = 30.0  # a component that lived this long starts again from the smallest backoff


@dataclass(slots=True)
class Health:
    name: str
    alive: bool
    restarts: int
    last_error: str
    since: float


class ThreadComponent:
    """Run ``target(stop)`` in a thread, restarting it when it fails (see module doc)."""

    def __init__(
        self,
        name: str,
        target: Callable[[threading.Event], None],
        *,
        backoff_max: float = 30.0,
        backoff_min: float = 0.2,
        on_restart: Callable[[str, int, str], None] | None = None,
    ) -> None:
        self.name = name
        self.on_restart = on_restart
        self.target = target
        self.backoff_max = backoff_max
        self.backoff_min = backoff_min
        self.stop_event = threading.Event()
        self.restarts = 0
        self.last_error = ""
        self.started = 0.0
        self._running = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        backoff = self.backoff_min
        while not self.stop_event.is_set():
            self.started = time.monotonic()
            self._running = True
            try:
                self.target(self.stop_event)
                if self.stop_event.is_set():
                    return
                self.last_error = "returned"
                log.error("component stopped by itself", extra={"component": self.name})
            except BaseException as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"[:500]
                log.error(
                    "component died",
                    exc_info=True,
                    extra={"component": self.name, "error": self.last_error},
                )
            finally:
                self._running = False
            if time.monotonic() - self.started > _STABLE:
                backoff = self.backoff_min
            self.restarts += 1
            _notify(self.on_restart, self.name, self.restarts, self.last_error)
            log.warning(
                "component restarting",
                extra={"component": self.name, "in_seconds": round(backoff, 2)},
            )
            if self.stop_event.wait(backoff):
                return
            backoff = min(backoff * 2, self.backoff_max)

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the component to stop; True when it did within ``timeout``."""
        self.stop_event.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def health(self) -> Health:
        return Health(self.name, self._running, self.restarts, self.last_error, self.started)


def _notify(hook: Callable[[str, int, str], None] | None, name: str, n: int, err: str) -> None:
    if hook is None:
        return
    try:
        hook(name, n, err)
    except Exception:
        log.exception("restart hook failed")


def _relay(proc: subprocess.Popen[bytes], name: str) -> None:
    """The child's stderr lines, re-logged as events of ours (one JSON event per line stays
    true for the whole daemon)."""
    assert proc.stderr is not None
    child = logging.getLogger(f"mailwarden.{name}")
    for raw in proc.stderr:
        line = raw.decode("utf-8", "replace").strip()
        if not line:
            continue
        low = line.lower()
        level = logging.WARNING if ("error" in low or "warning" in low) else logging.INFO
        child.log(level, line[:2000], extra={"component": name, "pid": proc.pid})


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the daemon dies, even by SIGKILL (Linux prctl), so an
    orphaned lookup server never keeps the port from the restarted daemon's new one."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ProcessComponent:
    """Run a child process and restart it whenever it exits (backoff as above)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        pidfile: Path | None = None,
        *,
        backoff_max: float = 5.0,
        env: dict[str, str] | None = None,
        on_restart: Callable[[str, int, str], None] | None = None,
    ) -> None:
        self.name = name
        self.on_restart = on_restart
        self.argv = argv
        self.pidfile = pidfile
        self.backoff_max = backoff_max
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.last_error = ""
        self.started = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            self.started = time.monotonic()
            try:
                self.proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    env=self.env,
                    preexec_fn=_die_with_parent,
                )
            except OSError as exc:
                self.last_error = str(exc)
                log.error("cannot start", extra={"component": self.name, "error": str(exc)})
                rc: int | None = None
            else:
                if self.pidfile is not None:
                    self.pidfile.write_text(f"{self.proc.pid}\n")
                log.info("started", extra={"component": self.name, "pid": self.proc.pid})
                relay = threading.Thread(
                    target=_relay, args=(self.proc, self.name), name=f"{self.name}-log", daemon=True
                )
                relay.start()
                rc = self.proc.wait()
                relay.join(2)
            if self._stop.is_set():
                break
            self.restarts += 1
            if time.monotonic() - self.started > _STABLE:
                backoff = 0.2
            self.last_error = f"exited with {rc}"
            _notify(self.on_restart, self.name, self.restarts, self.last_error)
            log.error(
                "child exited; restarting",
                extra={"component": self.name, "rc": rc, "in_seconds": round(backoff, 2)},
            )
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self.backoff_max)

    def stop(self, timeout: float = 10.0) -> bool:
        self._stop.set()
        p = self.proc
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self._thread.join(timeout)
        if self.pidfile is not None:
            self.pidfile.unlink(missing_ok=True)
        return not self._thread.is_alive()

    def health(self) -> Health:
        alive = self.proc is not None and self.proc.poll() is None
        return Health(self.name, alive, self.restarts, self.last_error, self.started)
