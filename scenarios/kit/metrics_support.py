"""What the metrics scenarios share: a `metrics_listen` port for a proxy's configuration,
its /metrics page read back as samples, and waits for a count to arrive."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from postern.scenarios.kit.real.common import free_port

WHY = "metrics_listen: nginx's mail module has no metrics"


def metrics_directive() -> tuple[str, int]:
    """`metrics_listen` on a free loopback port: (the directive, the port)."""
    port = free_port()
    return f"metrics_listen 127.0.0.1:{port};", port


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of one GET, error statuses included."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def exposition(port: int) -> str:
    status, body = get(port, "/metrics")
    assert status == 200, (status, body)
    return body.decode()


def samples(port: int) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics: (name, its labels) -> value, parsed by prometheus_client."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(exposition(port))
            for s in family.samples}


def value(port: int, name: str, **labels) -> float:
    """The sum of the samples named `name` whose labels include `labels` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples(port).items() if n == name and wanted <= ls)


def wait_value(port: int, name: str, expected: float, timeout: float = 5.0, **labels) -> None:
    """Counts are written as the sessions end, a moment after the client sees the end."""
    deadline = time.monotonic() + timeout
    while (got := value(port, name, **labels)) != expected:
        assert time.monotonic() < deadline, f"{name}{labels} is {got}, not {expected}"
        time.sleep(0.05)


def health(port: int) -> tuple[int, dict]:
    status, body = get(port, "/health")
    return status, json.loads(body)
