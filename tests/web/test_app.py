"""The dashboard app in process (ASGI test client) over a store filled by importing real logs:
authentication, CSRF, errors, and that each page shows what the store holds."""

from __future__ import annotations

import re
from collections import Counter
from html import escape
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from mailwarden.store import schema
from mailwarden.store.breaker import BreakerStore, fleet_states

from .conftest import PASSWORD, SAMPLE, TOKEN, Dashboard

HTML = {"accept": "text/html"}
PAGES = ["/", "/rejections", "/origins", "/egress", "/search?q=x", "/health", "/message/1"]


def nonce_of(html: str) -> str:
    m = re.search(r'name="nonce" value="([^"]+)"', html)
    assert m, "login form without nonce"
    return m[1]


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "page without a CSRF field"
    return m[1]


def login(c: TestClient, secret: str = TOKEN) -> Any:
    r = c.get("/login", headers=HTML)
    return c.post(
        "/login",
        data={"secret": secret, "nonce": nonce_of(r.text), "next": "/"},
        headers=HTML,
        follow_redirects=False,
    )


@pytest.fixture
def client(dashboard: Dashboard) -> TestClient:
    return TestClient(dashboard.app)


@pytest.fixture
def authed(client: TestClient) -> TestClient:
    r = login(client)
    assert r.status_code == 303, r.text
    return client


# ------------------------------------------------------------------------------ auth


@pytest.mark.parametrize("path", PAGES)
def test_pages_need_a_session(client: TestClient, path: str) -> None:
    r = client.get(path, headers=HTML)
    assert r.status_code == 401
    assert 'id="login-form"' in r.text and "Log in first" in r.text
    r = client.get(path, headers={"accept": "application/json"})
    assert r.status_code == 401
    assert r.json()["error"].startswith("Log in first")
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_wrong_token_then_token_then_logout(client: TestClient) -> None:
    r = login(client, "not-the-token-at-all")
    assert r.status_code == 401 and "Wrong token or password" in r.text
    assert "mw_session" not in client.cookies
    r = login(client)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    page = client.get("/", headers=HTML)
    assert page.status_code == 200 and 'id="logout"' in page.text
    stolen = client.cookies.get("mw_session")
    r = client.post("/logout", data={"csrf": csrf_of(page.text)}, headers=HTML)
    assert r.status_code == 200 and "Logged out" in r.text
    assert client.get("/", headers=HTML).status_code == 401
    # the old cookie, replayed, is dead too (revoked server-side, not only cleared)
    client.cookies.set("mw_session", stolen or "")
    assert client.get("/", headers=HTML).status_code == 401


def test_password_login(client: TestClient) -> None:
    assert login(client, PASSWORD).status_code == 303
    assert client.get("/origins", headers=HTML).status_code == 200
    assert login(TestClient(client.app), PASSWORD + "x").status_code == 401


def test_login_needs_its_own_form(client: TestClient) -> None:
    """A login posted from elsewhere (no nonce cookie) is refused: no login CSRF."""
    r = client.post("/login", data={"secret": TOKEN, "nonce": "x" * 20}, headers=HTML,
                    follow_redirects=False)  # fmt: skip
    assert r.status_code == 403 and "expired or came from elsewhere" in r.text


def test_login_open_redirect_refused(client: TestClient) -> None:
    r = client.get("/login", headers=HTML)
    r = client.post(
        "/login",
        data={"secret": TOKEN, "nonce": nonce_of(r.text), "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_failed_logins_are_throttled(client: TestClient) -> None:
    codes = [login(client, f"wrong-{i}").status_code for i in range(11)]
    assert codes[:10] == [401] * 10 and codes[10] == 429
    r = login(client)  # even the right token waits
    assert r.status_code == 429 and "Too many failed logins" in r.text


def test_tampered_cookie_is_no_session(authed: TestClient) -> None:
    good = authed.cookies["mw_session"]
    body, sig = good.split(".")
    authed.cookies.set("mw_session", body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + sig)
    assert authed.get("/", headers=HTML).status_code == 401


# ------------------------------------------------------------------------------ CSRF and actions


def states(d: Dashboard) -> dict[str, str]:
    return {r["provider"]: r["state"] for r in fleet_states(d.engine)}


def test_forged_posts_change_nothing(authed: TestClient, dashboard: Dashboard) -> None:
    form = {"provider": "google", "reason": "forged", "duration": "1h"}
    r = authed.post("/breaker/open", data=form, headers=HTML, follow_redirects=False)
    assert r.status_code == 403 and "CSRF token missing or wrong" in r.text
    r = authed.post("/breaker/open", data={**form, "csrf": "guess"}, follow_redirects=False)
    assert r.status_code == 403 and "CSRF" in r.json()["error"]
    csrf = csrf_of(authed.get("/", headers=HTML).text)
    r = authed.post(
        "/breaker/open",
        data={**form, "csrf": csrf},
        headers={"origin": "http://evil.example"},
        follow_redirects=False,
    )
    assert r.status_code == 403 and "Cross-site" in r.json()["error"]
    # a session's token is no good in another session
    other = TestClient(authed.app)
    assert login(other).status_code == 303
    r = other.post("/breaker/open", data={**form, "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 403
    # without a session at all: 401
    r = TestClient(authed.app).post("/breaker/open", data={**form, "csrf": csrf})
    assert r.status_code == 401
    assert "google" not in states(dashboard)
    assert not dashboard.view.exists() or "google" not in dashboard.view.read_text()


def test_open_and_close_change_the_stored_state(authed: TestClient, dashboard: Dashboard) -> None:
    import json

    csrf = csrf_of(authed.get("/", headers=HTML).text)
    r = authed.post(
        "/breaker/open",
        data={"provider": "t-online", "reason": "listed at t-online", "duration": "2h",
              "csrf": csrf, "host": "mail", "days": "30"},
        follow_redirects=False,
    )  # fmt: skip
    assert r.status_code == 303
    assert r.headers["location"].startswith("/?") and "host=mail" in r.headers["location"]
    row = next(
        s
        for s in BreakerStore(dashboard.engine, "mail").load_states()
        if s["provider"] == "t-online"
    )
    assert row["state"] == "open" and row["note"] == "listed at t-online"
    assert 7100 < row["until"] - row["since"] <= 7200
    assert json.loads(dashboard.view.read_text())  # the socketmap's view names it
    assert "t-online" in dashboard.view.read_text()
    page = authed.get(r.headers["location"], headers=HTML).text
    assert "t-online opened" in page and 'id="close-t-online"' in page
    r = authed.post(
        "/breaker/close", data={"provider": "t-online", "csrf": csrf}, follow_redirects=False
    )
    assert r.status_code == 303
    assert states(dashboard)["t-online"] == "closed"
    assert "t-online" not in dashboard.view.read_text()
    hist = BreakerStore(dashboard.engine, "mail").history("t-online")
    assert [(h["old"], h["new"], h["actor"]) for h in hist] == [
        ("open", "closed", "person"),
        ("closed", "open", "person"),
    ]
    # closing again says so and changes nothing
    r = authed.post("/breaker/close", data={"provider": "t-online", "csrf": csrf})
    assert r.status_code == 200 and "was already closed" in r.text
    assert len(BreakerStore(dashboard.engine, "mail").history("t-online")) == 2


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"provider": "Google; rm -rf", "reason": "x"}, "Bad provider name"),
        ({"provider": "google", "reason": "bad\nnewline"}, "The reason must be"),
        ({"provider": "google", "reason": "ok", "duration": "soon"}, "Bad duration"),
        ({"provider": "google", "reason": "ok", "days": "many"}, "days"),
        ({"provider": "google"}, "reason"),
    ],
)
def test_bad_actions_are_422_with_a_message(
    authed: TestClient, dashboard: Dashboard, form: dict[str, str], message: str
) -> None:
    csrf = csrf_of(authed.get("/", headers=HTML).text)
    r = authed.post("/breaker/open", data={**form, "csrf": csrf}, headers=HTML)
    assert r.status_code == 422
    assert message in r.text and "Traceback" not in r.text
    assert states(dashboard) == {}


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/?days=0", 422, "days: Input should be greater than or equal to 1"),
        ("/?days=week", 422, "days: Input should be a valid integer"),
        ("/rejections?host=a%20b", 422, "host: String should match pattern"),
        ("/search?q=x&kind=sql", 422, "kind: String should match pattern"),
        ("/message/notanumber", 422, "pk: Input should be a valid integer"),
        ("/message/999999", 404, "No message 999999 in the store"),
        ("/nowhere", 404, "Nothing here: /nowhere"),
    ],
)
def test_malformed_requests(authed: TestClient, path: str, status: int, message: str) -> None:
    r = authed.get(path, headers=HTML)
    assert r.status_code == status and message in r.text
    r = authed.get(path, headers={"accept": "application/json"})
    assert r.status_code == status and message in r.json()["error"]


def test_store_failure_is_a_message_not_a_trace(authed: TestClient, dashboard: Dashboard) -> None:
    with dashboard.engine.begin() as c:
        c.exec_driver_sql("DROP TABLE daily_rollups")
    c = TestClient(authed.app, raise_server_exceptions=False, cookies=dict(authed.cookies))
    r = c.get("/", headers=HTML)
    assert r.status_code == 500
    assert "Internal error" in r.text and "Traceback" not in r.text and "sqlite" not in r.text


# ------------------------------------------------------------------------------ content


def attempt_counts(d: Dashboard, host: str = "") -> Counter[str]:
    a, m = schema.attempts, schema.messages
    q = select(a.c.status, func.count()).join(m, m.c.id == a.c.message_pk).group_by(a.c.status)
    if host:
        q = q.where(m.c.host == host)
    with d.engine.connect() as c:
        return Counter({s: int(n) for s, n in c.execute(q)})


def shown_totals(html: str) -> Counter[str]:
    return Counter({s: int(n) for s, n in re.findall(r'id="total-(\w+)">(\d+)<', html)})


@pytest.mark.parametrize("host", ["", "mail", "mx2"])
def test_overview_totals_follow_the_host_filter(
    authed: TestClient, dashboard: Dashboard, host: str
) -> None:
    """Totals (from the rollups) equal the attempts counted in the attempts table."""
    html = authed.get(f"/?host={host}&days=30", headers=HTML).text
    want = attempt_counts(dashboard, host)
    assert +shown_totals(html) == +want
    assert sum(want.values()) > 0
    if host:
        assert f'<option value="{host}" selected>' in html


def test_hosts_are_the_imported_ones(authed: TestClient) -> None:
    html = authed.get("/", headers=HTML).text
    assert re.findall(r'<option value="(m[^"]+)"', html) == ["mail", "mx2"]


def test_rejections_show_every_kind_with_its_full_reply(authed: TestClient, store: Any) -> None:
    html = authed.get("/rejections?days=30&host=mail", headers=HTML).text
    doc = store.documents[0]
    import html as h

    text = h.unescape(html)
    for p in doc["providers"]:
        for k in p["rejections"]:
            assert k["sample"] in text, k["sample"]
    only = authed.get("/rejections?days=30&provider=swisscom", headers=HTML).text
    rows = re.findall(r'<tr data-provider="([^"]+)" data-reason="([^"]+)"', only)
    assert rows and {r[0] for r in rows} == {"swisscom"}
    issuer = authed.get("/rejections?days=30&issuer=spamhaus", headers=HTML).text
    assert "zen.spamhaus.org" in issuer
    spamhaus = {
        p["provider"]
        for d in store.documents
        for p in d["providers"]
        if any(k["issuer"] == "spamhaus" for k in p["rejections"])
    }
    assert spamhaus and set(re.findall(r"<tr data-provider=\"([^\"]+)\"", issuer)) == spamhaus


def log_facts() -> dict[str, Any]:
    """Read straight from the sample log (not through mailwarden)."""
    text = SAMPLE.read_text()
    mids = re.findall(r"postfix/cleanup\[\d+\]: (\w+): message-id=<([^>]+)>", text)
    rcpts = re.findall(r"postfix/smtp\[\d+\]: (\w+): to=<([^>]+)>.*status=sent", text)
    uid33 = set(re.findall(r"postfix/pickup\[\d+\]: (\w+): uid=33 ", text))
    return {"mids": mids, "rcpts": rcpts, "uid33": uid33}


def test_search_finds_queue_id_message_id_and_recipient(authed: TestClient) -> None:
    facts = log_facts()
    qid, mid = facts["mids"][3]
    r = authed.get(f"/search?q={qid}&days=7", headers=HTML).text
    found = re.findall(r'<tr data-qid="(\w+)"', r)
    assert found == [qid, qid]  # one per host of the fleet
    r = authed.get(f"/search?q={qid}&host=mx2", headers=HTML).text
    assert re.findall(r'<tr data-qid="(\w+)"', r) == [qid] and ">mx2<" in r
    for form in (mid, f"<{mid}>"):
        r = authed.get("/search", params={"q": form, "kind": "message_id"}, headers=HTML).text
        assert set(re.findall(r'<tr data-qid="(\w+)"', r)) == {qid}
    rq, rcpt = facts["rcpts"][0]
    r = authed.get("/search", params={"q": rcpt.upper(), "host": "mail"}, headers=HTML).text
    assert rq in re.findall(r'<tr data-qid="(\w+)"', r)
    r = authed.get("/search", params={"q": "nobody@nowhere.invalid"}, headers=HTML).text
    assert "0 messages" in r


def test_message_page_lists_attempts(authed: TestClient, dashboard: Dashboard) -> None:
    m, a, o, r = schema.messages, schema.attempts, schema.origins, schema.rejections
    with dashboard.engine.connect() as c:
        pk, qid, kind, ident, sample, delays = c.execute(
            select(m.c.id, m.c.qid, o.c.kind, o.c.ident, r.c.sample, a.c.delays)
            .join(a, a.c.message_pk == m.c.id)
            .join(o, o.c.id == m.c.origin_id)
            .join(r, r.c.id == a.c.rejection_id)
            .where(a.c.status == "bounced")
            .limit(1)
        ).one()
        n = c.execute(select(func.count()).where(a.c.message_pk == pk)).scalar_one()
    html = authed.get(f"/message/{pk}", headers=HTML).text
    assert f'id="msg-qid">{qid}<' in html
    statuses = re.findall(r'<tr class="attempt" data-status="(\w+)">', html)
    assert len(statuses) == n and "bounced" in statuses
    assert f"<dd>{kind}:{ident}</dd>" in html  # the origin
    assert f'<div class="full">{escape(sample)}</div>' in html  # the full stored reply
    assert delays and f'<span class="note">{delays}</span>' in html


def test_origins_count_the_submitters(authed: TestClient) -> None:
    facts = log_facts()
    html = authed.get("/origins?days=30&host=mail", headers=HTML).text
    row = re.search(r'data-kind="uid" data-ident="33".*?</tr>', html, re.S)
    assert row and "www-data" in row[0]
    nums = re.findall(r'<td class="num[^"]*">([\d.%]+)</td>', row[0])
    assert int(nums[0]) == len(facts["uid33"])  # messages
    fleet = authed.get("/origins?days=30", headers=HTML).text
    row2 = re.search(r'data-kind="uid" data-ident="33".*?</tr>', fleet, re.S)
    assert row2 and int(re.findall(r'<td class="num[^"]*">(\d+)</td>', row2[0])[0]) == 2 * len(
        facts["uid33"]
    )


def test_pages_fetch_nothing_from_elsewhere(authed: TestClient) -> None:
    for path in ["/", "/rejections?days=30", "/origins", "/egress", "/search?q=a", "/health"]:
        r = authed.get(path, headers=HTML)
        assert r.status_code == 200, path
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        for tag, url in re.findall(
            r"<(script|link|img|iframe)[^>]*(?:src|href)=\"([^\"]*)\"", r.text
        ):
            assert url.startswith("/static/"), (path, tag, url)
        for action in re.findall(r'<form[^>]*action="([^"]*)"', r.text):
            assert action.startswith("/"), (path, action)
    for asset in ("/static/style.css", "/static/app.js", "/static/favicon.svg"):
        r = authed.get(asset)
        body = r.text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, not a fetch
        assert r.status_code == 200 and "http://" not in body and "https://" not in body


def test_health_shows_the_findings(store: Any, tmp_path: Path) -> None:
    """The doctor's findings: the local run shown at once, the full run in the background."""
    from mailwarden.config import Settings
    from mailwarden.reputation.findings import Finding
    from mailwarden.web.app import create_app

    calls: list[bool] = []

    def doctor(full: bool) -> list[Finding]:
        calls.append(full)
        return (
            [Finding("ptr", "problem", "no PTR for 192.0.2.1", "192.0.2.1", fix="ask the ISP")]
            if full
            else [Finding("postfix.relay", "ok", "not an open relay", "mynetworks")]
        )

    s = Settings.model_validate(
        {"state_dir": str(tmp_path), "store": {"url": store.url}, "web": {"token": TOKEN}}
    )
    app = create_app(s, health=doctor)
    c = TestClient(app)
    login(c)
    app.state.health[0].wait()
    app.state.health[1].wait()
    html = c.get("/health", headers=HTML).text
    assert "not an open relay" in html and "no PTR for 192.0.2.1" in html and "ask the ISP" in html
    assert html.index("no PTR") > html.index('id="full-findings"')
    assert sorted(calls) == [False, True]
    csrf = csrf_of(html)
    assert c.post("/health/refresh", data={"csrf": "x"}).status_code == 403
    r = c.post("/health/refresh", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    app.state.health[1].wait()
    assert calls.count(True) == 2


def test_health_with_the_real_doctor(store: Any, tmp_path: Path) -> None:
    """The default wiring runs mailwarden.reputation.doctor (local checks only here)."""
    from mailwarden.config import Settings
    from mailwarden.web.app import create_app

    s = Settings.model_validate(
        {
            "state_dir": str(tmp_path),
            "store": {"url": store.url},
            "web": {"token": TOKEN},
            "breaker": {"postfix_config": str(tmp_path / "no-postfix")},
        }
    )
    app = create_app(s)
    c = TestClient(app)
    login(c)
    snap = app.state.health[0].wait(60)
    assert snap.error == "" and snap.value, snap
    html = c.get("/health", headers=HTML).text
    for f in snap.value:
        assert f.check in html


def test_parked_mail_on_the_overview(store: Any, tmp_path: Path) -> None:
    from mailwarden.config import Settings
    from mailwarden.web.app import create_app
    from mailwarden.web.services import EngineControl, Parked

    from .conftest import breaker_engine

    br = breaker_engine(store.url, tmp_path / "view.json")
    br.open("google", duration=None, note="listed")
    queue = {"google": Parked(4, 1), "gmx": Parked(2, 0)}
    s = Settings.model_validate(
        {"state_dir": str(tmp_path), "store": {"url": store.url}, "web": {"token": TOKEN}}
    )
    app = create_app(s, control=EngineControl(br), parked=lambda: queue, health=lambda f: [])
    c = TestClient(app)
    login(c)
    app.state.queue.wait()
    html = c.get("/?days=30", headers=HTML).text
    row = re.search(r'<tr class="state-open" data-provider="google"[^>]*>.*?</tr>', html, re.S)
    assert row and "until closed by hand" in row[0] and "listed" in row[0]
    assert re.search(r'<td class="num">4 <span class="note">\+1 held</span></td>', row[0])
    # gmx has no breaker row but parked mail: listed anyway
    assert re.search(r"<td>gmx</td>.*?mail still parked.*?<td class=\"num\">2", html, re.S)
    assert "Postfix queue read" in html

    def broken() -> dict[str, Parked]:
        raise RuntimeError("postqueue: fatal: no such instance")

    app2 = create_app(s, control=EngineControl(br), parked=broken, health=lambda f: [])
    c2 = TestClient(app2)
    login(c2)
    app2.state.queue.wait()
    assert "not read: RuntimeError: postqueue: fatal: no such instance" in c2.get("/").text
    br.store.engine.dispose()


def test_pages_on_both_backends(any_store: Any, tmp_path: Path) -> None:
    """Every page answers on SQLite and PostgreSQL, with the same totals as the store."""
    from mailwarden.config import Settings
    from mailwarden.store.db import open_engine
    from mailwarden.web.app import create_app

    s = Settings.model_validate(
        {"state_dir": str(tmp_path), "store": {"url": any_store.url}, "web": {"token": TOKEN}}
    )
    engine = open_engine(any_store.url)
    c = TestClient(create_app(s, engine=engine, health=lambda f: []))
    login(c)
    for host in ("", "mx2"):
        for path in ["/", "/rejections", "/rejections?provider=google", "/origins", "/egress",
                     "/search?q=bob@example.org", "/health", "/message/1"]:  # fmt: skip
            sep = "&" if "?" in path else "?"
            r = c.get(f"{path}{sep}days=30&host={host}", headers=HTML)
            assert r.status_code == 200, (path, r.text[:500])
        html = c.get(f"/?days=30&host={host}", headers=HTML).text
        d = Dashboard(None, engine, None, tmp_path)
        assert +shown_totals(html) == +attempt_counts(d, host)
    engine.dispose()


def test_hostile_text_from_logs_and_queries_is_inert(
    authed: TestClient, dashboard: Dashboard
) -> None:
    """A receiver controls its reply text and URL; a visitor controls the query string."""
    r = schema.rejections
    with dashboard.engine.begin() as c:
        rid = c.execute(
            r.insert().values(
                provider="evil.example", kind="k" * 20, reason="blocked", scope="ours",
                url="javascript:alert(1)", sample='<script>alert("reply")</script>',
                first_seen=0, last_seen=0, count=1, internal=False,
            )
        ).inserted_primary_key[0]  # fmt: skip
        c.execute(
            schema.attempts.update().where(schema.attempts.c.id == 1).values(rejection_id=rid)
        )
    html = authed.get("/rejections?days=3650", headers=HTML).text
    assert '<script>alert("reply")' not in html
    assert "&lt;script&gt;alert(&#34;reply&#34;)&lt;/script&gt;" in html
    assert 'href="javascript:' not in html
    q = authed.get('/search?q=<img src=x onerror=alert(1)>"', headers=HTML).text
    assert "<img src=x" not in q and "&lt;img src=x onerror=alert(1)&gt;" in q
    done = authed.get("/?done=<b>owned</b>", headers=HTML).text
    assert "<b>owned</b>" not in done


def test_overview_chart_of_one_provider(authed: TestClient, dashboard: Dashboard) -> None:
    a = schema.attempts
    with dashboard.engine.connect() as c:
        want = Counter(
            {
                s: int(n)
                for s, n in c.execute(
                    select(a.c.status, func.count())
                    .where(a.c.provider == "yahoo")
                    .group_by(a.c.status)
                )
            }
        )
    html = authed.get("/?days=30&provider=yahoo", headers=HTML).text
    assert 'id="chart-provider">yahoo<' in html
    assert +shown_totals(html) == +want and sum(want.values()) > 0
    assert 'href="/?days=30&amp;provider=yahoo"' in html  # the sparkline links here


def test_egress_page_shows_the_evidence(authed: TestClient, store: Any) -> None:
    from .conftest import record_egress

    events = record_egress(store.url)
    html = authed.get("/egress?days=1", headers=HTML).text
    assert "/var/www/html/wp-content/uploads/contact.php" in html
    assert "php-fpm8.2[812] ← init[1]" in html and "pid 4400, ppid 812" in html
    assert "198.51.100.21:25" in html and "/usr/lib/thunderbird/thunderbird" in html
    assert "/usr/lib/postfix/sbin/smtp" not in html  # the MTA's own connections are hidden
    ev_rows = html[html.index('id="event-table"') :].count("<tr class=")
    assert ev_rows == sum(1 for e in events if not e.mta)
    with_mta = authed.get("/egress?days=1&mta=true", headers=HTML).text
    assert with_mta[with_mta.index('id="event-table"') :].count("<tr class=") == len(events)
    assert "/usr/lib/postfix/sbin/smtp" in with_mta
