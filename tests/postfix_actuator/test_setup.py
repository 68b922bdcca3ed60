"""`postfix setup` / `teardown` on a real Postfix instance (the session's test instance), and
the generated status filter checked with Postfix's own regexp table code (postmap -q)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from mailwarden.breaker.rules import RuleSet
from mailwarden.errors import ActuatorError, ValidationError
from mailwarden.postfix.control import Postfix
from mailwarden.postfix.dsnfilter import table_lines, to_ere
from mailwarden.postfix.setup import (
    BASE_TRANSPORT,
    REWRITE_SERVICE,
    Setup,
    SlowClone,
    socketmap_table,
)

RULES = RuleSet.load(etc=Path("/nonexistent"))


def make_setup(pf: Postfix, **kw: Any) -> Setup:
    return Setup(
        pf,
        socketmap_host="127.0.0.1",
        socketmap_port=kw.pop("port", 10041),
        filter_rules=[(r.id, r.pattern.pattern) for r in RULES.status_filter_rules() if r.pattern],
        slow=[SlowClone(s.rate_delay, s.concurrency) for s in RULES.slow_specs()],
        **kw,
    )


def snapshot(pf: Postfix) -> tuple[str, str]:
    n = subprocess.run(
        ["postconf", "-c", str(pf.config_dir), "-n"], capture_output=True, text=True, check=True
    ).stdout
    m = subprocess.run(
        ["postconf", "-c", str(pf.config_dir), "-M"], capture_output=True, text=True, check=True
    ).stdout
    return n, m


@pytest.fixture
def pf(postfix: Any) -> Postfix:
    return Postfix(postfix.config_dir)


def test_dry_run_plans_but_changes_nothing(pf: Postfix) -> None:
    before = snapshot(pf)
    plan = make_setup(pf).plan()
    whats = " | ".join(c.what for c in plan.changes)
    assert "transport_maps" in whats and "smtp_delivery_status_filter" in whats
    assert REWRITE_SERVICE in whats and "mwslow" in whats
    assert any("postconf -e" in c.command for c in plan.changes)
    assert snapshot(pf) == before
    assert not (pf.config_dir / "mailwarden-setup.json").exists()


def test_setup_applies_is_idempotent_and_teardown_restores(pf: Postfix, postfix: Any) -> None:
    before = snapshot(pf)
    s = make_setup(pf)
    assert s.apply(s.plan()) is True
    assert (
        pf.get("transport_maps") == f"${BASE_TRANSPORT}, socketmap:inet:127.0.0.1:10041:transport"
    )
    assert (
        pf.get_expanded("transport_maps").strip(" ,") == "socketmap:inet:127.0.0.1:10041:transport"
    )
    assert pf.get("smtp_delivery_status_filter").startswith(f"regexp:{pf.config_dir}/")
    assert pf.service_param("smtp", "inet", "rewrite_service_name") == REWRITE_SERVICE
    assert pf.service_param(REWRITE_SERVICE, "unix", "transport_maps") == f"${BASE_TRANSPORT}"
    assert pf.service("mwslow60s1", "unix") is not None
    assert pf.get("mwslow60s1_destination_rate_delay") == "60s"
    assert list(pf.config_dir.glob("main.cf.mailwarden-*")), "no backup taken"
    assert pf.running()
    postfix.wait_for_log(r"postfix/master\[\d+\]: reload", since=postfix.log_mark)
    # idempotent
    again = make_setup(pf).plan()
    assert again.changes == [], [c.what for c in again.changes]
    # teardown
    t = make_setup(pf)
    assert t.teardown(t.teardown_plan()) is True
    assert snapshot(pf) == before
    assert not (pf.config_dir / "mailwarden-setup.json").exists()
    assert not (pf.config_dir / "mailwarden_status_filter").exists()
    assert make_setup(pf).teardown_plan().changes == []


def test_admin_maps_stay_first_and_survive_teardown(pf: Postfix) -> None:
    tfile = pf.config_dir / "transport"
    tfile.write_text("static-route.example   smtp:[127.0.0.9]:25\n")
    subprocess.run(["postmap", "-c", str(pf.config_dir), f"hash:{tfile}"], check=True)
    pf.set({"transport_maps": f"hash:{tfile}"})
    before = snapshot(pf)
    s = make_setup(pf, accept_then_park=False)
    s.apply(s.plan())
    assert pf.get(BASE_TRANSPORT) == f"hash:{tfile}"
    assert pf.get_expanded("transport_maps").split(", ")[0] == f"hash:{tfile}"
    assert pf.service(REWRITE_SERVICE, "unix") is None  # accept-then-park off
    # The admin edits the base maps while we are set up: teardown keeps the edit.
    pf.set({BASE_TRANSPORT: f"hash:{tfile}, hash:{tfile}2"})
    t = make_setup(pf)
    t.teardown(t.teardown_plan())
    assert pf.get("transport_maps") == f"hash:{tfile}, hash:{tfile}2"
    pf.set({"transport_maps": f"hash:{tfile}"})
    assert snapshot(pf) == before


def test_switching_accept_then_park_off_reverts_only_that(pf: Postfix) -> None:
    s = make_setup(pf)
    s.apply(s.plan())
    off = make_setup(pf, accept_then_park=False)
    off.apply(off.plan())
    assert pf.service_param("smtp", "inet", "rewrite_service_name") is None
    assert pf.service(REWRITE_SERVICE, "unix") is None
    assert pf.get("transport_maps").endswith("socketmap:inet:127.0.0.1:10041:transport")
    t = make_setup(pf)
    t.teardown(t.teardown_plan())


def test_failed_check_puts_the_backups_back(pf: Postfix, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(pf)

    def broken() -> None:
        raise ActuatorError("postfix check failed: simulated")

    s = make_setup(pf)
    plan = s.plan()
    monkeypatch.setattr(pf, "check", broken)
    with pytest.raises(ActuatorError):
        s.apply(plan)
    assert snapshot(pf) == before
    assert not (pf.config_dir / "mailwarden-setup.json").exists()


def test_socketmap_table_only_on_loopback() -> None:
    assert socketmap_table("127.0.0.1", 10041) == "socketmap:inet:127.0.0.1:10041:transport"
    assert socketmap_table("::1", 5) == "socketmap:inet:[::1]:5:transport"
    for bad in ("192.0.2.1", "localhost", "127.0.0.1 x"):
        with pytest.raises(ValidationError):
            socketmap_table(bad, 10041)


# ------------------------------------------------------------------------------ status filter


def _filter_file(tmp_path: Path) -> Path:
    lines, skipped = table_lines(
        [(r.id, r.pattern.pattern) for r in RULES.status_filter_rules() if r.pattern]
    )
    assert skipped == []
    p = tmp_path / "filter"
    p.write_text("".join(lines))
    return p


def _postmap_q(key: str, table: str) -> str | None:
    p = subprocess.run(["postmap", "-q", key, table], capture_output=True, text=True, timeout=20)
    assert "warning" not in p.stderr, p.stderr
    return p.stdout.rstrip("\n") if p.returncode == 0 else None


@pytest.mark.parametrize(
    ("rule", "sample"),
    [
        pytest.param(r, s, id=f"{r.id}#{i}")
        for r in RULES.status_filter_rules()
        for i, s in enumerate(r.samples)
        if s.fires and s.reply[:1] == "5"
    ],
)
def test_status_filter_turns_each_block_sample_into_a_deferral(
    tmp_path: Path, rule, sample
) -> None:  # type: ignore[no-untyped-def]
    table = f"regexp:{_filter_file(tmp_path)}"
    code = sample.reply.split()[1] if sample.reply.split()[1][:2] == "5." else "5.0.0"
    query = (
        f"{code} host mx.example.net[192.0.2.9] said: {sample.reply} (in reply to RCPT TO command)"
    )
    out = _postmap_q(query, table)
    assert out is not None, f"{rule.id}: not matched by the generated filter"
    assert out == "4" + query[1:]


@pytest.mark.parametrize(
    "query",
    [
        "5.1.1 host mx[192.0.2.9] said: 550 5.1.1 <x@bluewin.ch>: Recipient address rejected: "
        "User unknown (in reply to RCPT TO command)",
        "5.2.2 host mx[192.0.2.9] said: 552 5.2.2 Mailbox full (in reply to end of DATA command)",
        "4.7.1 host mx[192.0.2.9] said: 454 4.7.1 You are not allowed to send us mail "
        "(in reply to RCPT TO command)",
        "2.0.0 Ok: queued as ABC",
    ],
)
def test_status_filter_leaves_other_results_alone(tmp_path: Path, query: str) -> None:
    assert _postmap_q(query, f"regexp:{_filter_file(tmp_path)}") is None


@pytest.mark.parametrize(
    ("py", "ere"),
    [
        (r"\[(TS03|TSS09)\]", r"\[(TS03|TSS09)\]"),
        (r"5\.7\.60[6-9]|x", r"5\.7\.60[6-9]|x"),
        (r"(?:a|b)\d+\s", r"(a|b)[0-9]+[[:space:]]"),
        (r"(?i)weren.t", r"weren.t"),
        (r"a/b", r"a/b"),
    ],
)
def test_to_ere(py: str, ere: str) -> None:
    assert to_ere(py) == ere


@pytest.mark.parametrize("py", [r"(?<=a)b", r"a*?", r"\1", r"[\d]", r"(?P<x>a)", "a\\"])
def test_to_ere_refuses_what_posix_lacks(py: str) -> None:
    with pytest.raises(ValidationError):
        to_ere(py)
