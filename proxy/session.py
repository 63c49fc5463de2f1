"""The driver: one client connection through every phase (proxy.phases).

accept -> [PROXY header] -> [TLS handshake] -> greeting -> dialogue (sans-IO machine) ->
auth_http (sans-IO exchange) -> backend login (sans-IO machine) -> relay. The session owns
the sockets, timers and tasks and carries out what the machines decide; the machines own the
protocol rules, and the protocol's declaration (proxy.protocol) everything else that differs
between IMAP, POP3 and SMTP. Its parts: this core (phases, dialogue, auth, timers, closing),
proxy.session_tls (client TLS), proxy.relay (backend login and relay) and proxy.session_log
(log lines with nginx's context).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import os
import select
import traceback
from typing import TYPE_CHECKING

from postern.proxy import access_log as alog
from postern.proxy import auth_http, auth_pool, limits, proxy_protocol, recorder
from postern.proxy import dialogue as dlg
from postern.proxy.auth_exchange import AuthExchange, Fail, InternalError, Retry
from postern.proxy.log import masked_header_lines
from postern.proxy.metrics import NULL_SESSION
from postern.proxy.phases import (
    ACCEPTED,
    ACTION,
    AUTH,
    CLOSED,
    DELAY,
    DIALOGUE,
    HANDSHAKE,
    LIMITED,
    NEXT,
    PROXY_PROTOCOL,
    READS_AFTER_REPLY,
    RELAY,
    RESOLVING,
    PhaseError,
)
from postern.proxy.relay import BackendSide
from postern.proxy.session_log import SessionLog, conn_ids, guarded
from postern.proxy.session_tls import ClientTls

if TYPE_CHECKING:
    from postern.proxy.runtime import ServerRuntime
    from postern.proxy.tls import TlsConnection

# While an auth reply or Auth-Wait is awaited the client is not read (as nginx); this often
# the socket is polled for the client's departure instead.
CLIENT_CHECK_INTERVAL = 1.0
_HANGUP = getattr(select, "POLLRDHUP", 0) | select.POLLHUP | select.POLLERR


class Session(SessionLog, ClientTls, BackendSide, alog.AccessLogged, asyncio.Protocol):
    """One client connection; its phase is one of proxy.phases.Phase."""

    # Defaults on the class: a session sets only what differs (less work and memory per
    # connection); anything mutable is set in __init__.
    transport: asyncio.Transport | None = None
    backend: asyncio.Transport | None = None
    upstream_name: str | None = None
    client_ip = ""
    server_text = ""
    machine = None
    _timer: asyncio.TimerHandle | None = None
    _task: asyncio.Task | None = None
    _write_paused = False
    _last_client_activity = 0.0
    _login_machine = None
    _exchange: AuthExchange | None = None
    tls: TlsConnection | None = None
    _quiet_close = False  # nginx skips close_notify after a timeout, EOF or error
    _starttls = False  # log lines then say "client: <ip> using starttls"
    proxy_info: proxy_protocol.ProxyInfo | None = None
    client_addr: tuple | None = None
    local_addr: tuple | None = None
    limit_hold: limits.Hold | None = None  # what it counts in limit_conn zones

    def __init__(self, runtime: ServerRuntime) -> None:
        self.rt = runtime
        self.conf = runtime.conf
        self.proto = runtime.protocol
        self.id = next(conn_ids)
        self.phase = ACCEPTED
        self.action: str | None = ACTION[ACCEPTED]
        self._early = bytearray()
        # the level is checked once per session: debug lines cost one test when off
        self.debug = runtime.log.enabled("debug")
        self.started = runtime.loop.time()
        self.metrics = NULL_SESSION  # proxy.metrics, once the server is known
        self.recording = recorder.start(self.conf, self.proto.name, runtime.loop.time())

    def _enter(self, phase) -> None:
        """The one way to change phase: the table's transition, and its log context."""
        if phase not in NEXT[self.phase]:
            raise PhaseError(f"no transition from phase {self.phase} to {phase}")
        self.phase = phase
        if phase in ACTION:
            self.action = ACTION[phase]
        self.metrics.entered(phase, self.machine)

    # -- client transport callbacks ------------------------------------------------------
    @guarded
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.rt.sessions.add(self)
        self.metrics = self.rt.metrics.session()
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.client_ip = peer[0] if isinstance(peer, tuple) else "unix:"
        self.server_text = self.rt.listen_text(sock)
        if self.debug:
            raw = transport.get_extra_info("socket")
            where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unix:"
            self.rt.log.log("debug", f"accept: {where} fd:{raw.fileno() if raw else -1}",
                            self.id)
        if self.rt.log.enabled("info"):
            where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unix:"
            self.rt.log.log("info", f"client {where} connected to {self.server_text}",
                            self.id)
        self.client_addr = peer if isinstance(peer, tuple) else None
        self.local_addr = sock if isinstance(sock, tuple) else None
        if self.rt.listen.proxy_protocol:
            self._enter(PROXY_PROTOCOL)
            self._arm_timeout(self.conf.timeout)
            return
        if self.rt.listen.ssl:
            self._start_tls()
            return
        self._after_proxy_protocol()

    def _read_proxy_protocol(self, data: bytes) -> None:
        """The whole header must be in the first read (as nginx reads it); garbage closes
        silently."""
        self._cancel_timer()
        try:
            info, used = proxy_protocol.read_header(data)
        except proxy_protocol.BrokenHeader as err:
            self.log("error", str(err))
            return self.close()
        rest = data[used:]
        if info is not None:
            self.proxy_info = info
            peer_ip = self.client_addr[0] if self.client_addr else None
            if self.conf.set_real_ip_from and proxy_protocol.trusted(
                    peer_ip, self.conf.set_real_ip_from):
                try:
                    self.client_ip = str(ipaddress.ip_address(info.src_addr))
                    self.client_addr = (self.client_ip, info.src_port)
                except ValueError:
                    pass
        if self.rt.listen.ssl:
            # whatever followed the header is the start of the ClientHello
            self._start_tls(rest)
            return
        self._early += rest
        self.transport.pause_reading()
        self._after_proxy_protocol()

    def _after_proxy_protocol(self) -> None:
        verdict = limits.on_accept(self)
        if isinstance(verdict, limits.Refuse):
            self._write(verdict.line)
            return self.close()
        if verdict is not None:  # limit_req: the greeting waits
            self._enter(LIMITED)
            self.transport.pause_reading()
            self._timer = self.rt.loop.call_later(verdict.seconds, self._after_limits)
            return
        self._after_limits()

    @guarded
    def _after_limits(self) -> None:
        self._timer = None
        if self.proto.resolves_client_host and self.rt.resolver is not None:
            self._enter(RESOLVING)
            self.transport.pause_reading()
            self._task = self.rt.loop.create_task(self._run(self._resolve()))
        else:
            self._greet()

    async def _resolve(self) -> None:
        """The client's host name (SMTP's Client-Host and XCLIENT), before the greeting."""
        host = await self.rt.resolver.client_host(
            self.client_ip, self.log, lambda action: setattr(self, "action", action))
        if self.phase is RESOLVING:
            self._greet(host)

    def _greet(self, client_host: str = "[UNAVAILABLE]") -> None:
        conf = self.conf
        self.machine = self.proto.open(conf, self.tls is not None, client_host,
                                       self.rt.log.enabled("info"))
        self.transport.resume_reading()
        delay = self.proto.greeting_delay(conf)
        if delay > 0:
            # nginx: a client talking before the greeting is refused
            self._enter(DELAY)
            if self._early:  # it talked while its address was being resolved
                early, self._early = bytes(self._early), bytearray()
                self._carry_out(self.machine.reject_early(early))
                return
            self._timer = self.rt.loop.call_later(delay, self._delayed_greeting)
            return
        self._enter(DIALOGUE)
        self._write(self.machine.greeting())
        self._arm_timeout(conf.timeout)
        if self._early:  # input that arrived before the greeting (PROXY header, resolving)
            self._drive()

    @guarded
    def _delayed_greeting(self) -> None:
        self._timer = None
        self._enter(DIALOGUE)
        self._write(self.machine.greeting())
        self._arm_timeout(self.conf.timeout)
        self._drive()

    @guarded
    def data_received(self, data: bytes) -> None:
        if self.tls is not None:
            data = self._tls_receive(data)
            if not data:
                if self.tls.peer_closed:
                    self._peer_closed()
                return
        self.bytes_received += len(data)
        phase = self.phase
        if phase is RELAY:
            self.backend.write(data)
            self._last_client_activity = self.rt.loop.time()
            self.metrics.client_bytes(data)
            if self.recording is not None:
                self.recording.relay_up(data, self._last_client_activity)
            if self.tls is not None and self.tls.peer_closed:
                self._peer_closed()
            return
        if phase is PROXY_PROTOCOL:
            self._read_proxy_protocol(data)
            return
        if phase is RESOLVING or phase is LIMITED:  # a read under way when reading was paused
            self._early += data
            return
        if phase is DELAY:
            self._carry_out(self.machine.reject_early(data))
            return
        if self._early:
            data, self._early = bytes(self._early) + data, bytearray()
        if self.recording is not None:
            self.recording.client(data, self.rt.loop.time())
        self.machine.receive_data(data)
        if phase is DIALOGUE:
            self._drive()
        else:
            # auth and backend login: nginx does not read the client meanwhile
            self.transport.pause_reading()
        if self.tls is not None and self.tls.peer_closed:
            self._peer_closed()

    @guarded
    def eof_received(self) -> bool:
        self.close(quiet=True)
        return False

    @guarded
    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.close(quiet=True)
        finally:
            self.rt.sessions.discard(self)

    @guarded
    def pause_writing(self) -> None:
        self._write_paused = True
        if self.backend is not None:
            self.backend.pause_reading()
        if self.phase in READS_AFTER_REPLY:
            # nginx reads the next command only once its reply is out: a client that does
            # not read its replies is not read either
            self.transport.pause_reading()

    @guarded
    def resume_writing(self) -> None:
        self._write_paused = False
        self._last_client_activity = self.rt.loop.time()
        if self.phase is RELAY and self.backend is not None:
            self.backend.resume_reading()
        elif self.phase in READS_AFTER_REPLY:
            self.transport.resume_reading()
            if self.phase is DIALOGUE:
                self._drive()

    # -- the pre-auth dialogue -----------------------------------------------------------
    def _carry_out(self, actions) -> None:
        for act in actions:
            self._act(act)

    def _drive(self) -> None:
        machine = self.machine
        if self.debug:
            self._debug(f"{self.proto.name} auth state")
        if self._early:
            machine.receive_data(bytes(self._early))
            self._early = bytearray()
        while self.phase is DIALOGUE and not self._write_paused:
            act = machine.next_action()
            if act is None:
                return
            if self._act(act):
                return

    def _act(self, act) -> bool:
        """Carry out one dialogue action; True when the dialogue must stop for now."""
        if isinstance(act, dlg.Send):
            self._write(act.data)
        elif isinstance(act, dlg.Log):
            self.log(act.level, act.message)
        elif isinstance(act, dlg.Close):
            self.close()
        elif isinstance(act, dlg.Authenticate):
            self._cancel_timer()
            self._enter(AUTH)
            if self.debug:
                self._debug("mail auth http init")
            self.transport.pause_reading()
            self._task = self.rt.loop.create_task(self._run(self._authenticate()))
        elif isinstance(act, dlg.StartTls):
            if self.debug:
                self._debug("mail starttls")
            self._start_tls()
            return True
        return False

    # -- auth_http -----------------------------------------------------------------------
    def _auth_request(self) -> bytes:
        return self._exchange.request(self.tls.auth_headers() if self.tls is not None else None)

    async def _ask(self, exchange: AuthExchange):
        """One request and its reply: the exchange's decision."""
        conf = self.conf
        try:
            request = self._auth_request()
            next(conn_ids)
            if self.debug:
                self._debug("mail auth http write handler")
                for line in masked_header_lines(request):
                    self._debug(f'mail auth http header: "{line}"')
            self.metrics.auth_request()
            decision = await auth_pool.query(conf, request, conf.auth_http_timeout, exchange,
                                             self.log, self.rt.loop)
        except auth_http.AuthServerError as err:
            decision = InternalError(str(err))
        self.metrics.auth_reply(decision)
        if self.debug and exchange.response is not None:
            self._debug_auth_reply(exchange.response)
        return decision

    async def _authenticate(self) -> None:
        """Carry out the auth exchange's decisions until one ends it."""
        conf, info = self.conf, self.proxy_info
        self._exchange = exchange = AuthExchange(
            conf.auth_http, conf.auth_http_headers, self.proto, self.machine, self.client_ip,
            None if info is None else (info.src_addr, info.src_port, info.dst_addr,
                                       info.dst_port),
            conf.timeout, conf.auth_http_server_names)
        if not await self._limits_at_login():
            return
        while True:
            decision = await self._ask(exchange)
            limits.on_auth_result(self, decision)
            if isinstance(decision, Retry):
                if not await self._pause(decision.delay):
                    return
                continue
            if isinstance(decision, Fail):
                self.log("info", f'client login failed: "{decision.status.decode("latin-1")}"')
                if decision.wait == 0:
                    self._ending(alog.AUTH_FAILED)
                # an OAuth failure waits for the client's answer to an error challenge
                held = self.machine.failure_needs_reply()
                if decision.wait == 0 and not held:
                    self._write(decision.line)
                    return self.close()
                if not await self._pause(decision.wait):
                    return
                if decision.retry:
                    continue
                self._enter(DIALOGUE)
                self.machine.auth_failed(decision.line, close=decision.wait == 0)
                self._arm_timeout(conf.timeout)
                self.transport.resume_reading()
                self._drive()
                return
            break
        if isinstance(decision, InternalError):
            if decision.log:
                self.log("error", decision.log)
            return self.internal_error()
        if decision.host_name:  # auth_http_server_names, beyond nginx
            addr = await auth_pool.resolve_backend(conf, decision.addr, exchange.peer, self.log)
            if addr is None:
                return self.internal_error()
            decision = dataclasses.replace(decision, addr=addr)
        self.upstream_name = f"{decision.addr}:{decision.port}"
        if self.debug:
            self._debug(f"mail auth http done: upstream {decision.addr}:{decision.port}")
        await self._login_to_backend(decision.addr, decision.port)

    def _back_to_dialogue(self, line: bytes) -> None:
        """A refused login: its reply, and the dialogue goes on (as after a failure with
        Auth-Wait, above)."""
        self._enter(DIALOGUE)
        self.machine.auth_failed(line)
        self._arm_timeout(self.conf.timeout)
        self.transport.resume_reading()
        self._drive()

    async def _limits_at_login(self) -> bool:
        """limit_auth, and limits keyed by $login; False when they ended the attempt."""
        verdict = limits.on_login(self)
        if verdict is None:
            return True
        if isinstance(verdict, limits.Refuse):
            self._write(verdict.line)
            self.close()
            return False
        if isinstance(verdict, limits.Delay):
            return await self._pause(verdict.seconds)
        if await self._pause(verdict.wait):  # Deny: blocked, the auth server is not asked
            self._back_to_dialogue(verdict.line)
        return False

    # -- timers and closing --------------------------------------------------------------
    def _arm_timeout(self, delay: float, message: str = "client timed out") -> None:
        self._cancel_timer()
        self._timer = self.rt.loop.call_later(delay, self._timed_out, message)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @guarded
    def _timed_out(self, message: str) -> None:
        self._timer = None
        self._ending(alog.UPSTREAM_TIMEOUT if message == "upstream timed out" else alog.TIMEOUT)
        if self.phase is HANDSHAKE:
            self.metrics.tls_failed("timeout")
            return self.close(quiet=True)  # nginx closes a stalled handshake without a log
        # nginx logs timeouts at info level with ETIMEDOUT's text
        self.log("info", f"{message} (110: Connection timed out)")
        if message == "upstream timed out":
            self.metrics.backend_failed("timeout")
            return self.internal_error()
        self.close(quiet=True)

    def internal_error(self) -> None:
        self._ending(alog.INTERNAL_ERROR)
        if self.transport is not None and not self.transport.is_closing():
            self._write(self.proto.internal_error)
        self.close()

    def close(self, quiet: bool = False) -> None:
        if self.phase is CLOSED:
            return
        self._quiet_close = self._quiet_close or quiet
        relaying = self.phase is RELAY
        if relaying:
            self.action = ACTION[RELAY]
            self.log("info", "proxied session done")
        if self.debug:
            self._debug_close()
        record, self.recording = self.recording, None  # written once, whatever happens
        if record is not None:
            record.close("proxied" if self.phase is RELAY else str(self.phase),
                         self.rt.loop.time())
        self._enter(CLOSED)
        self._log_access(relaying, quiet)
        limits.on_close(self)
        self._cancel_timer()
        if self._task is not None and not self._task.done() and \
                self._task is not asyncio.current_task():
            self._task.cancel()
        if self.backend is not None:
            self.backend.close()
        if self.transport is not None:
            if self.tls is not None and not self._quiet_close and not self.tls.peer_closed \
                    and not self.transport.is_closing():
                notify = self.tls.close_notify()
                if notify:
                    self.transport.write(notify)
            self.transport.close()

    # -- robustness: no exception strands a session ---------------------------------------
    async def _run(self, coro) -> None:
        """The body of a task the session starts; a bug in it ends the session cleanly."""
        try:
            await coro
        except Exception as exc:  # noqa: BLE001 - see guarded()
            self.crash(exc)

    def crash(self, exc: BaseException) -> None:
        """An unexpected exception: one [alert] line with the traceback, nginx's reply for an
        internal error where a dialogue is under way, the connection closed."""
        self._ending(alog.INTERNAL_ERROR)
        try:
            frames = " > ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}"
                                for f in traceback.extract_tb(exc.__traceback__))
            self.log("alert", f"unexpected {type(exc).__name__}: {exc} (traceback: {frames})")
            if self.phase is not CLOSED and self.phase is not RELAY and \
                    self.machine is not None and (self.tls is None or self.tls.established):
                self._write(self.proto.internal_error)
        except Exception:  # noqa: BLE001,S110 - the close below must happen whatever failed
            pass
        try:
            self.close()
        except Exception:  # noqa: BLE001
            self.phase = CLOSED  # past the table: closing itself failed
            self.metrics.entered(CLOSED, None)
            for transport in (self.backend, self.transport):
                if transport is not None:
                    transport.abort()

    def invariant_violation(self) -> str | None:
        """None while the session is relaying, waiting on a timer or task, or closed; else
        what is wrong (the test suite checks this on every session of a worker)."""
        if self.phase == CLOSED:
            return None if self.transport is None or self.transport.is_closing() else \
                "closed but its connection is open"
        if self.transport is not None and self.transport.is_closing():
            return f"connection closed in phase {self.phase}"
        if self.phase == RELAY:
            return None if self._timer is not None else "relaying without proxy_timeout"
        if self._timer is not None or (self._task is not None and not self._task.done()):
            return None
        return f"phase {self.phase} with neither timer nor task"

    def _client_gone(self) -> bool:
        """Whether the client hung up, seen without reading (its input stays for later)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return True
        sock = transport.get_extra_info("socket")
        if sock is None:
            return False
        poller = select.poll()
        poller.register(sock.fileno(), _HANGUP)
        return bool(poller.poll(0))

    async def _pause(self, seconds: float) -> bool:
        """Sleep while the client is not read, noticing its departure meanwhile; False (and
        the session closed) if it left."""
        loop = self.rt.loop
        end = loop.time() + seconds
        while True:
            if self._client_gone():
                self.close(quiet=True)
                return False
            left = end - loop.time()
            if left <= 0:
                return True
            await asyncio.sleep(min(left, CLIENT_CHECK_INTERVAL))

    def abort(self) -> None:
        """Worker shutdown: drop the connection now."""
        self._ending(alog.SHUTDOWN)
        self.close()
        if self.transport is not None:
            self.transport.abort()
