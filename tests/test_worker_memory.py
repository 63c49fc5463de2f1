"""Memory after a burst: every session object is gone once its connection closes, and what
the sessions allocated is freed (tracemalloc, so deterministic, unlike RSS)."""

from __future__ import annotations

import asyncio
import gc
import socket
import tracemalloc
import weakref

from proxy.conf.settings import AuthHttp, Listen, LogTarget, ServerSettings
from proxy.log import ErrorLog
from proxy.session import Session
from proxy.worker import ServerRuntime, release_memory

BURST = 200


def _runtime(loop, log_path) -> ServerRuntime:
    conf = ServerSettings(file="test.conf", line=1, listens=(), protocol="imap",
                          auth_http=AuthHttp("127.0.0.1:9", "127.0.0.1", "/", "127.0.0.1", 9),
                          server_name="mx.test")
    log = ErrorLog([LogTarget("file", "info", str(log_path))], hostname="h")
    return ServerRuntime(conf, Listen("127.0.0.1:1143", "127.0.0.1", 1143), log, loop)


async def _burst(rt: ServerRuntime, refs: list) -> int:
    """BURST clients at once: each gets its greeting, half say LOGOUT, half just leave."""
    loop = asyncio.get_running_loop()

    def factory():
        session = Session(rt)
        refs.append(weakref.ref(session))
        return session

    clients = []
    for _ in range(BURST):
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        await loop.connect_accepted_socket(factory, theirs)
        clients.append(ours)
    for c in clients:
        assert (await loop.sock_recv(c, 4096)).startswith(b"* OK")
    open_now = len(rt.sessions)
    for i, c in enumerate(clients):
        if i % 2:
            await loop.sock_sendall(c, b"a1 LOGOUT\r\n")
            while await loop.sock_recv(c, 4096):
                pass
        c.close()
    async with asyncio.timeout(10):
        while rt.sessions:
            await asyncio.sleep(0.01)
    return open_now


def _proxy_bytes(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes still allocated by the product's code (any frame in proxy/)."""
    only = snapshot.filter_traces([tracemalloc.Filter(True, "*/proxy/*", all_frames=True)])
    return sum(stat.size for stat in only.statistics("filename"))


def test_a_burst_of_sessions_leaves_nothing_behind(tmp_path):
    refs: list = []

    async def main():
        rt = _runtime(asyncio.get_running_loop(), tmp_path / "error.log")
        await _burst(rt, [])  # first imports, caches and loop structures out of the count
        release_memory(rt.sessions)
        before = _proxy_bytes(tracemalloc.take_snapshot())
        opened = await _burst(rt, refs)
        peak = tracemalloc.get_traced_memory()[1]
        release_memory(rt.sessions)
        return opened, before, _proxy_bytes(tracemalloc.take_snapshot()), peak

    tracemalloc.start(25)
    try:
        opened, before, after, peak = asyncio.run(main())
    finally:
        tracemalloc.stop()
    gc.collect()
    assert opened == BURST
    assert len(refs) == BURST
    assert [r for r in refs if r() is not None] == []
    # the burst allocated hundreds of KiB from proxy/ code; all but a few KiB is returned
    assert after - before < 16 * 1024, (before, after, peak)


def test_release_memory_collects_cycles_and_empties_the_session_set():
    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    sessions = set(range(5000))
    for n in range(5000):
        sessions.discard(n)
    size_full = sessions.__sizeof__()
    trims = []
    release_memory(sessions, trims.append)
    assert gone() is None
    assert sessions.__sizeof__() < size_full // 10
    assert trims == [0]
