"""Fake receiving MX for the egress tests: aiosmtpd on every ADDR:PORT given, in one loop.

Run inside the test's receiver network namespace: ``mx_listener.py READY_FILE ADDR:PORT ...``
(IPv6 as ``[fd25::2]:25``). Writes READY_FILE once all servers listen; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from aiosmtpd.handlers import Sink
from aiosmtpd.smtp import SMTP


async def main(ready: str, targets: list[str]) -> None:
    loop = asyncio.get_running_loop()
    servers = []
    for t in targets:
        host, _, port = t.rpartition(":")
        host = host.strip("[]")
        servers.append(
            await loop.create_server(
                lambda: SMTP(Sink(), hostname="mx.egress.test"), host, int(port), backlog=4096
            )
        )
    Path(ready).write_text("ready\n")
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for s in servers:
        s.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
