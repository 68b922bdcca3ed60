"""Enrichment rules (pure): script of interpreters / CGI / PHP-FPM, unit and container from the
cgroup path, /proc readers on a fake /proc tree, the egress table and its local override."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mailwarden.egress.attribute import Attributor
from mailwarden.egress.enrich import (
    container_of,
    find_script,
    load_tables,
    parent_chain,
    read_proc,
    unit_of,
)
from mailwarden.errors import TableError

DATA = Path(__file__).resolve().parents[1] / "data" / "egress"
CASES = [json.loads(line) for line in (DATA / "scripts.jsonl").read_text().splitlines() if line]


@pytest.mark.parametrize("case", CASES, ids=[" ".join(c["argv"])[:40] or "empty" for c in CASES])
def test_find_script(case: dict) -> None:  # type: ignore[type-arg]
    t = load_tables()
    script, pool = find_script(
        tuple(case["argv"]),
        exe=case.get("exe", ""),
        cwd=case.get("cwd", ""),
        env=case.get("env"),
        tables=t,
    )
    assert script == case["script"]
    assert pool == case.get("pool", "")


@pytest.mark.parametrize(
    ("cgroup", "unit", "container"),
    [
        ("/system.slice/php8.2-fpm.service", "php8.2-fpm.service", ""),
        ("/user.slice/user-1000.slice/session-3.scope", "session-3.scope", ""),
        (
            "/system.slice/docker-" + "a" * 64 + ".scope",
            "docker-" + "a" * 64 + ".scope",
            "docker:" + "a" * 64,
        ),
        ("/docker/" + "b" * 64, "", "docker:" + "b" * 64),
        (
            "/machine.slice/libpod-" + "c" * 64 + ".scope/container",
            "libpod-" + "c" * 64 + ".scope",
            "podman:" + "c" * 64,
        ),
        (
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice/"
            "cri-containerd-" + "d" * 64 + ".scope",
            "cri-containerd-" + "d" * 64 + ".scope",
            "containerd:" + "d" * 64,
        ),
        ("/lxc.payload.web1/system.slice/apache2.service", "apache2.service", "lxc:web1"),
        ("/", "", ""),
        ("", "", ""),
    ],
)
def test_unit_and_container(cgroup: str, unit: str, container: str) -> None:
    t = load_tables()
    assert unit_of(cgroup, t) == unit
    assert container_of(cgroup, t) == container


def _fake_proc(
    root: Path,
    pid: int,
    *,
    comm: str,
    ppid: int,
    argv: list[str],
    env: dict[str, str] | None = None,
    cgroup: str = "/",
) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    # a comm with spaces and parentheses must not break the stat parser
    (d / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 0 0\n")
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (d / "environ").write_bytes(b"\0".join(f"{k}={v}".encode() for k, v in (env or {}).items()))
    (d / "cgroup").write_text(f"0::{cgroup}\n")
    os.symlink("/usr/bin/php-cgi8.2", d / "exe")
    os.symlink("/var/www", d / "cwd")


def test_read_proc_and_parent_chain_on_a_fake_proc(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 1, comm="init", ppid=0, argv=["/sbin/init"])
    _fake_proc(tmp_path, 50, comm="apache2", ppid=1, argv=["/usr/sbin/apache2", "-k", "start"])
    _fake_proc(
        tmp_path,
        77,
        comm="php (cgi) x",
        ppid=50,
        argv=["/usr/lib/cgi-bin/php"],
        env={"SCRIPT_FILENAME": "/var/www/contact.php", "X": "a=b"},
        cgroup="/system.slice/apache2.service",
    )
    info = read_proc(77, tmp_path)
    assert info.alive and info.comm == "php (cgi) x" and info.ppid == 50
    assert info.exe == "/usr/bin/php-cgi8.2" and info.cwd == "/var/www"
    assert info.env == {"SCRIPT_FILENAME": "/var/www/contact.php", "X": "a=b"}
    assert info.cgroup == "/system.slice/apache2.service"
    assert parent_chain(77, tmp_path) == ((77, "php (cgi) x"), (50, "apache2"), (1, "init"))
    assert parent_chain(999, tmp_path, first_comm="gone") == ((999, "gone"),)
    assert not read_proc(12345, tmp_path).alive


def test_local_table_overrides_and_bad_table_is_named(etc: Path) -> None:
    (etc / "egress.toml").write_text(
        '[[interpreter]]\nid = "tcl"\nnames = ["tclsh"]\n'
        '[[interpreter]]\nid = "perl"\nenabled = false\n'
    )
    t = load_tables()
    ids = [i.id for i in t.interpreter]
    assert "tcl" in ids and "perl" not in ids
    assert find_script(("tclsh", "x.tcl"), cwd="/a", tables=t) == ("/a/x.tcl", "")
    assert find_script(("perl", "x.pl"), cwd="/a", tables=t) == ("", "")
    (etc / "egress.toml").write_text('[[container]]\nid = "bad"\nregex = "(unclosed"\n')
    with pytest.raises(TableError, match="egress"):
        load_tables()


def test_a_reused_pid_is_not_mistaken_for_the_connecting_process(tmp_path: Path) -> None:
    tick = os.sysconf("SC_CLK_TCK")
    d = tmp_path / "4242"
    d.mkdir()
    (d / "cmdline").write_bytes(b"/usr/lib/cgi-bin/php\0")
    (d / "environ").write_bytes(b"SCRIPT_FILENAME=/var/www/form.php\0")
    (d / "cgroup").write_text("0::/system.slice/apache2.service\n")

    def stat(start_s: float) -> None:
        rest = ["S", "1"] + ["0"] * 17 + [str(int(start_s * tick))] + ["0"] * 10
        (d / "stat").write_text(f"4242 (php) {' '.join(rest)}\n")

    def attributor() -> Attributor:  # a new one each time: nothing cached from the last call
        return Attributor(load_tables(), [], proc=tmp_path)

    stat(50.0)  # started before the connect at t=100 s since boot: the same process
    who = attributor()._who(4242, argv=("/usr/lib/cgi-bin/php",), at_boot=100.0)
    assert (who["script"], who["unit"]) == ("/var/www/form.php", "apache2.service")
    stat(150.0)  # started after the connect: the pid was reused, /proc is about someone else
    who = attributor()._who(4242, argv=("/usr/lib/cgi-bin/php",), at_boot=100.0)
    assert (who["script"], who["unit"]) == ("", "")
    stat(50.0)  # same pid and age but another program (exec'd since): not trusted either
    who = attributor()._who(4242, argv=("/usr/bin/python3", "x.py"), cwd="/w", at_boot=100.0)
    assert (who["script"], who["unit"]) == ("/w/x.py", "")
