"""What a worker records: one ServerMetrics per server{} and listen address, one
SessionMetrics per session.

An event only adds to a delta in the worker's memory (a dict update, about 0.1 µs); the
deltas are written to prometheus_client's multiprocess files once a second and when the worker
stops (flush()). A write there costs 1-2 µs (a lock, getpid(), the mmap), and a session has a
dozen events: written one by one they would cost a session some 50 µs.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left

from postern.proxy.auth_exchange import Fail, InternalError, Proceed, Retry
from postern.proxy.metrics import families as f
from postern.proxy.phases import CLOSED, DIALOGUE, HANDSHAKE, LOGIN, RELAY, STARTTLS, Phase

OUTCOMES = {Proceed: "ok", Fail: "failed", Retry: "wait", InternalError: "internal_error"}
TLS_MODES = {HANDSHAKE: "implicit", STARTTLS: "starttls"}
MAX_REASON = 64  # an OpenSSL reason is short; anything longer is cut to keep labels sane
FLUSH_INTERVAL = 1.0  # seconds: how stale a scrape may be
clock = time.monotonic


class Pending:
    """Deltas not yet written: what .inc(amount) is called on -> the amount."""

    def __init__(self) -> None:
        self.deltas: dict = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, target, amount: float = 1.0) -> None:
        deltas = self.deltas
        deltas[target] = deltas.get(target, 0.0) + amount

    def flush(self) -> None:
        deltas, self.deltas = self.deltas, {}
        for target, amount in deltas.items():
            if amount:
                target.inc(amount)

    def flush_every_second(self) -> None:
        """In a worker's loop: flush now and then (started once, by the first server)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a unit test): whoever records flushes
            return
        if self._timer is None:
            self._timer = loop.call_later(FLUSH_INTERVAL, self._tick)

    def _tick(self) -> None:
        self.flush()
        self._timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self._tick)


PENDING = Pending()


class _Histogram:
    """One histogram child, observed into PENDING: its bucket and its sum, as
    prometheus_client's own observe() picks them (the first bound not below the value)."""

    __slots__ = ("bounds", "buckets", "sum")

    def __init__(self, child) -> None:
        # prometheus_client's multiprocess values of the child (tests/test_metrics.py checks
        # the exposition of what is written through them)
        self.bounds, self.buckets, self.sum = child._upper_bounds, child._buckets, child._sum

    def observe(self, seconds: float) -> None:
        PENDING.add(self.sum, seconds)
        PENDING.add(self.buckets[bisect_left(self.bounds, seconds)])


class ServerMetrics:
    """The label children of one server{} on one listen address."""

    def __init__(self, conf, listen) -> None:
        labels = (listen.text, conf.protocol)
        self.labels = labels
        self.max_errors = max(conf.max_errors, 1)  # as the dialogue counts them
        self.accepted = f.ACCEPTED.labels(*labels)
        self.sessions = {phase: f.SESSIONS.labels(*labels, phase.value) for phase in Phase
                         if phase is not CLOSED}
        self.auth = {outcome: (f.AUTH.labels(*labels, outcome),
                               _Histogram(f.AUTH_SECONDS.labels(*labels, outcome)))
                     for outcome in OUTCOMES.values()}
        self.connect_seconds = _Histogram(f.BACKEND_CONNECT_SECONDS.labels(*labels))
        self.login_seconds = _Histogram(f.BACKEND_LOGIN_SECONDS.labels(*labels))
        self.to_backend = f.RELAYED_BYTES.labels(*labels, "client_to_backend")
        self.to_client = f.RELAYED_BYTES.labels(*labels, "backend_to_client")
        self.handshakes = {phase: f.TLS_HANDSHAKES.labels(*labels, mode)
                           for phase, mode in TLS_MODES.items()}
        self.protocol_errors = f.PROTOCOL_ERRORS.labels(*labels)
        self.max_errors_closes = f.MAX_ERRORS_CLOSES.labels(*labels)
        self._refused: dict = {}
        self._failures: dict = {}
        self._tls_failures: dict = {}

    def session(self) -> SessionMetrics:
        PENDING.add(self.accepted)
        PENDING.add(self.sessions[Phase.ACCEPTED])
        return SessionMetrics(self)

    def refused(self, reason: str) -> None:
        child = self._refused.get(reason)
        if child is None:
            child = self._refused[reason] = f.REFUSED.labels(*self.labels, reason)
        PENDING.add(child)

    def backend_failure(self, stage: str) -> None:
        child = self._failures.get(stage)
        if child is None:
            child = self._failures[stage] = f.BACKEND_FAILURES.labels(*self.labels, stage)
        PENDING.add(child)

    def tls_failure(self, phase, reason: str) -> None:
        key = (phase, reason)
        child = self._tls_failures.get(key)
        if child is None:
            child = self._tls_failures[key] = f.TLS_FAILURES.labels(
                *self.labels, TLS_MODES[phase], reason)
        PENDING.add(child)


class SessionMetrics:
    """One session's events; the phase changes carry most of them (proxy.phases)."""

    __slots__ = ("connected", "errors", "phase", "server", "started", "tls_reason")

    def __init__(self, server: ServerMetrics) -> None:
        self.server = server
        self.phase = Phase.ACCEPTED
        self.started = 0.0  # the auth request, or the backend connect, under way
        self.connected = 0.0  # when the backend connection was made
        self.errors = 0  # the dialogue's invalid commands already counted
        self.tls_reason: str | None = None

    def entered(self, phase, machine) -> None:
        old = self.phase
        if phase is old:
            return
        server = self.server
        self.phase = phase
        PENDING.add(server.sessions[old], -1.0)
        if phase is not CLOSED:
            PENDING.add(server.sessions[phase])
        if old in TLS_MODES:  # the handshake of this phase ended, one way or the other
            if phase is CLOSED:
                server.tls_failure(old, self.tls_reason or "closed")
            else:
                PENDING.add(server.handshakes[old])
        if old is DIALOGUE and machine is not None:
            self._count_errors(machine, closing=phase is CLOSED)
        if phase is LOGIN:
            self.started = clock()
        elif phase is RELAY:
            server.login_seconds.observe(clock() - self.connected)

    def _count_errors(self, machine, closing: bool) -> None:
        errors = getattr(machine, "errors", 0)
        if errors > self.errors:
            PENDING.add(self.server.protocol_errors, errors - self.errors)
            self.errors = errors
        if closing and errors >= self.server.max_errors:
            PENDING.add(self.server.max_errors_closes)

    def auth_request(self) -> None:
        self.started = clock()

    def auth_reply(self, decision) -> None:
        count, seconds = self.server.auth[OUTCOMES[type(decision)]]
        PENDING.add(count)
        seconds.observe(clock() - self.started)

    def backend_connected(self) -> None:
        self.connected = clock()
        self.server.connect_seconds.observe(self.connected - self.started)

    def backend_failed(self, stage: str) -> None:
        self.server.backend_failure(stage)

    def client_bytes(self, data: bytes) -> None:
        PENDING.add(self.server.to_backend, len(data))

    def backend_bytes(self, data: bytes) -> None:
        PENDING.add(self.server.to_client, len(data))

    def tls_failed(self, reason) -> None:
        """Why the handshake under way failed: a TlsError (its first OpenSSL reason) or a
        word; counted when the session leaves the handshake's phase."""
        if self.tls_reason is None and self.phase in TLS_MODES:
            text = str(reason).split(":", 1)[0].strip() or type(reason).__name__
            self.tls_reason = text[:MAX_REASON]
