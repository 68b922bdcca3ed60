"""Structured logs of the daemon: one event per line on stderr (journald keeps them as is).

``[service] log_format``:

* ``json`` (default): ``{"ts": "2026-11-27T19:50:00.123Z", "level": "info", "logger":
  "mailwarden.service", "msg": "component restarted", "component": "socketmap", ...}``;
* ``logfmt``: ``ts=2026-11-27T19:50:00.123Z level=info logger=mailwarden.service
  msg="component restarted" component=socketmap``;
* ``text``: a plain line for people at a terminal.

Fields passed as ``extra={...}`` become keys of the event; an exception adds ``exc`` (the
traceback, one JSON string). Every value is one line: newlines inside values are escaped, so a
hostile log line quoted in a message can never forge a second event.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

_STANDARD = frozenset(
    logging.LogRecord("x", 0, "x", 0, "x", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


def _stamp(created: float) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        + f".{int(created % 1 * 1000):03d}Z"
    )


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The event of a record as an ordered dict (ts, level, logger, msg, extras..., exc)."""
    out: dict[str, Any] = {
        "ts": _stamp(record.created),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for k, v in record.__dict__.items():
        if k not in _STANDARD and not k.startswith("_"):
            out[k] = v
    if record.exc_info:
        out["exc"] = logging.Formatter().formatException(record.exc_info)
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(fields(record), default=str, ensure_ascii=False)


def _logfmt_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False)
    if s and all(c.isalnum() or c in "-_./:@+" for c in s):
        return s
    return json.dumps(s, ensure_ascii=False)  # quoted, with \n \" escaped


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in fields(record).items())


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        f = fields(record)
        extra = " ".join(
            f"{k}={_logfmt_value(v)}"
            for k, v in f.items()
            if k not in ("ts", "level", "logger", "msg", "exc")
        )
        line = f"{f['ts']} {f['level']:7} {f['logger']}: {f['msg']}" + (
            f" {extra}" if extra else ""
        )
        line = line.replace("\n", "\\n")
        if "exc" in f:
            line += "\n" + str(f["exc"])
        return line


FORMATTERS: dict[str, type[logging.Formatter]] = {
    "json": JsonFormatter,
    "logfmt": LogfmtFormatter,
    "text": TextFormatter,
}


def setup(fmt: str = "json", level: str = "info", stream: IO[str] | None = None) -> None:
    """Send every ``mailwarden`` log event (and warnings of libraries) to ``stream`` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(FORMATTERS.get(fmt, JsonFormatter)())
    handler.set_name("mailwarden-service")
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.get_name() == "mailwarden-service" or isinstance(h, logging.StreamHandler):
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("mailwarden").setLevel(getattr(logging, level.upper(), logging.INFO))
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
