"""Thin, checked wrappers around Postfix's own tools for one instance (``-c CONFIG_DIR``).

``postconf`` (read, ``-e``, ``-X``, ``-M``, ``-MX``, ``-P``, ``-PX``), ``postfix check`` /
``reload`` / ``status``, ``postqueue -j`` / ``-i``, ``postsuper -h`` / ``-H``. Every value is
passed as its own argv element (no shell) after :mod:`mailwarden.postfix.validate`; a failing
command raises :class:`mailwarden.errors.ActuatorError` with its output.

Privileges: ``postsuper -h/-H`` (hold parked mail before it expires, release it), ``postqueue
-i``, ``postfix reload`` and ``postfix status`` need root, while ``mailwarden run`` runs as an
unprivileged user. With ``privilege = "sudo"`` (``[breaker] privilege``, the default) and not
root, exactly those commands run as ``sudo -n -- /usr/sbin/TOOL -c CONFIG_DIR ...``, in the
fixed forms :func:`sudoers` allows (``contrib/sudoers.d/mailwarden`` is its output for
``/etc/postfix``); queue ids go to ``postsuper`` on stdin. A refusal raises
:class:`PrivilegeError`, which says what to install. ``"none"``: run them as they are (root, or
fail). Everything else (``postconf``, ``postqueue -j``) never needs privileges.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailwarden.errors import ActuatorError
from mailwarden.postfix import validate

SBIN = Path("/usr/sbin")
SUDO = "/usr/bin/sudo"
PRIVILEGES = ("sudo", "none")


class PrivilegeError(ActuatorError):
    """sudo refused (or is missing for) one of the commands that need root."""


#: What ``sudo -n`` prints when it will not run a command (its own errors, not the tool's).
_SUDO_REFUSAL = re.compile(r"^(sudo:|Sorry, user )", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class QueuedRecipient:
    address: str
    delay_reason: str = ""


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """One queue file as ``postqueue -j`` lists it (unknown members ignored)."""

    queue_name: str
    queue_id: str
    arrival_time: float
    sender: str
    recipients: tuple[QueuedRecipient, ...]
    message_size: int = 0
    forced_expire: bool = False

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> QueuedMessage:
        rcpts = obj.get("recipients") or []
        return cls(
            queue_name=str(obj.get("queue_name", "")),
            queue_id=str(obj.get("queue_id", "")),
            arrival_time=float(obj.get("arrival_time", 0) or 0),
            sender=str(obj.get("sender", "")),
            recipients=tuple(
                QueuedRecipient(str(r.get("address", "")), str(r.get("delay_reason", "") or ""))
                for r in rcpts
                if isinstance(r, dict)
            ),
            message_size=int(obj.get("message_size", 0) or 0),
            forced_expire=bool(obj.get("forced_expire", False)),
        )


class Postfix:
    """One Postfix instance, addressed by its configuration directory."""

    def __init__(
        self,
        config_dir: Path | str = "/etc/postfix",
        *,
        sbin: Path = SBIN,
        privilege: str = "sudo",
        sudo: str = SUDO,
    ) -> None:
        if privilege not in PRIVILEGES:
            raise ValueError(f"privilege must be one of {PRIVILEGES}, not {privilege!r}")
        self.config_dir = Path(config_dir)
        self.sbin = sbin
        self.privilege = privilege
        self.sudo = sudo

    def uses_sudo(self) -> bool:
        """Whether the commands that need root go through ``sudo -n`` here."""
        return self.privilege == "sudo" and os.geteuid() != 0

    # ---------------------------------------------------------------- running commands

    def _run(
        self,
        tool: str,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
        privileged: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.sbin / tool), "-c", str(self.config_dir), *args]
        sudo = privileged and self.uses_sudo()
        if sudo:
            argv = [self.sudo, "-n", "--", *argv]
        try:
            p = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout)
        except FileNotFoundError as exc:
            if sudo:
                raise PrivilegeError(
                    f"{self.sudo} not found: install sudo and contrib/sudoers.d/mailwarden, "
                    'or set [breaker] privilege = "none" and run as root'
                ) from exc
            raise ActuatorError(f"{argv[0]} not found: is Postfix installed?") from exc
        except subprocess.TimeoutExpired as exc:
            raise ActuatorError(f"{' '.join(argv)}: no answer in {timeout}s") from exc
        if sudo and p.returncode != 0 and _SUDO_REFUSAL.search(p.stderr or ""):
            raise PrivilegeError(
                f"sudo refused `{' '.join(argv[3:])}` for uid {os.geteuid()}: "
                f"{(p.stderr or '').strip()[:300]}. Install contrib/sudoers.d/mailwarden (see "
                "docs/service.md, privileges) for this user and config directory"
            )
        if check and p.returncode != 0:
            out = (p.stderr or p.stdout).strip()
            raise ActuatorError(f"{' '.join(argv)} exited {p.returncode}: {out}")
        return p

    # ---------------------------------------------------------------- main.cf

    def get(self, name: str) -> str:
        """The value of a main.cf parameter as written (``$names`` unexpanded)."""
        return self._run("postconf", "-h", validate.parameter(name)).stdout.strip()

    def get_expanded(self, name: str) -> str:
        return self._run("postconf", "-hx", validate.parameter(name)).stdout.strip()

    def is_set(self, name: str) -> bool:
        """True when main.cf sets ``name`` explicitly (``postconf -n``)."""
        out = self._run("postconf", "-n", validate.parameter(name), check=False).stdout
        return out.strip() != ""

    def set(self, values: dict[str, str]) -> None:
        """``postconf -e name=value ...``"""
        if values:
            args = [
                f"{validate.parameter(k)} = {validate.config_value(v)}" for k, v in values.items()
            ]
            self._run("postconf", "-e", *args)

    def unset(self, names: Iterable[str]) -> None:
        """``postconf -X name ...`` (back to the default)."""
        ns = [validate.parameter(n) for n in names]
        if ns:
            self._run("postconf", "-X", *ns)

    # ---------------------------------------------------------------- master.cf

    def services(self) -> Iterator[tuple[str, str, str]]:
        """``(name, type, full entry)`` of every master.cf service (``postconf -M``)."""
        for line in self._run("postconf", "-M").stdout.splitlines():
            f = line.split()
            if len(f) >= 8:
                yield f[0], f[1], line

    def service(self, name: str, kind: str) -> str | None:
        out = self._run("postconf", "-M", f"{name}/{kind}", check=False).stdout.strip()
        return out or None

    def set_service(self, name: str, kind: str, entry: str) -> None:
        """``postconf -M name/type='entry'`` (add or replace)."""
        validate.transport(name)
        self._run("postconf", "-M", f"{name}/{kind}={validate.config_value(entry)}")

    def delete_service(self, name: str, kind: str) -> None:
        self._run("postconf", "-MX", f"{validate.transport(name)}/{kind}")

    def service_param(self, name: str, kind: str, param: str) -> str | None:
        """The ``-o param=value`` of a service, or None."""
        out = self._run("postconf", "-P", f"{name}/{kind}/{param}", check=False).stdout.strip()
        if not out:
            return None
        _, _, value = out.partition("=")
        return value.strip()

    def set_service_param(self, name: str, kind: str, param: str, value: str) -> None:
        key = f"{name}/{kind}/{validate.parameter(param)}"
        self._run("postconf", "-P", f"{key}={validate.config_value(value)}")

    def unset_service_param(self, name: str, kind: str, param: str) -> None:
        self._run("postconf", "-PX", f"{name}/{kind}/{validate.parameter(param)}")

    # ---------------------------------------------------------------- control

    def check(self) -> None:
        """``postfix check`` (raises with Postfix's complaint)."""
        p = self._run("postfix", "check", check=False)
        bad = [ln for ln in (p.stderr + p.stdout).splitlines() if "fatal" in ln or "error" in ln]
        if p.returncode != 0 or bad:
            raise ActuatorError(f"postfix check failed: {(p.stderr or p.stdout).strip()}")

    def running(self) -> bool:
        """``postfix status`` (root only: through sudo when configured)."""
        return self._run("postfix", "status", check=False, privileged=True).returncode == 0

    def reload(self) -> bool:
        """``postfix reload`` when running; returns whether it reloaded."""
        if not self.running():
            return False
        self._run("postfix", "reload", privileged=True)
        return True

    # ---------------------------------------------------------------- queue

    def queue(self) -> list[QueuedMessage]:
        """``postqueue -j``; lines that are not JSON objects are skipped."""
        out = self._run("postqueue", "-j").stdout
        msgs = []
        for line in out.splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and obj.get("queue_id"):
                msgs.append(QueuedMessage.from_json(obj))
        return msgs

    def deliver(self, queue_id: str) -> None:
        """``postqueue -i ID``: schedule one deferred message for immediate delivery."""
        self._run("postqueue", "-i", validate.queue_id(queue_id), privileged=True)

    def hold(self, queue_ids: Iterable[str]) -> None:
        """``postsuper -h - deferred``: only from the deferred queue, never from under the queue
        manager (active)."""
        ids = [validate.queue_id(q) for q in queue_ids]
        if ids:
            self._run(
                "postsuper", "-h", "-", "deferred", input="\n".join(ids) + "\n", privileged=True
            )

    def release(self, queue_ids: Iterable[str]) -> None:
        """``postsuper -H -``: queue ids on stdin."""
        ids = [validate.queue_id(q) for q in queue_ids]
        if ids:
            self._run("postsuper", "-H", "-", input="\n".join(ids) + "\n", privileged=True)

    def kick_incoming(self) -> None:
        """``postkick public qmgr I``: make the queue manager scan the incoming queue (a file
        put there while qmgr restarted, or with a time stamp that had to cool down, waits for
        the next trigger otherwise)."""
        self._run("postkick", "public", "qmgr", "I", check=False)


#: sudoers' regular expression of one queue id argument (Postfix short and long ids).
_QID_RE = r"[0-9A-Za-z]{6\,20}"  # the comma escaped for sudoers


def sudoers(user: str = "mailwarden", config_dirs: Iterable[Path | str] = ("/etc/postfix",)) -> str:
    """The sudoers drop-in that lets ``user`` run exactly the privileged commands above, in the
    forms :class:`Postfix` uses, for each instance (``config_dirs``), and nothing else.

    ``contrib/sudoers.d/mailwarden`` is ``sudoers()`` (a test keeps them equal). Arguments are
    matched literally, the queue id of ``postqueue -i`` by a regular expression (sudo 1.9.10+);
    queue ids for ``postsuper`` come on stdin, which sudoers does not restrict."""
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user):
        raise ValueError(f"bad user name {user!r}")
    lines = [
        "# mailwarden: the breaker's Postfix actions that need root, for the unprivileged",
        f"# `mailwarden run` (user {user}): hold parked mail before it expires and release it",
        "# (postsuper -h/-H, queue ids on stdin), schedule probes and released mail",
        "# (postqueue -i ID), and reload Postfix on a trip (postfix status/reload).",
        "# Nothing else. Generated by mailwarden.postfix.control.sudoers(); install with",
        "#   install -m 0440 contrib/sudoers.d/mailwarden /etc/sudoers.d/mailwarden",
        "#   visudo -cf /etc/sudoers.d/mailwarden",
        "# Another Postfix instance ([breaker] postfix_config): add its directory below.",
        f"Defaults:{user} !lecture, !mail_badpass, !mail_no_user, !mail_no_perms",
    ]
    aliases = []
    for d in config_dirs:
        cd = str(d)
        if not re.fullmatch(r"/[A-Za-z0-9._/-]+", cd) or "//" in cd or "/." in cd:
            raise ValueError(f"bad config directory {cd!r}")
        aliases += [
            f"{SBIN}/postsuper -c {cd} -h - deferred",
            f"{SBIN}/postsuper -c {cd} -H -",
            f"{SBIN}/postqueue ^-c {cd.replace('.', '[.]')} -i {_QID_RE}$",
            f"{SBIN}/postfix -c {cd} reload",
            f"{SBIN}/postfix -c {cd} status",
        ]
    lines.append("Cmnd_Alias MAILWARDEN_POSTFIX = \\\n    " + ", \\\n    ".join(aliases))
    lines.append(f"{user} ALL=(root) NOPASSWD: MAILWARDEN_POSTFIX")
    return "\n".join(lines) + "\n"
