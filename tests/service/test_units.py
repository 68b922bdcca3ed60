"""The shipped systemd unit of the daemon: unprivileged, with log access, a state directory,
reload by SIGHUP and hardening; accepted by ``systemd-analyze verify`` where it is installed."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "contrib" / "systemd" / "mailwarden.service"


def _unit() -> configparser.RawConfigParser:
    cp = configparser.RawConfigParser(strict=False, delimiters=("=",))
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(UNIT.read_text())
    return cp


def test_main_unit_is_unprivileged_and_hardened() -> None:
    s = _unit()["Service"]
    assert s["ExecStart"] == "/usr/bin/mailwarden run"
    assert s["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert s["User"] == "mailwarden" and s["Group"] == "mailwarden"
    assert set(s["SupplementaryGroups"].split()) == {"adm", "systemd-journal"}
    assert s["StateDirectory"] == "mailwarden" and s["AmbientCapabilities"] == ""
    for key in ("ProtectHome", "PrivateTmp", "ProtectControlGroups", "RemoveIPC"):
        assert s[key] == "yes", key
    assert s["ProtectSystem"] == "strict" and "/var/lib/mailwarden" in s["ReadWritePaths"]
    assert s["Restart"] == "always"


#: Options that make systemd set no_new_privs for a unit with User= (systemd.exec(5),
#: NoNewPrivileges=): any of them would make sudo, and so the root-only breaker actions, fail.
IMPLY_NNP = (
    "DynamicUser", "LockPersonality", "MemoryDenyWriteExecute", "PrivateDevices", "ProtectClock",
    "ProtectHostname", "ProtectKernelLogs", "ProtectKernelModules", "ProtectKernelTunables",
    "RestrictAddressFamilies", "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID",
    "SystemCallArchitectures", "SystemCallFilter", "SystemCallLog",
)  # fmt: skip


def test_main_unit_lets_sudo_run_the_root_only_postfix_actions() -> None:
    """[breaker] privilege = "sudo": the unit allows gaining privileges through sudo (nothing
    sets no_new_privs), bounds the capabilities to what sudo needs, and lets the Postfix tools
    write the queue. tests/postfix_actuator/test_privilege.py runs the actions under this
    bounding set."""
    s = _unit()["Service"]
    assert s["NoNewPrivileges"] == "no"
    assert [k for k in IMPLY_NNP if k in s] == []
    caps = set(s["CapabilityBoundingSet"].split())
    assert caps and caps <= {"CAP_SETUID", "CAP_SETGID", "CAP_AUDIT_WRITE"}
    assert "/var/spool/postfix" in s["ReadWritePaths"].split()


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    exe = Path(sys.executable).with_name("mailwarden")
    unit = tmp_path / "mailwarden.service"
    unit.write_text(UNIT.read_text().replace("/usr/bin/mailwarden", str(exe)))
    p = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
