"""The service: ``mailwarden run`` as one supervised daemon.

Public API:

* :class:`~mailwarden.service.daemon.Daemon` ``(settings, paths=..., journal=..., ...)``:
  ``run()`` until SIGTERM; ``reload()`` (SIGHUP); ``health()``;
* :mod:`~mailwarden.service.ingest`: :class:`LogIngest` (follow, parse, breaker, commit units)
  and :class:`StoreWriter` (units -> store, retried with backoff);
* :mod:`~mailwarden.service.supervisor`: :class:`ThreadComponent`, :class:`ProcessComponent`;
* :mod:`~mailwarden.service.jobs`: the scheduled jobs and their :class:`Scheduler`;
* :mod:`~mailwarden.service.logs`: structured log formats (json, logfmt, text);
* :mod:`~mailwarden.service.snapshot`: the correlator's open messages as JSON.
"""
