"""Egress: who opens connections to remote SMTP ports (eBPF, NFLOG, sock_diag collectors),
per-process enrichment, summaries, and the nftables/iptables egress rule.

Public API (see docs/egress.md):

* :mod:`.bpf` ``BpfCollector`` (the eBPF tracer), :mod:`.nflog` ``NflogReader``,
  :mod:`.sockdiag` ``SockDiagPoller``: the collectors, each raising a clear error where it
  cannot run (``bpf.CollectorUnavailable``, ``nflog.NflogError``, ``OSError``);
* :mod:`.attribute` ``Attributor``: collector output -> :class:`mailwarden.events.EgressConnect`
  (enrichment rules and tables in :mod:`.enrich`, PHP-FPM status pages in :mod:`.fpm`);
* :mod:`.service` ``EgressService``: the privileged process behind ``mailwarden egress run``;
* :mod:`.wire` the JSON-lines socket protocol; :mod:`.client` ``read_messages``, ``ingest``,
  ``ProviderResolver`` for the unprivileged side;
* :mod:`.summary` ``Recorder`` (store writer per host, alerts), ``top``, ``alerts``,
  ``egress_hosts``, and the ``Notifier`` protocol (``LogNotifier``; the daemon and ``egress
  ingest`` pass :class:`mailwarden.report.alerts.EgressAdapter`: the one alert path);
* :mod:`.firewall` ``Policy``, ``Firewall`` (plan/apply/check/remove), ``rule_installed``;
  :mod:`.validate` the strict validators every rule value passes through;
* :mod:`.doctor` ``probe_all``: which collectors work here.
"""
