"""The master process: bind every listener, then write the pid file, then fork workers.

Signals as nginx: TERM/INT fast exit, QUIT graceful, HUP reload (bad config keeps the old
one running), USR1 reopen logs. A worker that dies unexpectedly is replaced.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable

from postern.proxy import limits
from postern.proxy.conf.settings import Listen, MainSettings, ServerSettings
from postern.proxy.log import ErrorLog
from postern.proxy.metrics.exporter import Exporter
from postern.proxy.worker import Binding, Worker, run

WILDCARDS = ("0.0.0.0", "::")
MASTER_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1,
                  signal.SIGCHLD)


def _sock_key(listen: Listen) -> tuple:
    if listen.unix_path:
        return ("unix", listen.unix_path)
    return ("inet", listen.host, listen.port)


class BindError(OSError):
    """A listener that cannot be bound, named as nginx names it:
    ``bind() to 127.0.0.1:1143 failed (98: Address already in use)``."""

    def __init__(self, err: OSError, listen: Listen) -> None:
        super().__init__(err.errno, err.strerror)
        self.listen = listen

    def __str__(self) -> str:
        return f"bind() to {self.listen.text} failed ({self.errno}: {self.strerror})"


def _new_socket(listen: Listen) -> socket.socket:
    try:
        return _bound_socket(listen)
    except BindError:
        raise
    except OSError as exc:  # a socket option refused: still named with the address
        if exc.errno is None:
            raise
        raise BindError(exc, listen) from None


def _bound_socket(listen: Listen) -> socket.socket:
    if listen.unix_path:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if os.path.exists(listen.unix_path):
            os.unlink(listen.unix_path)
        _bind(sock, listen.unix_path, listen)
    else:
        family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(listen.ipv6only))
        if listen.rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, listen.rcvbuf)
        if listen.sndbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, listen.sndbuf)
        if listen.so_keepalive and listen.so_keepalive != "off":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        _bind(sock, (listen.host, listen.port), listen)
    sock.listen(listen.backlog)
    sock.setblocking(False)
    return sock


def _bind(sock: socket.socket, address, listen: Listen) -> None:
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise BindError(err, listen) from None


def plan(settings: MainSettings, reuse: dict[tuple, socket.socket]) -> list[Binding]:
    """nginx's rule: a wildcard on a port takes the other addresses of that port unless
    they say `bind`; the server is then chosen per connection by its local address."""
    entries = [(ls, srv) for srv in settings.servers for ls in srv.listens]
    wild = {(ls.port, ":" in ls.host): (ls, srv) for ls, srv in entries
            if ls.host in WILDCARDS and not ls.unix_path}
    bindings: dict[tuple, Binding] = {}
    shared: list[tuple[Listen, ServerSettings, tuple]] = []
    for ls, srv in entries:
        owner = None if ls.unix_path else wild.get((ls.port, ":" in ls.host))
        if owner is not None and owner[0] is not ls and not ls.bind:
            shared.append((ls, srv, _sock_key(owner[0])))
            continue
        key = _sock_key(ls)
        sock = reuse.pop(key, None) or _new_socket(ls)
        bindings[key] = Binding(sock, ls, srv)
    for ls, srv, key in shared:
        bindings[key].shared.append((ls, srv))
    return list(bindings.values())


class Master:
    def __init__(self, settings: MainSettings, log: ErrorLog,
                 reload_config: Callable[[], MainSettings],
                 make_logs: Callable[[MainSettings], tuple[ErrorLog, dict]]) -> None:
        self.settings = settings
        self.log = log
        self.reload_config = reload_config
        self.make_logs = make_logs
        self.bindings: list[Binding] = []
        self.workers: dict[int, int] = {}  # pid -> generation
        self.generation = 0
        self.pending: list[int] = []
        self.metrics = Exporter()

    def bind(self) -> None:
        self.bindings = plan(self.settings, {})
        limits.install(self.settings)  # before the fork: the workers share the zones
        self.metrics.configure(self.settings)()

    def write_pid(self) -> None:
        """Written whole or not at all, so a reader never sees an empty file."""
        if self.settings.pid:
            tmp = f"{self.settings.pid}.{os.getpid()}.tmp"
            with open(tmp, "w") as fh:
                fh.write(f"{os.getpid()}\n")
            os.replace(tmp, self.settings.pid)

    def _spawn(self, count: int) -> None:
        self.log.log("notice", "start worker processes")
        worker_log, server_logs = self.make_logs(self.settings)
        for _ in range(count):
            # Signals wait until the child has dropped the master's handlers: a TERM sent to a
            # worker that is just born would otherwise run the master's handler in the child
            # and be lost, leaving the worker behind its exited master.
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
            try:
                pid = os.fork()
            except BaseException:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                raise
            if pid == 0:
                for sig in MASTER_SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                self.metrics.in_worker()
                code = 0
                try:
                    run(Worker(self.settings, self.bindings, worker_log, server_logs))
                except BaseException as exc:  # a worker must report, not vanish silently  # noqa: BLE001
                    worker_log.log("alert", f"worker process failed: {exc!r}")
                    code = 2
                os._exit(code)
            self.workers[pid] = self.generation
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            self.log.log("notice", f"start worker process {pid}")

    def _signal_workers(self, sig: int, generation: int | None = None) -> None:
        for pid, gen in list(self.workers.items()):
            if generation is None or gen == generation:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    def run(self) -> int:
        for sig in MASTER_SIGNALS:
            signal.signal(sig, self._on_signal)
        self.metrics.start(self._workers_up)
        self._spawn(self.settings.worker_processes)
        stopping = None
        while True:
            while self.pending:
                sig = self.pending.pop(0)
                # TERM after QUIT: a fast shutdown then, of draining workers too (nginx)
                escalate = stopping == signal.SIGQUIT and sig != signal.SIGQUIT
                if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT) and (
                        stopping is None or escalate):
                    stopping = sig
                    name = signal.Signals(sig).name
                    self.log.log("notice", f"signal {sig} ({name}) received, "
                                 + ("shutting down" if sig == signal.SIGQUIT else "exiting"))
                    self._signal_workers(signal.SIGQUIT if sig == signal.SIGQUIT
                                         else signal.SIGTERM)
                elif sig == signal.SIGHUP and stopping is None:
                    self._reload()
                elif sig == signal.SIGUSR1:
                    self.log.reopen()
                    self._signal_workers(signal.SIGUSR1)
            self._reap(respawn=stopping is None)
            if stopping is not None and not self.workers:
                break
            if not self.pending:
                time.sleep(0.05)
        self._cleanup()
        return 0

    def _workers_up(self) -> tuple[int, int]:
        """(running, expected) workers of the current configuration, for /health."""
        generation = self.generation
        running = sum(1 for gen in list(self.workers.values()) if gen == generation)
        return running, self.settings.worker_processes

    def _on_signal(self, signum, frame) -> None:
        if signum != signal.SIGCHLD:
            self.pending.append(signum)

    def _reap(self, respawn: bool) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.workers.clear()
                return
            if pid == 0:
                return
            gen = self.workers.pop(pid, None)
            if gen is None:
                continue
            limits.reclaim(pid)  # a dead worker's sessions no longer count
            self.metrics.worker_exited(pid)
            code = os.waitstatus_to_exitcode(status)
            if code != 0 and respawn and gen == self.generation:
                self.log.log("alert", f"worker process {pid} exited with code {code}")
                self._spawn(1)

    def _reload(self) -> None:
        self.log.log("notice", "signal 1 (SIGHUP) received, reconfiguring")
        try:
            new = self.reload_config()
            zones = limits.prepare(new)  # unchanged zones are kept, with their counts
            old = {_sock_key(b.listen): b.sock for b in self.bindings}
            keep = dict(old)
            bindings = plan(new, keep)
            switch_metrics = self.metrics.configure(new)
        except Exception as exc:  # ConfigError, bind failure: keep serving the old config  # noqa: BLE001
            self.log.log("emerg", str(exc))
            return
        for sock in keep.values():  # listeners the new config no longer has
            sock.close()
        self.settings, self.bindings = new, bindings
        limits.commit(zones)
        switch_metrics()
        self.metrics.reconfigured()
        old_gen = self.generation
        self.generation += 1
        self._spawn(new.worker_processes)
        self._signal_workers(signal.SIGQUIT, old_gen)

    def close_listeners(self) -> None:
        for b in self.bindings:
            b.sock.close()

    def _cleanup(self) -> None:
        self.metrics.close()
        for b in self.bindings:
            b.sock.close()
            if b.listen.unix_path and os.path.exists(b.listen.unix_path):
                os.unlink(b.listen.unix_path)
        if self.settings.pid and os.path.exists(self.settings.pid):
            try:
                with open(self.settings.pid) as fh:
                    if fh.read().strip() == str(os.getpid()):
                        os.unlink(self.settings.pid)
            except OSError:
                pass
        self.log.log("notice", "exit")


def daemonize(keep_stderr: bool = False) -> None:
    """`daemon on`: detach like nginx (fork, setsid, stdio to /dev/null; stderr too unless
    an error_log writes to it)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    fd = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1) if keep_stderr else (0, 1, 2):
        os.dup2(fd, std)
