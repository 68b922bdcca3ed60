"""``mailwarden postfix setup`` / ``teardown``: the main.cf and master.cf changes the breaker needs.

Setup (idempotent; ``--dry-run`` prints the same plan without touching anything):

* ``transport_maps = $mailwarden_base_transport_maps, socketmap:inet:HOST:PORT:transport``, the
  admin's maps kept first (their explicit routes win) under ``mailwarden_base_transport_maps``;
* ``smtp_delivery_status_filter = regexp:<config>/mailwarden_status_filter,
  $mailwarden_base_smtp_delivery_status_filter`` plus the generated table (see
  :mod:`mailwarden.postfix.dsnfilter`), so block replies of in-flight attempts defer;
* one throttled smtp clone per distinct ``slow`` setting of the rules (``mwslow<rate>s<conc>``
  in master.cf with ``<name>_destination_rate_delay`` and ``_destination_concurrency_limit``);
* accept-then-park (``[breaker] accept_then_park``, on by default): a ``mwrewrite``
  trivial-rewrite service that resolves without the breaker map, used by every smtpd ``inet``
  service (``-o rewrite_service_name=mwrewrite``), so SMTP submitters get 250 and the mail is
  parked in the queue instead of a 450 at RCPT.

Before the first change both files are backed up (``main.cf.mailwarden-<time>``); after the
changes ``postfix check`` must pass (else the backups are put back) and a running Postfix is
reloaded. What was there before is recorded in ``<config>/mailwarden-setup.json``; teardown
reverts exactly that, keeping whatever the admin changed in between.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from mailwarden.errors import ActuatorError, ValidationError
from mailwarden.postfix import validate
from mailwarden.postfix.control import Postfix
from mailwarden.postfix.dsnfilter import table_lines

STATE_FILE = "mailwarden-setup.json"
FILTER_FILE = "mailwarden_status_filter"
REWRITE_SERVICE = "mwrewrite"
BASE_TRANSPORT = "mailwarden_base_transport_maps"
BASE_FILTER = "mailwarden_base_smtp_delivery_status_filter"
SLOW_PREFIX = "mwslow"


@dataclass(frozen=True, slots=True)
class SlowClone:
    """A throttled smtp transport clone."""

    rate_delay: int
    concurrency: int

    @property
    def name(self) -> str:
        return validate.transport(f"{SLOW_PREFIX}{self.rate_delay}s{self.concurrency}")


@dataclass(frozen=True, slots=True)
class Change:
    """One step of a plan: what it does, in words and as the equivalent command."""

    what: str
    command: str
    apply: Callable[[], None] = field(compare=False, repr=False)


@dataclass(slots=True)
class Plan:
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    def add(self, what: str, command: str, fn: Callable[[], None]) -> None:
        self.changes.append(Change(what, command, fn))


def socketmap_table(host: str, port: int) -> str:
    """``socketmap:inet:HOST:PORT:transport`` for a loopback address."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValidationError(f"socketmap host must be an IP address: {host!r}") from exc
    if not ip.is_loopback:
        raise ValidationError(f"socketmap host must be a loopback address: {host}")
    if not 1 <= port <= 65535:
        raise ValidationError(f"bad socketmap port {port}")
    h = f"[{host}]" if ip.version == 6 else host
    return f"socketmap:inet:{h}:{port}:transport"


def _split(value: str) -> list[str]:
    out: list[str] = []
    depth = 0
    cur = ""
    for c in value:
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        if depth == 0 and (c in ", \t\n"):
            if cur:
                out.append(cur)
            cur = ""
        else:
            cur += c
    if cur:
        out.append(cur)
    return out


def _cmd(*args: str) -> str:
    return " ".join(a if a and " " not in a and "$" not in a else repr(a) for a in args)


class Setup:
    """Plans, applies and reverts the breaker's Postfix configuration."""

    def __init__(
        self,
        pf: Postfix,
        *,
        socketmap_host: str = "127.0.0.1",
        socketmap_port: int = 10041,
        accept_then_park: bool = True,
        filter_rules: list[tuple[str, str]] | None = None,
        slow: list[SlowClone] | None = None,
    ) -> None:
        self.pf = pf
        self.table = socketmap_table(socketmap_host, socketmap_port)
        self.accept_then_park = accept_then_park
        self.filter_rules = filter_rules or []
        self.slow = sorted(set(slow or []), key=lambda s: s.name)

    @property
    def state_path(self) -> Path:
        return self.pf.config_dir / STATE_FILE

    @property
    def filter_path(self) -> Path:
        return self.pf.config_dir / FILTER_FILE

    def load_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ActuatorError(f"{self.state_path}: unreadable: {exc}") from exc
        return data if isinstance(data, dict) else {}

    # ------------------------------------------------------------------------------ setup

    def plan(self) -> Plan:
        pf = self.pf
        st = self.load_state()
        prev_main: dict[str, str | None] = dict(st.get("main_cf_prev", {}))
        prev_params: dict[str, str | None] = dict(st.get("service_params_prev", {}))
        added: list[str] = list(st.get("services_added", []))
        plan = Plan()
        main: dict[str, str] = {}

        def remember(name: str) -> None:
            if name not in prev_main:
                prev_main[name] = pf.get(name) if pf.is_set(name) else None

        # transport_maps: the admin's maps first, then ours.
        cur_tm = pf.get("transport_maps")
        want_tm = f"${BASE_TRANSPORT}, {self.table}"
        if cur_tm != want_tm:
            base = ", ".join(t for t in _split(cur_tm) if t != self.table)
            if f"${BASE_TRANSPORT}" in _split(cur_tm):
                base = pf.get(BASE_TRANSPORT)
            remember("transport_maps")
            remember(BASE_TRANSPORT)
            main[BASE_TRANSPORT] = base
            main["transport_maps"] = want_tm

        # smtp_delivery_status_filter: ours first.
        lines, skipped = table_lines(self.filter_rules)
        for rule_id, why in skipped:
            plan.notes.append(f"rule {rule_id}: no status filter entry ({why})")
        text = "".join(lines)
        old = self.filter_path.read_text() if self.filter_path.exists() else None
        if old != text:
            path = self.filter_path
            plan.add(
                f"write {path} ({len(lines) - 1} block rules: 5XX -> 4XX)",
                f"cat > {path}",
                lambda: _write(path, text),
            )
        ours = f"regexp:{self.filter_path}"
        cur_f = pf.get("smtp_delivery_status_filter")
        want_f = f"{ours}, ${BASE_FILTER}"
        if cur_f != want_f:
            base_f = ", ".join(t for t in _split(cur_f) if t != ours)
            if f"${BASE_FILTER}" in _split(cur_f):
                base_f = pf.get(BASE_FILTER)
            remember("smtp_delivery_status_filter")
            remember(BASE_FILTER)
            main[BASE_FILTER] = base_f
            main["smtp_delivery_status_filter"] = want_f

        # slow clones
        smtp_entry = pf.service("smtp", "unix")
        chroot = smtp_entry.split()[4] if smtp_entry and len(smtp_entry.split()) > 4 else "y"
        wanted = {c.name for c in self.slow}
        for c in self.slow:
            entry = f"{c.name} unix - - {chroot} - - smtp -o syslog_name=postfix/{c.name}"
            params = {
                f"{c.name}_destination_rate_delay": f"{c.rate_delay}s",
                f"{c.name}_destination_concurrency_limit": str(c.concurrency),
                f"{c.name}_initial_destination_concurrency": "1",
            }
            for k, v in params.items():
                if pf.get(k) != v or not pf.is_set(k):
                    remember(k)
                    main[k] = v
            have = pf.service(c.name, "unix")
            if have is None or have.split() != entry.split():
                key = f"{c.name}/unix"
                plan.add(
                    f"master.cf: throttled smtp clone {c.name} "
                    f"(one delivery per {c.rate_delay}s, concurrency {c.concurrency})",
                    _cmd("postconf", "-M", f"{key}={entry}"),
                    partial(pf.set_service, c.name, "unix", entry),
                )
                if key not in added:
                    added.append(key)
        for key in list(added):
            name = key.split("/")[0]
            if name.startswith(SLOW_PREFIX) and name not in wanted:
                plan.add(
                    f"master.cf: remove unused clone {name}",
                    _cmd("postconf", "-MX", key),
                    partial(pf.delete_service, name, "unix"),
                )
                added.remove(key)
                stale = [
                    p
                    for p in prev_main
                    if p.startswith(f"{name}_") and prev_main[p] is None and pf.is_set(p)
                ]
                if stale:
                    plan.add(
                        f"main.cf: remove the settings of {name}",
                        _cmd("postconf", "-X", *stale),
                        partial(pf.unset, stale),
                    )

        # accept-then-park
        smtpd_services = [
            (n, t) for n, t, e in pf.services() if t == "inet" and e.split()[7] == "smtpd"
        ]
        if self.accept_then_park:
            rw_entry = pf.service("rewrite", "unix")
            rw_chroot = rw_entry.split()[4] if rw_entry and len(rw_entry.split()) > 4 else "y"
            entry = f"{REWRITE_SERVICE} unix - - {rw_chroot} - - trivial-rewrite"
            have = pf.service(REWRITE_SERVICE, "unix")
            key = f"{REWRITE_SERVICE}/unix"
            if have is None or have.split()[:8] != entry.split():
                plan.add(
                    "master.cf: trivial-rewrite without the breaker map, for smtpd",
                    _cmd("postconf", "-M", f"{key}={entry}"),
                    lambda: pf.set_service(REWRITE_SERVICE, "unix", entry),
                )
                if key not in added:
                    added.append(key)
            if pf.service_param(REWRITE_SERVICE, "unix", "transport_maps") != f"${BASE_TRANSPORT}":
                plan.add(
                    f"master.cf: {REWRITE_SERVICE} uses the admin's transport maps only",
                    _cmd("postconf", "-P", f"{key}/transport_maps=${BASE_TRANSPORT}"),
                    lambda: pf.set_service_param(
                        REWRITE_SERVICE, "unix", "transport_maps", f"${BASE_TRANSPORT}"
                    ),
                )
            for n, t in smtpd_services:
                k = f"{n}/{t}/rewrite_service_name"
                cur = pf.service_param(n, t, "rewrite_service_name")
                if cur != REWRITE_SERVICE:
                    if k not in prev_params:
                        prev_params[k] = cur
                    plan.add(
                        f"master.cf: {n}/{t} accepts (250) and parks instead of a 450 at RCPT",
                        _cmd("postconf", "-P", f"{k}={REWRITE_SERVICE}"),
                        partial(
                            pf.set_service_param, n, t, "rewrite_service_name", REWRITE_SERVICE
                        ),
                    )
        else:
            for k, prev in list(prev_params.items()):
                n, t, p = k.split("/")
                plan.add(
                    f"master.cf: {n}/{t} back to the default rewrite service",
                    _cmd("postconf", "-PX" if prev is None else "-P", k),
                    _restore_param(pf, n, t, p, prev),
                )
                del prev_params[k]
            if f"{REWRITE_SERVICE}/unix" in added:
                plan.add(
                    f"master.cf: remove {REWRITE_SERVICE}",
                    _cmd("postconf", "-MX", f"{REWRITE_SERVICE}/unix"),
                    lambda: pf.delete_service(REWRITE_SERVICE, "unix"),
                )
                added.remove(f"{REWRITE_SERVICE}/unix")

        if main:
            items = dict(main)
            plan.changes.insert(
                0,
                Change(
                    "main.cf: " + ", ".join(sorted(items)),
                    _cmd("postconf", "-e", *(f"{k} = {v}" for k, v in items.items())),
                    lambda: pf.set(items),
                ),
            )
        plan.state = {
            "version": 1,
            "socketmap": self.table,
            "filter": str(self.filter_path),
            "main_cf_prev": prev_main,
            "service_params_prev": prev_params,
            "services_added": added,
        }
        return plan

    def apply(self, plan: Plan) -> bool:
        """Back up, apply, ``postfix check`` (restore on failure), record, reload.

        Returns True when something changed.
        """
        if not plan.changes:
            self._save_state(plan.state)
            return False
        self._change(plan)
        self._save_state(plan.state)
        self.pf.reload()
        return True

    def _change(self, plan: Plan) -> None:
        """Back up, make every change of ``plan``, ``postfix check``; on any failure put the
        backed-up files back and re-raise."""
        backups = self._backup()
        try:
            for c in plan.changes:
                c.apply()
            self.pf.check()
        except Exception:
            for orig, copy in backups:
                shutil.copy2(copy, orig)
            raise

    def _backup(self) -> list[tuple[Path, Path]]:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = []
        for name in ("main.cf", "master.cf"):
            orig = self.pf.config_dir / name
            copy = orig.with_name(f"{name}.mailwarden-{stamp}")
            shutil.copy2(orig, copy)
            out.append((orig, copy))
        return out

    def _save_state(self, state: dict[str, Any]) -> None:
        _write(self.state_path, json.dumps(state, indent=1, sort_keys=True) + "\n")

    # ------------------------------------------------------------------------------ teardown

    def teardown_plan(self) -> Plan:
        pf = self.pf
        st = self.load_state()
        plan = Plan()
        if not st:
            plan.notes.append(f"no {self.state_path}: nothing was set up here")
            return plan
        table = str(st.get("socketmap", self.table))
        ours_f = f"regexp:{st.get('filter', self.filter_path)}"
        prev_main: dict[str, str | None] = st.get("main_cf_prev", {})
        main: dict[str, str] = {}
        unset: list[str] = []

        def restored(param: str, base: str, ours: str) -> str | None:
            """The admin's current maps: our entry removed, the base variable expanded."""
            if not pf.is_set(param):
                return None
            out: list[str] = []
            for t in _split(pf.get(param)):
                if t == ours:
                    continue
                if t == f"${base}":
                    out.extend(_split(pf.get(base)))
                else:
                    out.append(t)
            return ", ".join(out)

        for param, base, ours in (
            ("transport_maps", BASE_TRANSPORT, table),
            ("smtp_delivery_status_filter", BASE_FILTER, ours_f),
        ):
            value = restored(param, base, ours)
            prev = prev_main.get(param)
            if value is None:
                continue
            if prev is None and value in ("", "$default_delivery_status_filter"):
                unset.append(param)
            else:
                main[param] = value
        for param, prev in prev_main.items():
            if param in ("transport_maps", "smtp_delivery_status_filter"):
                continue
            if prev is None:
                if pf.is_set(param):
                    unset.append(param)
            else:
                main[param] = prev
        for k, prev in dict(st.get("service_params_prev", {})).items():
            n, t, p = k.split("/")
            plan.add(
                f"master.cf: {n}/{t} {p} restored",
                _cmd("postconf", "-PX" if prev is None else "-P", k),
                _restore_param(pf, n, t, p, prev),
            )
        for key in st.get("services_added", []):
            name, kind = key.split("/")
            if pf.service(name, kind) is not None:
                plan.add(
                    f"master.cf: remove {key}",
                    _cmd("postconf", "-MX", key),
                    partial(pf.delete_service, name, kind),
                )
        if main:
            plan.changes.insert(
                0,
                Change(
                    "main.cf: restore " + ", ".join(sorted(main)),
                    _cmd("postconf", "-e", *(f"{k} = {v}" for k, v in main.items())),
                    lambda: pf.set(main),
                ),
            )
        if unset:
            plan.changes.insert(
                1 if main else 0,
                Change(
                    "main.cf: back to defaults: " + ", ".join(sorted(unset)),
                    _cmd("postconf", "-X", *unset),
                    lambda: pf.unset(unset),
                ),
            )
        fpath = Path(str(st.get("filter", self.filter_path)))
        if fpath.exists():
            plan.add(f"remove {fpath}", f"rm {fpath}", lambda: fpath.unlink(missing_ok=True))
        sp = self.state_path
        plan.add(f"remove {sp}", f"rm {sp}", lambda: sp.unlink(missing_ok=True))
        return plan

    def teardown(self, plan: Plan) -> bool:
        if not plan.changes:
            return False
        self._change(plan)
        self.pf.reload()
        return True


def _restore_param(
    pf: Postfix, name: str, kind: str, param: str, prev: str | None
) -> Callable[[], None]:
    def fn() -> None:
        if pf.service(name, kind) is None:
            return
        if prev is None:
            if pf.service_param(name, kind, param) is not None:
                pf.unset_service_param(name, kind, param)
        else:
            pf.set_service_param(name, kind, param, prev)

    return fn


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.replace(path)
