"""Prometheus metrics and a health check (`metrics_listen`), off by default.

The driver holds one object per server (`ServerRuntime.metrics`) and one per session
(`Session.metrics`) and makes one call per event on it; with metrics off both are the null
objects below, whose methods do nothing, and prometheus_client is never imported.

Workers write their values into prometheus_client's multiprocess files (one mmap per worker
and metric type, in a directory the master creates); the master serves `/metrics` (the
files merged) and `/health` from a thread of its own (proxy.metrics.exporter). Counters of
workers that exited are folded into one file, so neither a reload nor the number of
sessions makes a scrape cost more.

Other parts report a limit that refused something with `limit_hit(zone)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from postern.proxy.conf.settings import Listen, MainSettings, ServerSettings


class NullSession:
    """A session's metrics when metrics are off: every event is a no-op."""

    __slots__ = ()

    def entered(self, phase, machine) -> None:
        pass

    def auth_request(self) -> None:
        pass

    def auth_reply(self, decision) -> None:
        pass

    def backend_connected(self) -> None:
        pass

    def backend_failed(self, stage: str) -> None:
        pass

    def client_bytes(self, data: bytes) -> None:
        pass

    def backend_bytes(self, data: bytes) -> None:
        pass

    def tls_failed(self, reason) -> None:
        pass


class NullServer:
    """A server's metrics when metrics are off."""

    __slots__ = ()

    def session(self) -> NullSession:
        return NULL_SESSION

    def refused(self, reason: str) -> None:
        pass


NULL_SESSION = NullSession()
NULL_SERVER = NullServer()

_limit_hits = None  # the counter, once a worker records metrics


def for_server(settings: MainSettings, conf: ServerSettings, listen: Listen):
    """The metrics object of one server{} on one listen address (in a worker)."""
    if settings.metrics_listen is None:
        return NULL_SERVER
    global _limit_hits
    from postern.proxy.metrics import recorder

    _limit_hits = recorder.LIMIT_HITS
    return recorder.ServerMetrics(conf, listen)


def limit_hit(zone: str) -> None:
    """A limit (its zone's name) refused a connection or a command: counted as
    postern_limit_hits_total{zone}; nothing when metrics are off."""
    if _limit_hits is not None:
        _limit_hits.labels(zone).inc()
