"""The master's side: the `metrics_listen` socket, `/metrics` and `/health`.

A daemon thread of the master serves HTTP (wsgiref, one thread per request): the master's
own loop only reaps and signals, and the thread reads the workers' files, never their
memory. The socket is bound before the master forks, so a bind error is an [emerg] at start
(or a refused reload), as for the mail listeners.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from postern.proxy.conf.settings import AuthHttp, MainSettings, MetricsListen
from postern.proxy.metrics import store

# /health: how long an auth_http server may take to accept a connection
AUTH_PROBE_TIMEOUT = 1.0
TEXT = "text/plain; charset=utf-8"

client = None  # prometheus_client's modules, imported once metrics are on


def _import_client():
    """Imported by the master's main thread before the HTTP thread exists: a fork while
    that thread held an import lock would leave the lock held in the worker."""
    global client
    if client is None:
        import prometheus_client
        import prometheus_client.exposition
        import prometheus_client.multiprocess

        client = prometheus_client


def bind(listen: MetricsListen) -> socket.socket:
    """The listener, or proxy.master.BindError worded as for a mail listener."""
    from postern.proxy.master import BindError  # the master imports this module

    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listen.host, listen.port))
        sock.listen(64)
    except OSError as err:
        sock.close()
        raise BindError(err, listen) from None
    return sock


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def __init__(self, sock: socket.socket, app) -> None:
        # the socket is the master's, already bound; wsgiref only accepts on it
        self.address_family = sock.family
        super().__init__(sock.getsockname()[:2], _QuietHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.server_name, self.server_port = "postern", sock.getsockname()[1]
        self.setup_environ()
        self.set_app(app)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args) -> None:
        pass  # scrapes are not worth an error-log line each


class Exporter:
    """Owns the multiprocess directory and the listener for the master's lifetime."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.listen: MetricsListen | None = None
        self.sock: socket.socket | None = None
        self.server: _Server | None = None
        self.lock = threading.Lock()  # a scrape and a worker's retirement exclude each other
        self.workers: Callable[[], tuple[int, int]] = lambda: (0, 0)
        self.auth_servers: tuple[AuthHttp, ...] = ()

    # -- the master's calls ----------------------------------------------------------------
    def configure(self, settings: MainSettings) -> Callable[[], None]:
        """Bind what `settings` asks for (raising BindError); returns the commit that
        switches over, to call once the rest of the configuration is accepted too."""
        want = settings.metrics_listen
        sock = None
        if want is not None:
            _import_client()
        if want is not None and (self.listen is None or (want.host, want.port) !=
                                 (self.listen.host, self.listen.port)):
            sock = bind(want)

        def commit() -> None:
            if want is None:
                self._stop_serving()
            elif sock is not None:
                self._stop_serving()
                self.sock = sock
            self.listen = want
            self.auth_servers = tuple({(s.auth_http.text): s.auth_http
                                       for s in settings.servers}.values())
            if want is not None and self.path is None:
                self.path = store.create_directory()
        return commit

    def start(self, workers: Callable[[], tuple[int, int]]) -> None:
        """In the master after any daemonizing fork; `workers()` is (running, expected)."""
        self.workers = workers
        self._serve()

    def reconfigured(self) -> None:
        """After a reload's commit: serve on the (possibly new) socket."""
        if self.server is None:
            self._serve()

    def in_worker(self) -> None:
        """In a freshly forked worker: the listener is the master's alone (a worker holding
        it would keep the port after the master moves or closes it)."""
        if self.sock is not None:
            self.sock.close()
        self.sock = self.server = None

    def worker_exited(self, pid: int) -> None:
        if self.path is not None:
            with self.lock:
                store.retire(self.path, pid)

    def close(self) -> None:
        self._stop_serving()
        if self.path is not None:
            store.remove_directory(self.path)
            self.path = None

    # -- serving ---------------------------------------------------------------------------
    def _serve(self) -> None:
        if self.sock is None or self.server is not None:
            return
        self.server = _Server(self.sock, self.app)
        threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True).start()

    def _stop_serving(self) -> None:
        server, sock = self.server, self.sock
        self.server = self.sock = None
        if server is not None:
            server.shutdown()
        if sock is not None:
            sock.close()

    def app(self, environ, start_response):
        reply = self._reply(environ)
        status, body, content_type = reply
        start_response(status, [("Content-Type", content_type),
                                ("Content-Length", str(len(body)))])
        # wsgiref writes whatever it is given, also for HEAD
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]

    def _reply(self, environ) -> tuple[str, bytes, str]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return "405 Method Not Allowed", b"GET or HEAD only\n", TEXT
        if path == "/metrics":
            encoder, content_type = client.exposition.choose_encoder(
                environ.get("HTTP_ACCEPT", ""))
            return "200 OK", encoder(self.registry()), content_type
        if path == "/health":
            healthy, report = self.health()
            body = json.dumps(report, sort_keys=True).encode() + b"\n"
            return ("200 OK" if healthy else "503 Service Unavailable", body,
                    "application/json")
        return "404 Not Found", b"/metrics or /health\n", TEXT

    def registry(self):
        """A registry that merges the workers' files on each collect."""
        registry = client.CollectorRegistry()
        client.multiprocess.MultiProcessCollector(registry, path=self.path)
        return _Locked(registry, self.lock)

    def health(self) -> tuple[bool, dict]:
        running, expected = self.workers()
        workers_ok = expected > 0 and running >= expected
        servers = self.auth_servers
        with ThreadPoolExecutor(max_workers=max(1, min(len(servers), 8))) as pool:
            answers = list(pool.map(_auth_answers, servers))
        auth = {a.text: "up" if ok else "down" for a, ok in zip(servers, answers)}
        healthy = workers_ok and all(answers)
        return healthy, {"status": "ok" if healthy else "fail",
                         "workers": {"running": running, "expected": expected},
                         "auth_http": auth}


class _Locked:
    """The registry, collected under the exporter's lock (see Exporter.worker_exited)."""

    def __init__(self, registry, lock: threading.Lock) -> None:
        self.registry, self.lock = registry, lock

    def collect(self):
        with self.lock:
            return list(self.registry.collect())


def _auth_answers(auth: AuthHttp) -> bool:
    """Whether the auth_http server accepts a connection (no request is sent: a probe must
    not look like a login to it)."""
    if auth.unix_path:
        family, address = socket.AF_UNIX, auth.unix_path
    elif not auth.addr:
        return False
    else:
        family = socket.AF_INET6 if ":" in (auth.addr or "") else socket.AF_INET
        address = (auth.addr, auth.port)
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(AUTH_PROBE_TIMEOUT)
            sock.connect(address)
        return True
    except OSError:
        return False

