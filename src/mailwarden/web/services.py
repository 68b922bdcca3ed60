"""What the dashboard acts through and the slow things it shows: the breaker controls, the
parked-mail inventory of the Postfix queue, and the host health (``doctor``) findings.

The app never builds these itself (the web package imports no actuator): ``mailwarden web`` and
``mailwarden run`` wire them (:func:`mailwarden.cli.web.wire`), tests may wire real engines of
their own. Slow sources run in a background thread and are cached (:class:`Background`): a page
never waits for ``postqueue`` or DNS.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

log = logging.getLogger("mailwarden.web")

T = TypeVar("T")


class BreakerControl(Protocol):
    """A person's breaker commands (what ``mailwarden breaker open/close`` do) on the breakers
    of ``host``: the host whose Postfix the engine acts on (a fleet's other hosts are shown,
    not steered, from here)."""

    host: str

    def open(self, provider: str, *, duration: float | None, note: str) -> None: ...

    def close(self, provider: str, *, note: str) -> int:
        """Close every breaker of ``provider``; the number of breakers that changed."""
        ...


class EngineControl:
    """:class:`BreakerControl` over a :class:`mailwarden.breaker.engine.Engine`.

    The engine is not thread-safe and another process (the daemon, the CLI) may have changed the
    stored states: every command takes a lock and reloads the stored states first.
    """

    def __init__(self, engine: Any, host: str = "") -> None:
        self.engine = engine
        self.host = host
        self._lock = threading.Lock()

    def open(self, provider: str, *, duration: float | None, note: str) -> None:
        with self._lock:
            self.engine.refresh()
            self.engine.open(provider, duration=duration, note=note)

    def close(self, provider: str, *, note: str) -> int:
        with self._lock:
            self.engine.refresh()
            return len(self.engine.close(provider, note=note))


@dataclass(frozen=True, slots=True)
class Snapshot(Generic[T]):
    """The last result of a background source (``None`` before the first run finished)."""

    value: T | None
    at: float | None  # when the value was computed
    error: str  # the last run's error ("" when it worked)
    running: bool


class Background(Generic[T]):
    """Run ``fn`` in a thread, at most every ``ttl`` seconds, and keep its last result.

    :meth:`get` never blocks: it returns what is known and starts a refresh when the value is
    older than ``ttl`` (or :meth:`refresh` asked for one). A failing run keeps the previous
    value and records its error.
    """

    def __init__(self, name: str, fn: Callable[[], T], ttl: float) -> None:
        self.name = name
        self.fn = fn
        self.ttl = ttl
        self._lock = threading.Lock()
        self._value: T | None = None
        self._at: float | None = None
        self._error = ""
        self._thread: threading.Thread | None = None
        self._stale = True

    def _run(self) -> None:
        try:
            v = self.fn()
        except Exception as exc:  # shown on the page; the trace goes to the log
            log.exception("%s failed", self.name)
            with self._lock:
                self._error = f"{type(exc).__name__}: {exc}"[:500]
                self._at = time.time()
        else:
            with self._lock:
                self._value, self._at, self._error = v, time.time(), ""
        finally:
            with self._lock:
                self._thread = None

    def _start(self) -> None:
        # called with the lock held
        if self._thread is not None:
            return
        self._stale = False
        self._thread = threading.Thread(target=self._run, name=f"mw-{self.name}", daemon=True)
        self._thread.start()

    def get(self) -> Snapshot[T]:
        with self._lock:
            if self._stale or self._at is None or time.time() - self._at >= self.ttl:
                self._start()
            return Snapshot(self._value, self._at, self._error, self._thread is not None)

    def refresh(self) -> None:
        with self._lock:
            self._stale = True
            self._start()

    def wait(self, timeout: float = 30.0) -> Snapshot[T]:
        """Block until a run finished (for the CLI and tests)."""
        with self._lock:
            if self._at is None or self._stale:
                self._start()
            t = self._thread
        if t is not None:
            t.join(timeout)
        with self._lock:
            return Snapshot(self._value, self._at, self._error, self._thread is not None)


@dataclass(frozen=True, slots=True)
class Parked:
    """Parked (deferred by the breaker) and held recipients of one provider."""

    parked: int
    held: int


#: Returns parked/held counts per provider (``postqueue -j`` grouped by provider).
ParkedSource = Callable[[], dict[str, Parked]]
