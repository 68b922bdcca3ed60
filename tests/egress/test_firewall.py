"""The egress rule, for real, in a network namespace: nft and iptables backends, enforce and
monitor modes, NFLOG records with the right uid, drift and counters, other tables untouched."""

from __future__ import annotations

import json
import pwd
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailwarden.egress.firewall import Firewall, Policy, nft_plan
from mailwarden.egress.nflog import NflogReader
from mailwarden.errors import ValidationError

from .conftest import LISTEN_PORTS, EgressNet, requires_net, sh

pytestmark = [pytest.mark.root, requires_net]

PY = "/usr/bin/python3"


def policy(mode: str = "enforce", users: tuple[str, ...] = ("postfix",)) -> Policy:
    return Policy.make(ports=[25, 465, 587, 2525], users=list(users), mode=mode)


def send(net: EgressNet, user: str, host: str, port: int) -> str:
    r = net.run_as(user, [PY, str(net.clients / "mx_send.py"), host, str(port)])
    return str(r["result"])


def collect(reader: NflogReader, want: int, timeout: float = 3.0) -> list:  # type: ignore[type-arg]
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        out += reader.read()
        time.sleep(0.02)
    return out + reader.read()


@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_enforce_blocks_non_mta_users_and_logs_their_uid(
    clean_rules: EgressNet, backend: str
) -> None:
    net = clean_rules
    fw = Firewall(policy(), backend, netns=net.a)
    fw.apply()
    block = NflogReader(5, netns=net.a)
    allow = NflogReader(6, netns=net.a)
    try:
        for port in LISTEN_PORTS:
            for host in (net.b4, net.b6):
                assert send(net, "nobody", host, port) == "refused"
                assert send(net, "www-data", host, port) == "refused"
                assert send(net, "postfix", host, port) == "ok:220"
        blocked = collect(block, 4 * len(LISTEN_PORTS))
        allowed = collect(allow, 2 * len(LISTEN_PORTS))
    finally:
        block.close()
        allow.close()
        fw.remove()
    uids = {pwd.getpwnam(u).pw_uid: u for u in ("nobody", "www-data", "postfix")}
    # exactly one NEW-state record per attempt, carrying the sender's uid and the 5-tuple
    n = 2 * len(LISTEN_PORTS)  # attempts per user: every port, IPv4 and IPv6
    assert sorted(uids[r.uid] for r in blocked) == ["nobody"] * n + ["www-data"] * n
    assert [uids[r.uid] for r in allowed] == ["postfix"] * n
    assert {(r.daddr, r.dport) for r in blocked} == {
        (h, p) for h in (net.b4, net.b6) for p in LISTEN_PORTS
    }
    assert all(r.prefix == "mailwarden-block" and r.sport for r in blocked)
    assert all(r.gid == pwd.getpwnam(uids[r.uid]).pw_gid for r in blocked + allowed)


@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_monitor_mode_lets_everything_through_but_logs(
    clean_rules: EgressNet, backend: str
) -> None:
    net = clean_rules
    fw = Firewall(policy("monitor"), backend, netns=net.a)
    fw.apply()
    mon = NflogReader(5, netns=net.a)
    try:
        assert send(net, "nobody", net.b4, 25) == "ok:220"
        assert send(net, "postfix", net.b4, 25) == "ok:220"
        recs = collect(mon, 1)
        check = fw.check()
    finally:
        mon.close()
        fw.remove()
    assert [(r.uid, r.prefix) for r in recs] == [(65534, "mailwarden-monitor")]
    assert check.ok and check.counters["monitor"]["packets"] == 1
    assert check.counters["allow"]["packets"] == 1


def test_root_is_blocked_unless_allowed(clean_rules: EgressNet) -> None:
    net = clean_rules
    fw = Firewall(policy(users=("postfix", "root")), "nft", netns=net.a)
    fw.apply()
    try:
        assert send(net, "root", net.b4, 587) == "ok:220"
        assert send(net, "nobody", net.b4, 587) == "refused"
    finally:
        fw.remove()


@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_apply_is_idempotent_check_reports_drift_and_remove_cleans_up(
    clean_rules: EgressNet, backend: str
) -> None:
    net = clean_rules
    ns = ["ip", "netns", "exec", net.a]
    # somebody else's table must survive everything we do
    sh(*ns, "nft", "add", "table", "inet", "theirs")
    sh(
        *ns,
        "nft",
        "add",
        "chain",
        "inet",
        "theirs",
        "out",
        "{ type filter hook output priority 10 ; }",
    )
    sh(*ns, "nft", "add", "rule", "inet", "theirs", "out", "tcp", "dport", "9", "counter")
    fw = Firewall(policy(), backend, netns=net.a)
    assert not fw.check().installed
    fw.apply()
    fw.apply()
    r = fw.check()
    assert r.installed and r.ok, r.drift
    assert send(net, "www-data", net.b4, 465) == "refused"
    counters = fw.check().counters
    assert counters["block"]["packets"] >= 1
    # drift: someone edits our rules
    if backend == "nft":
        sh(
            *ns,
            "nft",
            "insert",
            "rule",
            "inet",
            "mailwarden",
            "output",
            "tcp",
            "dport",
            "25",
            "accept",
        )
    else:
        sh(*ns, "iptables", "-I", "MAILWARDEN", "1", "-p", "tcp", "--dport", "25", "-j", "RETURN")
    r = fw.check()
    assert r.installed and not r.ok
    assert any("dport 25" in line for line in r.drift), r.drift
    fw.apply()  # re-applying repairs it
    assert fw.check().ok
    assert fw.remove()
    assert not fw.remove()
    assert not fw.check().installed
    theirs = sh(*ns, "nft", "list", "table", "inet", "theirs").stdout
    assert "tcp dport 9 counter" in theirs
    if backend == "iptables":
        out = (
            sh(*ns, "iptables", "-S", "OUTPUT").stdout + sh(*ns, "ip6tables", "-S", "OUTPUT").stdout
        )
        assert "MAILWARDEN" not in out


def test_iptables_rules_all_carry_ctstate_new() -> None:
    from mailwarden.egress.firewall import iptables_rules

    for mode in ("enforce", "monitor"):
        rules = iptables_rules(policy(mode))
        smtp = [r for r in rules if "--dports" in r]
        assert smtp and all("--ctstate NEW" in r for r in smtp)
        assert any("REJECT --reject-with tcp-reset" in r for r in rules) == (mode == "enforce")


def test_plan_is_exact_and_built_from_validated_values() -> None:
    p = Policy.make(ports=["587", 25], users=["postfix", 0], mode="enforce")
    text = nft_plan(p)
    assert "elements = { 25, 587 }" in text
    assert f"meta skuid {{ 0, {pwd.getpwnam('postfix').pw_uid} }}" in text
    assert "reject with tcp reset" in text and "ct state new" in text
    for bad_user in ('postfix"; flush ruleset; "', "post fix", "Postfix", "-1", "", "a" * 40):
        with pytest.raises(ValidationError):
            Policy.make(ports=[25], users=[bad_user])
    for bad_port in ("25,26", "0", "65536", "25 ", "+25", True, 3.5, "２５"):
        with pytest.raises(ValidationError):
            Policy.make(ports=[bad_port], users=["postfix"])
    with pytest.raises(ValidationError):
        Policy.make(ports=[25], users=["postfix"], mode="drop")
    with pytest.raises(ValidationError):
        Policy.make(ports=[25], users=["no-such-user-mw"])
    with pytest.raises(ValidationError):
        Policy.make(ports=[25], users=["postfix"], table="mailwarden; flush ruleset")


def test_cli_plan_check_exit_codes(clean_rules: EgressNet) -> None:
    net = clean_rules
    mw = [str(Path(sys.executable).parent / "mailwarden")]
    plan = subprocess.run(
        [*mw, "firewall", "plan", "--mode", "monitor"], capture_output=True, text=True
    )
    assert plan.returncode == 0 and "mailwarden-monitor" in plan.stdout
    chk = subprocess.run(
        [*mw, "firewall", "check", "--netns", net.a, "--json"], capture_output=True, text=True
    )
    assert chk.returncode == 1 and json.loads(chk.stdout)["installed"] is False
    assert subprocess.run([*mw, "firewall", "apply", "--netns", net.a]).returncode == 0
    chk = subprocess.run(
        [*mw, "firewall", "check", "--netns", net.a, "--json"], capture_output=True, text=True
    )
    assert chk.returncode == 0 and json.loads(chk.stdout)["ok"] is True
    bad = subprocess.run(
        [*mw, "firewall", "plan", "--allow-user", "x;y"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "invalid user name" in bad.stderr
    assert subprocess.run([*mw, "firewall", "remove", "--netns", net.a]).returncode == 0
