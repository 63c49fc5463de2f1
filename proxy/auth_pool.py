"""The auth_http client beyond nginx: TLS, kept-alive connections, backup servers.

nginx opens one HTTP/1.0 connection per auth request to its one server. A server{} that uses
none of `auth_http https://`, `auth_http_keepalive` and `auth_http_backup` goes through
auth_http.query() exactly as before (same bytes, same log lines). Otherwise an AuthClient,
one per server{} and worker, sends the request:

* to the first server (auth_http, then each auth_http_backup in order) that is not marked
  down; a server whose connection fails, times out or closes without a reply byte is
  skipped for the rest of the login, and after `max_fails` such failures within
  `fail_timeout` it is skipped by every login for `fail_timeout` (nginx upstream's peer
  accounting). When all are down, all are tried anyway;
* with `auth_http_keepalive N` as HTTP/1.1 over a pooled connection (at most N idle ones per
  server, closed after `auth_http_keepalive_timeout`). The reply is still decided by nginx's
  parser (auth_http.py); h11 only frames it (Content-Length, chunked or close-delimited) so
  that the connection can be used again. A pooled connection that the server closed (idle or
  mid-request, before any reply byte) is replaced by a fresh one, once, without failing the
  login.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable

import dns.exception
import h11
from postern.proxy import auth_http
from postern.proxy.auth_http import AuthServerError, errno_text, peer_text, request_head
from postern.proxy.auth_tls import client_context, server_name
from postern.proxy.conf.settings import AuthHttp, ServerSettings
from postern.proxy.resolver import NXDOMAIN, HostResolver, strerror

LogFn = Callable[[str, str], None]


def beyond_nginx(conf: ServerSettings) -> bool:
    return bool(conf.auth_http.ssl or conf.auth_http_keepalive or conf.auth_http_backups)


_CLIENTS: dict[int, tuple[ServerSettings, AuthClient]] = {}


def client_for(conf: ServerSettings) -> AuthClient:
    """This worker's client for a server{} (module state: one per process, as nginx's
    upstream keepalive cache is per worker)."""
    entry = _CLIENTS.get(id(conf))
    if entry is None or entry[0] is not conf:
        entry = _CLIENTS[id(conf)] = (conf, AuthClient(conf))
    return entry[1]


async def query(conf: ServerSettings, request: bytes, timeout: float, reader,
                log: LogFn | None = None, loop=None):
    """auth_http.query() for this server{}, through an AuthClient when one is configured."""
    if not beyond_nginx(conf):
        return await auth_http.query(conf.auth_http, request, timeout, reader, loop)
    return await client_for(conf).query(request, timeout, reader, log)


_RESOLVERS: dict[int, tuple[ServerSettings, HostResolver]] = {}


async def resolve_backend(conf: ServerSettings, name: str, peer: str, log: LogFn) -> str | None:
    """An Auth-Server host name (auth_http_server_names) through the server's `resolver`,
    with its timeout and caching rules; None (after an error line) when it fails."""
    entry = _RESOLVERS.get(id(conf))
    if entry is None or entry[0] is not conf:
        entry = _RESOLVERS[id(conf)] = (conf, HostResolver(conf.resolver, conf.resolver_timeout))
    try:
        found = await entry[1].host_addresses(name.encode())
    except dns.exception.DNSException as exc:  # a name dnspython cannot ask for
        log("error", f'auth http server {peer} sent server name "{name}" that could not be '
                     f"resolved ({exc})")
        return None
    if isinstance(found, int) or not found:
        code = found if isinstance(found, int) else NXDOMAIN
        log("error", f'auth http server {peer} sent server name "{name}" that could not be '
                     f"resolved ({code}: {strerror(code)})")
        return None
    return found[0]


class _PeerFailed(Exception):
    """This server could not be asked (connect, TLS, timeout, closed before replying)."""

    def __init__(self, error: AuthServerError) -> None:
        super().__init__(str(error))
        self.error = error


class _Stale(Exception):
    """A reused connection closed before the first reply byte: ask again on a fresh one."""


class Peer:
    """One auth server and its failure accounting (ngx_http_upstream_round_robin's)."""

    def __init__(self, conf: AuthHttp) -> None:
        self.conf = conf
        self.name = peer_text(conf)
        self.fails = 0
        self.first_fail = 0.0
        self.down_until = 0.0
        self.idle: deque[_Connection] = deque()

    def available(self, now: float) -> bool:
        return self.conf.max_fails == 0 or self.fails < self.conf.max_fails \
            or now >= self.down_until

    def failed(self, now: float) -> None:
        if self.conf.max_fails == 0:
            return
        if now - self.first_fail > self.conf.fail_timeout:
            self.fails, self.first_fail = 0, now
        self.fails += 1
        if self.fails >= self.conf.max_fails:
            self.down_until = now + self.conf.fail_timeout

    def succeeded(self) -> None:
        self.fails = 0


class AuthClient:
    def __init__(self, conf: ServerSettings) -> None:
        self.conf = conf
        self.peers = [Peer(conf.auth_http), *(Peer(b) for b in conf.auth_http_backups)]
        self.keepalive = conf.auth_http_keepalive
        self._ssl: ssl.SSLContext | None = None
        self.connects = 0  # connections opened, for tests and check-auth

    def _order(self) -> list[Peer]:
        now = asyncio.get_running_loop().time()
        live = [p for p in self.peers if p.available(now)]
        return live or list(self.peers)

    async def query(self, request: bytes, timeout: float, reader, log: LogFn | None = None):
        primary = self.conf.auth_http
        head = request_head(primary)
        assert request.startswith(head)
        body = request[len(head):]
        peers = self._order()
        for i, peer in enumerate(peers):
            if hasattr(reader, "peer"):
                reader.peer = peer.name  # log lines name the server that answered
            data = request_head(peer.conf, http11=self.keepalive > 0) + body
            try:
                result = await self._ask(peer, data, timeout, reader,
                                         last=i == len(peers) - 1)
            except _PeerFailed as failure:
                peer.failed(asyncio.get_running_loop().time())
                if i == len(peers) - 1:
                    raise failure.error from None
                if log is not None:
                    log("error", f"{failure.error}, trying auth http server "
                                 f"{peers[i + 1].name}")
                continue
            peer.succeeded()
            return result
        raise AssertionError("no auth_http server")  # peers is never empty

    async def _ask(self, peer: Peer, data: bytes, timeout: float, reader, last: bool):
        try:
            async with asyncio.timeout(timeout):
                conn = self._idle(peer)
                if conn is not None:
                    try:
                        return await conn.exchange(data, reader)
                    except _Stale:
                        pass  # the server closed the kept connection: once more, fresh
                conn = await self._connect(peer)
                try:
                    return await conn.exchange(data, reader)
                except _Stale:
                    if last and len(self.peers) == 1:
                        return reader.receive_eof()  # as nginx: no log line, internal error
                    raise _PeerFailed(AuthServerError(
                        f"auth http server {peer.name} closed the connection")) from None
        except TimeoutError:
            raise _PeerFailed(AuthServerError(
                f"auth http server {peer.name} timed out (110: Connection timed out)")) \
                from None

    def _idle(self, peer: Peer) -> _Connection | None:
        while peer.idle:
            conn = peer.idle.pop()  # the most recently used: the least likely to be closed
            if conn.take():
                return conn
        return None

    async def _connect(self, peer: Peer) -> _Connection:
        loop = asyncio.get_running_loop()
        conf = peer.conf
        kwargs = {}
        if conf.ssl:
            if self._ssl is None:
                self._ssl = client_context(self.conf)
            kwargs = {"ssl": self._ssl, "server_hostname": server_name(self.conf, conf)}
        self.connects += 1
        try:
            if conf.unix_path:
                _, conn = await loop.create_unix_connection(
                    lambda: _Connection(self, peer), conf.unix_path, **kwargs)
            else:
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, peer), conf.addr, conf.port, **kwargs)
        except ssl.SSLError as exc:
            raise _PeerFailed(AuthServerError(
                f"SSL handshake with auth http server {peer.name} failed "
                f"({exc.reason or exc})")) from None
        except OSError as exc:
            raise _PeerFailed(AuthServerError(
                f"connect() to {peer.name} failed {errno_text(exc)}")) from None
        return conn

    def release(self, conn: _Connection) -> None:
        """A connection whose reply is whole and that may be used again."""
        peer = conn.peer
        if self.keepalive <= 0:
            conn.close()
            return
        peer.idle.append(conn)
        while len(peer.idle) > self.keepalive:
            peer.idle.popleft().close()
        conn.idle_for(self.conf.auth_http_keepalive_timeout)

    def forget(self, conn: _Connection) -> None:
        try:
            conn.peer.idle.remove(conn)
        except ValueError:
            pass


def close_delimited(response: h11.Response) -> bool:
    """A reply whose body ends only with the connection (HTTP/1.0, or no length given)."""
    if response.status_code in (204, 304) or response.http_version == b"1.0":
        return response.http_version == b"1.0"
    names = {name for name, _ in response.headers}
    return b"content-length" not in names and b"transfer-encoding" not in names


class _Connection(asyncio.Protocol):
    """One connection to an auth server: one request at a time, reused when kept alive."""

    def __init__(self, client: AuthClient, peer: Peer) -> None:
        self.client, self.peer = client, peer
        self.transport: asyncio.Transport | None = None
        self.reader = None
        self.reply: asyncio.Future | None = None
        self.got_bytes = False
        self.framer: h11.Connection | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False

    # -- the client's side
    def take(self) -> bool:
        """Out of the idle pool for a request; False when it is gone already."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        return not self.closed and self.transport is not None \
            and not self.transport.is_closing()

    async def exchange(self, data: bytes, reader):
        loop = asyncio.get_running_loop()
        self.reader, self.reply, self.got_bytes = reader, loop.create_future(), False
        if self.client.keepalive > 0:
            self.framer = h11.Connection(h11.CLIENT)
            # h11 frames the reply only; the request bytes are ours
            self.framer.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
            self.framer.send(h11.EndOfMessage())
        self.transport.write(data)
        try:
            result = await self.reply
        except BaseException:
            self.close()  # a timeout or an error: never reused
            raise
        if self.reply is not None:  # not released yet
            if self.framer is None:
                self.close()  # HTTP/1.0 (or a reply h11 cannot frame): one request only
            else:  # the body is still coming: released when whole, closed if it stalls
                self.idle_for(self.client.conf.auth_http_keepalive_timeout)
        return result

    def idle_for(self, seconds: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(seconds, self.close)

    def close(self) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()
        self.client.forget(self)

    # -- the protocol's side
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, chunk: bytes) -> None:
        if self.reply is None:  # bytes on an idle connection: it cannot be trusted
            return self.close()
        self.got_bytes = True
        if not self.reply.done():
            try:
                result = self.reader.receive_data(chunk)
            except AuthServerError as exc:
                self.reply.set_exception(exc)
            else:
                if result is not None:
                    self.reply.set_result(result)
        if self.framer is not None:
            self._frame(chunk)
            if self.reply.done():
                self._maybe_release()

    def _frame(self, chunk: bytes) -> None:
        try:
            self.framer.receive_data(chunk)
            while True:
                event = self.framer.next_event()
                if isinstance(event, h11.Response) and close_delimited(event):
                    self.framer = None  # ends only when the server closes: not reused
                    return
                if event is h11.NEED_DATA or event is h11.PAUSED \
                        or isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return
        except h11.ProtocolError:
            self.framer = None  # not HTTP/1.1 as h11 reads it: not reused

    def _maybe_release(self) -> None:
        framer = self.framer
        if framer is None:
            return self.close()
        if framer.our_state is h11.DONE and framer.their_state is h11.DONE:
            self.framer = None
            framer.start_next_cycle()
            self.reader = self.reply = None
            self.client.release(self)
        elif framer.their_state in (h11.MUST_CLOSE, h11.CLOSED, h11.ERROR) \
                or framer.our_state in (h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
            self.close()
        # else: the body is still coming; data_received() releases it when whole

    def eof_received(self) -> bool:
        self._gone(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone(exc)
        self.closed = True
        self.client.forget(self)

    def _gone(self, exc: Exception | None) -> None:
        reply = self.reply
        if reply is None or reply.done():
            return
        if not self.got_bytes:
            reply.set_exception(_Stale())
        elif isinstance(exc, OSError):
            reply.set_exception(AuthServerError(f"recv() failed {errno_text(exc)}"))
        else:
            try:
                reply.set_result(self.reader.receive_eof())
            except AuthServerError as err:
                reply.set_exception(err)
