"""The breaker's Postfix actions that need root, from an unprivileged ``mailwarden`` as the
service runs it: through ``sudo -n`` and the shipped sudoers rules they work against the real
test Postfix (reload on a trip, hold and paced release on close, every recipient delivered once);
with sudo refusing, the refusal is reported (an alert through the one dispatcher, a clear error)
and parking, the lookup's answer, still works. The sudoers drop-in equals what
:func:`mailwarden.postfix.control.sudoers` makes.

The unprivileged side is a real user (``mwtest-priv``, created if missing) running the CLI with
Debian's ``/usr/bin/python3`` (the test's interpreter may live where that user cannot read), a
real sudo with a temporary ``/etc/sudoers.d`` entry (removed afterwards), the session's real
Postfix, DNS and fake receivers, and a real HTTP receiver for the alerts."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.alerts import WebhookSink
from fixtures.mail import make_message, sendmail
from mailwarden.classify import Classifier
from mailwarden.postfix.control import Postfix, sudoers
from mailwarden.postfix.setup import Setup
from service.helpers import wait_for

from .conftest import RunningMap

ROOT = Path(__file__).resolve().parents[2]
USER = "mwtest-priv"
MARKER = "circuit open for provider"
SYSTEM_PYTHON = "/usr/bin/python3"


def test_shipped_sudoers_drop_in_is_the_generated_one() -> None:
    shipped = ROOT / "contrib" / "sudoers.d" / "mailwarden"
    assert shipped.read_text() == sudoers()
    text = sudoers("mailwarden", ["/etc/postfix", "/etc/postfix-out"])
    assert text.count("/etc/postfix-out") == 5
    # only the fixed forms: no wildcard, no other tool
    cmds = [ln.strip(" ,\\") for ln in text.splitlines() if ln.startswith("    /usr/sbin/")]
    assert all("*" not in c for c in cmds)
    assert {c.split()[0] for c in cmds} == {
        "/usr/sbin/postsuper",
        "/usr/sbin/postqueue",
        "/usr/sbin/postfix",
    }
    for bad in ("root;x", "Bob", ""):
        with pytest.raises(ValueError):
            sudoers(bad)
    for bad_dir in ("relative", "/etc/post fix", "/etc/../x", "/etc/postfix,ALL"):
        with pytest.raises(ValueError):
            sudoers("mailwarden", [bad_dir])
    if shutil.which("visudo"):
        p = subprocess.run(
            ["visudo", "-cf", str(shipped)], capture_output=True, text=True, timeout=30
        )
        assert p.returncode == 0, p.stdout + p.stderr


def test_privilege_setting_is_checked() -> None:
    with pytest.raises(ValueError):
        Postfix("/etc/postfix", privilege="doas")
    assert Postfix("/etc/postfix", privilege="none").uses_sudo() is False
    # as root nothing goes through sudo, whatever the setting
    assert Postfix("/etc/postfix").uses_sudo() is (os.geteuid() != 0)


# ---------------------------------------------------------------------------- the real thing


def _user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return pwd.getpwnam(USER)


@pytest.fixture
def unprivileged() -> Iterator[dict[str, Any]]:
    """The test user and a state directory it owns (outside pytest's root-only tmp)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (creates a user and a sudoers entry)")
    if not shutil.which("sudo") or not shutil.which("visudo"):
        pytest.skip("sudo not installed (scripts/debian-packages.txt)")
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    p = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if p.returncode != 0 or p.stdout.strip() != ver:
        pytest.skip(f"{SYSTEM_PYTHON} is not Python {ver} (the venv's packages must load)")
    pw = _user()
    d = Path(tempfile.mkdtemp(prefix="mwpriv-"))
    os.chmod(d, 0o755)
    os.chown(d, pw.pw_uid, pw.pw_gid)
    try:
        yield {"pw": pw, "dir": d}
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def sudoers_entry(name: str, text: str) -> Iterator[Path]:
    path = Path("/etc/sudoers.d") / name
    tmp = Path(tempfile.mkdtemp()) / "check"
    tmp.write_text(text)
    p = subprocess.run(["visudo", "-cf", str(tmp)], capture_output=True, text=True, timeout=30)
    shutil.rmtree(tmp.parent)
    assert p.returncode == 0, p.stdout + p.stderr
    path.write_text(text)
    path.chmod(0o440)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def unit_bounding_set() -> str:
    """The shipped unit's ``CapabilityBoundingSet=`` in setpriv's spelling."""
    import configparser

    cp = configparser.RawConfigParser(strict=False, delimiters=("=",))
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string((ROOT / "contrib" / "systemd" / "mailwarden.service").read_text())
    caps = cp["Service"]["CapabilityBoundingSet"].split()
    return ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in caps)])


class Cli:
    """``mailwarden`` as the service runs it: the test user (``User=``), the shipped unit's
    capability bounding set, Debian's python3 on the project's source and the venv's packages,
    our config, nothing of root's environment."""

    def __init__(self, pw: pwd.struct_passwd, workdir: Path, config: Path) -> None:
        self.pw = pw
        self.env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(workdir),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": f"{ROOT / 'src'}:{sysconfig.get_paths()['purelib']}",
            "MAILWARDEN_CONFIG": str(config),
            "MAILWARDEN_ETC": str(workdir / "etc"),
            "XDG_STATE_HOME": str(workdir / "xdg"),
        }

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [
            "setpriv", f"--reuid={self.pw.pw_uid}", f"--regid={self.pw.pw_gid}", "--init-groups",
            f"--bounding-set={unit_bounding_set()}", "--", "env", "-i",
        ]  # fmt: skip
        argv += [f"{k}={v}" for k, v in self.env.items()]
        argv += [SYSTEM_PYTHON, "-m", "mailwarden.cli", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=180)


def _world(
    unprivileged: dict[str, Any], postfix: Any, dns_server: Any, sink: WebhookSink
) -> tuple[Cli, RunningMap, Setup]:
    d: Path = unprivileged["dir"]
    pw = unprivileged["pw"]
    state = d / "state"
    state.mkdir()
    os.chown(state, pw.pw_uid, pw.pw_gid)
    cfg = d / "mailwarden.toml"
    cfg.write_text(
        f'state_dir = "{state}"\n'
        f'[store]\nurl = "sqlite:///{state / "mw.db"}"\n'
        '[log]\nhost = "mx-priv"\n'
        f'[dns]\nnameservers = ["{dns_server.address}"]\nport = {dns_server.port}\n'
        f'[breaker]\npostfix_config = "{postfix.config_dir}"\nprivilege = "sudo"\n'
        "release_min_rate = 600\n"
        f'[alerts]\nwebhook_url = "{sink.url("/alerts")}"\nmin_severity = "info"\n'
    )
    cfg.chmod(0o644)
    view = state / "breaker-view.json"
    prov = Classifier.load().provider_for_host
    m = RunningMap(view, [dns_server.address], prov, dns_port=dns_server.port).start()
    setup = Setup(Postfix(postfix.config_dir), socketmap_port=m.port)
    setup.apply(setup.plan())
    return Cli(pw, d, cfg), m, setup


def _titles(sink: WebhookSink) -> list[str]:
    return [r.json()["title"] for r in sink.requests]


def test_unprivileged_actions_go_through_sudo_and_work(
    unprivileged: dict[str, Any],
    postfix: Any,
    fake_mx: Any,
    dns_server: Any,
    webhook_sink: WebhookSink,
) -> None:
    swiss = fake_mx.provider("swisscom")
    cli, m, setup = _world(unprivileged, postfix, dns_server, webhook_sink)
    entry = sudoers(USER, [postfix.config_dir])
    try:
        # the user alone may not touch the queue: the sudo rules are what makes it work
        p = subprocess.run(
            ["runuser", "-u", USER, "--", "/usr/sbin/postsuper", "-c", str(postfix.config_dir),
             "-H", "-"], input="", capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert p.returncode != 0
        with sudoers_entry(f"mwtest-priv-{os.getpid()}", entry):
            mark = postfix.log_size()
            r = cli("breaker", "open", "swisscom", "--reason", "sudo test", "--for", "2h")
            assert r.returncode == 0, r.stderr
            assert "swisscom: open" in r.stdout and "mx-priv" in r.stdout
            # postfix reload (first trip) ran as root through sudo
            postfix.wait_for_log(r"postfix/master\[\d+\]: reload ", since=mark, timeout=30)
            rcpts = [f"s{i}@bluewin.ch" for i in range(3)]
            for rc in rcpts:
                sendmail(postfix, make_message("app@example.test", [rc]), [rc],
                         sender="app@example.test")  # fmt: skip
            postfix.wait_for_log(f"status=deferred \\({MARKER} swisscom", since=mark, count=3,
                                 timeout=60)  # fmt: skip
            assert sum(x.connections for x in swiss) == 0
            # close: parked mail goes on hold (postsuper -h), is released (postsuper -H) and
            # scheduled (postqueue -i), all as the user through sudo
            r = cli("breaker", "close", "swisscom", "--note", "delisted")
            assert r.returncode == 0, r.stderr
            assert "released 3 recipients" in r.stdout, r.stdout + r.stderr
            wait_for(lambda: sum(len(x.delivered_to()) for x in swiss) == 3, 60, "released mail")
            got = sorted(a for x in swiss for a in x.delivered_to())
            assert got == sorted(rcpts)  # each exactly once
            assert "sudo refused" not in r.stderr
        assert not any("refused" in t for t in _titles(webhook_sink)), _titles(webhook_sink)
        assert any("closed -> open" in t for t in _titles(webhook_sink))
        assert not any("status=bounced" in ln for ln in postfix.test_log_lines())
    finally:
        setup.teardown(setup.teardown_plan())
        m.stop()


def test_sudo_refused_is_reported_and_parking_still_works(
    unprivileged: dict[str, Any],
    postfix: Any,
    fake_mx: Any,
    dns_server: Any,
    webhook_sink: WebhookSink,
) -> None:
    swiss = fake_mx.provider("swisscom")
    cli, m, setup = _world(unprivileged, postfix, dns_server, webhook_sink)
    # the user is known to sudo (no mail to root about it) but may run nothing
    entry = f"Defaults:{USER} !lecture, !mail_badpass, !mail_no_user, !mail_no_perms\n"
    try:
        with sudoers_entry(f"mwtest-priv-{os.getpid()}", entry):
            r = cli("breaker", "open", "swisscom", "--reason", "refused test", "--for", "2h")
            assert r.returncode == 0, r.stderr  # the breaker opened: the lookup parks
            assert "sudo refused" in r.stderr and "sudoers" in r.stderr, r.stderr
            rcpts = ["r1@bluewin.ch", "r2@bluewin.ch"]
            mark = postfix.log_mark
            for rc in rcpts:
                sendmail(postfix, make_message("app@example.test", [rc]), [rc],
                         sender="app@example.test")  # fmt: skip
            postfix.wait_for_log(f"status=deferred \\({MARKER} swisscom", since=mark, count=2,
                                 timeout=60)  # fmt: skip
            assert sum(x.connections for x in swiss) == 0
            r = cli("breaker", "close", "swisscom")
            assert r.returncode == 0, r.stderr
            assert "release-swisscom not done" in r.stderr and "sudo refused" in r.stderr
        titles = _titles(webhook_sink)
        refused = [t for t in titles if "refused" in t]
        assert any("postfix-reload" in t for t in refused), titles
        assert any("release-swisscom" in t for t in refused), titles
        body = next(r.json() for r in webhook_sink.requests if "release" in r.json()["title"])
        assert body["kind"] == "service" and body["severity"] == "critical"
        assert body["host"] == "mx-priv" and "sudoers" in body["text"]
        # nothing lost: the parked mail is still queued, not bounced, not sent
        queued = sorted(r.address for q in postfix.queue() for r in q.recipients)
        assert queued == rcpts
        assert sum(x.connections for x in swiss) == 0
        assert not any("status=bounced" in ln for ln in postfix.test_log_lines())
    finally:
        setup.teardown(setup.teardown_plan())
        m.stop()
