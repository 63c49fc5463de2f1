"""What a worker records: one ServerMetrics per server{} and listen address, one
SessionMetrics per session, each with its label children bound once (a labels() lookup per
event would cost more than the event's own write)."""

from __future__ import annotations

import time

from postern.proxy.auth_exchange import Fail, InternalError, Proceed, Retry
from postern.proxy.metrics import families as f
from postern.proxy.phases import CLOSED, DIALOGUE, HANDSHAKE, LOGIN, RELAY, STARTTLS, Phase

LIMIT_HITS = f.LIMIT_HITS
OUTCOMES = {Proceed: "ok", Fail: "failed", Retry: "wait", InternalError: "internal_error"}
TLS_MODES = {HANDSHAKE: "implicit", STARTTLS: "starttls"}
# relayed bytes are added up in the session and written once this many have passed (and at
# the end): a chunk costs an addition, not a locked write
FLUSH_BYTES = 1 << 20
MAX_REASON = 64  # an OpenSSL reason is short; anything longer is cut to keep labels sane
clock = time.monotonic


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
                               f.AUTH_SECONDS.labels(*labels, outcome))
                     for outcome in OUTCOMES.values()}
        self.connect_seconds = f.BACKEND_CONNECT_SECONDS.labels(*labels)
        self.login_seconds = f.BACKEND_LOGIN_SECONDS.labels(*labels)
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
        self.accepted.inc()
        self.sessions[Phase.ACCEPTED].inc()
        return SessionMetrics(self)

    def refused(self, reason: str) -> None:
        child = self._refused.get(reason)
        if child is None:
            child = self._refused[reason] = f.REFUSED.labels(*self.labels, reason)
        child.inc()

    def backend_failure(self, stage: str) -> None:
        child = self._failures.get(stage)
        if child is None:
            child = self._failures[stage] = f.BACKEND_FAILURES.labels(*self.labels, stage)
        child.inc()

    def tls_failure(self, phase, reason: str) -> None:
        key = (phase, reason)
        child = self._tls_failures.get(key)
        if child is None:
            child = self._tls_failures[key] = f.TLS_FAILURES.labels(
                *self.labels, TLS_MODES[phase], reason)
        child.inc()


class SessionMetrics:
    """One session's events; the phase changes carry most of them (proxy.phases)."""

    __slots__ = (
        "connected",
        "down",
        "errors",
        "phase",
        "server",
        "started",
        "tls_reason",
        "up",
    )

    def __init__(self, server: ServerMetrics) -> None:
        self.server = server
        self.phase = Phase.ACCEPTED
        self.started = 0.0  # the auth request, or the backend connect, under way
        self.connected = 0.0  # when the backend connection was made
        self.errors = 0  # the dialogue's invalid commands already counted
        self.tls_reason: str | None = None
        self.up = 0
        self.down = 0

    def entered(self, phase, machine) -> None:
        old = self.phase
        if phase is old:
            return
        server = self.server
        self.phase = phase
        server.sessions[old].dec()
        if phase is not CLOSED:
            server.sessions[phase].inc()
        if old in TLS_MODES:  # the handshake of this phase ended, one way or the other
            if phase is CLOSED:
                server.tls_failure(old, self.tls_reason or "closed")
            else:
                server.handshakes[old].inc()
        if old is DIALOGUE and machine is not None:
            self._count_errors(machine, closing=phase is CLOSED)
        if phase is LOGIN:
            self.started = clock()
        elif phase is RELAY:
            server.login_seconds.observe(clock() - self.connected)
        elif phase is CLOSED:
            self._flush()

    def _count_errors(self, machine, closing: bool) -> None:
        errors = getattr(machine, "errors", 0)
        if errors > self.errors:
            self.server.protocol_errors.inc(errors - self.errors)
            self.errors = errors
        if closing and errors >= self.server.max_errors:
            self.server.max_errors_closes.inc()

    def auth_request(self) -> None:
        self.started = clock()

    def auth_reply(self, decision) -> None:
        count, seconds = self.server.auth[OUTCOMES[type(decision)]]
        count.inc()
        seconds.observe(clock() - self.started)

    def backend_connected(self) -> None:
        self.connected = clock()
        self.server.connect_seconds.observe(self.connected - self.started)

    def backend_failed(self, stage: str) -> None:
        self.server.backend_failure(stage)

    def client_bytes(self, data: bytes) -> None:
        self.up += len(data)
        if self.up >= FLUSH_BYTES:
            self._flush()

    def backend_bytes(self, data: bytes) -> None:
        self.down += len(data)
        if self.down >= FLUSH_BYTES:
            self._flush()

    def tls_failed(self, reason) -> None:
        """Why the handshake under way failed: a TlsError (its first OpenSSL reason) or a
        word; counted when the session leaves the handshake's phase."""
        if self.tls_reason is None and self.phase in TLS_MODES:
            text = str(reason).split(":", 1)[0].strip() or type(reason).__name__
            self.tls_reason = text[:MAX_REASON]

    def _flush(self) -> None:
        if self.up:
            self.server.to_backend.inc(self.up)
            self.up = 0
        if self.down:
            self.server.to_client.inc(self.down)
            self.down = 0
