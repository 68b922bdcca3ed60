"""Serving the dashboard from inside another process: uvicorn in a background thread.

``mailwarden web`` runs uvicorn in the foreground; a process that keeps its own main loop can
serve the same app beside it (``mailwarden run`` does not use this: its web component is
supervised like the others, see :mod:`mailwarden.service.daemon`)::

    app = create_app(settings, engine=engine, control=EngineControl(breaker_engine), parked=...)
    running = start_in_thread(app, *parse_bind(settings.web.bind))
    ...
    running.stop()
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from mailwarden.errors import ConfigError


@dataclass
class Running:
    server: Any  # uvicorn.Server
    thread: threading.Thread
    host: str
    port: int

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def start_in_thread(
    app: Any, host: str, port: int, *, log_level: str = "warning", timeout: float = 15.0
) -> Running:
    """Start serving ``app``; returns once it listens (:class:`ConfigError` if it cannot)."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, server_header=False)
    server = uvicorn.Server(config)
    failed: list[BaseException] = []

    def run() -> None:
        try:
            server.run()  # signal handlers are only installed from the main thread
        except BaseException as exc:  # SystemExit when the port is taken
            failed.append(exc)

    t = threading.Thread(target=run, name="mw-web", daemon=True)
    t.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not t.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ConfigError(f"could not listen on {host}:{port} (in use, or not an address here)")
        time.sleep(0.02)
    return Running(server, t, host, port)
