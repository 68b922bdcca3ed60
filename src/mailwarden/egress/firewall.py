"""The egress rule: only the MTA's users may open new connections to remote SMTP ports.

Two backends with the same policy:

* ``nft``: one ``inet`` table owned by mailwarden (default ``mailwarden``); nothing else in the
  ruleset is read or changed. Chain ``output`` (hook output): loopback accepted; new connections
  of allowed users to the watched ports are counted, logged to the *allow* NFLOG group and
  accepted; every other new connection to those ports is counted, logged with its uid to the
  *block* group and rejected with a TCP reset (``--mode monitor``: logged to the *monitor*
  prefix and let through).
* ``iptables``: the same rules in a chain ``MAILWARDEN`` of the ``filter`` table, for IPv4 and
  IPv6, reached by one jump rule at the top of ``OUTPUT``. Every rule carries
  ``--ctstate NEW``: without it, packets with no owning socket (TIME_WAIT ACKs, resets) match
  ``! --uid-owner`` and would be rejected.

Plans are text built only from validated values (:mod:`mailwarden.egress.validate`); user names
are resolved to uids when the plan is made. ``apply`` is atomic and idempotent; ``check``
compares the live rules with the plan's canonical form (obtained by loading the plan into a
throw-away network namespace) and reports drift and counters.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from typing import Literal

from mailwarden.egress import validate as v
from mailwarden.errors import ActuatorError, ValidationError

Backend = Literal["nft", "iptables"]
Mode = Literal["enforce", "monitor"]

PREFIX_ALLOW = "mailwarden-allow "
PREFIX_BLOCK = "mailwarden-block "
PREFIX_MONITOR = "mailwarden-monitor "
CHAIN = "MAILWARDEN"
VERDICT_OF_PREFIX = {
    PREFIX_ALLOW.strip(): "allowed",
    PREFIX_BLOCK.strip(): "blocked",
    PREFIX_MONITOR.strip(): "monitored",
}


@dataclass(frozen=True)
class Policy:
    """What the rule says. Build it with :meth:`make` (validates everything)."""

    ports: tuple[int, ...]
    uids: tuple[int, ...]
    users: tuple[str, ...]  # as given, for display
    mode: Mode = "enforce"
    table: str = "mailwarden"
    allow_group: int = 6
    block_group: int = 5

    @classmethod
    def make(
        cls,
        *,
        ports: tuple[object, ...] | list[object],
        users: tuple[object, ...] | list[object],
        mode: str = "enforce",
        table: str = "mailwarden",
        allow_group: int = 6,
        block_group: int = 5,
    ) -> Policy:
        if mode not in ("enforce", "monitor"):
            raise ValidationError(f"invalid mode: {mode!r} (enforce or monitor)")
        if not users:
            raise ValidationError("no allowed users: the MTA could not send any mail")
        uids = tuple(sorted({v.uid_of(u) for u in users}))
        ag, bg = v.nflog_group(allow_group), v.nflog_group(block_group)
        if ag == bg:
            raise ValidationError("allow and block NFLOG groups must differ")
        return cls(
            ports=v.ports(ports),
            uids=uids,
            users=tuple(str(v.user(u)) for u in users),
            mode=mode,  # type: ignore[arg-type]
            table=v.table_name(table),
            allow_group=ag,
            block_group=bg,
        )


def _run(cmd: list[str], *, netns: str | None = None, stdin: str | None = None) -> str:
    full = (["ip", "netns", "exec", netns] if netns else []) + cmd
    try:
        p = subprocess.run(full, input=stdin, capture_output=True, text=True, timeout=30)
    except FileNotFoundError as exc:
        raise ActuatorError(f"{cmd[0]} not found: install the {cmd[0]} package") from exc
    if p.returncode != 0:
        raise ActuatorError(f"{' '.join(cmd)} failed: {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


# --------------------------------------------------------------------------------------
# nftables
# --------------------------------------------------------------------------------------


def nft_plan(p: Policy) -> str:
    """The exact nft ruleset (a complete ``table inet`` definition)."""
    ports = ", ".join(str(x) for x in p.ports)
    uids = ", ".join(str(u) for u in p.uids)
    match = "tcp dport @smtp_ports ct state new"
    if p.mode == "enforce":
        other = (
            f'{match} counter log prefix "{PREFIX_BLOCK}" group {p.block_group} '
            f'reject with tcp reset comment "mailwarden:block"'
        )
    else:
        other = (
            f'{match} counter log prefix "{PREFIX_MONITOR}" group {p.block_group} '
            f'comment "mailwarden:monitor"'
        )
    return (
        f"table inet {p.table} {{\n"
        f"\tset smtp_ports {{\n\t\ttype inet_service\n\t\telements = {{ {ports} }}\n\t}}\n\n"
        f"\tchain output {{\n"
        f"\t\ttype filter hook output priority filter; policy accept;\n"
        f'\t\toifname "lo" accept comment "mailwarden:loopback"\n'
        f'\t\t{match} meta skuid {{ {uids} }} counter log prefix "{PREFIX_ALLOW}" '
        f'group {p.allow_group} accept comment "mailwarden:allow"\n'
        f"\t\t{other}\n"
        f"\t}}\n"
        f"}}\n"
    )


def _strip_counters(text: str) -> str:
    text = re.sub(r"counter packets \d+ bytes \d+", "counter", text)
    text = re.sub(r" # handle \d+", "", text)
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def _canonical_nft(p: Policy) -> str:
    """Load the plan into a fresh network namespace and list it back (nft's own spelling)."""
    script = f"nft -f - && nft list table inet {p.table}"
    out = _run(["unshare", "--net", "sh", "-c", script], stdin=nft_plan(p))
    return _strip_counters(out)


def nft_apply(p: Policy, *, netns: str | None = None) -> None:
    # "table X" creates it if missing, so "delete" always succeeds; all in one transaction.
    body = f"table inet {p.table}\ndelete table inet {p.table}\n" + nft_plan(p)
    _run(["nft", "-f", "-"], netns=netns, stdin=body)


def nft_remove(p: Policy, *, netns: str | None = None) -> bool:
    """Delete our table; False if it was not there."""
    if not _nft_exists(p.table, netns):
        return False
    _run(["nft", "delete", "table", "inet", p.table], netns=netns)
    return True


def _nft_exists(table: str, netns: str | None) -> bool:
    data = json.loads(_run(["nft", "-j", "list", "tables"], netns=netns) or "{}")
    return any(
        t.get("table", {}).get("family") == "inet" and t["table"].get("name") == table
        for t in data.get("nftables", [])
    )


def nft_counters(p: Policy, *, netns: str | None = None) -> dict[str, dict[str, int]]:
    """Packet/byte counters per rule comment (``allow``, ``block`` / ``monitor``)."""
    data = json.loads(_run(["nft", "-j", "list", "table", "inet", p.table], netns=netns))
    out: dict[str, dict[str, int]] = {}
    for item in data.get("nftables", []):
        rule = item.get("rule")
        if not rule or not str(rule.get("comment", "")).startswith("mailwarden:"):
            continue
        for e in rule.get("expr", []):
            if isinstance(e, dict) and "counter" in e:
                c = e["counter"]
                out[rule["comment"].split(":", 1)[1]] = {
                    "packets": int(c.get("packets", 0)),
                    "bytes": int(c.get("bytes", 0)),
                }
    return out


# --------------------------------------------------------------------------------------
# iptables / ip6tables
# --------------------------------------------------------------------------------------


def iptables_rules(p: Policy) -> list[str]:
    """The rules of chain MAILWARDEN (same for iptables and ip6tables), ``-A`` form."""
    ports = ",".join(str(x) for x in p.ports)
    m = f"-p tcp -m multiport --dports {ports} -m conntrack --ctstate NEW"
    rules = [f'-A {CHAIN} -o lo -m comment --comment "mailwarden:loopback" -j RETURN']
    for uid in p.uids:
        rules += [
            f"-A {CHAIN} {m} -m owner --uid-owner {uid} -m comment --comment "
            f'"mailwarden:allow" -j NFLOG --nflog-prefix "{PREFIX_ALLOW.strip()}" '
            f"--nflog-group {p.allow_group}",
            f'-A {CHAIN} {m} -m owner --uid-owner {uid} -m comment --comment "mailwarden:allow" '
            f"-j RETURN",
        ]
    if p.mode == "enforce":
        rules += [
            f'-A {CHAIN} {m} -m comment --comment "mailwarden:block" -j NFLOG '
            f'--nflog-prefix "{PREFIX_BLOCK.strip()}" --nflog-group {p.block_group}',
            f'-A {CHAIN} {m} -m comment --comment "mailwarden:block" -j REJECT '
            f"--reject-with tcp-reset",
        ]
    else:
        rules.append(
            f'-A {CHAIN} {m} -m comment --comment "mailwarden:monitor" -j NFLOG '
            f'--nflog-prefix "{PREFIX_MONITOR.strip()}" --nflog-group {p.block_group}'
        )
    return rules


def iptables_plan(p: Policy) -> str:
    """``iptables-restore --noflush`` input (applied with iptables and ip6tables)."""
    jump = f"# plus, once, at the top of OUTPUT: -I OUTPUT 1 -j {CHAIN}"
    text = "*filter\n:{} - [0:0]\n{}\nCOMMIT\n{}\n"
    return text.format(CHAIN, "\n".join(iptables_rules(p)), jump)


_IPT = (("iptables", "iptables-restore"), ("ip6tables", "ip6tables-restore"))


def iptables_apply(p: Policy, *, netns: str | None = None) -> None:
    body = "*filter\n:{} - [0:0]\n{}\nCOMMIT\n".format(CHAIN, "\n".join(iptables_rules(p)))
    for tool, restore in _IPT:
        _run([restore, "--noflush"], netns=netns, stdin=body)
        try:
            _run([tool, "-w", "-C", "OUTPUT", "-j", CHAIN], netns=netns)
        except ActuatorError:
            _run([tool, "-w", "-I", "OUTPUT", "1", "-j", CHAIN], netns=netns)


def iptables_remove(p: Policy, *, netns: str | None = None) -> bool:
    found = False
    for tool, _ in _IPT:
        for _i in range(32):
            try:
                _run([tool, "-w", "-D", "OUTPUT", "-j", CHAIN], netns=netns)
                found = True
            except ActuatorError:
                break
        try:
            _run([tool, "-w", "-F", CHAIN], netns=netns)
            _run([tool, "-w", "-X", CHAIN], netns=netns)
            found = True
        except ActuatorError:
            pass
    return found


def _ipt_list(tool: str, netns: str | None, counters: bool = False) -> list[str]:
    out = _run([tool, "-w", "-S", CHAIN] + (["-v"] if counters else []), netns=netns)
    return [ln for ln in out.splitlines() if ln.startswith("-A ")]


def _canonical_ipt(p: Policy, tool: str, restore: str) -> list[str]:
    body = "*filter\n:{} - [0:0]\n{}\nCOMMIT\n".format(CHAIN, "\n".join(iptables_rules(p)))
    out = _run(
        ["unshare", "--net", "sh", "-c", f"{restore} --noflush && {tool} -w -S {CHAIN}"],
        stdin=body,
    )
    return [ln for ln in out.splitlines() if ln.startswith("-A ")]


def iptables_counters(p: Policy, *, netns: str | None = None) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for tool, _ in _IPT:
        for ln in _ipt_list(tool, netns, counters=True):
            m = re.search(r'--comment "?mailwarden:(\w+)"?', ln)
            c = re.search(r"-c (\d+) (\d+)", ln)
            if not m or not c:
                continue
            # an NFLOG rule sees the same packets as the verdict rule after it: count the
            # verdict; in monitor mode the NFLOG rule is the only one
            if "-j NFLOG" in ln and m.group(1) != "monitor":
                continue
            slot = out.setdefault(m.group(1), {"packets": 0, "bytes": 0})
            slot["packets"] += int(c.group(1))
            slot["bytes"] += int(c.group(2))
    return out


def rule_installed(backend: str, table: str = "mailwarden", *, netns: str | None = None) -> bool:
    """Is our table (nft) or chain (iptables) there? Cheap; errors count as "no"."""
    try:
        if backend == "iptables":
            _run(["iptables", "-w", "-S", CHAIN], netns=netns)
            return True
        return _nft_exists(table, netns)
    except (ActuatorError, ValueError, OSError):
        return False


# --------------------------------------------------------------------------------------
# front
# --------------------------------------------------------------------------------------


@dataclass
class CheckResult:
    """``check``: installed? drift (unified-diff lines) and counters per rule kind."""

    installed: bool
    drift: list[str] = field(default_factory=list)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.installed and not self.drift


class Firewall:
    """Plan/apply/check/remove the egress rule with one backend, optionally in a netns."""

    def __init__(self, policy: Policy, backend: str = "nft", *, netns: str | None = None) -> None:
        if backend not in ("nft", "iptables"):
            raise ValidationError(f"invalid backend: {backend!r} (nft or iptables)")
        self.policy = policy
        self.backend: Backend = backend  # type: ignore[assignment]
        self.netns = netns

    def plan(self) -> str:
        return nft_plan(self.policy) if self.backend == "nft" else iptables_plan(self.policy)

    def apply(self) -> None:
        if self.backend == "nft":
            nft_apply(self.policy, netns=self.netns)
        else:
            iptables_apply(self.policy, netns=self.netns)

    def remove(self) -> bool:
        if self.backend == "nft":
            return nft_remove(self.policy, netns=self.netns)
        return iptables_remove(self.policy, netns=self.netns)

    def check(self) -> CheckResult:
        import difflib

        if self.backend == "nft":
            if not _nft_exists(self.policy.table, self.netns):
                return CheckResult(False)
            live = _strip_counters(
                _run(["nft", "list", "table", "inet", self.policy.table], netns=self.netns)
            )
            want = _canonical_nft(self.policy)
            drift = list(
                difflib.unified_diff(
                    want.splitlines(), live.splitlines(), "planned", "live", lineterm="", n=1
                )
            )
            return CheckResult(True, drift, nft_counters(self.policy, netns=self.netns))
        drift = []
        installed = True
        for tool, restore in _IPT:
            try:
                live_rules = _ipt_list(tool, self.netns)
            except ActuatorError:
                installed = False
                continue
            want_rules = _canonical_ipt(self.policy, tool, restore)
            drift += list(
                difflib.unified_diff(
                    want_rules, live_rules, f"planned {tool}", f"live {tool}", lineterm="", n=1
                )
            )
            jumps = _run([tool, "-w", "-S", "OUTPUT"], netns=self.netns).splitlines()
            if f"-A OUTPUT -j {CHAIN}" not in jumps:
                drift.append(f"+{tool}: OUTPUT has no jump to {CHAIN}")
        if not installed:
            return CheckResult(False, drift)
        return CheckResult(True, drift, iptables_counters(self.policy, netns=self.netns))
