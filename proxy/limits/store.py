"""A fixed-size hash table in memory shared by the master and every worker it forks.

The master creates a table before it forks, so every worker maps the same pages (as nginx's
workers map a shared zone). The table lives in an anonymous memory file (memfd; an unlinked
temporary file where there is none) mapped MAP_SHARED; the same file carries the
cross-process lock, a POSIX record lock (fcntl.lockf), which the
kernel drops when its holder dies, so a worker killed while holding it cannot wedge the
others (a multiprocessing.Lock would stay taken).

No library is used: the standard library's multiprocessing.shared_memory and Manager keep
no hash table in the shared pages, and the shared-dict packages on PyPI either need a
server process or are not kept up. This table is small: open addressing with linear
probing, 48-byte slots, backward-shift deletion (no tombstones to pile up).

A slot holds a 16-byte digest of the key, a pid (0 when the entry belongs to no process)
and three floats whose meaning is the zone's (proxy.limits.zones). Several slots may share a
digest when they differ by pid: all of them sit in the probe run that starts at the digest's
home slot, so one scan of that run finds them all.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import struct
import tempfile
from collections.abc import Callable, Iterator

HEADER = struct.Struct("<Q")  # the number of used slots
HEADER_SIZE = 64
SLOT = struct.Struct("<B3xi16sddd")  # used, pid, digest, a, b, c
SLOT_SIZE = SLOT.size
DIGEST_AT, DIGEST_END = 8, 24  # the digest's bytes in a slot
FLOATS = struct.Struct("<ddd")  # a, b, c after the digest
MAX_LOAD = 0.75  # past this, an insert fails: "memory full" (probe runs stay short)


def digest(key: bytes) -> bytes:
    return hashlib.blake2b(key, digest_size=16).digest()


class SharedTable:
    """Slots in shared memory; every method but `locked` expects the lock to be held."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._fd = _memory_file()
        os.ftruncate(self._fd, size)
        self._mem = mmap.mmap(self._fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.slots = (size - HEADER_SIZE) // SLOT.size
        self.capacity = int(self.slots * MAX_LOAD)

    def close(self) -> None:
        self._mem.close()
        os.close(self._fd)

    # The hot paths call lock() and unlock() in try/finally rather than `with locked()`:
    # a generator-based context manager costs more than the two system calls it wraps.
    def lock(self) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_EX)

    def unlock(self) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.lock()
        try:
            yield
        finally:
            self.unlock()

    # -- slots -----------------------------------------------------------------------
    @property
    def used(self) -> int:
        return HEADER.unpack_from(self._mem, 0)[0]

    def _set_used(self, n: int) -> None:
        HEADER.pack_into(self._mem, 0, n)

    def _offset(self, index: int) -> int:
        return HEADER_SIZE + index * SLOT.size

    def read(self, index: int) -> tuple[int, int, bytes, float, float, float]:
        return SLOT.unpack_from(self._mem, self._offset(index))

    def write(self, index: int, pid: int, dig: bytes, a: float, b: float, c: float) -> None:
        SLOT.pack_into(self._mem, self._offset(index), 1, pid, dig, a, b, c)

    def _clear(self, index: int) -> None:
        off = self._offset(index)
        self._mem[off:off + SLOT.size] = bytes(SLOT.size)

    def home(self, dig: bytes) -> int:
        return int.from_bytes(dig[:8], "little") % self.slots

    def is_empty(self) -> bool:
        """No entry at all; read without the lock (one aligned 8-byte word), so a caller
        may act on it only where an empty answer is as good as one taken a moment earlier."""
        return not HEADER.unpack_from(self._mem, 0)[0]

    def find(self, dig: bytes) -> Iterator[tuple[int, int, float, float, float]]:
        """(index, pid, a, b, c) of every entry with this digest."""
        mem, slots = self._mem, self.slots
        i = self.home(dig)
        for _ in range(slots):
            off = HEADER_SIZE + i * SLOT_SIZE
            if not mem[off]:
                return
            if mem[off + DIGEST_AT:off + DIGEST_END] == dig:  # unpack only what matches
                _, pid, _, a, b, c = SLOT.unpack_from(mem, off)
                yield i, pid, a, b, c
            i = (i + 1) % slots

    def first(self, dig: bytes) -> tuple[int, float, float, float] | None:
        """(index, a, b, c) of the first entry with this digest: for zones that keep one
        entry per key (pid 0), without a generator."""
        mem, slots = self._mem, self.slots
        i = self.home(dig)
        for _ in range(slots):
            off = HEADER_SIZE + i * SLOT_SIZE
            if not mem[off]:
                return None
            if mem[off + DIGEST_AT:off + DIGEST_END] == dig:
                return (i, *FLOATS.unpack_from(mem, off + DIGEST_END))
            i = (i + 1) % slots
        return None

    def insert(self, dig: bytes, pid: int, a: float, b: float, c: float) -> int | None:
        """The index of a new entry, or None when the table is full."""
        n = self.used
        if n >= self.capacity:
            return None
        i = self.home(dig)
        while self.read(i)[0]:
            i = (i + 1) % self.slots
        self.write(i, pid, dig, a, b, c)
        self._set_used(n + 1)
        return i

    def delete(self, index: int) -> None:
        """Backward-shift deletion: entries after the hole move back into it when their
        home allows, so every probe run stays unbroken."""
        hole = index
        i = (index + 1) % self.slots
        while True:
            used, pid, d, a, b, c = self.read(i)
            if not used:
                break
            home = self.home(d)
            # the entry may fill the hole unless its home lies in (hole, i] (cyclically)
            if (i - home) % self.slots >= (i - hole) % self.slots:
                self.write(hole, pid, d, a, b, c)
                hole = i
            i = (i + 1) % self.slots
        self._clear(hole)
        self._set_used(self.used - 1)

    def entries(self) -> Iterator[tuple[int, int, bytes, float, float, float]]:
        """(index, pid, digest, a, b, c) of every used slot."""
        for i in range(self.slots):
            used, pid, d, a, b, c = self.read(i)
            if used:
                yield i, pid, d, a, b, c

    def sweep(self, dead: Callable[[int, float, float, float], bool]) -> int:
        """Drop every entry for which dead(pid, a, b, c) holds, by rebuilding the table
        (rare: memory full, or a worker gone); the number dropped."""
        keep = [(pid, d, a, b, c) for _, pid, d, a, b, c in self.entries()
                if not dead(pid, a, b, c)]
        dropped = self.used - len(keep)
        if dropped:
            self._mem[HEADER_SIZE:HEADER_SIZE + self.slots * SLOT.size] = \
                bytes(self.slots * SLOT.size)
            self._set_used(0)
            for pid, d, a, b, c in keep:
                self.insert(d, pid, a, b, c)
        return dropped


def _memory_file() -> int:
    if hasattr(os, "memfd_create"):
        return os.memfd_create("postern-zone", os.MFD_CLOEXEC)
    fd, path = tempfile.mkstemp(prefix="postern-zone-")
    os.unlink(path)
    return fd
