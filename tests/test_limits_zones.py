"""proxy.limits: the shared table, the three zone algorithms (with a fake clock) and their
exactness across forked processes."""

from __future__ import annotations

import math
import os
import random

import pytest
from postern.proxy.limits.store import HEADER_SIZE, SLOT, SharedTable, digest
from postern.proxy.limits.zones import AuthZone, ConnZone, Outcome, ReqZone

SMALL = HEADER_SIZE + 16 * SLOT.size  # 16 slots, 12 entries at most


@pytest.fixture
def table():
    t = SharedTable(64 * 1024)
    yield t
    t.close()


# -- the table -------------------------------------------------------------------------
def test_table_capacity_is_three_quarters_of_its_slots():
    t = SharedTable(SMALL)
    assert (t.slots, t.capacity) == (16, 12)
    with t.locked():
        for n in range(12):
            assert t.insert(digest(b"%d" % n), 0, n, 0, 0) is not None
        assert t.insert(digest(b"more"), 0, 0, 0, 0) is None
    t.close()


def test_table_deletes_keep_every_entry_findable():
    """Backward-shift deletion in a crowded table: random inserts and deletes against a
    dict, every key still found with its value."""
    t = SharedTable(SMALL)
    rnd = random.Random(7)
    model: dict[bytes, float] = {}
    with t.locked():
        for step in range(2000):
            key = digest(b"%d" % rnd.randrange(30))
            found = list(t.find(key))
            if found:
                t.delete(found[0][0])
                del model[key]
            elif t.insert(key, 0, float(step), 0, 0) is not None:
                model[key] = float(step)
            assert t.used == len(model)
            for k, v in model.items():
                assert [a for _, _, a, _, _ in t.find(k)] == [v]
    t.close()


def test_table_sweep_drops_matching_entries(table):
    with table.locked():
        for n in range(10):
            table.insert(digest(b"%d" % n), n % 2, n, 0, 0)
        assert table.sweep(lambda pid, a, b, c: pid == 1) == 5
        assert sorted(a for *_, a, _, _ in table.entries()) == [0, 2, 4, 6, 8]


# -- limit_conn ------------------------------------------------------------------------
def test_conn_counts_up_to_the_limit_and_down_on_release(table):
    zone = ConnZone(table)
    assert [zone.acquire(b"k", 2, 100) for _ in range(3)] == [Outcome.OK, Outcome.OK,
                                                              Outcome.LIMITED]
    assert zone.acquire(b"other", 2, 100) is Outcome.OK
    zone.release(b"k", 100)
    assert zone.count(b"k") == 1
    assert zone.acquire(b"k", 2, 100) is Outcome.OK
    zone.release(b"k", 100)
    zone.release(b"k", 100)
    assert zone.count(b"k") == 0
    assert table.used == 1  # an entry at zero is gone


def test_conn_sums_every_process_and_reclaims_a_dead_one(table):
    zone = ConnZone(table)
    assert zone.acquire(b"k", 3, 101) is Outcome.OK
    assert zone.acquire(b"k", 3, 102) is Outcome.OK
    assert zone.acquire(b"k", 3, 102) is Outcome.OK
    assert zone.acquire(b"k", 3, 101) is Outcome.LIMITED
    assert zone.reclaim(102) == 1
    assert zone.count(b"k") == 1
    assert zone.acquire(b"k", 3, 101) is Outcome.OK


def test_conn_memory_full_refuses():
    zone = ConnZone(SharedTable(SMALL))
    for n in range(12):
        assert zone.acquire(b"%d" % n, 1, 1) is Outcome.OK
    assert zone.acquire(b"one more", 1, 1) is Outcome.NO_MEMORY


def test_conn_is_exact_across_forked_processes(table):
    """Eight processes race for 5 places, 50 times each; the zone never grants more than 5
    at once, and all is given back at the end."""
    zone = ConnZone(table)
    limit, procs = 5, 8
    peak = SharedTable(64 * 1024)  # the most ever held, kept by the winners themselves
    pids = []
    for _ in range(procs):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                me = os.getpid()
                for _ in range(50):
                    if zone.acquire(b"k", limit, me) is Outcome.OK:
                        held = zone.count(b"k")
                        if held > limit:
                            code = 1
                        with peak.locked():
                            found = list(peak.find(digest(b"peak")))
                            if not found:
                                peak.insert(digest(b"peak"), 0, held, 0, 0)
                            elif found[0][2] < held:
                                peak.write(found[0][0], 0, digest(b"peak"), held, 0, 0)
                        zone.release(b"k", me)
            except BaseException:  # noqa: BLE001 - reported through the exit code
                code = 2
            os._exit(code)
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]
    assert codes == [0] * procs
    assert zone.count(b"k") == 0
    with peak.locked():
        assert 1 <= next(iter(peak.find(digest(b"peak"))))[2] <= limit
    peak.close()


def test_conn_dead_process_reclaimed(table):
    """A process that dies holding places (never releasing) is reclaimed by its pid."""
    zone = ConnZone(table)
    pid = os.fork()
    if pid == 0:
        zone.acquire(b"k", 3, os.getpid())
        zone.acquire(b"k", 3, os.getpid())
        os._exit(0)
    os.waitpid(pid, 0)
    assert zone.count(b"k") == 2
    zone.reclaim(pid)
    assert zone.count(b"k") == 0


# -- limit_req -------------------------------------------------------------------------
def test_req_rate_without_burst(table):
    zone = ReqZone(table)
    assert zone.request(b"k", 100.0, 2.0, 0, 0).outcome is Outcome.OK
    r = zone.request(b"k", 100.1, 2.0, 0, 0)  # 0.2 leaked, excess 0.8 > burst 0
    assert r.outcome is Outcome.LIMITED and r.excess == pytest.approx(0.8)
    assert zone.request(b"k", 100.5, 2.0, 0, 0).outcome is Outcome.OK  # a refusal costs nothing
    assert zone.request(b"other", 100.5, 2.0, 0, 0).outcome is Outcome.OK


def test_req_burst_delays_then_refuses(table):
    """nginx: the excess up to burst waits (excess / rate seconds), beyond it is refused."""
    zone = ReqZone(table)
    results = [zone.request(b"k", 10.0, 1.0, 2, 0) for _ in range(4)]
    assert [r.outcome for r in results] == [Outcome.OK, Outcome.OK, Outcome.OK,
                                            Outcome.LIMITED]
    assert [r.delay for r in results[:3]] == [0.0, 1.0, 2.0]
    later = zone.request(b"k", 12.0, 1.0, 2, 0)  # two requests leaked away
    assert later.outcome is Outcome.OK and later.delay == pytest.approx(1.0)


def test_req_nodelay_and_delay_parameter(table):
    zone = ReqZone(table)
    assert [zone.request(b"n", 0.0, 1.0, 2, math.inf).delay for _ in range(3)] == [0, 0, 0]
    assert [zone.request(b"d", 0.0, 1.0, 3, 1).delay for _ in range(4)] == [0, 0, 1, 2]


def test_req_full_zone_expires_leaked_entries():
    zone = ReqZone(SharedTable(SMALL))
    for n in range(12):
        for _ in range(2):  # an excess of 1 each, which leaks away in a second
            assert zone.request(b"%d" % n, 0.0, 1.0, 5, 0).outcome is Outcome.OK
    assert zone.request(b"new", 0.5, 1.0, 5, 0).outcome is Outcome.NO_MEMORY
    assert zone.request(b"new", 1.0, 1.0, 5, 0).outcome is Outcome.OK
    assert zone.request(b"0", 1.0, 1.0, 5, 0).excess == 0  # as if new


# -- limit_auth ------------------------------------------------------------------------
def test_auth_blocks_after_failures_in_window(table):
    zone = AuthZone(table)
    assert [zone.failed(b"k", 100.0 + n, 3, 60, 300) for n in range(3)] == [False, False, True]
    assert zone.blocked(b"k", 102.0) == 300.0
    assert zone.blocked(b"k", 401.0) == pytest.approx(1.0)
    assert zone.blocked(b"k", 402.0) == 0
    assert zone.blocked(b"other", 102.0) == 0


def test_auth_window_expiry_starts_the_count_again(table):
    zone = AuthZone(table)
    zone.failed(b"k", 0.0, 3, 60, 300)
    zone.failed(b"k", 30.0, 3, 60, 300)
    assert zone.failures(b"k", 59.0, 60) == 2
    assert zone.failed(b"k", 60.0, 3, 60, 300) is False  # a new window: one failure
    assert zone.failures(b"k", 61.0, 60) == 1
    assert zone.blocked(b"k", 61.0) == 0


def test_auth_single_failure_blocks_when_failures_is_one(table):
    zone = AuthZone(table)
    assert zone.failed(b"k", 0.0, 1, 60, 10) is True
    assert zone.blocked(b"k", 5.0) == 5.0


def test_auth_full_zone_drops_expired_entries():
    zone = AuthZone(SharedTable(SMALL))
    for n in range(12):
        zone.failed(b"%d" % n, 0.0, 5, 60, 300)
    assert zone.failed(b"new", 10.0, 5, 60, 300) is Outcome.NO_MEMORY
    assert zone.failed(b"new", 60.0, 5, 60, 300) is False  # the windows are over
