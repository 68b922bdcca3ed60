"""Run a callable inside a named network namespace (``/run/netns/<name>``), for sockets.

A socket keeps the namespace it was created in, so NFLOG and sock_diag readers for another
namespace are created by a short-lived thread that joined it (``setns`` is per thread).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from mailwarden.errors import MailwardenError

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def in_netns(name: str | None, fn: Callable[[], T]) -> T:
    """Call ``fn`` in network namespace ``name`` (None: the current one) and return its result."""
    if not name:
        return fn()
    path = f"/run/netns/{name}"
    if "/" in name or not os.path.exists(path):
        raise MailwardenError(f"no network namespace {name!r}")
    box: dict[str, object] = {}

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                box["err"] = OSError(ctypes.get_errno(), f"setns {path}")
                return
            box["val"] = fn()
        except BaseException as exc:  # handed to the caller
            box["err"] = exc
        finally:
            os.close(fd)

    t = threading.Thread(target=run, name=f"netns-{name}")
    t.start()
    t.join()
    if "err" in box:
        raise box["err"]  # type: ignore[misc]
    return box["val"]  # type: ignore[return-value]
