"""Where the workers' values live: prometheus_client's multiprocess files.

The master creates the directory before it forks; each worker writes its own files
(`counter_<pid>.db`, `histogram_<pid>.db`, `gauge_livesum_<pid>.db`). When a worker exits,
its gauges are dropped (its sessions are gone) and its counters and histograms are added
into `counter_retired.db` / `histogram_retired.db`, so that a reload keeps every count and the
number of files stays that of the live workers.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile

ENV = "PROMETHEUS_MULTIPROC_DIR"
RETIRED = "retired"  # in place of a pid in the name of the folded files
FOLDED_TYPES = ("counter", "histogram")


def create_directory() -> str:
    """A fresh private directory, named in the environment the workers inherit."""
    path = tempfile.mkdtemp(prefix="postern-metrics-")
    os.environ[ENV] = path
    return path


def remove_directory(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if os.environ.get(ENV) == path:
        del os.environ[ENV]


def use_multiprocess_values() -> None:
    """prometheus_client picks its value class from the environment when first imported;
    a process that imported it earlier (a test run) is switched here."""
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()


def retire(path: str, pid: int) -> None:
    """Fold an exited worker's counters and histograms into the retired files and drop its
    live gauges. The caller keeps scrapes out meanwhile (a scrape between the fold and the
    removal would count the worker twice)."""
    from prometheus_client import multiprocess
    from prometheus_client.mmap_dict import MmapedDict

    for typ in FOLDED_TYPES:
        source = os.path.join(path, f"{typ}_{pid}.db")
        if not os.path.exists(source):
            continue
        folded = MmapedDict(os.path.join(path, f"{typ}_{RETIRED}.db"))
        try:
            for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(source):
                if value:
                    total, _ = folded.read_value(key)
                    folded.write_value(key, total + value, 0.0)
        finally:
            folded.close()
        os.unlink(source)
    multiprocess.mark_process_dead(pid, path)


def files(path: str) -> list[str]:
    return sorted(glob.glob(os.path.join(path, "*.db")))
