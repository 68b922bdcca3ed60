"""Syslog envelopes: split one raw log line (bytes) into a :class:`~mailwarden.events.LogLine`.

Two stamp forms are read:

* traditional syslog / postlogd ``Nov 27 17:19:54 mail postfix/smtp[11683]: ...`` (no year, no
  zone: the time is local time in ``tz`` (default: the host's ``TZ``), the year is inferred from a
  reference time (file mtime or now) and advanced when the month wraps Dec -> Jan inside a file);
* RFC 3339 ``2026-11-27T17:31:17.507827+00:00 host postfix/smtp[24296]: ...`` (any offset, ``Z``,
  any number of fraction digits; a stamp without offset is local time in ``tz``).

Parsed stamps are cached per distinct prefix (one dict lookup per line in the common case).
Nothing here raises on bad input: a line that cannot be split becomes an
:class:`~mailwarden.events.Unparsed` with a reason, counted in :class:`ParseStats`.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailwarden.errors import ConfigError
from mailwarden.events import LogLine, Unparsed
from mailwarden.sources.stats import ParseStats

#: Lines longer than this are not parsed ("too long"); syslog daemons cut at 8 KiB by default.
MAX_LINE = 64 * 1024

_MONTHS = {
    m: i + 1 for i, m in enumerate(b"Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split())
}
_TRAD = re.compile(
    rb"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    rb"[ 0-3][0-9] [0-2][0-9]:[0-5][0-9]:[0-6][0-9]"
)
_PROGRAM_OK = re.compile(rb"[A-Za-z0-9_.@+/-]{1,100}")
_SYSLOGD_TAGS = frozenset({b"last", b"--", b"message"})  # "last message repeated N times", MARK

#: Allowed slack into the future of the reference time when choosing the year of a stamp.
_FUTURE_SLACK = 2 * 86400.0


def load_tz(name: str | None) -> tzinfo | None:
    """Return the zone named ``name`` (``"Europe/Zurich"``, ``"UTC"``), or None for the host's."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"unknown time zone {name!r}") from exc


class Stamps:
    """Turns syslog time stamps into POSIX seconds, with year inference and caches.

    One instance per source (file): the year inference is stateful. ``reference`` is the time
    the source was last written (file mtime) or now; the first stamp gets the reference's year,
    or the year before when that would put it more than two days after the reference.

    The C accelerator (:mod:`mailwarden.sources.accel`) reads ``sec``, ``iso_cache``, ``_year``,
    ``_last_month`` and ``_min``, and does the common branch of :meth:`_trad_miss` itself (a
    known minute of the current month: ``_latest`` and ``sec`` updated the same way); keep it in
    step when changing them.
    """

    __slots__ = (
        "_last_hint",
        "_last_month",
        "_latest",
        "_min",
        "_ref",
        "_tz",
        "_year",
        "iso_cache",
        "sec",
    )

    def __init__(
        self, tz: tzinfo | None = None, reference: float | None = None, last: bytes | None = None
    ) -> None:
        self._tz = tz
        self._ref = time.time() if reference is None else reference
        self._last_hint = last if last is not None and _TRAD.fullmatch(last) else None
        self._year: int | None = None
        self._last_month = 0
        self._latest = 0.0  # latest traditional stamp seen (for the repeated DST hour)
        self.sec: dict[bytes, float] = {}  # "Nov 27 17:19:54" -> ts (read directly by hot loops)
        self._min: dict[bytes, float] = {}  # "Nov 27 17:19" -> ts of second 0
        # "2026-11-27T17:31:17+00:00" -> ts (read directly by hot loops)
        self.iso_cache: dict[bytes, float] = {}

    @property
    def year(self) -> int | None:
        """The year currently assumed for traditional stamps (None before the first one)."""
        return self._year

    def _local(self, y: int, mo: int, d: int, h: int, mi: int, fold: int = 0) -> float:
        """Local wall time -> POSIX seconds; ``fold=1`` is the second pass of a repeated hour."""
        return datetime(y, mo, d, h, mi, tzinfo=self._tz, fold=fold).timestamp()

    def _year_of(self, month: int, day: int, hour: int, minute: int) -> int:
        """The latest year, from the reference's back, that does not put the stamp after the
        reference (Feb 29 goes back to a leap year)."""
        year = datetime.fromtimestamp(self._ref, self._tz).year
        for y in range(year, year - 8, -1):
            try:
                when = self._local(y, month, day, hour, minute)
            except (ValueError, OverflowError):
                continue
            if when <= self._ref + _FUTURE_SLACK:
                return y
        return year

    def _first_year(self, p: bytes, month: int, day: int, hour: int, minute: int) -> int:
        """Year of the first stamp of the source. With the source's last stamp known (``last``)
        the last line gets the reference's year and the first one that year, or the year
        before when it comes later in the calendar (spans up to a year are exact); otherwise
        the first line gets the reference's year (or the year before)."""
        last = self._last_hint
        if last is None:
            return self._year_of(month, day, hour, minute)
        lm = _MONTHS[last[:3]]
        lkey = (lm, int(last[4:6]), last[7:15])
        last_year = self._year_of(lm, lkey[1], int(last[7:9]), int(last[10:12]))
        return last_year if (month, day, p[7:15]) <= lkey else last_year - 1

    def trad(self, prefix: bytes) -> float | None:
        """``b"Nov 27 17:19:54"`` (exactly 15 bytes) -> POSIX seconds, or None if malformed."""
        hit = self.sec.get(prefix)
        if hit is not None:
            return hit
        return self._trad_miss(prefix)

    def _trad_miss(self, p: bytes) -> float | None:
        month = _MONTHS.get(p[:3])
        if (
            month is None
            or len(p) != 15
            or p[3:4] != b" "
            or p[6:7] != b" "
            or p[9:10] != b":"
            or p[12:13] != b":"
        ):
            return None
        try:
            day = int(p[4:6])
            hour = int(p[7:9])
            minute = int(p[10:12])
            sec = int(p[13:15])
        except ValueError:
            return None
        if not (1 <= day <= 31 and 0 <= hour <= 23 and 0 <= minute <= 59 and 0 <= sec <= 60):
            return None
        year = self._year
        if year is None:
            year = self._first_year(p, month, day, hour, minute)
            self._year = year
            self._last_month = month
        elif month < self._last_month - 6:  # Dec -> Jan: a new year inside the file
            year += 1
            self._year = year
            self._last_month = month
            self.sec.clear()
            self._min.clear()
        elif month > self._last_month + 6:  # a late line of December after January
            year -= 1
        elif month != self._last_month:
            self._last_month = month
            self.sec.clear()
            self._min.clear()
        mkey = p[:12]
        base = self._min.get(mkey)
        cache = month == self._last_month
        if base is None:
            try:
                base = self._local(year, month, day, hour, minute)
                later = self._local(year, month, day, hour, minute, fold=1)
            except (ValueError, OverflowError):  # Feb 30, Feb 29 in a non-leap year
                return None
            if later != base:
                # the hour repeated when summer time ends: the second pass once the first
                # one has been seen (time does not go back by an hour within a log)
                cache = False
                if self._latest >= base + 1800.0:
                    base = later
            elif cache:
                self._min[mkey] = base
        ts = base + sec
        if ts > self._latest:
            self._latest = ts
        if cache:
            if len(self.sec) > 200_000:
                self.sec.clear()
            self.sec[p] = ts
        return ts

    def iso(self, stamp: bytes) -> float | None:
        """``b"2026-11-27T17:31:17.507827+00:00"`` -> POSIX seconds, or None if malformed."""
        if len(stamp) < 19 or stamp[10:11] not in (b"T", b"t"):
            return None
        head = stamp[:19]
        tail = stamp[19:]
        frac = 0.0
        if tail[:1] == b".":
            j = 1
            n = len(tail)
            while j < n and 48 <= tail[j] <= 57:
                j += 1
            if j == 1 or j > 10:
                return None
            frac = int(tail[1:j]) / 10 ** (j - 1)
            tail = tail[j:]
        key = head + tail
        base = self.iso_cache.get(key)
        if base is None:
            base = self._iso_miss(head, tail)
            if base is None:
                return None
            if len(self.iso_cache) > 200_000:
                self.iso_cache.clear()
            self.iso_cache[key] = base
        return base + frac

    def _iso_miss(self, head: bytes, tail: bytes) -> float | None:
        if tail not in (b"", b"Z", b"z") and not re.fullmatch(rb"[+-]\d\d:?\d\d", tail):
            return None
        try:
            text = (head + (b"+00:00" if tail in (b"Z", b"z") else tail)).decode("ascii")
            dt = datetime.fromisoformat(text)
        except (ValueError, UnicodeDecodeError):
            return None
        if dt.tzinfo is None:
            if self._tz is None:
                return time.mktime(dt.timetuple())
            dt = dt.replace(tzinfo=self._tz)
        if dt.utcoffset() is not None and abs(dt.utcoffset() or timedelta()) > timedelta(hours=18):
            return None
        return dt.timestamp()


class Envelope:
    """Splits raw syslog lines; keeps the per-source state (stamps, program and host caches)."""

    __slots__ = ("hosts", "source", "stamps", "tags")

    def __init__(
        self,
        *,
        tz: tzinfo | None = None,
        reference: float | None = None,
        source: str = "",
        last: bytes | None = None,
    ) -> None:
        self.stamps = Stamps(tz, reference, last)
        self.source = source
        # b"postfix/smtp[11683]:" -> (program, pid), or None when the tag is malformed
        self.tags: dict[bytes, tuple[str, int | None] | None] = {}
        self.hosts: dict[bytes, str] = {}

    def tag(self, tag: bytes) -> tuple[str, int | None] | None:
        """``b"postfix/smtp[11683]:"`` -> ``("postfix/smtp", 11683)``; None if not a tag."""
        hit = self.tags.get(tag, False)
        if hit is not False:
            return hit  # type: ignore[return-value]
        out = parse_tag(tag)
        if len(self.tags) > 100_000:
            self.tags.clear()
        if len(tag) <= 128:
            self.tags[tag] = out
        return out

    def host(self, h: bytes) -> str:
        s = self.hosts.get(h)
        if s is None:
            s = h.decode("utf-8", "replace")
            if len(self.hosts) < 10_000 and len(h) <= 255:
                self.hosts[h] = s
        return s

    def split(self, raw: bytes) -> tuple[float, str, str, int | None, bytes] | str:
        """Return ``(ts, host, program, pid, message)`` or a reason string when not readable."""
        n = len(raw)
        if n > MAX_LINE:
            return "too long"
        if b"\x00" in raw:
            return "binary"
        if 48 <= (raw[0] if n else 0) <= 57:
            sp = raw.find(b" ")
            if sp < 0:
                return "not syslog"
            ts = self.stamps.iso(raw[:sp])
            rest = raw[sp + 1 :]
        else:
            ts = self.stamps.trad(raw[:15])
            rest = raw[16:] if raw[15:16] == b" " else b""
        if ts is None:
            return "bad timestamp" if raw.strip() else "empty"
        parts = rest.split(b" ", 2)
        if len(parts) < 2:
            return "not syslog"
        tag = parts[1]
        info = self.tag(tag)
        if info is None:
            if tag in _SYSLOGD_TAGS:
                return "syslogd"
            return "no program tag"
        msg = parts[2] if len(parts) == 3 else b""
        if msg.endswith(b"\n"):
            msg = msg[:-2] if msg.endswith(b"\r\n") else msg[:-1]
        return ts, self.host(parts[0]), info[0], info[1], msg


def parse_tag(tag: bytes) -> tuple[str, int | None] | None:
    """``b"postfix/smtp[11683]:"`` -> ``("postfix/smtp", 11683)``; ``b"dovecot:"`` -> pid None."""
    if not tag.endswith(b":"):
        return None
    pid: int | None = None
    if tag.endswith(b"]:"):
        lb = tag.rfind(b"[")
        digits = tag[lb + 1 : -2]
        if lb <= 0 or not digits.isdigit() or len(digits) > 10:
            return None
        pid = int(digits)
        prog = tag[:lb]
    else:
        prog = tag[:-1]
    if not _PROGRAM_OK.fullmatch(prog):
        return None
    return prog.decode("ascii"), pid


def split_line(
    raw: bytes,
    env: Envelope | None = None,
    *,
    offset: int = -1,
    stats: ParseStats | None = None,
) -> LogLine | Unparsed:
    """Split one raw line into a :class:`LogLine`, or an :class:`Unparsed` naming why not.

    ``env`` carries the per-source state (year inference, caches, time zone); pass the same one
    for every line of a source. Never raises.
    """
    if env is None:
        env = Envelope()
    out = env.split(raw)
    if isinstance(out, str):
        if stats is not None:
            stats.total += 1
            if out == "syslogd":
                stats.foreign += 1
                stats.program("syslogd")
                return Unparsed(env.source, offset, "", out)
            return stats.unparsed_line(env.source, offset, raw, out)
        text = raw[:8000].decode("utf-8", "replace")[:2000].rstrip("\r\n")
        return Unparsed(env.source, offset, text, out)
    ts, host, program, pid, msg = out
    if stats is not None:
        stats.total += 1
    return LogLine(
        ts=ts,
        host=host,
        program=program,
        pid=pid,
        message=msg.decode("utf-8", "replace"),
        source=env.source,
        offset=offset,
    )
