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

import json
import logging
import os
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


class Tail:
    """Follow one log file: new complete lines, across rotation and truncation."""

    def __init__(self, path: Path, *, offset: int | None = None, inode: int | None = None) -> None:
        from mailwarden.sources import Envelope, PostfixParser

        self.path = path
        self.env = Envelope(source=str(path))
        self.parser = PostfixParser()
        self.fh: Any = None
        self.inode = inode
        self.offset = offset
        self.rest = b""

    def _open(self) -> bool:
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 (kept open while following)
        except FileNotFoundError:
            return False
        st = os.fstat(fh.fileno())
        if self.offset is None or self.inode != st.st_ino or self.offset > st.st_size:
            # first start (from the end), or another file than the checkpoint's: all of it
            self.offset = st.st_size if self.offset is None else 0
        fh.seek(self.offset)
        self.fh, self.inode, self.rest = fh, st.st_ino, b""
        return True

    def read(self, limit: int = 1 << 20) -> list[bytes]:
        if self.fh is None and not self._open():
            return []
        data = self.fh.read(limit)
        if not data:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                return []
            if st.st_ino != self.inode or st.st_size < (self.offset or 0):
                self.fh.close()  # rotated or truncated: the old file is read to its end above
                self.fh, self.offset, self.inode = None, 0, None
                self._open()
            return []
        self.offset = (self.offset or 0) + len(data)
        buf = self.rest + data
        cut = buf.rfind(b"\n") + 1
        self.rest = buf[cut:]
        lines: list[bytes] = buf[:cut].splitlines(keepends=True)
        return lines

    def events(self) -> list[PostfixEvent | Unparsed]:
        from mailwarden.sources import parse_lines

        lines = self.read()
        if not lines:
            return []
        return list(parse_lines(lines, env=self.env, parser=self.parser))

    @property
    def checkpoint(self) -> dict[str, int]:
        return {"inode": self.inode or 0, "offset": (self.offset or 0) - len(self.rest)}


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
    ckpt_path = settings.state_dir / "run-checkpoint.json"
    try:
        ckpt: dict[str, Any] = json.loads(ckpt_path.read_text())
    except (OSError, ValueError):
        ckpt = {}
    tails = []
    for p in paths:
        c = ckpt.get(str(p))
        if c:
            tails.append(Tail(p, offset=int(c["offset"]), inode=int(c["inode"])))
        else:
            tails.append(Tail(p, offset=0 if from_start else None))

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
    next_refresh = next_guard = next_ckpt = 0.0
    log.info("following %s", ", ".join(str(p) for p in paths))
    try:
        while not stopping.is_set():
            busy = False
            for t in tails:
                for ev in t.events():
                    busy = True
                    if isinstance(ev, Delivery):
                        engine.observe(ev)
            now = time.time()
            engine.tick(now)
            if now >= next_refresh:
                engine.refresh()
                next_refresh = now + 1.0
            if now >= next_guard:
                threading.Thread(target=_guard, args=(w,), daemon=True).start()
                next_guard = now + 60.0
            if now >= next_ckpt:
                _save_checkpoint(ckpt_path, tails)
                next_ckpt = now + 5.0
            if not busy:
                stopping.wait(poll)
    finally:
        _save_checkpoint(ckpt_path, tails)
        if sup is not None:
            sup.stop()
        w.close()


def _guard(w: Any) -> None:
    try:
        w.queue.guard_expiry()
    except Exception as exc:
        log.warning("expiry guard: %s", exc)


def _save_checkpoint(path: Path, tails: list[Tail]) -> None:
    data = {str(t.path): t.checkpoint for t in tails if t.inode}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)
