"""The backend side of a session: the connection, the login conversation, then the relay.

Relay rules: plain copy with no inspection; when either side ends, everything already read
from it is flushed to the other side and both are closed (no half-close); backpressure pauses
the reading side instead of buffering without bound. Once logged in, the two transports are
wired straight to each other and Python only moves whole chunks (no per-byte work); with TLS
to the backend (proxy_ssl), proxy.relay_tls puts the TLS object in between.
"""

from __future__ import annotations

import asyncio

from postern.proxy import auth_http, client_identity, proxy_protocol
from postern.proxy.access_log import BACKEND_REFUSED, TIMEOUT
from postern.proxy.backend_login import LoggedIn, LoginFailed, SendToBackend
from postern.proxy.backend_protocol import BackendProtocol
from postern.proxy.phases import LOGIN, PROXYING, READING_UPSTREAM, RELAY
from postern.proxy.relay_tls import relay_over_tls, secure_login
from postern.proxy.session_log import conn_ids, guarded


class BackendSide:
    """Backend login and relay of proxy.session.Session."""

    async def _login_to_backend(self, addr: str, port: int) -> None:
        self._enter(LOGIN)
        self._login_machine = secure_login(
            self, self.proto.backend_login(self.machine, self.conf, self.client_ip,
                                           client_identity.of_session(self)), addr, port)
        loop = self.rt.loop
        self._arm_timeout(self.conf.timeout, "upstream timed out")
        next(conn_ids)
        if self.debug:
            self._debug(f"connect to {addr}:{port}")
        try:
            await loop.create_connection(lambda: BackendProtocol(self), addr, port)
        except OSError as exc:
            if self.phase is LOGIN:
                # nginx connects without blocking; the refusal surfaces in its first read
                self.metrics.backend_failed("connect")
                self.action = READING_UPSTREAM
                self.log("error", f"recv() failed {auth_http.errno_text(exc)}")
                self.internal_error()
            return
        first = self._login_machine.start()
        if first is not None:
            self.on_backend_outcome(first)

    @guarded
    def on_backend_connected(self, transport: asyncio.Transport) -> None:
        self.backend = transport
        self.metrics.backend_connected()
        mode = self.conf.proxy_protocol
        if mode != "off":  # the PROXY header goes first, in one write
            client = self.client_addr if self.client_addr and self.local_addr else None
            build = proxy_protocol.v2_header if mode == "v2" else proxy_protocol.v1_line
            header = build(client and client[:2], self.local_addr and self.local_addr[:2])
            self.upstream_login_sent += len(header)
            transport.write(header)

    @guarded
    def on_backend_data(self, data: bytes) -> None:
        self.upstream_bytes_received += len(data)
        if self.phase is RELAY:
            self._write(data)
            self.metrics.backend_bytes(data)
            if self.recording is not None:
                self.recording.relay_down(len(data))
            return
        if self.phase is LOGIN:
            # nginx names the phase by its last step: a read, or the command it sent
            self.action = getattr(self._login_machine, "reading_action", READING_UPSTREAM)
            if self.debug:
                self._debug(f"mail proxy {self.proto.name} auth handler")
            self.on_backend_outcome(self._login_machine.receive_data(data))

    def on_backend_outcome(self, outcome) -> None:
        if outcome is None:
            return
        if isinstance(outcome, SendToBackend):
            if outcome.note is not None:
                self.log(*outcome.note)
            self.backend.write(outcome.data)
            self.upstream_login_sent += len(outcome.data)
            self.action = self._login_machine.action
            if self.debug:
                self._debug_login_step(self.action)
        elif isinstance(outcome, LoginFailed):
            self.metrics.backend_failed("login")
            self.log(outcome.log_level, outcome.log)
            if outcome.to_client is None:
                self.internal_error()
            else:
                self._ending(BACKEND_REFUSED)
                self._write(outcome.to_client)
                self.close()
        elif isinstance(outcome, LoggedIn):
            self._start_relay(outcome.to_client)

    @guarded
    def on_backend_closed(self, exc: Exception | None = None) -> None:
        if self.phase is LOGIN:
            # EOF during login is an internal error without a log line (nginx's recv()
            # returning 0); only a failed read is logged
            self.action = READING_UPSTREAM
            self.metrics.backend_failed("closed")
            if isinstance(exc, OSError) and exc.errno:
                self.log("error", f"recv() failed {auth_http.errno_text(exc)}")
            self.internal_error()
        elif self.phase is RELAY:
            self.close()

    # -- relay ---------------------------------------------------------------------------
    def _start_relay(self, to_client: bytes) -> None:
        self._enter(RELAY)
        relay_over_tls(self)  # proxy_ssl: the backend side goes through TLS from here
        self.log("info", "client logged in")
        if self.debug:
            self._debug("mail proxy relay start")
        self._cancel_timer()
        self._write(to_client)
        pending = self.machine.pending_input()
        self.relay_mark = self.bytes_received - len(pending)  # for $upstream_bytes_sent
        if pending:
            self.backend.write(pending)
        self.machine = _LoggedInView(self.machine)
        self._last_client_activity = self.rt.loop.time()
        self._arm_proxy_timeout(self.conf.proxy_timeout)
        self.transport.resume_reading()

    def _arm_proxy_timeout(self, delay: float) -> None:
        self._timer = self.rt.loop.call_later(delay, self._proxy_timeout_check)

    @guarded
    def _proxy_timeout_check(self) -> None:
        # re-armed lazily: a read only stamps the time, the timer checks it (nginx's
        # proxy_timeout counts from the last read or write)
        idle = self.rt.loop.time() - self._last_client_activity
        remaining = self.conf.proxy_timeout - idle
        if remaining > 0.001:
            self._arm_proxy_timeout(remaining)
            return
        self.action = PROXYING
        self.log("info", "client timed out (110: Connection timed out)")
        self._ending(TIMEOUT)
        self.close(quiet=True)


class _LoggedInView:
    """Keeps what logging needs after the dialogue machine is released."""

    __slots__ = ("creds",)

    def __init__(self, machine) -> None:
        self.creds = machine.creds
