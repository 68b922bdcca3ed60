"""Writer: compact rows in, idempotent store out (both backends)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from mailwarden.store import schema
from mailwarden.store.db import write_transaction
from mailwarden.store.ingest import Batch, ImportStats, Writer
from mailwarden.store.queries import find_attempts, find_messages

T0 = 1_795_799_994.0  # 2026-11-27 17:19:54 UTC

BLOCK = (
    "host mx01.swisscom.test[127.0.25.2] said: 554 5.7.1 Swisscom AG IP: 127.0.0.1, You are "
    "not allowed to send us mail. (in reply to RCPT TO command)"
)


def msg(
    qid: str,
    arrival: float,
    *,
    sender: str = "bounces@example.test",
    uid: str = "33",
    removed: float | None = None,
    bounce_of: str = "",
    msgid: str = "",
) -> tuple[Any, ...]:
    kind, ident, name = ("uid", uid, "www-data") if sender else ("bounce", "", "")
    return (
        "mail",
        qid,
        arrival,
        kind,
        ident,
        name,
        sender,
        msgid or f"{qid}@mail.example.test",
        419,
        1,
        bounce_of,
        None,
        removed,
    )


def att(
    i: int,
    ts: float,
    rcpt: str,
    status: str,
    *,
    kind: str = "",
    reason: str = "",
    provider: str = "swisscom",
) -> tuple[Any, ...]:
    code, enh = (250, "2.0.0") if status == "sent" else (554, "5.7.1")
    return (
        i,
        ts,
        rcpt,
        "",
        "mx01.swisscom.test",
        "127.0.25.2",
        25,
        provider,
        0.09,
        "0.03/0.02/0.01/0.03",
        enh,
        status,
        None,
        code,
        enh,
        kind,
        reason,
    )


def block_kind(first: float, last: float) -> tuple[Any, ...]:
    return (
        "swisscom",
        "k-block",
        "blocked",
        "ours",
        554,
        "5.7.1",
        "RCPT TO",
        "",
        "http://example.invalid/block",
        "127.0.0.1",
        "swisscom/not-allowed",
        False,
        BLOCK,
        first,
        last,
    )


def first_import() -> Batch:
    b = Batch()
    b.messages = [msg("394D3162231", T0, removed=T0 + 1), msg("44EBD162234", T0 + 2)]
    b.attempts = [
        att(0, T0 + 0.5, "bob@bluemail.test", "bounced", kind="k-block", reason="blocked"),
        att(0, T0 + 0.6, "alice@bluewin.test", "bounced", kind="k-block", reason="blocked"),
        att(1, T0 + 2.5, "dave@gmail.test", "deferred", kind="k-block", reason="blocked"),
    ]
    b.kinds = {("swisscom", "k-block"): block_kind(T0 + 0.5, T0 + 2.5)}
    b.inbound = [
        (
            "mail",
            T0 + 3,
            "abc123",
            "reject",
            "RCPT",
            "unknown",
            "127.0.25.1",
            450,
            "4.7.1",
            "Recipient address rejected: circuit open",
            "newsletter@example.test",
            "p1@bluewin.test",
            "app1.example.test",
        )
    ]
    b.links = [("mail", "51D53162239", "394D3162231")]
    return b


def write(engine: Engine, *batches: Batch, cutoff: float | None = None) -> ImportStats:
    with write_transaction(engine) as conn:
        w = Writer(conn, attempts_cutoff=cutoff)
        for b in batches:
            w.write(b)
        return w.finish()


def counts(engine: Engine) -> dict[str, Any]:
    with engine.connect() as c:

        def n(t: Any) -> int:
            return int(c.execute(select(func.count()).select_from(t)).scalar_one())

        rj = c.execute(
            select(
                schema.rejections.c.count,
                schema.rejections.c.first_seen,
                schema.rejections.c.last_seen,
            )
        ).all()
        ru = c.execute(
            select(schema.daily_rollups.c.status, schema.daily_rollups.c.count).order_by(
                schema.daily_rollups.c.status
            )
        ).all()
        return {
            "messages": n(schema.messages),
            "attempts": n(schema.attempts),
            "inbound": n(schema.inbound_rejects),
            "rejections": [tuple(r) for r in rj],
            "rollups": [tuple(r) for r in ru],
        }


def test_first_import_stores_rows_counts_and_rollups(engine: Engine) -> None:
    st = write(engine, first_import())
    assert (st.messages, st.attempts, st.inbound, st.kinds) == (2, 3, 1, 1)
    c = counts(engine)
    assert c["rejections"] == [(3, T0 + 0.5, T0 + 2.5)]
    assert c["rollups"] == [("bounced", 2), ("deferred", 1)]
    with engine.connect() as conn:
        day = conn.execute(select(schema.daily_rollups.c.day).distinct()).scalar_one()
    assert day == dt.date(2026, 11, 27)


def test_same_import_twice_adds_nothing(engine: Engine) -> None:
    write(engine, first_import())
    before = counts(engine)
    st = write(engine, first_import())
    assert (st.messages, st.attempts, st.inbound, st.kinds) == (0, 0, 0, 0)
    assert (st.messages_known, st.attempts_known) == (2, 3)
    assert counts(engine) == before


def test_grown_log_adds_only_the_new_attempts_and_updates_the_message(engine: Engine) -> None:
    write(engine, first_import())
    grown = first_import()
    # the deferred recipient is retried later and delivered; the message is then removed
    grown.messages[1] = msg("44EBD162234", T0 + 2, removed=T0 + 400)
    grown.attempts.append(att(1, T0 + 300, "dave@gmail.test", "sent"))
    st = write(engine, grown)
    assert (st.messages, st.messages_known, st.attempts, st.attempts_known) == (0, 2, 1, 3)
    c = counts(engine)
    assert c["attempts"] == 4
    assert c["rejections"] == [(3, T0 + 0.5, T0 + 2.5)]  # the retry was a success
    assert c["rollups"] == [("bounced", 2), ("deferred", 1), ("sent", 1)]
    [m] = find_messages(engine, qid="44EBD162234")
    assert m.removed_at == T0 + 400
    assert [a.status for a in m.attempts] == ["deferred", "sent"]


def test_duplicate_message_key_within_one_import_keeps_one_row(engine: Engine) -> None:
    b = first_import()
    b.messages.append(msg("394D3162231", T0, removed=T0 + 1))  # same natural key again
    b.attempts.append(att(2, T0 + 0.7, "carol@swissonline.test", "sent"))
    st = write(engine, b)
    assert st.messages == 2
    [m] = find_messages(engine, qid="394D3162231")
    assert sorted(a.recipient for a in m.attempts) == [
        "alice@bluewin.test",
        "bob@bluemail.test",
        "carol@swissonline.test",
    ]


def test_bounce_link_from_another_batch_is_applied(engine: Engine) -> None:
    b1 = first_import()
    b2 = Batch(
        messages=[msg("51D53162239", T0 + 1, sender="")],
        attempts=[att(0, T0 + 1.1, "bounces@example.test", "sent", provider="accept")],
    )
    write(engine, b2, b1)  # the DSN message first, its link later
    [dsn] = find_messages(engine, qid="51D53162239")
    assert dsn.bounce_of == "394D3162231"
    assert dsn.origin_kind == "bounce"
    b3 = Batch(links=[("mail", "AAAA1111", "394D3162231")])
    b4 = Batch(messages=[msg("AAAA1111", T0 + 9, sender="")])
    write(engine, b3, b4)  # the link first
    [dsn2] = find_messages(engine, qid="AAAA1111")
    assert dsn2.bounce_of == "394D3162231"


def test_attempts_older_than_retention_are_counted_not_stored(engine: Engine) -> None:
    st = write(engine, first_import(), cutoff=T0 + 1)
    assert (st.attempts, st.attempts_expired) == (1, 2)
    c = counts(engine)
    assert c["rollups"] == [("bounced", 2), ("deferred", 1)]
    assert [a.recipient for _, a in find_attempts(engine)] == ["dave@gmail.test"]


def test_find_messages_by_message_id_and_time(engine: Engine) -> None:
    write(engine, first_import())
    for q in ("394D3162231@mail.example.test", "<394D3162231@mail.example.test>"):
        [m] = find_messages(engine, message_id=q)
        assert (m.qid, m.origin_kind, m.origin_ident, m.origin_name) == (
            "394D3162231",
            "uid",
            "33",
            "www-data",
        )
        assert {a.reason for a in m.attempts} == {"blocked"}
        assert m.attempts[0].text == BLOCK
    assert [m.qid for m in find_messages(engine, around=T0 + 1, window=1.5)] == [
        "394D3162231",
        "44EBD162234",
    ]
    assert [m.qid for m in find_messages(engine, around=T0 + 2, window=0.5)] == ["44EBD162234"]
    assert find_messages(engine, around=T0, window=10, host="other") == []
    with pytest.raises(ValueError):
        find_messages(engine)


def test_two_writers_of_one_import_share_a_base_and_never_collide(engine: Engine) -> None:
    from mailwarden.store.ingest import apply_links, defer_indexes, restore_indexes, snapshot

    write(engine, first_import())  # something stored before
    with write_transaction(engine) as conn:
        base = snapshot(conn)
        assert not defer_indexes(conn)  # not empty: indexes stay
    with engine.connect() as c0:
        w0 = Writer(c0, base=base)
        w1 = Writer(c0, base=base)
    b0 = Batch(
        messages=[msg("AAA0000001", T0 + 50), msg("AAA0000002", T0 + 51)],
        attempts=[
            att(0, T0 + 50.5, "a@gmail.test", "sent", provider="accept"),
            att(1, T0 + 51.5, "b@gmail.test", "bounced", kind="k-block", reason="blocked"),
        ],
        kinds={("swisscom", "k-block"): block_kind(T0 + 51.5, T0 + 51.5)},
        links=[("mail", "DSN0000001", "AAA0000002")],
    )
    b1 = Batch(
        messages=[msg("DSN0000001", T0 + 52, sender=""), msg("BBB0000001", T0 + 53)],
        attempts=[att(0, T0 + 52.5, "bounces@example.test", "sent", provider="accept")],
    )
    # batches interleave, each in its own transaction, as the worker processes do
    with write_transaction(engine) as conn:
        w1.write(b1, conn)
    with write_transaction(engine) as conn:
        w0.write(b0, conn)
    with write_transaction(engine) as conn:
        w0.finish(conn)
        w1.finish(conn)
        assert w0.unresolved_links() == [("mail", "DSN0000001", "AAA0000002")]
        assert apply_links(conn, w0.unresolved_links() + w1.unresolved_links(), base) == 1
        restore_indexes(conn)  # no-op: nothing was dropped
    ids = sorted(m.id for m in find_messages(engine, around=T0 + 51, window=3))
    assert ids == [base.max_id + 1, base.max_id + 2, base.max_id + 3, base.max_id + 4]
    [dsn] = find_messages(engine, qid="DSN0000001")
    assert dsn.bounce_of == "AAA0000002"
    c = counts(engine)
    assert c["rejections"] == [(4, T0 + 0.5, T0 + 51.5)]


def test_dropped_indexes_come_back_when_the_store_is_opened(store_url: str) -> None:
    """An import into an empty store builds its indexes at the end; if it is killed before,
    the next open puts them back."""
    from sqlalchemy import inspect

    from mailwarden.store.db import open_engine
    from mailwarden.store.ingest import defer_indexes

    e = open_engine(store_url)
    with write_transaction(e) as conn:
        assert defer_indexes(conn)
    assert "ix_attempts_recipient" not in {i["name"] for i in inspect(e).get_indexes("attempts")}
    e.dispose()
    e = open_engine(store_url)
    try:
        names = {i["name"] for i in inspect(e).get_indexes("attempts")}
        assert {"ix_attempts_recipient", "ix_attempts_ts"} <= names
    finally:
        e.dispose()


def test_report_queries_count_from_the_store(engine: Engine) -> None:
    from mailwarden.store.queries import daily_counts, provider_rejections

    write(engine, first_import())
    internal = Batch(
        messages=[msg("CCC0000001", T0 + 60)],
        attempts=[att(0, T0 + 61, "u1@bluewin.test", "deferred", kind="k-own", reason="onhold")],
        kinds={
            ("swisscom", "k-own"): (
                "swisscom",
                "k-own",
                "onhold",
                "transient",
                None,
                "4.7.1",
                "",
                "",
                "",
                "",
                "internal/breaker",
                True,
                "circuit open for provider swisscom",
                T0 + 61,
                T0 + 61,
            )
        },
    )
    write(engine, internal)
    [rc] = provider_rejections(engine)
    assert (rc.provider, rc.reason, rc.scope, rc.code, rc.count) == (
        "swisscom",
        "blocked",
        "ours",
        554,
        3,
    )
    assert rc.url == "http://example.invalid/block" and not rc.internal
    both = provider_rejections(engine, include_internal=True)
    assert sorted((r.reason, r.count) for r in both) == [("blocked", 3), ("onhold", 1)]
    assert [r.count for r in provider_rejections(engine, since=T0 + 1)] == [1]
    assert provider_rejections(engine, provider="google") == []
    rows = daily_counts(engine)
    assert {(p, o, s, r, n) for _d, p, o, s, r, n in rows} == {
        ("swisscom", "uid:33", "bounced", "blocked", 2),
        ("swisscom", "uid:33", "deferred", "blocked", 1),
        ("swisscom", "uid:33", "deferred", "onhold", 1),
    }
