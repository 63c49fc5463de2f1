"""A worker process: serves the listening sockets the master bound, until told to stop."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import os
import resource
import signal
import socket
from dataclasses import dataclass, field

from postern.proxy import metrics
from postern.proxy.access_log import AccessLogs
from postern.proxy.conf.settings import Listen, MainSettings, ServerSettings
from postern.proxy.log import ErrorLog
from postern.proxy.protocols import PROTOCOLS
from postern.proxy.resolver import HostResolver
from postern.proxy.runtime import ServerRuntime
from postern.proxy.session import Session
from postern.proxy.tls import server_tls, uses_tls


@dataclass
class Binding:
    """One bound socket and the server(s) it serves."""

    sock: socket.socket
    listen: Listen
    server: ServerSettings
    shared: list[tuple[Listen, ServerSettings]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Build the server's TLS context here, in the master before it forks, so that all
        # workers share it (and its session ticket keys) as nginx's workers share the
        # SSL_CTX of theirs. A TlsSetupError stops the start (or the reload) like a
        # configuration error, instead of failing in every worker.
        if uses_tls(self.server, self.listen.ssl):
            server_tls(self.server)


class Worker:
    def __init__(self, settings: MainSettings, bindings: list[Binding], log: ErrorLog,
                 server_logs: dict[int, ErrorLog]) -> None:
        self.settings = settings
        self.bindings = bindings
        self.log = log
        self.server_logs = server_logs
        self.sessions: set[Session] = set()
        self.servers: list[asyncio.base_events.Server] = []
        self.stopping: asyncio.Event | None = None
        self.graceful = False
        self._resolvers: dict[int, HostResolver] = {}
        self.access_logs: AccessLogs | None = None

    def _runtime(self, loop, listen: Listen, conf: ServerSettings) -> ServerRuntime:
        log = self.server_logs.get(id(conf), self.log)
        tls = None
        if uses_tls(conf, listen.ssl):
            tls = server_tls(conf)
            if conf.ssl.session_ticket_keys:
                log.log("warn", '"ssl_session_ticket_key" is not supported; session tickets '
                        "use keys of this process's own")
        resolver = self._resolvers.get(id(conf))
        if resolver is None and conf.resolver is not None and \
                PROTOCOLS[conf.protocol].resolves_client_host:
            resolver = self._resolvers[id(conf)] = HostResolver(conf.resolver,
                                                                conf.resolver_timeout)
        return ServerRuntime(conf, listen, log, loop, self.sessions, tls, resolver,
                             worker_connections=self.settings.worker_connections,
                             listeners=len(self.bindings),
                             access_log=self.access_logs.for_server(conf),
                             metrics=metrics.for_server(self.settings, conf, listen))

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        self.access_logs = AccessLogs(self.settings.servers, loop, self.log)
        if self.settings.worker_rlimit_nofile:
            n = self.settings.worker_rlimit_nofile
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
            except (ValueError, OSError) as exc:
                self.log.log("alert", f"setrlimit(RLIMIT_NOFILE, {n}) failed ({exc})")
        for sig, graceful in ((signal.SIGTERM, False), (signal.SIGINT, False),
                              (signal.SIGQUIT, True)):
            loop.add_signal_handler(sig, self._stop, graceful)
        loop.add_signal_handler(signal.SIGUSR1, self._reopen)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)  # the master handles reloads
        for b in self.bindings:
            rt = self._runtime(loop, b.listen, b.server)
            for listen, conf in b.shared:
                rt.by_address[(listen.host, listen.port)] = self._runtime(loop, listen, conf)

            def factory(rt=rt):
                return _Accepted(rt)

            # TLS is the session's own layer (proxy.tls), never the loop's
            server = await loop.create_server(factory, sock=b.sock, backlog=b.listen.backlog)
            self.servers.append(server)
        loop.create_task(self._trim_when_idle())
        # what exists now (modules, settings) lives as long as the worker: out of the
        # collector's sight, a full collection during the session load has less to walk
        gc.freeze()
        if os.environ.get("POSTERN_CHECK_INVARIANTS"):
            loop.create_task(self._check_invariants())
        await self.stopping.wait()
        for server in self.servers:
            server.close()
        if self.graceful:
            await self._drain()
        for s in list(self.sessions):
            s.abort()
        await asyncio.sleep(0)
        self.access_logs.close()  # buffered lines are written at exit, as nginx does
        metrics.flush()  # what the last second and the aborted sessions recorded

    async def _drain(self) -> None:
        """QUIT: let sessions finish, bounded by worker_shutdown_timeout."""
        loop = asyncio.get_running_loop()
        deadline = None
        if self.settings.worker_shutdown_timeout is not None:
            deadline = loop.time() + self.settings.worker_shutdown_timeout
        # a TERM during the drain ends it at once (_stop clears graceful), as in nginx
        while self.sessions and self.graceful and (deadline is None or loop.time() < deadline):
            await asyncio.sleep(0.05)

    async def _trim_when_idle(self) -> None:
        """Give memory back to the system once the worker is idle after a burst of sessions
        (release_memory); an idle check every few seconds costs nothing on the session path."""
        trim = _malloc_trim()
        seen = _Accepted.count
        while True:
            await asyncio.sleep(IDLE_TRIM_INTERVAL)
            if not self.sessions and _Accepted.count != seen:
                seen = _Accepted.count
                release_memory(self.sessions, trim)

    async def _check_invariants(self) -> None:
        """Test builds: every session is relaying, waiting on a timer or task, or closed;
        a stranded one is reported (the test suite fails on this line)."""
        while True:
            await asyncio.sleep(0.2)
            for s in list(self.sessions):
                problem = s.invariant_violation()
                if problem is not None:
                    s.log("alert", f"session invariant broken: {problem}")

    def _stop(self, graceful: bool) -> None:
        # QUIT after TERM changes nothing; TERM after QUIT cuts the drain short
        self.graceful = graceful and (self.graceful or not self.stopping.is_set())
        self.stopping.set()

    def _reopen(self) -> None:
        self.log.reopen()
        for log in self.server_logs.values():
            log.reopen()
        if self.access_logs is not None:
            self.access_logs.reopen()


IDLE_TRIM_INTERVAL = 5.0


def release_memory(sessions: set, trim=None) -> None:
    """What an idle worker can return after a burst of sessions. Measured with 5,000 idle
    IMAP sessions (worker RSS 30.5 MB before, 57.6 MB with them open): malloc_trim() alone
    leaves 46 MB, this 40 MB.

    - gc.collect() of the oldest generation also empties CPython's free lists (tuples,
      floats, lists, dicts, contexts); their blocks, scattered by the burst, keep pymalloc's
      1 MiB arenas alive, and an arena goes back to the system only when wholly free;
    - an emptied set keeps its largest table until cleared;
    - glibc's malloc_trim(0) returns the free pages of its heaps (uvloop's read buffers,
      large tables).
    What stays is arenas pinned by uvloop's own free lists of timer and transport objects
    (a few hundred blocks that Python cannot reach).
    """
    gc.collect()
    if not sessions:
        sessions.clear()
    if trim is not None:
        trim(0)


def _malloc_trim():
    """glibc's malloc_trim, or None elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


class _Accepted(Session):
    """A session whose server is chosen by the local address it was accepted on."""

    count = 0  # connections accepted by this worker (the idle trim looks for new ones)

    def connection_made(self, transport) -> None:  # type: ignore[override]
        _Accepted.count += 1
        limit = self.rt.worker_connections
        if limit and len(self.rt.sessions) + self.rt.listeners >= limit:
            # nginx counts its listening sockets and every client connection against
            # worker_connections and drops what does not fit
            self.rt.log.log("alert", f"{limit} worker_connections are not enough")
            self.rt.metrics.refused("worker_connections")
            transport.abort()
            return
        rt = self.rt.select(transport.get_extra_info("sockname"))
        if rt is not self.rt:
            self.rt, self.conf, self.proto = rt, rt.conf, rt.protocol
        super().connection_made(transport)


def run(worker: Worker) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(worker.serve())
    else:
        uvloop.run(worker.serve())
