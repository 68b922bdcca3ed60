"""The C accelerator (``mailwarden.sources._postfixscan``) against the pure-Python reference.

Both paths run one analyze worker (:func:`mailwarden.pipeline.fold_files`) on the same files
into a storing :class:`~mailwarden.pipeline.Folder`; everything that leaves a worker must be
equal: the aggregate (with dict orders), the store batches (rows, their order, the batch
boundaries), the parse counters with their samples, the unparsed lines, the bytes read. Inputs:
every log corpus of the tests (real Postfix samples, the annotated line shapes, the bundled
sample, generated logs in both stamp forms, plain and compressed), several files at once, both
shards, ``--since/--until``, tiny read blocks, the repeated hour at the end of summer time, a
year wrap, hostile lines, and lines mangled by hypothesis.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailwarden.pipeline import Folder, fold_files
from mailwarden.sources import accel
from mailwarden.sources.files import order_files
from mailwarden.sources.stats import ParseStats

from .conftest import DATA, SAMPLE_LOG

ROOT = Path(__file__).resolve().parents[2]
REAL_LOG = ROOT / "tests" / "data" / "report" / "postfix-real.log"
BUNDLED = ROOT / "src" / "mailwarden" / "data" / "samples" / "postfix-sample.log"
UTC_TZ = ZoneInfo("UTC")
NOV_2026 = datetime(2026, 11, 28, tzinfo=UTC).timestamp()

_CLASSIFIER: Any = None


def classifier() -> Any:
    global _CLASSIFIER
    if _CLASSIFIER is None:
        from mailwarden.classify.engine import Classifier

        _CLASSIFIER = Classifier.load()
    return _CLASSIFIER


def one_worker(
    paths: list[Path],
    *,
    accelerated: bool,
    me: int = 0,
    nshards: int = 1,
    since: float | None = None,
    until: float | None = None,
    tz: Any = UTC_TZ,
    batch: int = 40,
    max_open: int | None = None,
    horizon: float | None = None,
    store: bool = True,
) -> dict[str, Any]:
    files = order_files(paths, tz=tz)
    stats = ParseStats()
    unparsed: list[Any] = []
    batches: list[Any] = []
    folder = Folder(
        classifier(),
        store=store,
        since=since,
        until=until,
        send=batches.append,
        batch_messages=batch,
    )
    if max_open is not None:
        folder.correlator.max_open = max_open
    if horizon is not None:
        folder.correlator.horizon = horizon
    read = fold_files(
        files,
        me,
        nshards,
        folder,
        stats=stats,
        unparsed=unparsed,
        show_unparsed=True,
        tz=tz,
        accelerated=accelerated,
    )
    return {
        "agg": repr(folder.agg),
        "stats": stats.as_dict(),
        "unparsed": [repr(u) for u in unparsed],
        "batches": [repr(b) for b in batches],
        "read": read,
    }


def assert_same(paths: list[Path], **kw: Any) -> dict[str, Any]:
    ref = one_worker(paths, accelerated=False, **kw)
    fast = one_worker(paths, accelerated=True, **kw)
    for key in ref:
        assert fast[key] == ref[key], key
    return fast


def plain_copy(src: Path, dst_dir: Path) -> Path:
    data = src.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    out = dst_dir / (src.name.removesuffix(".gz") + ".plain")
    out.write_bytes(data)
    os.utime(out, (NOV_2026, NOV_2026))
    return out


CORPORA = [
    SAMPLE_LOG,
    REAL_LOG,
    BUNDLED,
    DATA / "postfix-lines.txt",
    DATA / "genlog-5k.log.gz",
    DATA / "genlog-3k-iso.log.gz",
    DATA / "mx-replies.log",
]


def test_the_extension_is_built_and_current() -> None:
    assert accel.built(), "the C accelerator did not build: pip install -e . (needs gcc)"
    import mailwarden.sources._postfixscan as ext  # type: ignore[import-not-found]

    src = ROOT / "src" / "mailwarden" / "sources" / "_postfixscan.c"
    if Path(ext.__file__).is_relative_to(ROOT / "src"):  # an editable install: rebuilt?
        assert os.path.getmtime(ext.__file__) >= os.path.getmtime(src), (
            "the built extension is older than its source: pip install -e ."
        )


@pytest.mark.parametrize("path", CORPORA, ids=lambda p: p.name)
def test_each_corpus_gives_the_same_result(path: Path, tmp_path: Path) -> None:
    out = assert_same([path])
    assert out["stats"]["total"] > 0
    plain = plain_copy(path, tmp_path)
    assert_same([plain])
    assert_same([plain], store=False)  # analyze --no-store: no rows, the same aggregate


@pytest.mark.parametrize("nshards", [2, 3])
def test_every_shard_is_the_same(nshards: int) -> None:
    paths = [DATA / "genlog-5k.log.gz", REAL_LOG, DATA / "mx-replies.log"]
    totals = 0
    for me in range(nshards):
        totals += assert_same(paths, me=me, nshards=nshards)["stats"]["total"]
    assert totals == assert_same(paths)["stats"]["total"]


def test_several_files_and_a_period(tmp_path: Path) -> None:
    files = [plain_copy(p, tmp_path) for p in CORPORA]
    whole = assert_same(files)
    assert whole["stats"]["total"] > 10_000
    # a window inside the generated log: events before and after it are counted as outside
    gen = files[CORPORA.index(DATA / "genlog-5k.log.gz")]
    t0 = order_files([gen], tz=UTC_TZ)[0].first_ts(UTC_TZ)
    assert t0 is not None
    part = assert_same(files, since=t0 + 600, until=t0 + 1800)
    assert part["stats"]["parsed"] > 0 and "outside_period=0" not in part["agg"]
    assert_same(files, since=0.0, until=1.0)


def test_small_read_blocks_split_lines_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = plain_copy(DATA / "genlog-5k.log.gz", tmp_path)
    with log.open("ab") as fh:  # a line longer than several blocks, and no final newline
        fh.write(b"Nov 27 17:19:54 mail postfix/smtp[1]: " + b"x" * 20000 + b"\n")
        fh.write(b"Nov 27 17:19:55 mail postfix/qmgr[2]: 394D3162231: remo")
    os.utime(log, (NOV_2026, NOV_2026))
    ref = assert_same([log])
    for size in (1, 7, 4096):
        monkeypatch.setattr(accel, "CHUNK", size)
        assert one_worker([log], accelerated=True) == ref


def _write(tmp: Path, name: str, lines: list[bytes], mtime: float) -> Path:
    p = tmp / name
    p.write_bytes(b"".join(lines))
    os.utime(p, (mtime, mtime))
    return p


def test_repeated_hour_at_the_end_of_summer_time(tmp_path: Path) -> None:
    # Europe/Zurich, 2026-10-25: 02:00-02:59 happens twice; stamps of that hour are not cached
    lines = []
    n = 0
    for hh, mm in [(1, 59), (2, 0), (2, 30), (2, 59), (2, 0), (2, 30), (3, 0)]:
        for ss in (0, 0, 1):
            n += 1
            q = f"{0xABC000 + n:X}0"
            stamp = f"Oct 25 {hh:02d}:{mm:02d}:{ss:02d}".encode()
            lines += [
                stamp + b" mail postfix/pickup[9]: " + q.encode() + b": uid=0 from=<a@b.test>\n",
                stamp + b" mail postfix/qmgr[9]: " + q.encode() + b": removed\n",
                stamp + b" mail postfix/qmgr[9]:\n",  # two parts only
                stamp + b" mail\n",
            ]
    log = _write(tmp_path, "dst.log", lines, NOV_2026)
    out = assert_same([log], tz=ZoneInfo("Europe/Zurich"))
    assert out["stats"]["parsed"] == 2 * 21


def test_year_wrap_and_late_december_lines(tmp_path: Path) -> None:
    stamps = [b"Dec 31 23:59:58", b"Dec 31 23:59:59", b"Jan  1 00:00:00", b"Dec 31 23:59:59"]
    stamps += [b"Jan  1 00:00:01", b"Feb 30 10:00:00", b"Feb 30 10:00:00", b"Jan  1 00:00:02"]
    lines = []
    for i, s in enumerate(stamps):
        q = f"C0FFEE{i:02d}".encode()
        lines.append(s + b" mail postfix/qmgr[1]: " + q + b": from=<x@y>, size=1, nrcpt=1 ")
        lines.append(b"(queue active)\n")
        lines.append(s + b" mail postfix/qmgr[1]: " + q + b": removed\n")
    log = _write(tmp_path, "wrap.log", lines, datetime(2027, 1, 2, tzinfo=UTC).timestamp())
    assert_same([log])


HOSTILE = [
    b"\x00\x01\x02\x03binary\xff\xfe\n",
    b"Nov 27 17:19:54 mail postfix/smtp[1]: " + b"A" * (1 << 20) + b"\n",  # 1 MB line
    b"Nov 27 17:19:54 mail postfix/smtp[1]: " + b"A" * 65400 + b"\n",
    b"\n",
    b"\r\n",
    b"Nov 27 17:19:54 mail postfix/smtp[11683]: 394D3162232: to=<a@b>, relay=x[1.2.3.4]:25,\n",
    b"Nov 27 17:19:54 mail postfix/cleanup[1]: 394D3162233: message-id=<caf\xe9@x>\n",
    b"Nov 27 17:19:54 mail postfix/cleanup[1]: 394D3162233: message-id=<\x00@x>\n",
    b"Nov 27 17:19:54 mail kernel: [12.3] eth0 link up\n",
    b"Nov 27 17:19:54 mail postfix/qmgr[10915]: 394D3162234: removed\r\n",
    b"Nov 27 17:19:54 mail last message repeated 3 times\n",
    b"Nov 27 17:19:54 mail -- MARK --\n",
    b"Nov 27 17:19:54  mail postfix/qmgr[1]: 394D3162234: removed\n",
    b"Nov 27 17:19:54 mail postfix/qmgr[]: 394D3162234: removed\n",
    b"Nov 27 17:19:54 mail postfix/qmgr[12345678901]: 394D3162234: removed\n",
    b"Nov 27 17:19:54 mail postfix/smtp[1]: 394D3162235: to=<a@b>, relay=none, delay=1."
    b"5, delays=1/2/3/4, dsn=4.4.1, status=deferred (connect to x[1.2.3.4]:25: refused)\n",
    b"Nov 27 17:19:54 mail postfix/smtp[1]: 394D3162235: to=<a@b>, relay=none, delay=1, "
    b"delays=1/2/3/4, dsn=4.4.1234, status=deferred (x)\n",
    b"Nov 27 17:19:54 mail postfix/smtp[1]: 394D3162235: to=<a@b>, relay=none, delay=1, "
    b"delays=1/2/3/4, dsn=4.1234.1, status=deferred (x)\n",
    b"Nov 27 17:19:54 mail postfix/smtp[1]: 394D3162235: to=<a@b>, relay=h[1.2.3.4]:x, "
    b"delay=99999999999999999999999, delays=1, status=sent ()\n",
    b"Nov 27 17:19:54 mail postfix/smtp[1]: 394D3162235: to=<a@b>, relay=h[1.2.3.4]:25, "
    b"conn_use=123456789012345678901234567890, delay=0, delays=0, dsn=5.1.1, status=bounced "
    b"(host h[1.2.3.4] said: 550 5.1.1 <a@b>: unknown (in reply to RCPT TO command)) tail)\n",
    b"Nov 27 17:19:54 mail postfix/qmgr[1]: 394D3162236: from=<a>, size=1>, size=2, nrcpt=3 "
    b"(queue active)\n",
    b"Nov 27 17:19:54 mail postfix/qmgr[1]: 394D3162236: from=<>, size=9999999999999999999999, "
    b"nrcpt=1 (queue active)\n",
    b"Nov 27 17:19:54 mail postfix/pickup[1]: 394D3162237: uid=99999999999999999999 from=<>\n",
    b"Nov 27 17:19:54 mail postfix/smtpd[1]: 394D3162237: client=a b[1.2.3.4]:5, sasl_method=X\n",
    b"Nov 27 17:19:54 mail postfix/smtpd[1]: 394D3162237: client=a\x1fb[1.2.3.4]\n",
    b"Nov 27 17:19:54 mail postfix/smtpd[1]: 394D3162238: client=n[1.2.3.4]:25:x, "
    b"sasl_method=PLAIN, sasl_username=u1, sasl_username=u2, , x=y,z=1, sasl_method=\n",
    b"Nov 27 17:19:54 mail postfix/bounce[1]: 394D3162238: sender non-delivery notification: "
    b"394D3162238\n",
    b"Nov 27 17:19:54 mail postfix/bounce[1]: 394D3162238: postmaster delay notification: ABC\n",
    b"Nov 27 17:19:54 mail postfix/qmgr[1]: NOQUEUE: removed\n",
    b"Nov 27 17:19:54 mail postfix/smtpd[3]: NOQUEUE: reject: RCPT from unknown[192.0.2.1]: "
    b"450 4.7.1 <a@b.test>: Recipient address rejected: try later; from=<x@y.test> "
    b"to=<a@b.test> proto=ESMTP helo=<h.test>\n",
    b"Nov 27 17:19:54 mail postfix/smtpd[3]: NOQUEUE: reject: RCPT from h[192.0.2.1]:25: "
    b"450 4.7.1 port given; from=<x@y.test> to=<a@b.test> proto=ESMTP helo=<h.test>\n",
    b"Nov 27 17:19:54 mail postfix/smtpd[3]: NOQUEUE: reject: RCPT from h[192.0.2.1]: "
    b"554 5.7.1 double  space\tand tab; from=<x@y.test> to=<a@b.test> proto=ESMTP helo=<h>\n",
    b"Nov 27 17:19:54 mail postfix/smtpd[3]: NOQUEUE: reject: RCPT from h[192.0.2.1]: "
    b"554-5.7.1 first 554-5.7.1 second 554 5.7.1 last; from=<> to=<a@b> proto=ESMTP helo=<h>\n",
    b"Nov 27 17:19:54 mail postfix/smtpd[3]: NOQUEUE: reject: RCPT from h[192.0.2.1]: "
    b"554 5.7.1 code 554 again; from=<> to=<a@b> proto=ESMTP helo=<h>\n",
    b"Nov 27 17:19:54 mail postfix/smtpd[3]: NOQUEUE: reject: RCPT from h[192.0.2.1]: "
    b"554 5.7.1 first 554 5.7.1 second; from=<> to=<a@b> proto=ESMTP helo=<h>\n",
    b"Nov 27 17:19:54 mail postfix/smtpd[3]: NOQUEUE: reject: RCPT from h[192.0.2.1]: "
    b"554 5.7.1 x; from=<a> b> to=<c> proto=ESMTP helo=<h>\n",
    b"Nov 27 17:19:54 mail postfix/smtpd[3]: NOQUEUE: reject: RCPT from h[192.0.2.1]: "
    b"554 5.7.1 x; from=<a> to=<c> proto=ESMTP helo=<h>: extra text\n",
    b"Nov 27 17:19:54 mail postfix/smtpd[3]: NOQUEUE: reject: RCPT from h[192.0.2.1]: "
    b"554 5.7.1 x; from=<a>; from=<b> to=<c> proto=E,SMTP helo=<h>\n",
    b"Nov 27 17:19:54 mail postfix/smtpd[3]: NOQUEUE: reject: RCPT from h[192.0.2.1]: "
    b"554 5.7.1 y; from=<a> to=<c> proto=ESMTP helo=<>\n",
    b"Nov 27 17:19:54 mail postfix/smtpd[3]: NOQUEUE: reject: RCPT from [192.0.2.1]: "
    b"554 5.7.12345 y; from=<a> to=<c> proto=ESMTP helo=<h>\n",
    b"Nov 27 17:19:54 mail postfix/smtp[1]: NOQUEUE: to=<a@b>, relay=none, delay=1, "
    b"delays=1, status=sent\n",
    b"2026-11-27T17:31:17.507827+00:00 host postfix/qmgr[1]: 394D3162239: removed\n",
    b"2026-11-27T17:31:17.5+00:00 host postfix/qmgr[1]: 394D3162239: removed\n",
    b"2026-11-27T17:31:17Z host postfix/qmgr[1]: 394D3162239: removed\n",
    b"2026-11-27 17:31:17.507827+00:00 host postfix/qmgr[1]: 394D3162239: removed\n",
    b"2026-11-27T17:31:17.507827+99:00 host postfix/qmgr[1]: 394D3162239: removed\n",
    b"2026-11-27T17:31:17.507827+00:00 host\n",
    b"Nov 27 17:19:54 mail postfix/qmgr[10915]: 394D3162235: remo",  # cut, no newline
]


def test_held_connect_lines_past_the_limits(tmp_path: Path) -> None:
    """More "connect to" lines than one process may hold, more processes than may hold any:
    the oldest go on unclaimed (without queue id), the same in C."""
    from mailwarden.sources.postfix import MAX_HELD_PER_PROCESS, MAX_HELD_PROCESSES

    st_ = b"Nov 27 17:19:54 mail postfix/smtp["
    lines = [
        st_ + b"7]: connect to mx%d.example.org[192.0.2.%d]:25: Connection refused\n" % (i, i % 250)
        for i in range(MAX_HELD_PER_PROCESS + 5)
    ]
    lines.append(st_ + b"7]: 4BC1D2E3F4: to=<a@example.org>, relay=none, delay=1, delays=1/0/0/0,"
                 b" dsn=4.4.1, status=deferred (connect to mx3.example.org[192.0.2.3]:25: "
                 b"Connection refused)\n")  # fmt: skip
    for pid in range(MAX_HELD_PROCESSES + 20):
        lines.append(st_ + b"%d]: connect to mx.example.net[192.0.2.9]:25: Connection refused\n"
                     % (1000 + pid))  # fmt: skip
    recent = b"%d]: " % (1000 + MAX_HELD_PROCESSES + 10)
    lines.append(st_ + recent + b"4BC1D2E3F5: to=<b@example.net>, relay=none, delay=1, "
                 b"delays=1/0/0/0, dsn=4.4.1, status=deferred (connect to mx.example.net"
                 b"[192.0.2.9]:25: Connection refused)\n")  # fmt: skip
    log = _write(tmp_path, "held.log", lines, NOV_2026)
    for nshards in (1, 2):
        for me in range(nshards):
            assert_same([log], me=me, nshards=nshards, batch=5)
    out = assert_same([log])
    assert out["stats"]["total"] == len(lines)
    # the twin of 4BC1D2E3F5's status line (its process still holds it): ignored; the first
    # processes let go of theirs as they are
    assert out["stats"]["ignored"] == 1
    agg = out["agg"]
    assert f"mx_replies={MAX_HELD_PER_PROCESS + 5}," in agg  # example.org: none dropped


def test_hostile_lines(tmp_path: Path) -> None:
    log = _write(tmp_path, "hostile.log", HOSTILE, NOV_2026)
    out = assert_same([log])
    assert_same([log], store=False)
    assert out["stats"]["total"] == len(HOSTILE)
    assert out["stats"]["unparsed"] > 5


POOL = [
    ln + b"\n"
    for p in (SAMPLE_LOG, REAL_LOG, DATA / "postfix-lines.txt", DATA / "mx-replies.log")
    for ln in p.read_bytes().splitlines()
    if ln and not ln.startswith(b"#")
] + [ln if ln.endswith(b"\n") else ln + b"\n" for ln in HOSTILE if len(ln) < 1000]


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    line = bytearray(draw(st.sampled_from(POOL)))
    for _ in range(draw(st.integers(0, 3))):
        what = draw(st.sampled_from(["cut", "byte", "insert", "delete", "digit"]))
        if not line:
            break
        i = draw(st.integers(0, len(line) - 1))
        if what == "cut":
            del line[i:]
        elif what == "byte":
            line[i] = draw(st.integers(0, 255))
        elif what == "insert":
            line[i:i] = draw(st.sampled_from([b" ", b">", b",", b":", b"[", b"\xc3", b"\x00"]))
        elif what == "delete":
            del line[i]
        else:
            line[i] = draw(st.sampled_from(b"0123456789"))
    return bytes(line)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(mangled(), min_size=1, max_size=40), st.integers(1, 2))
def test_mangled_lines_give_the_same_result(lines: list[bytes], nshards: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        log = _write(Path(d), "m.log", lines, NOV_2026)
        for me in range(nshards):
            assert_same([log], me=me, nshards=nshards, batch=3)


@pytest.mark.slow
def test_under_the_debug_allocator(tmp_path: Path) -> None:
    """The hostile lines and a real corpus with PYTHONMALLOC=debug and -X dev: freed or
    overrun Python memory would abort the run."""
    log = _write(tmp_path, "hostile.log", HOSTILE, NOV_2026)
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from sources.test_accel import assert_same\n"
        "for p in sys.argv[2:]:\n"
        "    assert_same([Path(p)])\n"
        "    assert_same([Path(p)], me=1, nshards=2)\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONMALLOC": "debug", "PYTHONPATH": str(ROOT / "tests")}
    res = subprocess.run(
        [sys.executable, "-X", "dev", "-c", code, str(ROOT / "tests"), str(log),
         str(REAL_LOG), str(DATA / "genlog-3k-iso.log.gz")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().endswith("ok")


# -- whole message histories: a few queue ids reused, tiny limits -------------------------------

_SHAPES = [
    b"postfix/pickup[7]: {q}: uid={n} from=<{a}>",
    b"postfix/smtpd[8]: {q}: client={h}[192.0.2.{n}]:{n}",
    b"postfix/smtpd[8]: {q}: client=unknown[192.0.2.{n}], sasl_method=PLAIN, sasl_username={a}",
    b"postfix/cleanup[9]: {q}: message-id=<{n}.{a}>",
    b"postfix/cleanup[9]: {q}: resent-message-id=<r{n}@x>",
    b"postfix/qmgr[10]: {q}: from=<{a}>, size={n}, nrcpt=2 (queue active)",
    b"postfix/qmgr[10]: {q}: from=<>, size={n}, nrcpt=1 (queue active)",
    b"postfix/smtp[11]: {q}: to=<{a}>, relay={h}[192.0.2.{n}]:25, delay=0.{n}, "
    b"delays=0/0/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as X{n})",
    b"postfix/smtp[11]: {q}: to=<{a}>, orig_to=<o{a}>, relay={h}[192.0.2.{n}]:25, conn_use=2, "
    b"delay={n}, delays=1/0/0/0, dsn=5.1.1, status=bounced (host {h}[192.0.2.{n}] said: 550 "
    b"5.1.1 <{a}>: Recipient address rejected: User unknown (in reply to RCPT TO command))",
    b"postfix/smtp[11]: {q}: to=<{a}>, relay=none, delay={n}, delays=1/0/0/0, dsn=4.4.1, "
    b"status=deferred (connect to {h}[192.0.2.{n}]:25: Connection refused)",
    b"postfix/error[12]: {q}: to=<{a}>, relay=none, delay=1, delays=1/0/0/0, dsn=4.7.0, "
    b"status=deferred (delivery temporarily suspended: host {h}[192.0.2.1] refused to talk to me:"
    b" 421 4.7.0 Too many connections from 192.0.2.{n})",
    b"postfix/local[13]: {q}: to=<{a}>, relay=local, delay=0, delays=0/0/0/0, dsn=2.0.0, "
    b"status=sent (delivered to mailbox)",
    b"postfix/smtp[11]: {q}: to=<{a}>, relay={h}[192.0.2.{n}]:25, delay=1, delays=0/0/0/1, "
    b"dsn=2.1.5, status=deliverable (250 2.1.5 Ok)",
    b"postfix/bounce[14]: {q}: sender non-delivery notification: {q2}",
    b"postfix/qmgr[10]: {q}: from=<{a}>, status=expired, returned to sender",
    b"postfix/postsuper[15]: {q}: placed on hold",
    b"postfix/cleanup[9]: {q}: reject: header Subject: x from h[192.0.2.1]; from=<{a}> "
    b"to=<b@c> proto=ESMTP helo=<h>: 5.7.1 no",
    b"postfix/cleanup[9]: {q}: discard: body x from h[192.0.2.1]; from=<{a}> to=<b@c>: ok",
    b"postfix/smtpd[8]: NOQUEUE: reject: RCPT from h[192.0.2.{n}]: 554 5.7.1 <{a}>: Relay "
    b"access denied; from=<x@y> to=<{a}> proto=ESMTP helo=<h>",
    b"postfix/smtpd[8]: warning: h[192.0.2.{n}]: SASL LOGIN authentication failed: bad",
    b"postfix/smtpd[8]: NOQUEUE: reject: RCPT from {h}[192.0.2.{n}]: 450 4.7.{n} <{a}>: "
    b"Recipient address rejected: circuit open {n}; from=<{a}> to=<{a}> proto=ESMTP helo=<{h}>",
    b"postfix/qmgr[10]: {q}: removed",
    b"postfix/qmgr[10]: {q}: removed",
    # smtp's lines about one MX: "connect to" without queue id (claimed by the next queue id
    # line of the same process, dropped when a status line repeats it), the others with one
    b"postfix/smtp[11]: connect to {h}[192.0.2.{n}]:25: Connection refused",
    b"postfix/smtp[11]: connect to {h}[192.0.2.{n}]:25: Connection refused",
    b"postfix/smtp[21]: connect to {h}[192.0.2.{n}]:25: Connection timed out",
    b"postfix/smtp[21]: {q}: host {h}[192.0.2.{n}] refused to talk to me: 554 5.7.1 no {n}",
    b"postfix/smtp[11]: {q}: host {h}[192.0.2.{n}] said: 421 4.7.0 Try later (in reply to "
    b"RCPT TO command)",
    b"postfix/smtp[11]: {q}: lost connection with {h}[192.0.2.{n}] while sending RCPT TO",
    b"postfix/lmtp[22]: {q}: conversation with {h}[192.0.2.{n}] timed out while sending "
    b"end of data -- message may be sent more than once",
]
_QIDS = [b"A1B2C3D4E5", b"A1B2C3D4E6", b"F00BA4C0DE", b"4BCDEF01234", b"AAAAAAAAAA"]
_HOSTS = [b"mx1.example.com", b"mx.swisscom.test", b"192.0.2.9", b"gmail-smtp-in.l.google.com"]
_ADDRS = [b"bob@example.org", b"alice@gmail.com", b"x@bluewin.ch", b"", b"postmaster"]


@st.composite
def histories(draw: st.DrawFn) -> list[bytes]:
    t = 1795132800  # 2026-11-21
    lines = []
    for _ in range(draw(st.integers(1, 60))):
        t += draw(st.sampled_from([0, 0, 1, 2, 30, 601, 700, 3700, 7300, 3 * 86400]))
        stamp = datetime.fromtimestamp(t, UTC).strftime("%b %e %H:%M:%S").encode()
        host = draw(st.sampled_from([b"mail", b"mail", b"mx2"]))
        shape = draw(st.sampled_from(_SHAPES))
        line = shape.replace(b"{q}", draw(st.sampled_from(_QIDS)))
        line = line.replace(b"{q2}", draw(st.sampled_from(_QIDS)))
        line = line.replace(b"{n}", str(draw(st.integers(0, 40))).encode())
        line = line.replace(b"{h}", draw(st.sampled_from(_HOSTS)))
        line = line.replace(b"{a}", draw(st.sampled_from(_ADDRS)))
        lines.append(stamp + b" " + host + b" " + line + b"\n")
    return lines


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    histories(),
    st.sampled_from([1, 2, 3, 200_000]),
    st.sampled_from([3600.0, 7200.0, 7 * 86400.0]),
)
def test_message_histories_give_the_same_result(
    lines: list[bytes], max_open: int, horizon: float
) -> None:
    with tempfile.TemporaryDirectory() as d:
        log = _write(Path(d), "h.log", lines, NOV_2026)
        for nshards in (1, 2):
            for me in range(nshards):
                assert_same(
                    [log], me=me, nshards=nshards, batch=2, max_open=max_open, horizon=horizon
                )
                assert_same([log], me=me, nshards=nshards, store=False, max_open=max_open)


# -- the caches keyed by the reply text with its addresses masked --------------------------------


def _reply_texts() -> list[str]:
    import re

    texts = []
    for p in (SAMPLE_LOG, REAL_LOG, DATA / "postfix-lines.txt"):
        for m in re.finditer(rb"status=[a-z-]+ \((.*)\)$", p.read_bytes(), re.M):
            texts.append(m[1].decode("utf-8", "replace"))
    for ln in (DATA / "sisimai-diagnostics.jsonl").read_text().splitlines():
        import json

        texts.extend(v for v in json.loads(ln).values() if isinstance(v, str))
    return texts


REPLY_TEXTS = _reply_texts()
_ADDRISH = st.text(alphabet="ab.+=-_@<> \t1x", max_size=30)


@st.composite
def reply_texts(draw: st.DrawFn) -> str:
    base = draw(st.sampled_from(REPLY_TEXTS))
    i = draw(st.integers(0, len(base)))
    return base[:i] + draw(_ADDRISH) + base[i:]


def _ext() -> Any:
    import mailwarden.sources._postfixscan as ext  # type: ignore[import-not-found]

    return ext


def test_the_corpora_have_reply_texts_with_addresses() -> None:
    assert len(REPLY_TEXTS) > 100
    assert sum("@" in t for t in REPLY_TEXTS) > 30


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.sampled_from(REPLY_TEXTS), reply_texts(), _ADDRISH))
def test_masking_is_the_address_step_of_normalise_reply(text: str) -> None:
    from mailwarden.store.kinds import _ADDR

    masked = _ext().mask_addresses(text)
    if text.isascii():
        assert masked == _ADDR.sub("<addr>", text)
    else:
        assert masked == text


_ADDRESSES = st.one_of(
    st.from_regex(r"<[a-z0-9._+-]{0,8}@[a-z0-9.-]{0,10}>", fullmatch=True),
    st.from_regex(r"[a-z0-9._+=-]{1,8}@[a-z0-9-]{1,8}(\.[a-z0-9-]{1,5}){1,3}", fullmatch=True),
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.sampled_from(REPLY_TEXTS), reply_texts()), st.data())
def test_texts_that_differ_in_their_addresses_are_one_kind(text: str, data: st.DataObject) -> None:
    """What the classification cache relies on: two texts equal once their addresses are
    masked normalise to the same kind (whatever the addresses were)."""
    from mailwarden.store.kinds import _ADDR, normalise_reply

    other = _ADDR.sub(lambda m: data.draw(_ADDRESSES), text)
    mask = _ext().mask_addresses
    if text.isascii() and mask(other) == mask(text):
        assert normalise_reply(other) == normalise_reply(text)


# -- the C reading of the commonest remote reply -------------------------------------------------

_SAID = [
    "host mx.example.com[192.0.2.1] said: 550 5.1.1 <bob@example.org>: Recipient address "
    "rejected: User unknown (in reply to RCPT TO command)",
    "host mx1.b.test[2001:db8::1] said: 452 4.2.2 mailbox full (in reply to end of DATA command)",
    "host a_b-c.test[10.0.0.1] said: 250 2.0.0 Ok (in reply to DATA command)",
]


@st.composite
def said_texts(draw: st.DrawFn) -> str:
    t = draw(st.sampled_from(_SAID + REPLY_TEXTS))
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(t)))
        what = draw(st.sampled_from(["ins", "del", "rep"]))
        ch = draw(st.sampled_from(list(" ()[]:.-_5aZ1\t(in reply to command)")))
        if what == "ins":
            t = t[:i] + ch + t[i:]
        elif what == "del":
            t = t[:i] + t[i + 1 :]
        else:
            t = t[:i] + ch + t[i + 1 :]
    return t


def test_the_c_reading_applies_to_the_commonest_replies() -> None:
    fields = _ext().reply_fields
    assert all(fields(t) is not None for t in _SAID)
    assert sum(fields(t) is not None for t in REPLY_TEXTS) > 20


@settings(max_examples=1500, deadline=None)
@given(said_texts())
def test_the_c_reading_of_replies_is_parse_reply(text: str) -> None:
    from mailwarden.sources.reply import parse_reply

    got = _ext().reply_fields(text)
    if got is not None:
        r = parse_reply(text)
        assert got == (r.code, r.enhanced, r.host, r.ip, r.command)


@pytest.mark.slow
def test_under_address_and_undefined_behaviour_sanitizers(tmp_path: Path) -> None:
    """The extension built with -fsanitize=address,undefined (gcc, in
    scripts/debian-packages.txt): hostile lines, mangled lines and message histories, every
    out-of-bounds read, use after free or overflow aborts the run."""
    import shutil
    import sysconfig

    libasan = subprocess.run(
        ["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert os.path.isabs(libasan), "gcc has no libasan"
    src = tmp_path / "src"
    shutil.copytree(
        ROOT / "src" / "mailwarden",
        src / "mailwarden",
        ignore=shutil.ignore_patterns("*.so", "__pycache__"),
    )
    sources = src / "mailwarden" / "sources"
    ext = sources / ("_postfixscan" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O1", "-g", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer",
         f"-I{sysconfig.get_paths()['include']}", str(sources / "_postfixscan.c"), "-o", str(ext)],
        check=True,
    )  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": str(src),
        "LD_PRELOAD": libasan,
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
    }
    which = subprocess.run(
        [sys.executable, "-c", "from mailwarden.sources import accel; print(accel.extension())"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert str(ext) in which.stdout  # the sanitized build is the one loaded
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__)),
         "-k", "hostile or mangled or histories or corpus or blocks", "-o", "addopts="],
        env=env, capture_output=True, text=True, timeout=900, cwd=ROOT,
    )  # fmt: skip
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    assert "passed" in res.stdout
