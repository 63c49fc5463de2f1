"""proxy.metrics: what a session's events record, the folding of exited workers' files, and
the master's /metrics and /health, against prometheus_client's multiprocess files."""

from __future__ import annotations

import json
import os
import socket
import threading
from types import SimpleNamespace

import pytest
from postern.proxy import metrics
from postern.proxy.auth_exchange import Fail, InternalError, Proceed, Retry
from postern.proxy.conf.settings import AuthHttp, MetricsListen
from postern.proxy.phases import (
    AUTH,
    CLOSED,
    DIALOGUE,
    HANDSHAKE,
    LOGIN,
    RELAY,
    STARTTLS,
)
from postern.proxy.tls import TlsError

from tests import metrics_support
from tests.metrics_support import collect, value


@pytest.fixture
def multiprocess_dir(tmp_path, monkeypatch):
    return metrics_support.multiprocess_dir(tmp_path, monkeypatch)


def server(request, protocol="imap", max_errors=5):
    """A ServerMetrics whose listen text is unique to the test (values are per label)."""
    from postern.proxy.metrics.recorder import ServerMetrics

    conf = SimpleNamespace(protocol=protocol, max_errors=max_errors)
    return ServerMetrics(conf, SimpleNamespace(text=request.node.name))


def labels(request, **more):
    return {"server": request.node.name, "protocol": "imap", **more}


def test_off_by_default_is_null_and_imports_nothing():
    settings = SimpleNamespace(metrics_listen=None)
    assert metrics.for_server(settings, None, None) is metrics.NULL_SERVER
    session = metrics.NULL_SERVER.session()
    assert session is metrics.NULL_SESSION
    session.entered(RELAY, None)
    session.client_bytes(b"x")
    metrics.limit_hit("perip", "conn")  # nothing counts, nothing fails


def test_a_proxied_session(request, multiprocess_dir):
    srv = server(request)
    s = srv.session()
    machine = SimpleNamespace(errors=0)
    for phase in (DIALOGUE, AUTH):
        s.entered(phase, machine)
    s.auth_request()
    s.auth_reply(Proceed("127.0.0.1", 143, None, None))
    s.entered(LOGIN, machine)
    s.backend_connected()
    s.entered(RELAY, machine)
    got = collect(multiprocess_dir)
    assert value(got, "postern_sessions", **labels(request, phase="relay")) == 1
    assert value(got, "postern_sessions", **labels(request, phase="accepted")) == 0
    s.client_bytes(b"a1 NOOP\r\n")
    s.backend_bytes(b"a1 OK\r\n")
    s.backend_bytes(b"* 1 EXISTS\r\n")
    s.entered(CLOSED, None)
    got = collect(multiprocess_dir)
    assert value(got, "postern_connections_accepted_total", **labels(request)) == 1
    assert value(got, "postern_auth_requests_total", **labels(request, outcome="ok")) == 1
    assert value(got, "postern_auth_request_duration_seconds_count",
                 **labels(request, outcome="ok")) == 1
    assert value(got, "postern_backend_connect_duration_seconds_count", **labels(request)) == 1
    assert value(got, "postern_backend_login_duration_seconds_count", **labels(request)) == 1
    assert value(got, "postern_relayed_bytes_total",
                 **labels(request, direction="client_to_backend")) == 9
    assert value(got, "postern_relayed_bytes_total",
                 **labels(request, direction="backend_to_client")) == 19
    for phase in ("accepted", "dialogue", "auth", "login", "relay"):
        assert value(got, "postern_sessions", **labels(request, phase=phase)) == 0


def test_events_are_written_when_flushed(request, multiprocess_dir):
    """An event only adds to a delta in memory; the worker writes them once a second."""
    from postern.proxy.metrics import recorder
    from prometheus_client.multiprocess import MultiProcessCollector

    s = server(request).session()
    s.backend_bytes(b"x" * 1000)
    s.backend_bytes(b"x" * 24)

    def written():
        samples = [x for family in MultiProcessCollector(None, multiprocess_dir).collect()
                   for x in family.samples]
        return value(samples, "postern_relayed_bytes_total",
                     **labels(request, direction="backend_to_client"))

    assert written() == 0
    recorder.PENDING.flush()
    assert written() == 1024
    assert recorder.PENDING.deltas == {}


@pytest.mark.parametrize("decision,outcome", [
    (Proceed("127.0.0.1", 143, None, None), "ok"), (Fail(b"NO", b"x", 0, False), "failed"),
    (Retry(1.0), "wait"), (InternalError("x"), "internal_error"),
])
def test_auth_outcomes(request, multiprocess_dir, decision, outcome):
    s = server(request).session()
    s.auth_request()
    s.auth_reply(decision)
    got = collect(multiprocess_dir)
    assert value(got, "postern_auth_requests_total", **labels(request, outcome=outcome)) == 1
    others = {"ok", "failed", "wait", "internal_error"} - {outcome}
    assert all(value(got, "postern_auth_requests_total", **labels(request, outcome=o)) == 0
               for o in others)


def test_backend_failures_by_stage(request, multiprocess_dir):
    s = server(request).session()
    for stage in ("connect", "login", "login", "timeout"):
        s.backend_failed(stage)
    got = collect(multiprocess_dir)
    assert value(got, "postern_backend_failures_total", **labels(request, stage="login")) == 2
    assert value(got, "postern_backend_failures_total", **labels(request, stage="connect")) == 1


def test_tls_handshakes_and_failures_by_reason(request, multiprocess_dir):
    srv = server(request)
    ok = srv.session()
    ok.entered(HANDSHAKE, None)
    ok.entered(DIALOGUE, None)
    ok.entered(STARTTLS, None)  # a second handshake would not happen; the count is per phase
    ok.entered(DIALOGUE, None)
    bad = srv.session()
    bad.entered(HANDSHAKE, None)
    bad.tls_failed(TlsError("wrong version number"))
    bad.tls_failed("timeout")  # the first reason stays
    bad.entered(CLOSED, None)
    gone = srv.session()
    gone.entered(DIALOGUE, None)
    gone.tls_failed("not in a handshake")  # ignored
    gone.entered(STARTTLS, None)
    gone.entered(CLOSED, None)
    got = collect(multiprocess_dir)
    assert value(got, "postern_tls_handshakes_total", **labels(request, mode="implicit")) == 1
    assert value(got, "postern_tls_handshakes_total", **labels(request, mode="starttls")) == 1
    assert value(got, "postern_tls_handshake_failures_total",
                 **labels(request, mode="implicit", reason="wrong version number")) == 1
    assert value(got, "postern_tls_handshake_failures_total",
                 **labels(request, mode="starttls", reason="closed")) == 1


def test_protocol_errors_and_max_errors_closes(request, multiprocess_dir):
    srv = server(request, max_errors=3)
    machine = SimpleNamespace(errors=0)
    s = srv.session()
    s.entered(DIALOGUE, machine)
    machine.errors = 2
    s.entered(AUTH, machine)
    s.entered(DIALOGUE, machine)  # auth failed, the dialogue goes on
    machine.errors = 3
    s.entered(CLOSED, machine)
    quiet = srv.session()
    quiet.entered(DIALOGUE, SimpleNamespace(errors=1))
    quiet.entered(CLOSED, SimpleNamespace(errors=1))
    got = collect(multiprocess_dir)
    assert value(got, "postern_protocol_errors_total", **labels(request)) == 4
    assert value(got, "postern_max_errors_closes_total", **labels(request)) == 1


def test_entering_a_phase_twice_counts_once(request, multiprocess_dir):
    s = server(request).session()
    s.entered(CLOSED, None)
    s.entered(CLOSED, None)  # a crash while closing reports the close again
    got = collect(multiprocess_dir)
    assert value(got, "postern_sessions", **labels(request, phase="accepted")) == 0


def test_refusals_and_limit_hits(request, multiprocess_dir):
    srv = server(request)
    srv.refused("worker_connections")
    metrics.for_server(SimpleNamespace(metrics_listen=True), SimpleNamespace(
        protocol="imap", max_errors=5), SimpleNamespace(text=request.node.name))
    metrics.limit_hit(request.node.name, "conn")
    metrics.limit_hit(request.node.name, "conn")
    metrics.limit_hit(request.node.name, "req")
    got = collect(multiprocess_dir)
    assert value(got, "postern_connections_refused_total",
                 **labels(request, reason="worker_connections")) == 1
    assert value(got, "postern_limit_hits_total", zone=request.node.name, kind="conn") == 2
    assert value(got, "postern_limit_hits_total", zone=request.node.name, kind="req") == 1


def test_an_exited_workers_counts_are_kept_and_its_files_folded(request, multiprocess_dir):
    from postern.proxy.metrics import store
    from postern.proxy.metrics.recorder import PENDING

    srv = server(request)
    s = srv.session()  # one session of this process, still open
    s.entered(DIALOGUE, None)
    PENDING.flush()  # as in the master, nothing is pending at the fork
    pid = os.fork()
    if pid == 0:  # a worker: one session, then exit
        try:
            srv.session().entered(CLOSED, None)
            srv.session()  # left open: the gauge goes with the worker
            PENDING.flush()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    before = collect(multiprocess_dir)
    assert value(before, "postern_connections_accepted_total", **labels(request)) == 3
    assert value(before, "postern_sessions", **labels(request, phase="accepted")) == 1
    store.retire(multiprocess_dir, pid)
    store.retire(multiprocess_dir, pid)  # a second report of the same exit changes nothing
    names = sorted(os.path.basename(p) for p in store.files(multiprocess_dir))
    assert not [n for n in names if str(pid) in n], names
    assert "counter_retired.db" in names
    after = collect(multiprocess_dir)
    assert value(after, "postern_connections_accepted_total", **labels(request)) == 3
    assert value(after, "postern_sessions", **labels(request, phase="accepted")) == 0
    assert value(after, "postern_sessions", **labels(request, phase="dialogue")) == 1


# --- the master's endpoint ----------------------------------------------------------------

def _get(exporter, path, method="GET"):
    replies = []
    body = b"".join(exporter.app({"PATH_INFO": path, "REQUEST_METHOD": method},
                                 lambda status, headers: replies.append((status, headers))))
    status, headers = replies[0]
    return int(status.split()[0]), dict(headers), body


@pytest.fixture
def listening():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock.getsockname()
    sock.close()


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def _exporter(multiprocess_dir, workers, auth_ports):
    from postern.proxy.metrics import exporter as module

    module._import_client()
    exporter = module.Exporter()
    exporter.path = multiprocess_dir
    exporter.workers = lambda: workers
    exporter.auth_servers = tuple(AuthHttp(f"127.0.0.1:{p}", "127.0.0.1", "/", "127.0.0.1", p)
                                  for p in auth_ports)
    return exporter


def test_metrics_page(request, multiprocess_dir):
    server(request).session()
    metrics_support.flush()
    status, headers, body = _get(_exporter(multiprocess_dir, (1, 1), ()), "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    line = (f'postern_connections_accepted_total{{protocol="imap",server="{request.node.name}"}}'
            " 1.0")
    assert line in body.decode().splitlines()


def test_health_is_ok_with_every_worker_and_auth_server(multiprocess_dir, listening):
    status, _, body = _get(_exporter(multiprocess_dir, (2, 2), (listening[1],)), "/health")
    assert status == 200
    assert json.loads(body) == {"status": "ok", "workers": {"running": 2, "expected": 2},
                                "auth_http": {f"127.0.0.1:{listening[1]}": "up"}}


@pytest.mark.parametrize("workers,auth_up,down", [
    ((1, 2), True, None), ((2, 2), False, "down"), ((0, 0), True, None)])
def test_health_fails_without_a_worker_or_the_auth_server(multiprocess_dir, listening,
                                                          workers, auth_up, down):
    port = listening[1] if auth_up else _closed_port()
    status, _, body = _get(_exporter(multiprocess_dir, workers, (port,)), "/health")
    report = json.loads(body)
    assert status == 503 and report["status"] == "fail"
    assert report["auth_http"][f"127.0.0.1:{port}"] == (down or "up")


def test_other_paths_and_methods(multiprocess_dir):
    exporter = _exporter(multiprocess_dir, (1, 1), ())
    assert _get(exporter, "/")[0] == 404
    assert _get(exporter, "/metrics", "POST")[0] == 405
    status, headers, body = _get(exporter, "/health", "HEAD")
    assert (status, body) == (200, b"") and int(headers["Content-Length"]) > 20


def test_served_over_http_on_the_bound_socket(multiprocess_dir):
    """The master's path: bind (as at start), serve from a thread, stop on close."""
    import urllib.request

    from postern.proxy.master import BindError
    from postern.proxy.metrics.exporter import Exporter

    exporter = Exporter()
    settings = SimpleNamespace(metrics_listen=MetricsListen("127.0.0.1:0", "127.0.0.1", 0),
                               servers=())
    exporter.configure(settings)()
    try:
        exporter.start(lambda: (1, 1))
        port = exporter.sock.getsockname()[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as reply:
            assert reply.status == 200
        taken = MetricsListen(f"127.0.0.1:{port}", "127.0.0.1", port)
        with pytest.raises(BindError, match=rf"bind\(\) to 127.0.0.1:{port} failed \(98: "):
            exporter.configure(SimpleNamespace(metrics_listen=taken, servers=()))
    finally:
        exporter.close()
    assert not any(t.name == "metrics" and t.is_alive() for t in threading.enumerate())
    assert exporter.path is None


# --- the example dashboard ----------------------------------------------------------------

def test_the_dashboard_queries_only_metrics_that_exist():
    import re
    from pathlib import Path

    from postern.proxy.metrics import families

    exposed = set()
    from prometheus_client.metrics import MetricWrapperBase

    for metric in vars(families).values():
        kind = metric._type if isinstance(metric, MetricWrapperBase) else None
        if kind == "counter":
            exposed.add(f"{metric._name}_total")
        elif kind == "histogram":
            exposed.update(f"{metric._name}_{s}" for s in ("bucket", "sum", "count"))
        elif kind == "gauge":
            exposed.add(metric._name)
    dashboard = json.loads((Path(__file__).parents[1] / "examples" / "grafana" /
                            "postern-dashboard.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"\bpostern_[a-z_]+", target["expr"])}
    assert len(used) >= 12 and used <= exposed, used - exposed


def test_histograms_written_in_batches_read_as_prometheus_clients_own(request,
                                                                      multiprocess_dir):
    """recorder._Histogram adds to prometheus_client's bucket and sum values itself: the
    exposition must be the one its observe() gives for the same values."""
    from postern.proxy.metrics import families
    from postern.proxy.metrics.recorder import _Histogram

    ours = _Histogram(families.BACKEND_LOGIN_SECONDS.labels("ours", request.node.name))
    theirs = families.BACKEND_LOGIN_SECONDS.labels("theirs", request.node.name)
    for seconds in (0.0001, 0.0005, 0.003, 0.0031, 1.0, 59.9, 60.0, 61.0, 1e6):
        ours.observe(seconds)
        theirs.observe(seconds)
    got = collect(multiprocess_dir)

    def series(server):
        return sorted((s.name, s.labels.get("le"), s.value) for s in got
                      if s.labels.get("server") == server
                      and s.labels.get("protocol") == request.node.name)

    assert series("ours") == series("theirs")
    assert ("postern_backend_login_duration_seconds_count", None, 9.0) in series("ours")


def test_an_address_in_use_stops_the_start_with_emerg(tmp_path):
    """As for a mail listener: `[emerg] bind() to ... failed (98: ...)`, exit status 1."""
    import subprocess
    import sys

    with socket.socket() as taken, socket.socket() as free:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        free.bind(("127.0.0.1", 0))
        busy, mail_port = taken.getsockname()[1], free.getsockname()[1]
        free.close()
        conf = tmp_path / "postern.conf"
        conf.write_text(f"daemon off; pid {tmp_path}/p.pid; events {{}}\n"
                        "mail { auth_http 127.0.0.1:9/a; "
                        f"metrics_listen 127.0.0.1:{busy}; "
                        f"server {{ listen 127.0.0.1:{mail_port}; protocol imap; }} }}\n")
        done = subprocess.run([sys.executable, "-m", "postern", "-p", f"{tmp_path}/",
                               "-c", str(conf)], capture_output=True, text=True, timeout=30,
                              check=False)
    assert done.returncode == 1
    assert done.stderr == f"postern: [emerg] bind() to 127.0.0.1:{busy} failed " \
                          "(98: Address already in use)\n"
