"""Prometheus metrics and a health check (`metrics_listen`), off by default.

The driver holds one object per server (`ServerRuntime.metrics`) and one per session
(`Session.metrics`) and makes one call per event on it; with metrics off both are the null
objects below, whose methods do nothing, and prometheus_client is never imported.

Workers add up their events in memory and write them once a second into prometheus_client's
multiprocess files (one mmap per worker and metric type, in a directory the master creates;
proxy.metrics.recorder); the master serves `/metrics` (the
files merged) and `/health` from a thread of its own (proxy.metrics.exporter). Counters of
workers that exited are folded into one file, so neither a reload nor the number of
sessions makes a scrape cost more.

Other parts report a limit that refused or delayed a session with `limit_hit(zone, kind)`.
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

_recorder = None  # proxy.metrics.recorder, once a worker records metrics


def for_server(settings: MainSettings, conf: ServerSettings, listen: Listen):
    """The metrics object of one server{} on one listen address (in a worker's loop)."""
    if settings.metrics_listen is None:
        return NULL_SERVER
    global _recorder
    from postern.proxy.metrics import recorder

    _recorder = recorder
    recorder.PENDING.flush_every_second()
    return recorder.ServerMetrics(conf, listen)


def limit_hit(zone: str, kind: str = "") -> None:
    """A limit refused or delayed a session: counted as postern_limit_hits_total{zone,kind}
    (kind: the limit's, e.g. conn, req, auth); nothing when metrics are off."""
    if _recorder is not None:
        _recorder.PENDING.add(_recorder.f.LIMIT_HITS.labels(zone, kind))


def flush() -> None:
    """Write what this worker recorded (it stops; a test reads the files)."""
    if _recorder is not None:
        _recorder.PENDING.flush()
