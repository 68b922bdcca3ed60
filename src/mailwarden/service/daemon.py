"""The daemon behind ``mailwarden run``: one process, supervised components.

==============  ===========================================================================
component       what it does
==============  ===========================================================================
``socketmap``   child process ``mailwarden postfix socketmap``: the breaker's transport
                lookup. While it is down Postfix defers all mail, so it is restarted at once.
``log``         follows the mail log (files or journal) from the checkpoints in the store,
                feeds every delivery to the breaker, runs the breaker's timers, and closes a
                commit unit every ``[service] commit_interval`` (:mod:`.ingest`).
``store``       writes the units (rows + checkpoints, one transaction each), retrying with
                backoff while the store is unreachable.
``egress``      records the privileged collector's events (``mailwarden egress run``, unix
                socket ``[egress] socket``): summaries, raw events, alerts.
``scheduler``   retention, blocklist checks, spike and SASL burst detection, daily report
                (:mod:`.jobs`).
``web``         the dashboard and ``/metrics`` (``[web] bind``), when :mod:`mailwarden.web`
                provides its app factory.
``alerts``      the one alert dispatcher (:mod:`mailwarden.report.alerts`): the breaker, the
                egress recorder and the jobs only emit.
==============  ===========================================================================

Each thread component runs under :class:`~.supervisor.ThreadComponent` (restart with backoff
when it dies). Signals: SIGTERM/SIGINT stop cleanly (the log component commits what it read,
the writer drains, checkpoints are in the store, children are stopped); SIGHUP reloads the
configuration file, the data tables (providers, reasons) and the breaker rules without
dropping state (breaker states, open messages, follow positions). Logs: :mod:`.logs`.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailwarden.service.supervisor import ProcessComponent, ThreadComponent

if TYPE_CHECKING:
    from mailwarden.config import Settings

log = logging.getLogger("mailwarden.service")


def host_id(settings: Settings, override: str = "") -> str:
    """The name this daemon tags its own rows with (``--host``, ``[log] host``, host name)."""
    return override or settings.log.host or socket.gethostname().split(".")[0]


class ResilientBreakerStore:
    """The breaker's store, made to survive a store outage: a failed ``save`` is kept and
    retried with the next one (the engine goes on publishing its view meanwhile), a failed
    ``add_hit`` is dropped with a warning (the window lives in memory too)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._pending: list[tuple[list[dict[str, Any]], list[dict[str, Any]], float]] = []
        self._version: tuple[int, float] = (0, 0.0)

    def load_states(self) -> list[dict[str, Any]]:
        return list(self.inner.load_states())

    def version(self) -> tuple[int, float]:
        try:
            self._version = self.inner.version()
        except Exception as exc:
            log.debug("breaker store version unavailable: %s", exc)
        return self._version

    def save(
        self, states: Iterable[dict[str, Any]], transitions: Iterable[dict[str, Any]], now: float
    ) -> None:
        self._pending.append((list(states), list(transitions), now))
        self.flush()

    def flush(self) -> bool:
        while self._pending:
            sts, trs, now = self._pending[0]
            try:
                self.inner.save(sts, trs, now)
            except Exception as exc:
                log.warning(
                    "breaker state not saved yet (store down?); kept for retry",
                    extra={"pending": len(self._pending), "error": str(exc)[:200]},
                )
                return False
            self._pending.pop(0)
        return True

    def add_hit(self, ts: float, provider: str, ip: str, rule: str) -> None:
        try:
            self.inner.add_hit(ts, provider, ip, rule)
        except Exception as exc:
            log.warning("breaker hit not stored", extra={"error": str(exc)[:200]})

    def hits_since(self, since: float) -> list[tuple[float, str, str, str]]:
        return list(self.inner.hits_since(since))


class Daemon:
    """Builds the components from the settings and runs them until stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        paths: list[str] | None = None,
        journal: bool = False,
        from_start: bool = False,
        socketmap: bool = True,
        host: str = "",
        config_path: Path | None = None,
        db_url: str = "",
        web: bool | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.db_override = db_url
        self.host = host_id(settings, host)
        self.journal = journal
        self.paths = list(paths or [])
        self.from_start = from_start
        self.serve_socketmap = socketmap
        self.want_web = settings.service.web if web is None else web
        self.stop_event = threading.Event()
        self.reload_event = threading.Event()
        self._reload_breaker: tuple[Any, Any] | None = None
        self.components: list[Any] = []
        self._breaker_guard = 0.0
        self.started = time.time()

    # -- wiring ------------------------------------------------------------------------------
    def build(self) -> None:
        from mailwarden.cli.breaker import build as build_breaker
        from mailwarden.report.alerts import EgressAdapter, dispatcher_from_settings
        from mailwarden.service.ingest import LogIngest, StoreWriter
        from mailwarden.service.jobs import JobContext, Scheduler, jobs_from
        from mailwarden.sources import load_tz
        from mailwarden.store.db import open_engine

        s = self.settings
        s.state_dir.mkdir(parents=True, exist_ok=True)
        self.engine = open_engine(s.db_url())
        svc = s.service
        self.dispatcher = dispatcher_from_settings(s, self.engine, self.host)
        # this host's breakers (keyed by self.host in a shared store), alerting through ours
        self.wiring = build_breaker(
            s, host=self.host, dispatcher=self.dispatcher, store_engine=self.engine
        )
        be = self.wiring.engine
        self.breaker_store = ResilientBreakerStore(be.store)
        be.store = self.breaker_store
        be.publish()
        self.writer = StoreWriter(
            self.engine,
            self.host,
            attempts_days=s.store.attempts_days,
            max_units=svc.queue_units,
            backoff_max=min(svc.restart_backoff_max, 5.0),
            on_outage=self._store_outage,
        )
        self.ingest = LogIngest(
            engine=self.engine,
            host=self.host,
            writer=self.writer,
            classifier=be.classifier,  # type: ignore[arg-type]
            paths=self.paths,
            journal=self.journal,
            from_start=self.from_start,
            tz=load_tz(s.log.tz) if s.log.tz else None,
            commit_interval=svc.commit_interval,
            observe=self._observe,
        )
        self.ctx = JobContext(s, self.engine, self.host, self.dispatcher, hosts=self.log_hosts)
        self.scheduler = Scheduler(self.ctx, [*jobs_from(s), self._heartbeat_job()])
        self._egress_adapter = EgressAdapter(self.dispatcher, svc.public_url)
        back = svc.restart_backoff_max
        if self.serve_socketmap:
            argv = [sys.executable, "-m", "mailwarden.cli", "postfix", "socketmap"]
            self.components.append(
                ProcessComponent(
                    "socketmap",
                    argv,
                    s.state_dir / "socketmap.pid",
                    backoff_max=min(back, 5.0),
                    on_restart=self._component_restarted,
                )
            )
        self.components.append(
            ThreadComponent(
                "store", self.writer.run, backoff_max=back, on_restart=self._component_restarted
            )
        )
        self.components.append(
            ThreadComponent(
                "log", self._log_loop, backoff_max=back, on_restart=self._component_restarted
            )
        )
        if svc.egress:
            self.components.append(ThreadComponent("egress", self._egress_loop, backoff_max=back))
        self.components.append(ThreadComponent("scheduler", self.scheduler.run, backoff_max=back))
        web = self._web_component() if self.want_web else None
        if web is not None:
            self.components.append(web)

    def _heartbeat_job(self) -> Any:
        """Every 10 s: this daemon's health in ``service_state`` (host, "health"), so a fleet's
        daemons and their components can be seen from any host (and a silent one noticed)."""
        from mailwarden.service.jobs import Job

        def beat(ctx: Any, now: float) -> dict[str, Any]:
            from mailwarden.store.db import write_transaction
            from mailwarden.store.service import set_state

            with write_transaction(self.engine) as conn:
                set_state(conn, self.host, "health", self.health(), now)
            return {}

        return Job("heartbeat", beat, interval=10.0, quiet=True)

    def _component_restarted(self, name: str, restarts: int, error: str) -> None:
        """A component died: alert (once per dedup window). A dead lookup server defers all
        mail, a dead log component means no protection: people must know."""
        from mailwarden.report.alerts import Alert

        self.dispatcher.emit(
            Alert(
                kind="service",
                key=f"service:{self.host}:{name}:died",
                severity="critical" if name in ("socketmap", "log") else "warning",
                title=f"mailwarden {name} died and was restarted ({restarts} times so far)",
                text=f"The {name} component of mailwarden run on {self.host} stopped: {error}. "
                "It is restarted with backoff; see the daemon's log (journalctl -u mailwarden).",
                host=self.host,
                data={"component": name, "restarts": restarts, "error": error},
            )
        )

    def _store_outage(self, seconds: float, error: str) -> None:
        from mailwarden.report.alerts import Alert

        self.dispatcher.emit(
            Alert(
                kind="service",
                key=f"service:{self.host}:store-down",
                severity="critical",
                title=f"the store has been unreachable for {seconds:.0f} s",
                text="mailwarden run cannot write to its store; the log is held and written "
                f"when it is back (nothing is lost while the daemon runs). Last error: {error}",
                host=self.host,
                data={"seconds": seconds, "error": error},
            )
        )

    def _observe(self, d: Any) -> object:
        """Feed the breaker, except failures it already counted before a crash: lines after
        the last committed checkpoint are read again on restart, and a rule hit must not be
        counted twice towards an N-per-window trigger."""
        if d.ts <= self._breaker_guard and d.status != "sent":
            return None
        return self.wiring.engine.observe(d)

    def _load_breaker_guard(self) -> float:
        """The newest rule hit or rule transition this host's breaker stored (0.0 when none)."""
        try:
            return self.wiring.store.newest_rule_activity()
        except Exception as exc:
            log.warning("breaker replay guard unavailable", extra={"error": str(exc)[:200]})
            return 0.0

    def log_hosts(self) -> set[str]:
        return set(self.ingest.hosts) if hasattr(self, "ingest") else set()

    # -- components ----------------------------------------------------------------------------
    def _log_loop(self, stop: threading.Event) -> None:
        # after a restart of this component, let the writer commit what the last run queued,
        # so this run resumes from the newest checkpoint
        self.writer.wait_idle(30.0)
        self._breaker_guard = self._load_breaker_guard()
        self.ingest.stats = type(self.ingest.stats)()
        self.ingest.followers = []
        be = self.wiring.engine
        w = self.wiring
        state = {"refresh": 0.0, "guard": 0.0, "warned": 0.0}

        def tick() -> None:
            now = time.time()
            if self._reload_breaker is not None:
                rules, clf = self._reload_breaker
                self._reload_breaker = None
                self._apply_breaker_reload(rules, clf)
            try:
                be.tick(now)
                if now >= state["refresh"]:
                    self.breaker_store.flush()
                    be.refresh()
                    state["refresh"] = now + 1.0
            except Exception as exc:
                if now - state["warned"] > 30:
                    state["warned"] = now
                    log.warning("breaker timers failed", extra={"error": str(exc)[:200]})
            if now >= state["guard"]:
                state["guard"] = now + 60.0
                threading.Thread(target=_guard, args=(w,), daemon=True).start()

        self.ingest.run(stop, poll=self.settings.breaker.poll, tick=tick)

    def _apply_breaker_reload(self, rules: Any, clf: Any) -> None:
        be = self.wiring.engine
        be.rules = rules
        be.machine.rules = rules
        be.classifier = clf
        f = self.ingest.folder
        if f is not None:
            f.clf = clf
            for cache in (f._prov_cache, f._cls_cache, f._norm_cache):
                cache.clear()
        self.ingest.classifier = clf
        be.publish()
        log.info("breaker rules and data tables reloaded", extra={"rules": len(rules.rules)})

    def _egress_loop(self, stop: threading.Event) -> None:
        from mailwarden.egress.client import ProviderResolver, ingest
        from mailwarden.egress.summary import Recorder

        s = self.settings
        path = s.egress.socket
        waited = False
        while not os.path.exists(path):
            if not waited:
                log.info(
                    "egress collector not running; waiting for its socket",
                    extra={"socket": path},
                )
                waited = True
            if stop.wait(2.0):
                return
        rec = Recorder(
            self.engine,
            host=self.host,
            notifier=self._egress_adapter,
            raw_days=s.egress.raw_days,
            alert_window=s.egress.alert_window,
        )
        res = ProviderResolver(self.wiring.engine.classifier.provider_for_host, dns=s.dns)
        log.info("recording egress events", extra={"socket": path})
        try:
            n = ingest(path, rec, resolver=res, stop=stop.is_set)
        finally:
            res.close()
        if not stop.is_set():
            raise RuntimeError(f"the egress collector closed its socket after {n} events")

    def _web_component(self) -> ThreadComponent | None:
        """The dashboard and /metrics of :mod:`mailwarden.web` (when installed) on ``[web]
        bind``, over the daemon's store; its breaker buttons act through a second engine on
        the same store (the log thread's engine picks the change up within a second), and
        their transitions are alerted through the daemon's dispatcher."""
        try:
            from mailwarden.cli.web import credentials, parse_bind, wire
            from mailwarden.web.app import create_app
        except ImportError:
            log.info("web dashboard not available in this installation; not serving it")
            return None
        import uvicorn

        s = self.settings
        host, port = parse_bind(s.web.bind)
        creds, one_time = credentials(s)
        if one_time:
            log.warning(
                "no [web] token or password_hash configured: this run's login token follows",
                extra={"token": one_time, "login": f"http://{host}:{port}/login"},
            )

        def serve(stop: threading.Event) -> None:
            control = parked = None
            closer: Any = None
            try:
                control, parked, closer = wire(
                    s, host=self.host, dispatcher=self.dispatcher, store_engine=self.engine
                )
            except Exception as exc:
                log.warning("dashboard without breaker control", extra={"error": str(exc)[:200]})
            app = create_app(
                s, engine=self.engine, control=control, parked=parked, credentials=creds
            )
            config = uvicorn.Config(
                app,
                host=host,
                port=port,
                log_config=None,
                access_log=False,
                server_header=False,
                lifespan="off",
            )
            server = uvicorn.Server(config)  # no signal handlers outside the main thread

            def watch() -> None:
                stop.wait()
                server.should_exit = True

            threading.Thread(target=watch, daemon=True).start()
            log.info("serving the dashboard", extra={"bind": f"{host}:{port}"})
            try:
                server.run()
            finally:
                if closer is not None:
                    closer()
            if not stop.is_set():
                raise RuntimeError(f"web server stopped (is {host}:{port} in use?)")

        return ThreadComponent("web", serve, backoff_max=s.service.restart_backoff_max)

    # -- signals and the main loop -------------------------------------------------------------
    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop_event.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop_event.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload_event.set())

    def run(self) -> int:
        self.build()
        for c in self.components:
            c.start()
        log.info(
            "mailwarden run started",
            extra={
                "host": self.host,
                "pid": os.getpid(),
                "components": [c.name for c in self.components],
                "store": _safe_url(self.settings.db_url()),
            },
        )
        try:
            while not self.stop_event.wait(0.2):
                if self.reload_event.is_set():
                    self.reload_event.clear()
                    self.reload()
        finally:
            self.shutdown()
        return 0

    def reload(self) -> None:
        """SIGHUP: reread the configuration, data tables and breaker rules; keep all state."""
        from mailwarden.breaker.rules import RuleSet
        from mailwarden.classify import Classifier
        from mailwarden.config import load_settings
        from mailwarden.errors import MailwardenError
        from mailwarden.report.channels import build_channels, never_park
        from mailwarden.service import logs
        from mailwarden.service.jobs import JobContext, jobs_from

        try:
            new = load_settings(self.config_path)
            if self.db_override:
                new.store.url = self.db_override
            channels = build_channels(new)
            jobs = jobs_from(new)
            rules = RuleSet.load()
            clf = Classifier.load()
        except (MailwardenError, ValueError, OSError) as exc:
            log.error("reload refused; the running configuration stays", extra={"error": str(exc)})
            return
        if new.db_url() != self.settings.db_url():
            log.warning("[store] url changed: takes effect after a restart, not a reload")
            new.store.url = self.settings.store.url
        logs.setup(new.service.log_format, new.service.log_level)
        al = new.alerts
        self.dispatcher.configure(
            channels,
            dedup_window=al.dedup_window,
            rate_per_hour=al.rate_per_hour,
            min_severity=al.min_severity,
        )
        be = self.wiring.engine
        b = new.breaker
        be.enabled = b.enabled
        be.never_park = sorted(set(b.never_park) | set(never_park(new)))
        be.release_min_rate, be.release_rate = b.release_min_rate, b.release_rate
        self._reload_breaker = (rules, clf)  # applied by the log thread (the engine's owner)
        self.settings = new
        self.ctx = JobContext(new, self.engine, self.host, self.dispatcher, hosts=self.log_hosts)
        self.scheduler.reconfigure(self.ctx, [*jobs, self._heartbeat_job()])
        log.info("configuration reloaded", extra={"config": str(self.config_path or "")})

    def shutdown(self) -> None:
        log.info("stopping")
        by = {c.name: c for c in self.components}
        # the reader first (it commits its last unit), then the writer drains, then the rest
        for name in ("log", "egress", "scheduler", "web"):
            if name in by:
                by[name].stop(20.0)
        if "store" in by:
            self.writer.wait_idle(15.0)
            by["store"].stop(15.0)
        if "socketmap" in by:
            by["socketmap"].stop(10.0)
        self.dispatcher.close(10.0)
        try:
            self.wiring.close()
        except Exception:
            log.exception("closing the breaker wiring failed")
        self.engine.dispose()
        log.info(
            "stopped",
            extra={
                "lines": self.ingest.stats.lines,
                "units_written": self.writer.stats.units,
                "store_retries": self.writer.stats.retries,
            },
        )

    def health(self) -> dict[str, Any]:
        """Components (alive, restarts, last error), ingest, writer and alert counters."""
        from dataclasses import asdict

        return {
            "host": self.host,
            "pid": os.getpid(),
            "started": self.started,
            "uptime": round(time.time() - self.started, 1),
            "components": {c.name: asdict(c.health()) for c in self.components},
            "ingest": asdict(self.ingest.stats) if hasattr(self, "ingest") else {},
            "writer": asdict(self.writer.stats) if hasattr(self, "writer") else {},
            "alerts": asdict(self.dispatcher.stats) if hasattr(self, "dispatcher") else {},
        }


def _guard(w: Any) -> None:
    from mailwarden.postfix.control import PrivilegeError

    try:
        w.queue.guard_expiry()
    except PrivilegeError as exc:
        log.error("expiry guard: parked mail not held", extra={"error": str(exc)[:300]})
        w.privilege_refused("hold-expiring", exc)
    except Exception as exc:
        log.warning("expiry guard failed", extra={"error": str(exc)[:200]})


def _safe_url(url: str) -> str:
    from mailwarden.store.db import safe_url

    try:
        return safe_url(url)
    except Exception:
        return "?"
