"""The three kinds of zone and their algorithms, over a SharedTable, with the clock passed in.

Every method takes the lock for its whole read-modify-write, so the limits are exact across
workers (AuthZone.blocked skips it when the table is empty: no key can be blocked). The
`*_digest` methods take the key's digest, which a session computes once per key. Times are seconds of a clock every process shares (the driver passes
time.monotonic(), which is system-wide on Linux; the tests pass a fake one).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .store import SharedTable, digest


class Outcome(Enum):
    OK = "ok"
    LIMITED = "limited"
    NO_MEMORY = "no memory"  # nginx's "could not allocate node": refused too


class ConnZone:
    """limit_conn_zone: concurrent sessions per key. Each worker counts its own sessions in
    an entry of its own (slot pid = the worker's pid) and the limit applies to their sum, so
    the master can drop a dead worker's entries (reclaim) without touching the others'."""

    def __init__(self, table: SharedTable) -> None:
        self.table = table

    def acquire(self, key: bytes, limit: int, pid: int) -> Outcome:
        return self.acquire_digest(digest(key), limit, pid)

    def acquire_digest(self, dig: bytes, limit: int, pid: int) -> Outcome:
        t = self.table
        t.lock()
        try:
            own, total = None, 0
            for index, owner, count, _, _ in t.find(dig):
                total += int(count)
                if owner == pid:
                    own = (index, count)
            if total >= limit:
                return Outcome.LIMITED
            if own is not None:
                t.write(own[0], pid, dig, own[1] + 1, 0.0, 0.0)
            elif t.insert(dig, pid, 1.0, 0.0, 0.0) is None:
                return Outcome.NO_MEMORY
            return Outcome.OK
        finally:
            t.unlock()

    def release(self, key: bytes, pid: int) -> None:
        self.release_digest(digest(key), pid)

    def release_digest(self, dig: bytes, pid: int) -> None:
        t = self.table
        t.lock()
        try:
            for index, owner, count, _, _ in t.find(dig):
                if owner == pid:
                    if count > 1:
                        t.write(index, pid, dig, count - 1, 0.0, 0.0)
                    else:
                        t.delete(index)
                    return
        finally:
            t.unlock()

    def count(self, key: bytes) -> int:
        with self.table.locked():
            return sum(int(count) for _, _, count, _, _ in self.table.find(digest(key)))

    def reclaim(self, pid: int) -> int:
        """Forget the sessions of a process that is gone; the number of entries dropped."""
        with self.table.locked():
            return self.table.sweep(lambda owner, a, b, c: owner == pid)


@dataclass(frozen=True)
class ReqResult:
    outcome: Outcome
    excess: float = 0.0  # requests over the rate, as nginx logs it
    delay: float = 0.0  # seconds to wait before going on (burst without nodelay)


class ReqZone:
    """limit_req_zone: nginx's leaky bucket (ngx_http_limit_req_lookup). An entry keeps
    the excess (requests above the rate, leaking at `rate` per second) and the time of the
    last accepted request; a request that would take the excess past `burst` is refused."""

    def __init__(self, table: SharedTable) -> None:
        self.table = table

    def request(self, key: bytes, now: float, rate: float, burst: int,
                delay: float) -> ReqResult:
        """`delay`: the excess served without waiting (0 by default, burst for nodelay)."""
        return self.request_digest(digest(key), now, rate, burst, delay)

    def request_digest(self, dig: bytes, now: float, rate: float, burst: int,
                       delay: float) -> ReqResult:
        t = self.table
        t.lock()
        try:
            found = t.first(dig)
            if found is not None:
                index, prev, last, _ = found
                elapsed = max(0.0, now - last)  # a clock step back counts as no time
                excess = max(0.0, prev - rate * elapsed + 1)
                if excess > burst:
                    return ReqResult(Outcome.LIMITED, excess)
                t.write(index, 0, dig, excess, now, 0.0)
                if excess <= delay:
                    return ReqResult(Outcome.OK, excess) if excess else ACCEPTED
                return ReqResult(Outcome.OK, excess, (excess - delay) / rate)
            if t.insert(dig, 0, 0.0, now, 0.0) is None:
                # as ngx_http_limit_req_expire(): drop what has leaked away, then retry
                t.sweep(lambda pid, ex, last, c: ex - rate * (now - last) <= 0)
                if t.insert(dig, 0, 0.0, now, 0.0) is None:
                    return ReqResult(Outcome.NO_MEMORY)
            return ACCEPTED
        finally:
            t.unlock()


ACCEPTED = ReqResult(Outcome.OK)


class AuthZone:
    """limit_auth_zone: authentication failures per key in a fixed window that opens with
    the first failure. The `failures`th failure inside the window blocks the key for
    `block` seconds; the count starts again afterwards. An entry keeps the window's start,
    the failures in it and the end of the block."""

    def __init__(self, table: SharedTable) -> None:
        self.table = table

    def blocked(self, key: bytes, now: float) -> float:
        """Seconds the key stays blocked (0: not blocked)."""
        return self.blocked_digest(digest(key), now)

    def blocked_digest(self, dig: bytes, now: float) -> float:
        t = self.table
        if t.is_empty():  # no failure counted anywhere: nothing to look up
            return 0.0
        t.lock()
        try:
            found = t.first(dig)
        finally:
            t.unlock()
        return 0.0 if found is None else max(0.0, found[3] - now)

    def failed(self, key: bytes, now: float, failures: int, window: float,
               block: float) -> Outcome | bool:
        """Count one failure: True when it starts a block, False when not, NO_MEMORY when
        the zone has no room to count it."""
        return self.failed_digest(digest(key), now, failures, window, block)

    def failed_digest(self, dig: bytes, now: float, failures: int, window: float,
                      block: float) -> Outcome | bool:
        t = self.table
        with t.locked():  # not a hot path: only a failed login gets here
            for index, _, start, count, until in t.find(dig):
                if now - start >= window:
                    start, count = now, 0.0
                count += 1
                if count >= failures:
                    t.write(index, 0, dig, now, 0.0, now + block)
                    return True
                t.write(index, 0, dig, start, count, until)
                return False
            if failures <= 1:
                entry = (now, 0.0, now + block)
            else:
                entry = (now, 1.0, 0.0)
            if t.insert(dig, 0, *entry) is None:
                t.sweep(lambda pid, start, count, until: now >= until and now - start >= window)
                if t.insert(dig, 0, *entry) is None:
                    return Outcome.NO_MEMORY
            return failures <= 1

    def failures(self, key: bytes, now: float, window: float) -> int:
        with self.table.locked():
            for _, _, start, count, _ in self.table.find(digest(key)):
                return 0 if now - start >= window else int(count)
        return 0
