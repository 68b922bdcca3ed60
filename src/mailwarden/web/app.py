"""The dashboard: a FastAPI app factory (:func:`create_app`), its routes and error handling.

Pages (server-rendered Jinja2, inline SVG charts, one local stylesheet, no script from anywhere
else; the Content-Security-Policy forbids it): ``/`` overview (attempts per provider over time,
breakers with open/close, parked mail), ``/rejections``, ``/origins``, ``/egress``, ``/search``,
``/message/{id}``, ``/health``; ``/metrics`` for Prometheus; ``/login``, ``/logout``.

Every page takes ``host`` (``""`` = the whole fleet) and ``days`` (the window). Everything but
``/login``, ``/healthz`` and ``/static`` needs a session (``/metrics`` also takes
``Authorization: Bearer <token>``, or nothing with ``[web] metrics_public``). Errors are short
messages with the right status (401, 403, 404, 422, 429, 503), never a stack trace.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from fastapi import FastAPI, Form, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from mailwarden.config import Settings
from mailwarden.errors import MailwardenError
from mailwarden.store.queries import StoredMessage
from mailwarden.web import charts
from mailwarden.web import queries as wq
from mailwarden.web.auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Credentials,
    LoginThrottle,
    Session,
    Sessions,
    csrf_ok,
    load_secret,
)
from mailwarden.web.services import Background, BreakerControl, Parked, ParkedSource

log = logging.getLogger("mailwarden.web")

HERE = Path(__file__).resolve().parent
KINDS_LIMIT = 500  # rejection kinds listed per page
PROVIDER_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,253}$")
HOST_PATTERN = r"^[A-Za-z0-9._-]{0,253}$"
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

HostQ = Annotated[str, Query(max_length=253, pattern=HOST_PATTERN, description="syslog host")]
DaysQ = Annotated[int, Query(ge=1, le=3650, description="window in days")]
# the same fields posted by the forms (the page to return to), and every form's CSRF token
HostF = Annotated[str, Form(max_length=253, pattern=HOST_PATTERN)]
DaysF = Annotated[int, Form(ge=1, le=3650)]
CsrfF = Annotated[str, Form(max_length=128)]


class AuthError(Exception):
    """Raised inside a route: answered with 401 (no session) or 403 (CSRF, origin)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


HealthFn = Callable[[bool], list[Any]]  # full? -> findings


def _default_health(settings: Settings) -> HealthFn:
    def run(full: bool) -> list[Any]:
        from mailwarden.reputation.doctor import DoctorOptions, run_doctor

        opts = DoctorOptions(dns=full, config_dir=settings.breaker.postfix_config)
        return run_doctor(settings, opts)

    return run


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return ""
    d = (time.time() if now is None else now) - float(ts)
    future = d < 0
    d = abs(d)
    if d < 90:
        s = f"{int(d)}s"
    elif d < 5400:
        s = f"{int(d // 60)}m"
    elif d < 172800:
        s = f"{d / 3600:.1f}h"
    else:
        s = f"{d / 86400:.1f}d"
    return f"in {s}" if future else f"{s} ago"


def weblink(url: str) -> bool:
    """Whether a URL from a reply, a finding or a table may become a link: http(s) only."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def qs(*dicts: dict[str, Any], **kw: Any) -> str:
    """A query string of the merged arguments, leaving out empty values."""
    merged: dict[str, Any] = {}
    for d in dicts:
        merged.update(d)
    merged.update(kw)
    return urlencode({k: v for k, v in merged.items() if v not in ("", None)})


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    control: BreakerControl | None = None,
    parked: ParkedSource | None = None,
    health: HealthFn | None = None,
    credentials: Credentials | None = None,
    secret: bytes | None = None,
) -> FastAPI:
    """The dashboard app over the store of ``settings`` (or ``engine``).

    ``control`` performs breaker open/close (without it the buttons are not shown and the POSTs
    answer 503); ``parked`` reads the queue inventory; ``health`` runs the doctor (default:
    :func:`mailwarden.reputation.doctor.run_doctor`, local checks on each visit and the full run
    with DNS in the background). ``credentials``/``secret`` default to ``[web]`` and
    ``<state_dir>/web-secret``.
    """
    if engine is None:
        from mailwarden.store.db import open_engine

        engine = open_engine(settings.db_url())
    web = settings.web
    creds = credentials or Credentials(web.token, web.password_hash)
    key = secret or load_secret(
        Path(web.secret_file) if web.secret_file else settings.state_dir / "web-secret"
    )
    sessions = Sessions(key, creds, lifetime=web.session_hours * 3600)
    throttle = LoginThrottle()
    run_health = health or _default_health(settings)
    quick_health: Background[list[Any]] = Background("health-local", lambda: run_health(False), 60)
    full_health: Background[list[Any]] = Background(
        "health-full", lambda: run_health(True), web.health_interval
    )
    queue: Background[dict[str, Parked]] | None = (
        Background("queue", parked, 30) if parked is not None else None
    )
    db: Engine = engine
    try:
        wq.ensure_indexes(db)
    except Exception as exc:  # a read-only store still serves, only slower
        log.warning("could not add the dashboard's index: %s", exc)

    app = FastAPI(title="mailwarden", docs_url=None, redoc_url=None, openapi_url=None, debug=False)
    app.state.settings = settings
    app.state.engine = db
    app.state.sessions = sessions
    app.state.queue = queue
    app.state.health = (quick_health, full_health)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(fmt_time=fmt_time, fmt_ago=fmt_ago, urlencode=urlencode, qs=qs)
    templates.env.filters["ratio"] = lambda v: f"{v * 100:.1f}%"
    templates.env.filters["weblink"] = weblink
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    # ---------------------------------------------------------------- plumbing

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        resp: Response = await call_next(request)
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        if not request.url.path.startswith("/static/"):
            resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    hosts_cache: list[Any] = [None, []]  # (when, hosts): the selector's list, a minute old at most

    def known_hosts() -> list[str]:
        if hosts_cache[0] is None or time.monotonic() - hosts_cache[0] > 60:
            try:
                from mailwarden.store.breaker import breaker_hosts

                with db.connect() as conn:
                    # mail records name the syslog hosts; a daemon's breakers its own name
                    found = set(wq.hosts(conn)) | set(breaker_hosts(conn))
                hosts_cache[:] = [time.monotonic(), sorted(found)]
            except Exception:
                log.exception("listing hosts failed")
        return list(hosts_cache[1])

    def session_of(request: Request) -> Session | None:
        return sessions.read(request.cookies.get(SESSION_COOKIE))

    def require(request: Request) -> Session:
        s = session_of(request)
        if s is None:
            raise AuthError(401, "Log in first: no valid session (it may have expired).")
        return s

    def require_post(request: Request, csrf: str | None) -> Session:
        s = require(request)
        origin = request.headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
            raise AuthError(403, "Cross-site request refused (Origin does not match).")
        if not csrf_ok(s, csrf):
            raise AuthError(403, "CSRF token missing or wrong: reload the page and try again.")
        return s

    def page(
        request: Request,
        name: str,
        session: Session | None,
        *,
        status: int = 200,
        host: str = "",
        days: int = 7,
        **ctx: Any,
    ) -> HTMLResponse:
        hosts: list[str] = []
        if session is not None:
            hosts = known_hosts()
        return templates.TemplateResponse(
            request,
            name,
            {
                "session": session,
                "csrf": session.csrf if session else "",
                "host": host,
                "days": days,
                "hosts": hosts,
                "nav_qs": qs(host=host, days=days),
                "now": time.time(),
                "refresh": 0,
                **ctx,
            },
            status_code=status,
        )

    def error(request: Request, status: int, message: str) -> Response:
        if _wants_html(request):
            return page(request, "error.html", session_of(request), status=status, message=message)
        return JSONResponse({"error": message, "status": status}, status_code=status)

    def login_page(request: Request, status: int, message: str = "") -> Response:
        nonce, cookie = sessions.login_nonce()
        nxt = request.url.path if request.method == "GET" else "/"
        if request.url.query and request.method == "GET":
            nxt += "?" + request.url.query
        resp = page(request, "login.html", None, status=status, message=message, nonce=nonce,
                    next=nxt)  # fmt: skip
        resp.set_cookie(LOGIN_COOKIE, cookie, max_age=900, httponly=True, samesite="strict",
                        secure=web.secure_cookie, path="/")  # fmt: skip
        return resp

    @app.exception_handler(AuthError)
    async def _auth_error(request: Request, exc: AuthError) -> Response:
        if exc.status == 401 and _wants_html(request):
            return login_page(request, 401, exc.message)
        headers = {"WWW-Authenticate": 'Bearer realm="mailwarden"'} if exc.status == 401 else None
        if _wants_html(request):
            return error(request, exc.status, exc.message)
        return JSONResponse(
            {"error": exc.message, "status": exc.status}, status_code=exc.status, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "body", "path"))
            parts.append(f"{where or 'request'}: {e.get('msg', 'invalid')}")
        return error(request, 422, "Invalid request: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        msg = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and msg == "Not Found":
            msg = f"Nothing here: {request.url.path}"
        return error(request, exc.status_code, msg)

    @app.exception_handler(MailwardenError)
    async def _ours(request: Request, exc: MailwardenError) -> Response:
        log.error("%s: %s", request.url.path, exc)
        return error(request, 503, f"{type(exc).__name__}: {exc}")

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return error(request, 500, "Internal error: the details are in the server log.")

    # ---------------------------------------------------------------- login

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> str:
        return "ok\n"

    @app.get("/login")
    def login_form(request: Request) -> Response:
        if session_of(request) is not None:
            return RedirectResponse("/", status_code=303)
        return login_page(request, 200)

    @app.post("/login")
    def login(
        request: Request,
        secret: Annotated[str, Form(max_length=4096)] = "",
        nonce: Annotated[str, Form(max_length=64)] = "",
        next: Annotated[str, Form(max_length=2048)] = "/",
    ) -> Response:
        client = request.client.host if request.client else "?"
        wait = throttle.blocked(client)
        if wait > 0:
            return error(request, 429, f"Too many failed logins: try again in {int(wait) + 1}s.")
        if not sessions.check_login_nonce(request.cookies.get(LOGIN_COOKIE), nonce):
            return login_page(request, 403, "The login form expired or came from elsewhere: "
                              "try again.")  # fmt: skip
        if not creds.check(secret):
            throttle.failed(client)
            log.warning("failed dashboard login from %s", client)
            return login_page(request, 401, "Wrong token or password.")
        throttle.succeeded(client)
        _, cookie = sessions.issue()
        target = next if next.startswith("/") and not next.startswith("//") else "/"
        resp = RedirectResponse(target, status_code=303)
        resp.set_cookie(SESSION_COOKIE, cookie, max_age=int(sessions.lifetime), httponly=True,
                        samesite="strict", secure=web.secure_cookie, path="/")  # fmt: skip
        resp.delete_cookie(LOGIN_COOKIE, path="/")
        return resp

    @app.post("/logout")
    def logout(request: Request, csrf: CsrfF = "") -> Response:
        s = require_post(request, csrf)
        sessions.revoke(s)
        resp = login_page(request, 200, "Logged out.")
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    # ---------------------------------------------------------------- pages

    def parked_counts() -> tuple[dict[str, Parked], Any]:
        if queue is None:
            return {}, None
        snap = queue.get()
        return snap.value or {}, snap

    @app.get("/")
    def overview(
        request: Request,
        host: HostQ = "",
        days: DaysQ = 7,
        done: Annotated[str, Query(max_length=300)] = "",
        provider: Annotated[str, Query(max_length=255)] = "",
    ) -> Response:
        s = require(request)
        from mailwarden.store.breaker import fleet_history, fleet_states

        now = time.time()
        with db.connect() as conn:
            p = wq.period(conn, days, now)
            providers = wq.provider_overview(conn, p, host)
            # breakers are per host (each acts on its own Postfix): the fleet's, or the host's
            states = sorted(
                fleet_states(conn, host),
                key=lambda r: (r["state"] == "closed", r["provider"], r["host"]),
            )
            history = fleet_history(conn, host=host, limit=15)
        local = control.host if control is not None else ""
        parked, qsnap = parked_counts()
        if host and local and host != local:
            parked, qsnap = {}, None  # the queue read here is this host's, not the one shown
        daylist = p.day_list()
        shown = [r for r in providers if r.provider == provider] if provider else providers
        totals = wq.daily_totals(shown, p)
        sums = sum((r.counts for r in shown), Counter())  # the rollups' days are the chart's
        known = {r["provider"] for r in states if r["host"] == local}
        extra_parked = sorted(
            k for k, v in parked.items() if (v.parked or v.held) and k not in known
        )
        return page(
            request,
            "overview.html",
            s,
            host=host,
            days=days,
            nav="overview",
            period=p,
            chart=charts.stacked_bars(
                totals, label=f"delivery attempts per day{' to ' + provider if provider else ''}"
            ),
            chart_provider=provider,
            sums=sums,
            providers=providers,
            sparks={r.provider: charts.sparkline(daylist, r.daily) for r in providers},
            states=states,
            history=history,
            local_host=local,
            fleet=len({r["host"] for r in states} | {t["host"] for t in history}) > 1,
            parked=parked,
            queue=qsnap,
            extra_parked=extra_parked,
            can_act=control is not None,
            done=done,
        )

    @app.get("/rejections")
    def rejections(
        request: Request,
        host: HostQ = "",
        days: DaysQ = 7,
        provider: Annotated[str, Query(max_length=255)] = "",
        reason: Annotated[str, Query(max_length=64)] = "",
        issuer: Annotated[str, Query(max_length=128)] = "",
    ) -> Response:
        s = require(request)
        with db.connect() as conn:
            p = wq.period(conn, days, time.time())
            every = wq.rejection_kinds(conn, p, host, limit=KINDS_LIMIT)
            if len(every) < KINDS_LIMIT:  # complete: filter it here instead of asking again
                kinds = wq.filter_kinds(every, provider=provider, reason=reason, issuer=issuer)
            else:
                kinds = wq.rejection_kinds(
                    conn, p, host, provider=provider, reason=reason, issuer=issuer
                )
        return page(
            request,
            "rejections.html",
            s,
            host=host,
            days=days,
            nav="rejections",
            period=p,
            kinds=kinds,
            facets=wq.kind_facets(every),
            sel={"provider": provider, "reason": reason, "issuer": issuer},
        )

    @app.get("/origins")
    def origins(request: Request, host: HostQ = "", days: DaysQ = 7) -> Response:
        s = require(request)
        with db.connect() as conn:
            p = wq.period(conn, days, time.time())
            rows = wq.origins(conn, p, host)
        return page(
            request,
            "origins.html",
            s,
            host=host,
            days=days,
            nav="origins",
            period=p,
            rows=rows,
            bars={r.id: charts.hour_bars(r.hourly, p.since, p.until) for r in rows},
        )

    @app.get("/egress")
    def egress(request: Request, host: HostQ = "", days: DaysQ = 7, mta: bool = False) -> Response:
        s = require(request)
        from mailwarden.egress.summary import alerts, top

        since = time.time() - days * 86400
        rows = top(db, since=since, limit=200, include_mta=mta, host=host)
        al = alerts(db, since=since, limit=100, host=host)
        with db.connect() as conn:
            events = wq.egress_events(conn, since, mta=mta, host=host)
        return page(
            request,
            "egress.html",
            s,
            host=host,
            days=days,
            nav="egress",
            rows=rows,
            alerts=al,
            events=events,
            mta=mta,
            fleet=len({r["host"] for r in (*rows, *al, *events)}) > 1,
        )

    @app.get("/search")
    def search(
        request: Request,
        host: HostQ = "",
        days: DaysQ = 7,
        q: Annotated[str, Query(max_length=998)] = "",
        kind: Annotated[str, Query(pattern="^(auto|qid|message_id|recipient)$")] = "auto",
    ) -> Response:
        s = require(request)
        term = q.strip()
        found: dict[int, StoredMessage] = {}
        how: list[str] = []
        if term:
            with db.connect() as conn:
                kinds = [kind] if kind != "auto" else _guess(term)
                for k in kinds:
                    rows = wq.messages_by(
                        conn,
                        host=host,
                        qid=term if k == "qid" else "",
                        message_id=term if k == "message_id" else "",
                        recipient=term if k == "recipient" else "",
                    )
                    if rows:
                        how.append(k)
                    for r in rows:
                        found.setdefault(r.id, r)
        results = sorted(found.values(), key=lambda r: (-r.arrival, -r.id))
        return page(
            request,
            "search.html",
            s,
            host=host,
            days=days,
            nav="search",
            q=term,
            kind=kind,
            results=results,
            how=how,
        )

    @app.get("/message/{pk}")
    def message(request: Request, pk: int, host: HostQ = "", days: DaysQ = 7) -> Response:
        s = require(request)
        with db.connect() as conn:
            rows = wq.messages_by(conn, ids=[pk])
            if not rows:
                raise StarletteHTTPException(404, f"No message {pk} in the store.")
            msg = rows[0]
            notices = wq.bounce_links(conn, msg)
        return page(
            request, "message.html", s, host=host, days=days, nav="search", m=msg, notices=notices
        )

    @app.get("/health")
    def health_page(request: Request, host: HostQ = "", days: DaysQ = 7) -> Response:
        s = require(request)
        from mailwarden.reputation.findings import rank

        quick, full = quick_health.get(), full_health.get()
        if quick.value is None and not quick.error:
            quick = quick_health.wait(3)  # usually quick: spare the first visit a reload

        def ordered(fs: list[Any] | None) -> list[Any]:
            return sorted(fs or [], key=lambda f: (-rank(f.severity), f.check, f.subject))

        return page(
            request,
            "health.html",
            s,
            host=host,
            days=days,
            nav="health",
            quick=quick,
            full=full,
            quick_findings=ordered(quick.value),
            full_findings=ordered(full.value),
            refresh=5 if (quick.running or full.running) else 0,
        )

    @app.post("/health/refresh")
    def health_refresh(request: Request, csrf: CsrfF = "") -> Response:
        require_post(request, csrf)
        full_health.refresh()
        quick_health.refresh()
        return RedirectResponse("/health", status_code=303)

    # ---------------------------------------------------------------- breaker actions

    def _provider(name: str) -> str:
        n = name.strip().lower()
        if not PROVIDER_RE.match(n):
            raise StarletteHTTPException(
                422, f"Bad provider name {name[:80]!r}: a provider table name or a domain."
            )
        return n

    def _wired() -> BreakerControl:
        if control is None:
            raise StarletteHTTPException(503, "This dashboard has no breaker control wired.")
        return control

    def _back(host: str, days: int, done: str) -> str:
        return "/?" + qs(days=days, done=done, host=host)

    @app.post("/breaker/open")
    def breaker_open(
        request: Request,
        provider: Annotated[str, Form(max_length=255)],
        reason: Annotated[str, Form(max_length=200)],
        csrf: CsrfF = "",
        duration: Annotated[str, Form(max_length=32)] = "",
        host: HostF = "",
        days: DaysF = 7,
    ) -> Response:
        require_post(request, csrf)
        from mailwarden.breaker.rules import REASON_TEXT, parse_duration

        name = _provider(provider)
        if not REASON_TEXT.match(reason):
            raise StarletteHTTPException(
                422, "The reason must be 1-200 characters of letters, digits, spaces and "
                ".,:;()/_@+=#- (it is shown to Postfix).",
            )  # fmt: skip
        secs: float | None = None
        if duration.strip():
            try:
                secs = parse_duration(duration)
            except ValueError as exc:
                raise StarletteHTTPException(422, f"Bad duration: {exc}") from None
            if secs == float("inf"):
                secs = None
        _wired().open(name, duration=secs, note=reason)
        log.info("breaker %s opened from the dashboard (%s)", name, reason)
        return RedirectResponse(_back(host, days, f"{name} opened"), status_code=303)

    @app.post("/breaker/close")
    def breaker_close(
        request: Request,
        provider: Annotated[str, Form(max_length=255)],
        csrf: CsrfF = "",
        note: Annotated[str, Form(max_length=200)] = "",
        host: HostF = "",
        days: DaysF = 7,
    ) -> Response:
        require_post(request, csrf)
        name = _provider(provider)
        n = _wired().close(name, note=note or "closed from the dashboard")
        log.info("breaker %s closed from the dashboard", name)
        msg = f"{name} closed" if n else f"{name} was already closed"
        return RedirectResponse(_back(host, days, msg), status_code=303)

    # ---------------------------------------------------------------- metrics

    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from mailwarden.report.metrics import registry

    def queue_for_metrics() -> dict[str, Parked]:
        assert queue is not None
        snap = queue.get()
        if snap.value is None and not snap.error:
            snap = queue.wait(10)  # the first scrape after start: read the queue once
        if snap.error or snap.value is None:
            raise RuntimeError(snap.error or "the queue has not been read yet")
        return snap.value

    reg = registry(db, parked=queue_for_metrics if queue is not None else None)

    @app.get("/metrics")
    def metrics(request: Request) -> Response:
        if not web.metrics_public and session_of(request) is None:
            auth = request.headers.get("authorization", "")
            scheme, _, cred = auth.partition(" ")
            if scheme.lower() != "bearer" or not creds.check(cred.strip()):
                raise AuthError(401, "Metrics need a session or 'Authorization: Bearer <token>'.")
        return Response(generate_latest(reg), media_type=CONTENT_TYPE_LATEST)

    return app


_QID = re.compile(r"^[0-9A-Za-z]{6,20}$")


def _guess(term: str) -> list[str]:
    """Which look-ups a free search term is worth (each is one index probe)."""
    out = []
    if _QID.match(term):
        out.append("qid")
    out.append("message_id")
    if "@" in term and " " not in term:
        out.append("recipient")
    return out
