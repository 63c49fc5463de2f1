"""Shared set-up of the metrics tests: a private multiprocess directory per test, and the
merged samples read back as the master's /metrics would."""

from __future__ import annotations


def multiprocess_dir(tmp_path, monkeypatch) -> str:
    """prometheus_client's multiprocess mode on a fresh directory: a new value class, so no
    file of an earlier test is written to."""
    from postern.proxy.metrics import store
    from prometheus_client import values

    monkeypatch.setenv(store.ENV, str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
    return str(tmp_path)


def flush() -> None:
    """Write what this process recorded (a worker does it once a second)."""
    from postern.proxy.metrics.recorder import PENDING

    PENDING.flush()


def collect(path: str) -> list:
    """What this process recorded (written first) and every other process wrote."""
    from prometheus_client.multiprocess import MultiProcessCollector

    flush()
    return [sample for family in MultiProcessCollector(None, path=path).collect()
            for sample in family.samples]


def value(samples: list, name: str, **labels) -> float:
    """The value of one sample (labels compared without `le`/`pid`); 0 when absent."""
    for sample in samples:
        if sample.name == name and sample.labels == labels:
            return sample.value
    return 0.0
