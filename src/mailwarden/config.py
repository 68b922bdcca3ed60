"""Settings (pydantic): built-in defaults < ``/etc/mailwarden/mailwarden.toml`` < command line.

The file is ``$MAILWARDEN_CONFIG`` if set, else ``<etc>/mailwarden.toml`` (see
:func:`mailwarden.tables.etc_dir`). Every option and its default is documented in
``docs/configuration.md``; keep the two in step. Each stage owns one section.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mailwarden.errors import ConfigError
from mailwarden.tables import etc_dir, read_toml

DEFAULT_LOG_CANDIDATES = (
    "/var/log/mail.log",
    "/var/log/maillog",
    "/var/log/postfix.log",
    "/var/log/mail/mail.log",
)


def default_state_dir() -> Path:
    """``/var/lib/mailwarden`` as root, ``$XDG_STATE_HOME/mailwarden`` for a user."""
    if os.geteuid() == 0:
        return Path("/var/lib/mailwarden")
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "mailwarden"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoreSettings(Section):
    """``[store]``: where records live and how long."""

    url: str = ""  # SQLAlchemy URL; "" = sqlite:///<state_dir>/mailwarden.db
    attempts_days: int = Field(90, ge=1)  # delivery attempts kept this many days
    rollup_days: int = Field(730, ge=1)  # daily rollups kept this many days


class LogSettings(Section):
    """``[log]``: which mail log to read when none is named on the command line."""

    files: list[str] = Field(default_factory=list)  # [] = the first of DEFAULT_LOG_CANDIDATES
    journal: bool = False  # read the systemd journal instead of files
    host: str = ""  # override the host name used as key when the log has none
    tz: str = ""  # zone of traditional "Nov 27 17:19:54" stamps ("Europe/Zurich"); "" = host TZ


class DnsSettings(Section):
    """``[dns]``: the resolver used by live checks, the breaker's MX lookups and trace --live."""

    nameservers: list[str] = Field(default_factory=list)  # [] = /etc/resolv.conf
    port: int = Field(53, ge=1, le=65535)
    timeout: float = Field(2.0, gt=0)  # seconds per query (lifetime)


class IdentitySettings(Section):
    """``[identity]``: who "we" are. Empty lists are filled from ``postconf`` and the interfaces."""

    ips: list[str] = Field(default_factory=list)  # our public sending IPs
    names: list[str] = Field(default_factory=list)  # our host names (myhostname, PTR names)
    helo_names: list[str] = Field(default_factory=list)  # what our MTA says in HELO/EHLO
    domains: list[str] = Field(default_factory=list)  # our mail domains (SPF/DMARC/DBL checks)
    dkim_selectors: list[str] = Field(default_factory=list)  # "selector._domainkey.domain" or "sel"


class EgressSettings(Section):
    """``[egress]``: egress collectors, summaries, alerts and the egress firewall rule."""

    ports: list[int] = Field(default_factory=lambda: [25, 465, 587, 2525])  # watched dports
    allowed_users: list[str] = Field(default_factory=lambda: ["postfix"])  # the MTA's users
    collectors: list[str] = Field(default_factory=lambda: ["ebpf", "nflog", "sockdiag"])
    socket: str = "/run/mailwarden/egress.sock"  # where `egress run` publishes events
    socket_group: str = ""  # group allowed to read the socket ("" = root only)
    poll_interval: float = Field(0.2, gt=0)  # sock_diag fallback poll period, seconds
    ring_mb: int = Field(32, ge=1, le=1024)  # eBPF ring buffer (MiB, power of 2): burst headroom
    fpm_status: list[str] = Field(default_factory=list)  # "unix:/run/php/x.sock", "tcp:h:p"
    fpm_status_path: str = "/status"  # the pools' pm.status_path
    verdict_wait: float = Field(0.5, ge=0)  # wait this long for the rule's NFLOG verdict
    raw_days: int = Field(7, ge=1)  # raw egress events kept this many days
    alert_window: int = Field(3600, ge=60)  # one alert per (who, port) per window, seconds
    webhook: str = ""  # optional URL alerts are POSTed to (JSON)
    firewall_backend: str = "nft"  # nft or iptables
    firewall_mode: str = "enforce"  # enforce or monitor
    firewall_table: str = "mailwarden"
    nflog_allow_group: int = Field(6, ge=0, le=65535)
    nflog_block_group: int = Field(5, ge=0, le=65535)


class BreakerSettings(Section):
    """``[breaker]``: the per-provider circuit breaker and its Postfix actuator."""

    enabled: bool = True  # False: `mailwarden run` watches and records, never parks
    postfix_config: str = "/etc/postfix"  # the instance to act on (postconf -c)
    socketmap_host: str = "127.0.0.1"  # where the transport lookup listens (loopback only)
    socketmap_port: int = Field(10041, ge=1, le=65535)
    lookup_timeout: float = Field(0.5, gt=0, le=5)  # past this a lookup answers NOTFOUND
    accept_then_park: bool = True  # smtpd accepts (250) and parks, instead of a 450 at RCPT
    reload_on_trip: bool = True  # `postfix reload` on open so the active queue is re-resolved
    # how an unprivileged run gets root for postsuper -h/-H, postqueue -i, postfix reload/status:
    # "sudo" = `sudo -n` (contrib/sudoers.d/mailwarden), "none" = run them as they are
    privilege: str = Field("sudo", pattern="^(sudo|none)$")
    probe_recipients: int = Field(3, ge=1, le=100)  # recipients let through per probe round
    probe_timeout: float = Field(600, ge=10)  # seconds before a probe round without verdict repeats
    escalation_memory: float = Field(86400, ge=0)  # a re-trip this soon after a close escalates
    never_park: list[str] = Field(default_factory=list)  # addresses/domains never parked
    webhook_url: str = ""  # transitions are POSTed here as JSON
    admin_mail: str = ""  # transitions are mailed here (never parked)
    mail_relay: str = ""  # host[:port] for alert mail; "" = the local sendmail
    hold_margin: float = Field(21600, ge=0)  # move parked mail to hold this long before expiry
    release_rate: float = Field(0, ge=0)  # recipients/minute on release; 0 = learn from history
    release_min_rate: float = Field(30, gt=0)  # floor of the learned release rate
    poll: float = Field(0.2, gt=0)  # log follow / timer period of `mailwarden run`, seconds


class WebSettings(Section):
    """``[web]``: the dashboard and ``/metrics`` (``mailwarden web``; docs/web.md)."""

    bind: str = "127.0.0.1:8025"  # host:port ([::1]:8025 for IPv6); loopback unless behind a proxy
    token: str = ""  # a login token (long random string); "" = none
    password_hash: str = ""  # `mailwarden web --hash-password` output; "" = none
    # neither token nor password_hash: a one-time token is printed when the server starts
    secret_file: str = ""  # key signing session cookies; "" = <state_dir>/web-secret (made 0600)
    session_hours: float = Field(12, gt=0, le=24 * 30)  # a login lasts this long
    secure_cookie: bool = False  # set Secure on cookies (serve over HTTPS via a proxy)
    metrics_public: bool = False  # True: /metrics without auth (else a session or Bearer token)
    health_interval: float = Field(3600, ge=60)  # the full doctor run (DNS) is redone this often


class ServiceSettings(Section):
    """``[service]``: the daemon (``mailwarden run``): logging, supervision and schedules."""

    log_format: str = Field("json", pattern="^(json|logfmt|text)$")  # stderr: one event a line
    log_level: str = Field("info", pattern="^(debug|info|warning|error)$")
    commit_interval: float = Field(1.0, gt=0, le=60)  # seconds between store commits of the log
    queue_units: int = Field(64, ge=1)  # unwritten commit units held while the store is down
    restart_backoff_max: float = Field(30.0, gt=0)  # a dead component restarts within this
    web: bool = True  # serve the dashboard and /metrics ([web] bind) when it is installed
    egress: bool = True  # record the privileged collector's events ([egress] socket)
    retention_interval: float = Field(3600, ge=60)  # `store prune` this often, seconds
    dnsbl_interval: float = Field(3600, ge=0)  # check our IPs/domains on blocklists; 0 = never
    spike_interval: float = Field(300, ge=0)  # look for per-origin spikes this often; 0 = never
    sasl_interval: float = Field(60, ge=0)  # look for SASL failure bursts this often; 0 = never
    daily_report: str = "07:00"  # local HH:MM the daily report is sent; "" = never
    daily_report_format: str = Field("html", pattern="^(html|text|json)$")
    public_url: str = ""  # dashboard URL used for links in alerts and reports ("" = none)


class AlertSettings(Section):
    """``[alerts]``: where alerts go, deduplication, rate limits and detector thresholds."""

    mail_to: list[str] = Field(default_factory=list)  # admin addresses (never parked)
    mail_from: str = ""  # "" = mailwarden@<host name>
    smarthost: str = ""  # host[:port] to submit alert mail to by SMTP; "" = local sendmail
    smarthost_starttls: bool = False  # STARTTLS before sending to the smarthost
    sendmail: str = "/usr/sbin/sendmail"  # used when no smarthost is set
    webhook_url: str = ""  # POST alerts as JSON here
    webhook_format: str = Field("generic", pattern="^(generic|slack|matrix)$")
    webhook_token: str = ""  # sent as "Authorization: Bearer ..." when set
    syslog: bool = False  # also log alerts to syslog
    syslog_address: str = "/dev/log"  # unix socket path, or host:port (UDP)
    syslog_facility: str = "daemon"
    min_severity: str = Field("warning", pattern="^(info|warning|critical)$")  # lower: stored only
    dedup_window: float = Field(3600, ge=0)  # an alert with the same key is sent once per window
    rate_per_hour: int = Field(30, ge=1)  # at most this many alerts per channel per hour
    spike_baseline_days: int = Field(14, ge=3, le=90)  # daily history a spike is judged against
    spike_min_volume: int = Field(50, ge=1)  # recipients per day below which nothing is a spike
    spike_factor: float = Field(4.0, gt=1)  # today above this many times the median day ...
    spike_mad: float = Field(6.0, gt=0)  # ... and this many robust deviations above it
    spike_min_providers: int = Field(8, ge=1)  # provider spread judged from this many providers
    sasl_burst: int = Field(20, ge=2)  # SASL failures from one client within the window ...
    sasl_window: float = Field(600, ge=10)  # ... seconds, raise an alert
    sasl_total_burst: int = Field(100, ge=2)  # failures from all clients in the window


class Settings(Section):
    """The whole configuration."""

    state_dir: Path = Field(default_factory=default_state_dir)
    store: StoreSettings = Field(default_factory=StoreSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    dns: DnsSettings = Field(default_factory=DnsSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    egress: EgressSettings = Field(default_factory=EgressSettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)

    def db_url(self) -> str:
        if self.store.url:
            return self.store.url
        return f"sqlite:///{self.state_dir / 'mailwarden.db'}"


def config_path() -> Path:
    env = os.environ.get("MAILWARDEN_CONFIG")
    return Path(env) if env else etc_dir() / "mailwarden.toml"


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read the config file (if it exists) and apply keyword overrides on top."""
    p = path or config_path()
    data: dict[str, Any] = {}
    if p.is_file():
        try:
            data = read_toml(p)
        except Exception as exc:  # TableError carries the path already
            raise ConfigError(str(exc)) from exc
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{p}: {exc}") from exc
