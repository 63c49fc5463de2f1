"""The driver: one client connection through every phase (spec §0).

accept -> [PROXY header] -> [TLS handshake] -> greeting -> dialogue (sans-IO machine) ->
auth_http -> backend login (sans-IO machine) -> relay. This module owns the sockets, timers
and tasks; the machines own the protocol rules. Once logged in, the two transports are
wired straight to each other and Python only moves whole chunks (no per-byte work in the
relay).

TLS (implicit, after a PROXY header, or by STARTTLS) is a sans-IO layer too
(proxy.tls.TlsConnection): raw client bytes go through it on the way in, everything for
the client goes through _write() on the way out.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import itertools
import os
import select
import traceback
from typing import TYPE_CHECKING

from proxy import auth_http, proxy_protocol
from proxy import dialogue as dlg
from proxy.backend_login import LoggedIn, LoginFailed, SendToBackend
from proxy.log import MASK, masked_header_lines
from proxy.relay import BackendProtocol
from proxy.tls import TlsConnection, TlsError

if TYPE_CHECKING:
    from proxy.worker import ServerRuntime

_conn_ids = itertools.count(1)

# A WAIT without Auth-Wait: nginx repeats the request at once, forever. The first repeats go
# out at once as nginx's do; after that one a second, and never for longer than `timeout`.
WAIT_REPEATS_AT_ONCE = 10
WAIT_REPEAT_PACE = 1.0
# While an auth reply or Auth-Wait is awaited the client is not read (as nginx); this often
# the socket is polled for the client's departure instead.
CLIENT_CHECK_INTERVAL = 1.0
_HANGUP = getattr(select, "POLLRDHUP", 0) | select.POLLHUP | select.POLLERR


def _guarded(method):
    """An event callback that ends its session cleanly on any unexpected exception."""

    @functools.wraps(method)
    def guarded(self, *args):
        try:
            return method(self, *args)
        except Exception as exc:  # noqa: BLE001 - any bug must end the session, not strand it
            self.crash(exc)
            return None

    return guarded


class Session(asyncio.Protocol):
    """One client connection. Phases: dialogue, auth, login, relay, closed."""

    def __init__(self, runtime: ServerRuntime) -> None:
        self.rt = runtime
        self.conf = runtime.conf
        self.id = next(_conn_ids)
        self.phase = "dialogue"
        self.action: str | None = "sending client greeting line"
        self.transport: asyncio.Transport | None = None
        self.backend: asyncio.Transport | None = None
        self.upstream_name: str | None = None
        self.client_ip = ""
        self.server_text = ""
        self.machine = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task | None = None
        self._write_paused = False
        self._auth_wait = False
        self._last_client_activity = 0.0
        self._login_machine = None
        self.tls: TlsConnection | None = None
        self._quiet_close = False  # nginx skips close_notify after a timeout, EOF or error
        self._starttls = False  # log lines then say "client: <ip> using starttls"
        self._early = bytearray()
        self.proxy_info: proxy_protocol.ProxyInfo | None = None
        self.client_addr: tuple | None = None
        self.local_addr: tuple | None = None
        # the level is checked once per session: debug lines cost one test when off
        self.debug = runtime.log.enabled("debug")

    # -- logging with nginx's context suffix (spec §14) ----------------------------------
    def log(self, level: str, message: str) -> None:
        if not self.rt.log.enabled(level):
            return
        parts = [message]
        if self.action:
            parts.append(f" while {self.action}")
        starttls = " using starttls" if self._starttls else ""
        parts.append(f", client: {self.client_ip}{starttls}, server: {self.server_text}")
        login = self.machine.creds.login if self.machine else b""
        if login and self.phase != "dialogue":
            parts.append(f', login: "{login.decode("latin-1")}"')
            if self.upstream_name:
                parts.append(f", upstream: {self.upstream_name}")
        self.rt.log.log(level, "".join(parts), self.id)

    def _debug(self, message: str) -> None:
        """nginx writes debug lines without the "while ..., client: ..." context."""
        self.rt.log.log("debug", message, self.id)

    # -- client transport callbacks ------------------------------------------------------
    @_guarded
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.rt.sessions.add(self)
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
            self.phase = "proxy_protocol"
            self.action = "reading PROXY protocol"
            self._arm_timeout(self.conf.timeout)
            return
        if self.rt.listen.ssl:
            self._start_tls()
            return
        self._after_proxy_protocol()

    def _read_proxy_protocol(self, data: bytes) -> None:
        """spec §4.2: the whole header must be in the first read; garbage closes silently."""
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
        if self.conf.protocol == "smtp" and self.rt.resolver is not None:
            self.phase = "resolving"
            self.action = "in resolving client address"
            self.transport.pause_reading()
            self._task = self.rt.loop.create_task(self._run(self._resolve()))
        else:
            self._greet()

    async def _resolve(self) -> None:
        """SMTP: the client's host name for Client-Host and XCLIENT, before the greeting."""
        host = await self.rt.resolver.client_host(
            self.client_ip, self.log, lambda action: setattr(self, "action", action))
        if self.phase == "resolving":
            self._greet(host)

    def _greet(self, client_host: str = "[UNAVAILABLE]") -> None:
        conf = self.conf
        if conf.protocol == "smtp":
            self.machine = self.rt.dialogue_class(conf, tls=self.tls is not None,
                                                  client_host=client_host,
                                                  log_info=self.rt.log.enabled("info"))
        else:
            self.machine = self.rt.dialogue_class(conf, tls=self.tls is not None)
        self.transport.resume_reading()
        if conf.protocol == "smtp" and conf.smtp_greeting_delay > 0:
            # nginx: a client talking before the greeting is refused (spec §9.2)
            self.phase = "delay"
            self.action = "in delay pipelining state"
            if self._early:  # it talked while its address was being resolved
                early, self._early = bytes(self._early), bytearray()
                self._carry_out(self.machine.reject_early(early))
                return
            self._timer = self.rt.loop.call_later(conf.smtp_greeting_delay, self._delayed_greeting)
            return
        self.phase = "dialogue"
        self._write(self.machine.greeting())
        self.action = "in auth state"
        self._arm_timeout(conf.timeout)
        if self._early:  # input that arrived before the greeting (PROXY header, resolving)
            self._drive()

    @_guarded
    def _delayed_greeting(self) -> None:
        self._timer = None
        self.phase = "dialogue"
        self._write(self.machine.greeting())
        self.action = "in auth state"
        self._arm_timeout(self.conf.timeout)
        self._drive()

    @_guarded
    def data_received(self, data: bytes) -> None:
        if self.tls is not None:
            data = self._tls_receive(data)
            if not data:
                if self.tls.peer_closed:
                    self._peer_closed()
                return
        if self.phase == "relay":
            self.backend.write(data)
            self._last_client_activity = self.rt.loop.time()
            if self.tls is not None and self.tls.peer_closed:
                self._peer_closed()
            return
        if self.phase == "proxy_protocol":
            self._read_proxy_protocol(data)
            return
        if self.phase == "resolving":  # a read already under way when reading was paused
            self._early += data
            return
        if self.phase == "delay":
            self._carry_out(self.machine.reject_early(data))
            return
        if self._early:
            data, self._early = bytes(self._early) + data, bytearray()
        self.machine.receive_data(data)
        if self.phase == "dialogue":
            self._drive()
        else:
            # auth and backend login: nginx does not read the client meanwhile
            self.transport.pause_reading()
        if self.tls is not None and self.tls.peer_closed:
            self._peer_closed()

    @_guarded
    def eof_received(self) -> bool:
        self.close(quiet=True)
        return False

    @_guarded
    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.close(quiet=True)
        finally:
            self.rt.sessions.discard(self)

    @_guarded
    def pause_writing(self) -> None:
        self._write_paused = True
        if self.backend is not None:
            self.backend.pause_reading()
        if self.phase in ("dialogue", "handshake"):
            # nginx reads the next command only once its reply is out (spec §5.2): a
            # client that does not read its replies is not read either
            self.transport.pause_reading()

    @_guarded
    def resume_writing(self) -> None:
        self._write_paused = False
        self._last_client_activity = self.rt.loop.time()
        if self.phase == "relay" and self.backend is not None:
            self.backend.resume_reading()
        elif self.phase in ("dialogue", "handshake"):
            self.transport.resume_reading()
            if self.phase == "dialogue":
                self._drive()

    # -- the pre-auth dialogue -----------------------------------------------------------
    def _carry_out(self, actions) -> None:
        for act in actions:
            self._act(act)

    def _drive(self) -> None:
        machine = self.machine
        if self.debug:
            self._debug(f"{machine.protocol} auth state")
        if self._early:
            machine.receive_data(bytes(self._early))
            self._early = bytearray()
        while self.phase == "dialogue" and not self._write_paused:
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
            self.phase = "auth"
            self.action = "in http auth state"
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

    # -- TLS (spec §4.4) -----------------------------------------------------------------
    def _start_tls(self, initial: bytes = b"") -> None:
        """Implicit TLS at accept (or after the PROXY header), or STARTTLS once the reply
        went out and buffered plaintext was dropped. `timeout` bounds an implicit handshake;
        STARTTLS keeps the dialogue's deadline (spec §5.4, as nginx 1.22 behaves)."""
        self.tls = self.rt.tls.connection()
        self.phase = "handshake"
        if self.machine is None:
            self.action = "SSL handshaking"
            self._arm_timeout(self.conf.timeout)
        else:
            self.action = "in starttls state"
            self._starttls = True
        self.transport.resume_reading()
        if initial:
            self.data_received(initial)

    def _tls_receive(self, raw: bytes) -> bytes:
        """Raw client bytes in, plaintext out; drives the handshake and answers for OpenSSL
        (handshake messages, tickets, alerts) on the way."""
        tls = self.tls
        handshaking = not tls.established
        try:
            plain = tls.receive(raw)
        except TlsError as err:
            out = tls.outgoing()  # the alert, e.g. no_application_protocol
            if out:
                self.transport.write(out)
            func = "SSL_do_handshake()" if handshaking else "SSL_read()"
            self.log("info", f"{func} failed (SSL: {err})")
            self.close(quiet=True)
            return b""
        out = tls.outgoing()
        if out:
            self.transport.write(out)
        if handshaking and tls.established:
            if self.debug:
                self._debug(f'SSL: {tls.protocol_version}, cipher: "{tls.cipher}"')
                if tls.resumed:
                    self._debug("SSL reused session")
            self._tls_established()
            if self.phase == "closed":
                return b""
        return plain

    def _tls_established(self) -> None:
        """ngx_mail_ssl_handshake_handler: the client-certificate check, then the greeting
        (implicit TLS) or the dialogue in its initial state (STARTTLS, no new greeting)."""
        failure = self.tls.check_client_certificate()
        if failure is not None:
            line, message = failure
            self.log("info", message)
            self._write(line)
            self.close()
            return
        if self.machine is None:
            self._cancel_timer()
            self._after_proxy_protocol()
            return
        self.phase = "dialogue"
        self.action = "in auth state"
        self.machine.tls_started()
        self._drive()

    def _peer_closed(self) -> None:
        """close_notify from the client: an EOF, as nginx treats it (no close_notify back)."""
        self.close(quiet=True)

    def _write(self, data: bytes) -> None:
        """Everything for the client: encrypted once TLS is up."""
        if self.transport.is_closing():  # uvloop raises on a closed transport
            return
        tls = self.tls
        if tls is not None and tls.established:
            data = tls.encrypt(data)
        self.transport.write(data)

    # -- auth_http -----------------------------------------------------------------------
    def _auth_request(self) -> bytes:
        creds = self.machine.creds
        req = auth_http.AuthRequest(
            method=creds.method, user=creds.login, password=creds.password,
            protocol=self.machine.protocol, attempt=creds.attempt, client_ip=self.client_ip,
            salt=creds.salt)
        if self.proxy_info is not None:
            info = self.proxy_info
            req.proxy_protocol = (info.src_addr, info.src_port, info.dst_addr, info.dst_port)
        extra = getattr(self.machine, "auth_request_extra", None)
        if extra:
            extra(req)
        if self.tls is not None:
            req.ssl_headers = self.tls.auth_headers()
        return auth_http.build_request(self.conf.auth_http, self.conf.auth_http_headers, req)

    async def _authenticate(self) -> None:
        machine, conf = self.machine, self.conf
        peer = conf.auth_http.text if conf.auth_http.unix_path else \
            f"{conf.auth_http.addr}:{conf.auth_http.port}"
        repeats = 0  # WAIT repeats without a delay, in a row
        waited = 0.0  # time spent pacing them
        try:
            while True:
                request = self._auth_request()
                next(_conn_ids)
                if self.debug:
                    self._debug("mail auth http write handler")
                    for line in masked_header_lines(request):
                        self._debug(f'mail auth http header: "{line}"')
                if machine.creds.method in ("apop", "cram-md5") and machine.creds.salt:
                    machine.creds.password = None  # nginx forgets it once the salt is sent
                resp = await auth_http.query(conf.auth_http, request, conf.auth_http_timeout)
                if self.debug:
                    self._debug_auth_reply(resp)
                if resp.user is not None:
                    machine.creds.login = resp.user
                if resp.password is not None:
                    machine.creds.password = resp.password
                if resp.wait_status:
                    self._auth_wait = True
                error_line = machine.auth_failure(resp) if resp.error is not None else None
                if error_line is not None:
                    self.log("info", f'client login failed: "{resp.error.decode("latin-1")}"')
                    if resp.wait == 0:
                        self._write(error_line)
                        return self.close()
                    if not await self._pause(resp.wait):
                        return None
                    if self._auth_wait:
                        self._auth_wait = False
                        continue
                    self.phase = "dialogue"
                    self.action = "in auth state"
                    machine.auth_failed(error_line)
                    self._arm_timeout(conf.timeout)
                    self.transport.resume_reading()
                    self._drive()
                    return None
                if self._auth_wait:
                    if resp.wait:
                        repeats = 0
                        if not await self._pause(resp.wait):
                            return None
                        self._auth_wait = False
                        continue
                    repeats += 1
                    if repeats > WAIT_REPEATS_AT_ONCE:
                        if waited >= conf.timeout:
                            raise auth_http.AuthServerError(
                                f"auth http server {peer} kept answering WAIT without "
                                "Auth-Wait")
                        waited += WAIT_REPEAT_PACE
                        if not await self._pause(WAIT_REPEAT_PACE):
                            return None
                    elif self._client_gone():
                        return self.close(quiet=True)
                    continue
                break
            addr, port = resp.backend(peer)
            if machine.creds.password is None and machine.protocol != "smtp":
                raise auth_http.AuthServerError(f"auth http server {peer} did not send password")
        except auth_http.AuthServerError as err:
            if str(err):
                self.log("error", str(err))
            return self.internal_error()
        self.upstream_name = f"{addr}:{port}"
        if self.debug:
            self._debug(f"mail auth http done: upstream {addr}:{port}")
        await self._login_to_backend(addr, port)
        return None

    def _debug_auth_reply(self, resp) -> None:
        """The reply's headers as decoded (the password masked)."""
        self._debug("mail auth http process headers")
        status = b"OK" if resp.error is None and not resp.wait_status else (
            resp.error if resp.error is not None else b"WAIT")
        fields = [("Auth-Status", status), ("Auth-Server", resp.server),
                  ("Auth-Port", resp.port), ("Auth-User", resp.user),
                  ("Auth-Pass", MASK.encode() if resp.password is not None else None),
                  ("Auth-Wait", str(resp.wait).encode() if resp.wait else None),
                  ("Auth-Error-Code", resp.error_code)]
        for name, value in fields:
            if value:
                self._debug(f'mail auth http header: "{name}: '
                                  f'{value.decode("latin-1")}"')
        self._debug("mail auth http header done")

    # -- backend login -------------------------------------------------------------------
    async def _login_to_backend(self, addr: str, port: int) -> None:
        self.phase = "login"
        self.action = "connecting to upstream"
        self._login_machine = self.machine.backend_login(self.conf, self.client_ip)
        loop = self.rt.loop
        self._arm_timeout(self.conf.timeout, "upstream timed out")
        next(_conn_ids)
        if self.debug:
            self._debug(f"connect to {addr}:{port}")
        try:
            await loop.create_connection(lambda: BackendProtocol(self), addr, port)
        except OSError as exc:
            if self.phase == "login":
                # nginx connects without blocking; the refusal surfaces in its first read
                self.action = "reading response from upstream"
                self.log("error", f"recv() failed {auth_http.errno_text(exc)}")
                self.internal_error()
            return
        first = self._login_machine.start()
        if first is not None:
            self.on_backend_outcome(first)

    @_guarded
    def on_backend_connected(self, transport: asyncio.Transport) -> None:
        self.backend = transport
        mode = self.conf.proxy_protocol
        if mode != "off":  # spec §11.5: the header goes first, in one write
            client = self.client_addr if self.client_addr and self.local_addr else None
            build = proxy_protocol.v2_header if mode == "v2" else proxy_protocol.v1_line
            transport.write(build(client and client[:2], self.local_addr and self.local_addr[:2]))

    @_guarded
    def on_backend_data(self, data: bytes) -> None:
        if self.phase == "relay":
            self._write(data)
            return
        if self.phase == "login":
            # nginx names the phase by its last step: a read, or the command it sent
            self.action = "reading response from upstream"
            if self.debug:
                self._debug(f"mail proxy {self.machine.protocol} auth handler")
            self.on_backend_outcome(self._login_machine.receive_data(data))

    def on_backend_outcome(self, outcome) -> None:
        if outcome is None:
            return
        if isinstance(outcome, SendToBackend):
            self.backend.write(outcome.data)
            self.action = self._login_machine.action
            if self.debug:  # the step, never the data (it may carry the password)
                step = _PROXY_STEPS.get(self.action, f"mail proxy {self.action}")
                if step == "mail proxy send pass" and self.machine.protocol == "imap":
                    step = "mail proxy send passwd"  # ngx_mail_proxy_imap_handler's word
                self._debug(step)
        elif isinstance(outcome, LoginFailed):
            self.log(outcome.log_level, outcome.log)
            if outcome.to_client is None:
                self.internal_error()
            else:
                self._write(outcome.to_client)
                self.close()
        elif isinstance(outcome, LoggedIn):
            self._start_relay(outcome.to_client)

    @_guarded
    def on_backend_closed(self, exc: Exception | None = None) -> None:
        if self.phase == "login":
            # EOF during login is an internal error without a log line (nginx's recv()
            # returning 0); only a failed read is logged
            self.action = "reading response from upstream"
            if isinstance(exc, OSError) and exc.errno:
                self.log("error", f"recv() failed {auth_http.errno_text(exc)}")
            self.internal_error()
        elif self.phase == "relay":
            self.close()

    # -- relay ---------------------------------------------------------------------------
    def _start_relay(self, to_client: bytes) -> None:
        self.phase = "relay"
        self.action = None
        self.log("info", "client logged in")
        if self.debug:
            self._debug("mail proxy relay start")
        self._cancel_timer()
        self._write(to_client)
        pending = self.machine.pending_input()
        if pending:
            self.backend.write(pending)
        self.machine = _LoggedInView(self.machine)
        self._last_client_activity = self.rt.loop.time()
        self._arm_proxy_timeout(self.conf.proxy_timeout)
        self.transport.resume_reading()

    def _arm_proxy_timeout(self, delay: float) -> None:
        self._timer = self.rt.loop.call_later(delay, self._proxy_timeout_check)

    @_guarded
    def _proxy_timeout_check(self) -> None:
        # re-armed lazily: a read only stamps the time, the timer checks it (spec §12)
        idle = self.rt.loop.time() - self._last_client_activity
        remaining = self.conf.proxy_timeout - idle
        if remaining > 0.001:
            self._arm_proxy_timeout(remaining)
            return
        self.action = "proxying"
        self.log("info", "client timed out (110: Connection timed out)")
        self.close(quiet=True)

    # -- timers and closing --------------------------------------------------------------
    def _arm_timeout(self, delay: float, message: str = "client timed out") -> None:
        self._cancel_timer()
        self._timer = self.rt.loop.call_later(delay, self._timed_out, message)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @_guarded
    def _timed_out(self, message: str) -> None:
        self._timer = None
        if self.phase == "handshake" and self.machine is None:
            return self.close(quiet=True)  # nginx closes a stalled handshake without a log
        # nginx logs timeouts at info level with ETIMEDOUT's text
        self.log("info", f"{message} (110: Connection timed out)")
        if message == "upstream timed out":
            return self.internal_error()
        self.close(quiet=True)

    def internal_error(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._write(self.machine.internal_error)
        self.close()

    def close(self, quiet: bool = False) -> None:
        if self.phase == "closed":
            return
        self._quiet_close = self._quiet_close or quiet
        if self.phase == "relay":
            self.action = None
            self.log("info", "proxied session done")
        if self.debug:
            self._debug_close()
        self.phase = "closed"
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

    def _debug_close(self) -> None:
        if self.backend is not None:
            raw = self.backend.get_extra_info("socket")
            self._debug(f"close mail proxy connection: {raw.fileno() if raw else -1}")
        raw = self.transport.get_extra_info("socket") if self.transport else None
        self._debug(f"close mail connection: {raw.fileno() if raw else -1}")

    # -- robustness: no exception strands a session ---------------------------------------
    async def _run(self, coro) -> None:
        """The body of a task the session starts; a bug in it ends the session cleanly."""
        try:
            await coro
        except Exception as exc:  # noqa: BLE001 - see _guarded
            self.crash(exc)

    def crash(self, exc: BaseException) -> None:
        """An unexpected exception: one [alert] line with the traceback, nginx's reply for an
        internal error where a dialogue is under way, the connection closed."""
        try:
            frames = " > ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}"
                                for f in traceback.extract_tb(exc.__traceback__))
            self.log("alert", f"unexpected {type(exc).__name__}: {exc} (traceback: {frames})")
            if self.phase not in ("closed", "relay") and self.machine is not None and \
                    (self.tls is None or self.tls.established):
                self._write(self.machine.internal_error)
        except Exception:  # noqa: BLE001,S110 - the close below must happen whatever failed
            pass
        try:
            self.close()
        except Exception:  # noqa: BLE001
            self.phase = "closed"
            for transport in (self.backend, self.transport):
                if transport is not None:
                    transport.abort()

    def invariant_violation(self) -> str | None:
        """None while the session is relaying, waiting on a timer or task, or closed; else
        what is wrong (the test suite checks this on every session of a worker)."""
        if self.phase == "closed":
            return None if self.transport is None or self.transport.is_closing() else \
                "closed but its connection is open"
        if self.transport is not None and self.transport.is_closing():
            return f"connection closed in phase {self.phase}"
        if self.phase == "relay":
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
        self.close()
        if self.transport is not None:
            self.transport.abort()


# debug words of ngx_mail_proxy_module for the backend login steps
_PROXY_STEPS = {"sending LOGIN command to upstream": "mail proxy send login",
                "sending user name to upstream": "mail proxy send user",
                "sending password to upstream": "mail proxy send pass",
                "sending HELO/EHLO to upstream": "mail proxy send ehlo"}


class _LoggedInView:
    """Keeps what logging needs after the dialogue machine is released."""

    __slots__ = ("creds", "internal_error")

    def __init__(self, machine) -> None:
        self.creds = machine.creds
        self.internal_error = machine.internal_error
