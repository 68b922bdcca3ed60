"""analyze end to end on real log lines: counts agree with the log, rejections are classified,
internal deferrals stay apart, parallel and in-process runs agree, the store is idempotent."""

from __future__ import annotations

import copy
import gzip
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from mailwarden.pipeline import analyze
from mailwarden.store import schema
from mailwarden.store.db import open_engine

STATUS = re.compile(r"postfix/[\w/-]+\[\d+\]: (\w+): to=<([^>]*)>.*? status=(\w+)")


def final_states(path: Path) -> Counter[str]:
    """Independent reading of the log: the last status of every (queue id, recipient)."""
    last: dict[tuple[str, str], str] = {}
    expired: set[str] = set()
    for line in path.read_text().splitlines():
        m = STATUS.search(line)
        if m:
            last[(m[1], m[2])] = m[3]
        elif "status=expired, returned to sender" in line:
            expired.add(line.split(": ")[1])
    out: Counter[str] = Counter()
    for (qid, _rcpt), st in last.items():
        if st == "sent":
            out["delivered"] += 1
        elif st == "bounced" or qid in expired:
            out["bounced"] += 1
        else:
            out["deferred"] += 1
    return out


def run(paths: list[Path], classifier: Any, **kw: Any) -> dict[str, Any]:
    kw.setdefault("db_url", None)
    kw.setdefault("attempts_days", 100_000)  # the logs' dates are fixed; keep their attempts
    return analyze(paths, classifier=classifier, **kw).document


def test_recorded_log_counts_agree_with_the_log(real_log: Path, classifier: Any) -> None:
    doc = run([real_log], classifier)
    lines = doc["lines"]
    n_lines = len(real_log.read_bytes().splitlines())
    assert lines["total"] == n_lines
    assert lines["parsed"] + lines["ignored"] + lines["unparsed"] + lines["foreign"] == n_lines
    want = final_states(real_log)
    tot = doc["totals"]
    assert (tot["delivered"], tot["deferred"], tot["bounced"]) == (
        want["delivered"],
        want["deferred"],
        want["bounced"],
    )
    assert tot["recipients"] == sum(want.values())
    assert sum(p["recipients"] for p in doc["providers"]) == tot["recipients"]


def test_the_block_is_one_kind_with_its_count_and_internal_deferrals_stay_apart(
    real_log: Path, classifier: Any
) -> None:
    text = real_log.read_text()
    blocks = sum(1 for ln in text.splitlines() if "status=" in ln and "Swisscom AG" in ln)
    doc = run([real_log], classifier)
    kinds = [(p["provider"], k) for p in doc["providers"] for k in p["rejections"]]
    swiss = [k for prov, k in kinds if "Swisscom AG" in k["sample"]]
    assert len(swiss) == 1, "one normalised kind for every occurrence of the same refusal"
    k = swiss[0]
    assert (k["count"], k["reason"], k["scope"], k["code"], k["enhanced"], k["command"]) == (
        blocks,
        "blocked",
        "ours",
        554,
        "5.7.1",
        "RCPT TO",
    )
    assert k["url"] == "http://example.invalid/block"
    # Postfix's own deferrals (breaker, deferred transport, resolver failure) are not rejections
    for _prov, k in kinds:
        for own in (
            "circuit open",
            "deferred transport",
            "address resolver failure",
            "delivery temporarily suspended",
        ):
            assert own not in k["sample"], k
    internal = {i["sample"] for i in doc["internal"]}
    assert any("circuit open" in s for s in internal)
    assert any("deferred transport" in s for s in internal)
    n_internal = sum(
        1
        for ln in text.splitlines()
        if "status=deferred (circuit open" in ln
        or "(deferred transport)" in ln
        or "(address resolver failure)" in ln
    )
    assert sum(i["count"] for i in doc["internal"]) >= n_internal


def test_origins_and_inbound_rejects(real_log: Path, classifier: Any) -> None:
    text = real_log.read_text()
    doc = run([real_log], classifier)
    origins = {(o["kind"], o["id"]): o for o in doc["origins"]}
    uid33 = origins[("uid", "33")]
    assert uid33["name"] == "www-data"
    assert uid33["messages"] == len(re.findall(r"pickup\[\d+\]: \w+: uid=33 ", text))
    assert ("client", "127.0.25.1") in origins
    assert origins[("bounce", "")]["messages"] == len(
        re.findall(r"sender non-delivery notification", text)
    )
    for o in doc["origins"]:
        assert o["delivered"] + o["deferred"] + o["bounced"] == o["recipients"]
        assert 0 <= o["bounce_ratio"] <= 1
    assert doc["inbound_rejects"]["total"] == text.count("NOQUEUE: ")
    actions = Counter()
    for k in doc["inbound_rejects"]["kinds"]:
        actions[k["action"]] += k["count"]
    assert actions == Counter(re.findall(r"NOQUEUE: (\w+):", text))


def _without_volatile(doc: dict[str, Any]) -> dict[str, Any]:
    d = copy.deepcopy(doc)
    d.pop("generated")
    d.pop("store")
    for s in d["sources"]:
        s.pop("path")
    return d


def test_parallel_workers_give_the_same_report_as_one_process(
    synthetic_log: Path, classifier: Any, tmp_path: Path
) -> None:
    one = run([synthetic_log], classifier, workers=1, db_url=f"sqlite:///{tmp_path}/a.db")
    two = run([synthetic_log], classifier, workers=2, db_url=f"sqlite:///{tmp_path}/b.db")
    assert _without_volatile(one) == _without_volatile(two)
    assert one["totals"]["messages"] > 3000
    for k in ("messages", "attempts", "inbound_rejects"):
        assert one["store"][k] == two["store"][k] > 0
    a = open_engine(f"sqlite:///{tmp_path}/a.db")
    b = open_engine(f"sqlite:///{tmp_path}/b.db")
    try:
        for t in (schema.messages, schema.attempts, schema.rejections, schema.daily_rollups):
            q = select(func.count()).select_from(t)
            with a.connect() as ca, b.connect() as cb:
                assert ca.execute(q).scalar() == cb.execute(q).scalar()
        q2 = (
            select(func.count())
            .select_from(schema.messages)
            .where(schema.messages.c.bounce_of != "")
        )
        notices = synthetic_log.read_text().count(" sender non-delivery notification: ")
        with a.connect() as ca, b.connect() as cb:
            # every bounce notification is linked to its original, across worker shards too
            assert ca.execute(q2).scalar() == cb.execute(q2).scalar() == notices > 0
    finally:
        a.dispose()
        b.dispose()


def test_compressed_input_and_unreadable_files(
    real_log: Path, classifier: Any, tmp_path: Path
) -> None:
    gz = tmp_path / "mail.log.1.gz"
    gz.write_bytes(gzip.compress(real_log.read_bytes()))
    plain = run([real_log], classifier)
    packed = run([gz, tmp_path / "missing.log"], classifier)
    assert packed["sources"][0]["compression"] == "gzip"
    assert packed["totals"] == plain["totals"]
    assert any("missing.log" in e for e in packed["errors"])


def test_garbage_is_counted_and_shown_never_fatal(
    real_log: Path, classifier: Any, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.log"
    good = real_log.read_bytes().splitlines(keepends=True)
    junk = [
        b"\x00\x01\x02binary\n",
        b"Nov 99 99:99:99 mail postfix/smtp[1]: x\n",
        b"not a syslog line at all\n",
        b"Nov 27 17:19:54 mail postfix/smtp[1]: what is this\n",
    ]
    bad.write_bytes(b"".join(good[:50] + junk + good[50:]))
    doc = run([bad], classifier, show_unparsed=True)
    assert doc["lines"]["total"] == len(good) + len(junk)
    assert doc["lines"]["unparsed"] == len(junk)
    assert len(doc["unparsed"]) == len(junk)
    shown = " ".join(u["line"] for u in doc["unparsed"])
    assert "not a syslog line" in shown and "what is this" in shown
    assert doc["totals"] == run([real_log], classifier)["totals"]


def test_since_and_until_leave_events_out(real_log: Path, classifier: Any) -> None:
    full = run([real_log], classifier)
    first = full["period"]["first"]
    import datetime as dt

    t0 = dt.datetime.fromisoformat(first.replace("Z", "+00:00")).timestamp()
    part = run([real_log], classifier, since=t0 + 120)
    assert 0 < part["lines"]["outside_period"] < full["lines"]["parsed"]
    assert part["period"]["first"] >= part["period"]["since"]
    assert part["totals"]["attempts"] < full["totals"]["attempts"]
    none = run([real_log], classifier, until=t0)
    assert none["totals"]["attempts"] == 0


def test_a_partial_import_does_not_mark_the_file_imported(
    real_log: Path, classifier: Any, tmp_path: Path
) -> None:
    import datetime as dt

    url = f"sqlite:///{tmp_path}/part.db"
    full = run([real_log], classifier)
    t0 = dt.datetime.fromisoformat(full["period"]["first"].replace("Z", "+00:00")).timestamp()
    part = run([real_log], classifier, db_url=url, until=t0 + 60)["store"]
    rest = run([real_log], classifier, db_url=url)["store"]
    assert not rest["already_imported"]
    assert rest["attempts"] > 0 and part["attempts"] > 0
    assert run([real_log], classifier, db_url=url)["store"]["already_imported"]


def test_store_reimport_adds_nothing_and_a_grown_file_adds_only_the_rest(
    synthetic_log: Path, classifier: Any, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    lines = synthetic_log.read_bytes().splitlines(keepends=True)
    grow = tmp_path / "mail.log"
    grow.write_bytes(b"".join(lines[: len(lines) // 2]))
    d1 = run([grow], classifier, db_url=url)
    assert d1["store"]["stored"] and d1["store"]["messages"] > 0
    d1b = run([grow], classifier, db_url=url)
    assert d1b["store"]["already_imported"] and d1b["store"]["attempts"] == 0
    with grow.open("ab") as f:  # the log grows (same inode, same first line)
        f.write(b"".join(lines[len(lines) // 2 :]))
    d2 = run([grow], classifier, db_url=url)
    assert d2["store"]["messages_known"] > 0 and d2["store"]["attempts_known"] > 0
    ref = f"sqlite:///{tmp_path}/ref.db"
    run([synthetic_log], classifier, db_url=ref)

    def counts(u: str) -> tuple[int, ...]:
        e = open_engine(u)
        try:
            with e.connect() as c:
                return (
                    c.execute(select(func.count()).select_from(schema.messages)).scalar_one(),
                    c.execute(select(func.count()).select_from(schema.attempts)).scalar_one(),
                    c.execute(select(func.sum(schema.daily_rollups.c.count))).scalar_one(),
                    c.execute(select(func.sum(schema.rejections.c.count))).scalar_one(),
                    c.execute(
                        select(func.count()).select_from(schema.inbound_rejects)
                    ).scalar_one(),
                )
        finally:
            e.dispose()

    # importing half, then the whole grown file equals importing the whole file once
    assert counts(url) == counts(ref)


def test_postgresql_store_gets_the_same_rows(
    real_log: Path, classifier: Any, tmp_path: Path, postgres_url: str
) -> None:
    lite = run([real_log], classifier, db_url=f"sqlite:///{tmp_path}/x.db")["store"]
    pg = run([real_log], classifier, db_url=postgres_url)["store"]
    for k in ("messages", "attempts", "inbound_rejects", "rejection_kinds_new"):
        assert pg[k] == lite[k]
    again = run([real_log], classifier, db_url=postgres_url)["store"]
    assert again["already_imported"]
    assert json.dumps(pg)  # plain data


def test_concurrent_imports_into_one_store_keep_every_attempt_with_its_message(
    tmp_path: Path,
) -> None:
    """Two analyze processes at once on one SQLite store: ids are allocated under the write
    lock per batch, so no attempt lands on another import's message."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    logs = []
    for seed in (11, 12):
        out = tmp_path / f"g{seed}.log"
        subprocess.run(
            [
                sys.executable,
                str(root / "bench" / "genlog.py"),
                "--lines",
                "20000",
                "--out",
                str(out),
                "--seed",
                str(seed),
            ],
            check=True,
            capture_output=True,
        )
        logs.append(out)
    cfg = tmp_path / "mw.toml"
    cfg.write_text("[store]\nattempts_days = 100000\n")
    env = {**__import__("os").environ, "MAILWARDEN_CONFIG": str(cfg)}

    def start(db: Path, log: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mailwarden.cli",
                "analyze",
                "--json",
                "--workers",
                "2",
                "--db",
                f"sqlite:///{db}",
                str(log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )

    both = [start(tmp_path / "both.db", lg) for lg in logs]
    alone = [start(tmp_path / f"alone{i}.db", lg) for i, lg in enumerate(logs)]
    for p in both + alone:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err

    def rows(dbs: list[Path]) -> Counter[tuple[Any, ...]]:
        out: Counter[tuple[Any, ...]] = Counter()
        for db in dbs:
            e = open_engine(f"sqlite:///{db}")
            m, a = schema.messages, schema.attempts
            q = select(m.c.qid, m.c.arrival, a.c.recipient, a.c.ts, a.c.status).join(
                a, a.c.message_pk == m.c.id
            )
            with e.connect() as c:
                out.update(tuple(r) for r in c.execute(q))
            e.dispose()
        return out

    together = rows([tmp_path / "both.db"])
    assert together == rows([tmp_path / "alone0.db", tmp_path / "alone1.db"])
    assert sum(together.values()) > 5000


def test_hostile_lengths_do_not_break_the_store(
    tmp_path: Path, classifier: Any, postgres_url: str
) -> None:
    """Message-IDs and addresses come from senders: overlong ones are cut, not fatal (a
    PostgreSQL B-tree entry cannot exceed ~2700 bytes)."""
    long_id = "x" * 5000 + "@evil.example"
    long_rcpt = "r" * 3000 + "@gmail.test"
    log = tmp_path / "hostile.log"
    log.write_text(
        "Nov 27 17:19:54 mail postfix/pickup[1]: 394D3162231: uid=33 from=<a@example.test>\n"
        f"Nov 27 17:19:54 mail postfix/cleanup[2]: 394D3162231: message-id=<{long_id}>\n"
        "Nov 27 17:19:54 mail postfix/qmgr[3]: 394D3162231: from=<a@example.test>, size=419, "
        "nrcpt=1 (queue active)\n"
        f"Nov 27 17:19:55 mail postfix/smtp[4]: 394D3162231: to=<{long_rcpt}>, "
        "relay=mx.accept.test[127.0.25.3]:25, delay=0.07, delays=0.01/0.04/0.01/0.01, "
        "dsn=5.1.1, status=bounced (host mx.accept.test[127.0.25.3] said: 550 5.1.1 "
        f"<{long_rcpt}>: User unknown (in reply to RCPT TO command))\n"
        "Nov 27 17:19:55 mail postfix/qmgr[3]: 394D3162231: removed\n"
    )
    for url in (postgres_url, f"sqlite:///{tmp_path}/h.db"):
        doc = run([log], classifier, db_url=url)
        assert doc["store"]["messages"] == 1 and doc["store"]["attempts"] == 1
        assert doc["totals"]["bounced"] == 1


def test_a_failing_worker_is_a_clear_error_and_leaves_no_process(
    synthetic_log: Path, classifier: Any
) -> None:
    import multiprocessing

    from mailwarden.errors import MailwardenError, TableError

    class Broken:
        providers = classifier.providers

        def __getattr__(self, name: str) -> Any:
            return getattr(classifier, name)

        def classify(self, *a: Any, **kw: Any) -> Any:
            raise TableError("reasons.toml: broken on purpose")

    with pytest.raises(MailwardenError, match="broken on purpose") as info:
        run([synthetic_log], Broken(), workers=2)
    assert "Traceback" not in str(info.value)
    assert multiprocessing.active_children() == []


def test_sharding_keeps_every_queue_id_in_one_worker(real_log: Path, synthetic_log: Path) -> None:
    from mailwarden.pipeline import shard_of

    qid_re = re.compile(rb"\]: ([0-9A-Za-z]{6,31}): ")
    for log in (real_log, synthetic_log):
        by_qid: dict[bytes, set[int]] = {}
        sizes = Counter()
        for raw in log.read_bytes().splitlines(keepends=True):
            s = shard_of(raw, 2)
            sizes[s] += 1
            m = qid_re.search(raw)
            if m and m[1] != b"NOQUEUE":
                by_qid.setdefault(m[1], set()).add(s)
        assert all(len(v) == 1 for v in by_qid.values())
        assert min(sizes.values()) > 0.3 * sum(sizes.values())  # both workers get work
