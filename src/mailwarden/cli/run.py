"""``mailwarden run [LOG]``: follow the mail log, drive the breaker, serve the transport lookup.

A first version of the daemon (a later issue grows it): one loop that

* follows the log (``[log] files`` or the system mail log), resuming from a checkpoint after a
  restart so a block logged while it was down is still seen, and surviving rotation;
* feeds every delivery attempt to the breaker engine, runs its timers, picks up changes made
  with ``mailwarden breaker open/close``, and every minute moves parked mail that would expire
  to hold;
* supervises the socketmap server as a child process (``mailwarden postfix socketmap``) and
  restarts it whenever it dies: while it is down Postfix defers all mail (nothing is lost), so
  it must come back by itself.

Detection to enforcement: the log is polled every ``[breaker] poll`` seconds (0.2), the view
is written at once and the socketmap server rereads it within 50 ms.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from mailwarden.cli import app

if TYPE_CHECKING:
    from mailwarden.events import PostfixEvent, Unparsed

log = logging.getLogger("mailwarden.run")


class LogReader:
    """Follows the logs with :class:`mailwarden.sources.follow.Follower` (rotation, restarts,
    checkpoints) without blocking, so the caller's timers run while the log is quiet."""

    def __init__(self, paths: list[Path], checkpoints: Path, *, from_start: bool) -> None:
        from mailwarden.sources import PostfixParser
        from mailwarden.sources.follow import Follower, JsonCheckpointStore

        store = JsonCheckpointStore(checkpoints)
        self.followers = [Follower(p, store=store, from_start=from_start) for p in paths]
        self.parser = PostfixParser()
        self.envs: dict[tuple[str, int], Any] = {}

    def events(self) -> list[PostfixEvent | Unparsed]:
        """Events of the lines written since the last call (the caller commits)."""
        from mailwarden.sources import Envelope, parse_lines

        out: list[PostfixEvent | Unparsed] = []
        for f in self.followers:
            for chunk in f.poll():
                key = (chunk.path, chunk.inode)
                env = self.envs.get(key)
                if env is None:
                    if len(self.envs) > 16:
                        self.envs.clear()
                    env = self.envs[key] = Envelope(source=chunk.path)
                out.extend(
                    parse_lines(chunk.lines, env=env, parser=self.parser, start_offset=chunk.offset)
                )
        return out

    def commit(self) -> None:
        for f in self.followers:
            f.commit()

    def close(self) -> None:
        for f in self.followers:
            f.close()


class Supervisor:
    """Runs a child process and restarts it when it exits (backoff 0.2 s doubling to 5 s)."""

    def __init__(self, argv: list[str], pidfile: Path) -> None:
        self.argv = argv
        self.pidfile = pidfile
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            started = time.monotonic()
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL)
            self.pidfile.write_text(f"{self.proc.pid}\n")
            rc = self.proc.wait()
            if self._stop.is_set():
                break
            self.restarts += 1
            if time.monotonic() - started > 30:
                backoff = 0.2
            log.error("socketmap server exited (%s); restarting in %.1fs", rc, backoff)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def stop(self) -> None:
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._thread.join(10)
        self.pidfile.unlink(missing_ok=True)


@app.command()
def run(
    logs: list[Path] = typer.Argument(None, help="The mail log (default: [log] files / system)."),
    from_start: bool = typer.Option(
        False, "--from-start", help="Read the log from its beginning on the first start."
    ),
    serve: bool = typer.Option(True, "--socketmap/--no-socketmap", help="Run the lookup server."),
) -> None:
    """Follow the log, drive the breaker, serve the socketmap (the first daemon)."""
    from mailwarden.cli.analyze import default_logs
    from mailwarden.cli.breaker import build
    from mailwarden.config import load_settings
    from mailwarden.events import Delivery

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s mailwarden %(name)s: %(message)s", stream=sys.stderr
    )
    settings = load_settings()
    paths = list(logs or []) or default_logs()[0]
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    reader = LogReader(paths, settings.state_dir / "run-follow.json", from_start=from_start)
    w = build(settings)
    engine = w.engine
    engine.publish()
    sup = None
    if serve:
        argv = [sys.executable, "-m", "mailwarden.cli", "postfix", "socketmap"]
        sup = Supervisor(argv, settings.state_dir / "socketmap.pid")
        sup.start()

    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    poll = settings.breaker.poll
    next_refresh = next_guard = 0.0
    log.info("following %s", ", ".join(str(p) for p in paths))
    try:
        while not stopping.is_set():
            events = reader.events()
            for ev in events:
                if isinstance(ev, Delivery):
                    engine.observe(ev)
            if events:
                reader.commit()
            now = time.time()
            engine.tick(now)
            if now >= next_refresh:
                engine.refresh()
                next_refresh = now + 1.0
            if now >= next_guard:
                threading.Thread(target=_guard, args=(w,), daemon=True).start()
                next_guard = now + 60.0
            if not events:
                stopping.wait(poll)
    finally:
        reader.close()
        if sup is not None:
            sup.stop()
        w.close()


def _guard(w: Any) -> None:
    try:
        w.queue.guard_expiry()
    except Exception as exc:
        log.warning("expiry guard: %s", exc)
