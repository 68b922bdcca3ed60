"""The dashboard in a real browser: Debian's chromium driven by Playwright, against
``mailwarden web`` (a real uvicorn process on 127.0.0.1) over a store filled by importing real
Postfix logs. The breaker buttons act through the same wiring as ``mailwarden breaker`` (Postfix
pointed at a directory without an instance, so nothing on this machine is touched).

Screenshots of every page are kept in ``artifacts/web/`` (CI keeps ``artifacts/``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from fixtures.slot import free_port
from mailwarden.store import schema
from mailwarden.store.breaker import fleet_states
from mailwarden.store.db import open_engine

from .conftest import PASSWORD, SAMPLE, TOKEN, Imported, record_egress

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "web"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium not installed (debian-packages)"),
]


class Server:
    def __init__(self, url: str, store_url: str, log: Path) -> None:
        self.url = url
        self.store_url = store_url
        self.log = log

    def states(self) -> dict[str, str]:
        engine = open_engine(self.store_url)
        try:
            return {r["provider"]: r["state"] for r in fleet_states(engine)}
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def server(imported_sqlite: Imported, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from mailwarden.web.auth import hash_password

    d = tmp_path_factory.mktemp("web-server")
    db = d / "store.db"
    shutil.copy(imported_sqlite.url.removeprefix("sqlite:///"), db)
    record_egress(f"sqlite:///{db}")
    port = free_port()
    cfg = d / "mailwarden.toml"
    cfg.write_text(
        f"""state_dir = "{d / "state"}"
[store]
url = "sqlite:///{db}"
[web]
token = "{TOKEN}"
password_hash = "{hash_password(PASSWORD, n=2**12)}"
[breaker]
postfix_config = "{d / "no-postfix-here"}"
reload_on_trip = false
[dns]
nameservers = ["127.0.0.1"]
port = {free_port()}
timeout = 0.3
"""
    )
    env = {
        **os.environ,
        "MAILWARDEN_CONFIG": str(cfg),
        "MAILWARDEN_ETC": str(d / "etc"),
        "XDG_STATE_HOME": str(d / "xdg"),
    }
    log = d / "server.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailwarden.cli", "web", "--bind", f"127.0.0.1:{port}"],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mailwarden web did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield Server(base, f"sqlite:///{db}", log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, SHOTS / "server.log")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(15_000)
    pg.on("dialog", lambda d: d.accept())  # the open/close buttons ask first
    try:
        yield pg
    finally:
        ctx.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def go(page: Any, selector: str) -> None:
    """Click a link and wait for the page it leads to."""
    with page.expect_navigation():
        page.click(selector)


def log_in(page: Any, server: Server, secret: str = TOKEN) -> Any:
    page.goto(server.url + "/login")
    page.fill("#secret", secret)
    with page.expect_navigation():
        page.click("#login-submit")
    return page


# ------------------------------------------------------------------------------ login


def test_login_wrong_token_and_logout(page: Any, server: Server) -> None:
    r = page.goto(server.url + "/")
    assert r.status == 401
    assert page.locator("#login-form").is_visible()
    shot(page, "01-login")
    page.fill("#secret", "this-is-not-the-token")
    with page.expect_navigation():
        page.click("#login-submit")
    assert "Wrong token or password" in page.locator("#login-message").inner_text()
    shot(page, "02-login-wrong-token")
    page.fill("#secret", TOKEN)
    with page.expect_navigation():
        page.click("#login-submit")
    assert page.url.rstrip("/") == server.url
    assert page.locator("h1").first.inner_text() == "Overview"
    with page.expect_navigation():
        page.click("#logout")
    assert "Logged out" in page.content()
    r = page.goto(server.url + "/rejections")
    assert r.status == 401 and page.locator("#login-form").is_visible()


def test_password_login_keeps_the_asked_page(page: Any, server: Server) -> None:
    page.goto(server.url + "/origins?days=30")
    page.fill("#secret", PASSWORD)
    with page.expect_navigation():
        page.click("#login-submit")
    assert page.url.endswith("/origins?days=30")
    assert page.locator("#origin-table").is_visible()


# ------------------------------------------------------------------------------ pages


def test_every_page(page: Any, server: Server) -> None:
    log_in(page, server)
    page.goto(server.url + "/?days=30")
    assert page.locator("svg.chart rect").count() > 0
    assert int(page.locator("#total-sent").inner_text()) > 0
    assert page.locator("#provider-table tbody tr").count() >= 10
    shot(page, "10-overview")
    go(page, "#nav-rejections")
    assert page.locator("#kinds-table tbody tr").count() >= 10
    assert "You are not allowed to send us mail" in page.locator("#kinds-table").inner_text()
    shot(page, "11-rejections")
    go(page, "#facet-issuer a:text('spamhaus')")
    assert page.locator("#kinds-table tbody tr").count() == 1
    assert "spamhaus" in page.locator("#kinds-table").inner_text()
    shot(page, "12-rejections-issuer")
    go(page, "#nav-origins")
    assert "www-data" in page.locator("#origin-table").inner_text()
    shot(page, "13-origins")
    go(page, "#nav-egress")
    assert "contact.php" in page.locator("#alert-table").inner_text()
    assert page.locator("#egress-table tbody tr.blocked").count() == 1
    assert page.locator("#event-table tbody tr").count() == 5
    shot(page, "14-egress")
    go(page, "#nav-health")
    page.wait_for_selector("#quick-findings", timeout=60_000)  # the page reloads itself
    assert page.locator("#quick-findings tbody tr").count() >= 1
    shot(page, "15-health")
    go(page, "#nav-search")
    assert page.locator("#search-q").is_visible()


def test_search_queue_id_and_message_id(page: Any, server: Server) -> None:
    text = SAMPLE.read_text()
    qid, mid = re.findall(r"postfix/cleanup\[\d+\]: (\w+): message-id=<([^>]+)>", text)[5]
    log_in(page, server)
    go(page, "#nav-search")
    page.fill("#search-q", qid)
    with page.expect_navigation():
        page.click("#search-submit")
    rows = page.locator("#results-table tbody tr[data-qid]")
    assert rows.count() == 2  # the same queue id on both hosts of the fleet
    assert {rows.nth(i).get_attribute("data-qid") for i in range(2)} == {qid}
    shot(page, "20-search-qid")
    with page.expect_navigation():
        rows.first.locator("a.qid").click()
    assert page.locator("#msg-qid").inner_text() == qid
    assert page.locator("#msg-id").inner_text().strip("<>") == mid
    assert page.locator("#attempt-table tr.attempt").count() >= 1
    shot(page, "21-message")
    go(page, "#nav-search")
    page.fill("#search-q", f"<{mid}>")
    page.select_option("#search-kind", "message_id")
    with page.expect_navigation():
        page.click("#search-submit")
    found = page.locator("#results-table tbody tr[data-qid]")
    assert found.count() == 2 and found.first.get_attribute("data-qid") == qid
    shot(page, "22-search-message-id")


def test_host_filter(page: Any, server: Server) -> None:
    log_in(page, server)
    page.goto(server.url + "/?days=30")
    fleet = int(page.locator("#total-sent").inner_text())
    with page.expect_navigation():
        page.select_option("#host-select", "mx2")  # app.js submits on change
    assert "host=mx2" in page.url
    mx2 = int(page.locator("#total-sent").inner_text())
    engine = open_engine(server.store_url)
    a, m = schema.attempts, schema.messages
    with engine.connect() as c:
        want = c.execute(
            select(func.count())
            .select_from(a.join(m, m.c.id == a.c.message_pk))
            .where(a.c.status == "sent", m.c.host == "mx2")
        ).scalar_one()
    engine.dispose()
    assert mx2 == want and 0 < mx2 < fleet
    shot(page, "30-overview-host-mx2")
    go(page, "#nav-rejections")  # the host travels with the navigation
    assert "host=mx2" in page.url
    assert page.locator("#host-select").input_value() == "mx2"
    text = SAMPLE.read_text()
    qid = re.findall(r"postfix/cleanup\[\d+\]: (\w+): message-id=", text)[0]
    page.goto(server.url + f"/search?q={qid}&host=mx2")
    rows = page.locator("#results-table tbody tr[data-qid]")
    assert rows.count() == 1 and "mx2" in rows.first.inner_text()


# ------------------------------------------------------------------------------ actions


def test_breaker_open_and_close_from_the_ui(page: Any, server: Server) -> None:
    log_in(page, server)
    page.goto(server.url + "/?days=30")
    assert server.states().get("gmx", "closed") == "closed"
    page.fill("#open-provider", "gmx")
    page.fill("#open-duration", "2h")
    page.fill("#open-reason", "nemesis blocks us, see ticket 42")
    with page.expect_navigation():
        page.click("#open-submit")
    assert "gmx opened" in page.locator("#done").inner_text()
    assert server.states()["gmx"] == "open"
    row = page.locator('#breaker-table tr[data-provider="gmx"]')
    assert "open" in row.inner_text() and "nemesis blocks us" in row.inner_text()
    shot(page, "40-breaker-open")
    with page.expect_navigation():
        page.click("#close-gmx")
    assert "gmx closed" in page.locator("#done").inner_text()
    assert server.states()["gmx"] == "closed"
    assert "closed" in page.locator('#breaker-table tr[data-provider="gmx"]').inner_text()
    hist = page.locator("#history-table").inner_text()
    assert "open → closed" in hist and "closed → open" in hist
    shot(page, "41-breaker-closed")


class _Attacker(BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        body = f"""<!doctype html><html><body><h1>free prizes</h1>
<form id="f" method="post" action="{self.target}/breaker/open">
<input name="provider" value="yahoo"><input name="reason" value="pwned">
<input name="csrf" value="guessed"></form>
<script>document.getElementById("f").submit()</script></body></html>""".encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def attacker(server: Server) -> Iterator[int]:
    handler = type("H", (_Attacker,), {"target": server.url})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize(
    ("origin_host", "status", "why"),
    [
        ("localhost", 401, "Log in first"),  # another site: the SameSite cookie stays home
        ("127.0.0.1", 403, "Cross-site request refused"),  # same site, other origin
    ],
)
def test_forged_cross_site_post_is_refused(
    page: Any, server: Server, attacker: int, origin_host: str, status: int, why: str
) -> None:
    log_in(page, server)
    before = server.states()
    with page.expect_response(lambda r: r.url.endswith("/breaker/open")) as resp:
        page.goto(f"http://{origin_host}:{attacker}/")
    assert resp.value.status == status
    page.wait_for_load_state()
    assert why in page.content()
    assert server.states() == before and "yahoo" not in before
    shot(page, f"50-forged-post-from-{origin_host}")


def test_forged_same_origin_post_without_the_token(page: Any, server: Server) -> None:
    """A form injected into the dashboard's own page (no Origin problem) with a wrong token."""
    log_in(page, server)
    page.goto(server.url + "/")
    with page.expect_navigation():
        page.evaluate(
            """() => {
              const f = document.createElement("form");
              f.method = "post"; f.action = "/breaker/open";
              const fields = [["provider", "yahoo"], ["reason", "pwned"], ["csrf", "forged"]];
              for (const [k, v] of fields) {
                const i = document.createElement("input");
                i.name = k; i.value = v; f.appendChild(i);
              }
              document.body.appendChild(f); f.submit();
            }"""
        )
    assert "CSRF token missing or wrong" in page.locator("#error-message").inner_text()
    assert "yahoo" not in server.states()
    shot(page, "51-forged-post-same-origin")
