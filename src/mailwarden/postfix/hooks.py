"""What Postfix does when a breaker changes (the engine's ``Hooks``), off the engine's thread.

* opened: ``postfix reload`` (at most one per ``min_reload_interval``; a trip during the quiet
  time gets one reload at its end) so qmgr re-resolves the active queue and stops handing
  parked recipients to smtp(8);
* probing: ``postqueue -i`` a few parked messages of the provider;
* closed: paced release of the provider's parked mail (one thread per provider; a release
  stops by itself if the breaker opens again).

An action refused for want of root (:class:`~mailwarden.postfix.control.PrivilegeError`: sudo
not set up, see docs/service.md) is logged as one clear error line and handed to
``on_privilege_error`` (the CLI and the daemon raise a ``service`` alert); parking itself, the
socketmap's answer, needs no privileges and goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from mailwarden.postfix.control import Postfix, PrivilegeError
from mailwarden.postfix.queue import QueueActuator

log = logging.getLogger(__name__)


class PostfixHooks:
    def __init__(
        self,
        pf: Postfix,
        queue: QueueActuator,
        *,
        state_of: Callable[[str], str] = lambda _p: "closed",
        reload_on_trip: bool = True,
        min_reload_interval: float = 2.0,
        background: bool = True,
        on_privilege_error: Callable[[str, PrivilegeError], None] | None = None,
    ) -> None:
        self.pf = pf
        self.queue = queue
        self.state_of = state_of
        self.reload_on_trip = reload_on_trip
        self.min_reload_interval = min_reload_interval
        self.background = background
        self.on_privilege_error = on_privilege_error
        self.privilege_errors = 0
        self.reloads = 0
        self._last_reload = 0.0
        self._reload_pending = False
        self._lock = threading.Lock()
        self._releases: dict[str, threading.Thread] = {}
        self._threads: list[threading.Thread] = []

    def _spawn(self, name: str, fn: Callable[[], object]) -> threading.Thread | None:
        def run() -> None:
            try:
                fn()
            except PrivilegeError as exc:
                self.privilege_errors += 1
                log.error("%s not done: %s", name, exc)
                if self.on_privilege_error is not None:
                    try:
                        self.on_privilege_error(name, exc)
                    except Exception:
                        log.exception("reporting the refused %s failed", name)
            except Exception:
                log.exception("%s failed", name)

        if not self.background:
            run()
            return None
        t = threading.Thread(target=run, name=name, daemon=True)
        t.start()
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        return t

    # ------------------------------------------------------------------ Hooks

    def opened(self, provider: str, *, first: bool = True) -> None:
        """A provider was parked. Only a first trip reloads: a re-open after a failed probe
        has next to nothing in flight, and every reload costs qmgr its in-memory state."""
        if not self.reload_on_trip or not first:
            return
        with self._lock:
            wait = self._last_reload + self.min_reload_interval - time.monotonic()
            if self._reload_pending:
                return
            self._reload_pending = True

        def reload() -> None:
            if wait > 0:
                time.sleep(wait)
            with self._lock:
                self._reload_pending = False
                self._last_reload = time.monotonic()
            if self.pf.reload():
                self.reloads += 1
                log.info("postfix reload: the active queue is re-resolved (%s opened)", provider)

        self._spawn("postfix-reload", reload)

    def probing(self, provider: str, recipients: int) -> None:
        def kick() -> None:
            ids = self.queue.kick(provider, recipients)
            log.info("probe round for %s: scheduled %s", provider, ", ".join(ids) or "nothing")

        self._spawn(f"probe-{provider}", kick)

    def closed(self, provider: str, rate_per_minute: float) -> None:
        running = self._releases.get(provider)
        if running is not None and running.is_alive():
            return

        def release() -> None:
            n = self.queue.release(
                provider,
                rate_per_minute=rate_per_minute,
                still_closed=lambda: self.state_of(provider) == "closed",
            )
            log.info(
                "released %d parked recipients of %s at %.0f/min", n, provider, rate_per_minute
            )

        t = self._spawn(f"release-{provider}", release)
        if t is not None:
            self._releases[provider] = t

    def join(self, timeout: float = 60.0) -> None:
        """Wait for background work (tests, CLI)."""
        deadline = time.monotonic() + timeout
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))
