"""Memory after a burst: every session object is gone once its connection closes, and what
the sessions allocated is freed (tracemalloc, so deterministic, unlike RSS)."""

from __future__ import annotations

import asyncio
import gc
import socket
import tracemalloc
import weakref

import pytest
from postern.proxy.conf.settings import AuthHttp, Listen, LogTarget, ServerSettings, SslSettings
from postern.proxy.log import ErrorLog
from postern.proxy.session import Session
from postern.proxy.tls import server_tls
from postern.proxy.worker import ServerRuntime, release_memory
from postern.scenarios.kit.tls_support import client_context, make_pki

BURST = 200


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def _runtime(loop, log_path, pki=None) -> ServerRuntime:
    ssl = SslSettings(certificates=(pki.ecdsa_cert,), certificate_keys=(pki.ecdsa_key,)) \
        if pki else SslSettings()
    conf = ServerSettings(file="test.conf", line=1, listens=(), protocol="imap",
                          auth_http=AuthHttp("127.0.0.1:9", "127.0.0.1", "/", "127.0.0.1", 9),
                          server_name="mx.test", ssl=ssl)
    log = ErrorLog([LogTarget("file", "info", str(log_path))], hostname="h")
    return ServerRuntime(conf, Listen("127.0.0.1:1143", "127.0.0.1", 1143, ssl=bool(pki)), log,
                         loop, tls=server_tls(conf) if pki else None)


async def _burst(rt: ServerRuntime, refs: list, tls=None) -> int:
    """BURST clients at once (over TLS with the client context `tls`): each gets its
    greeting, half say LOGOUT, half just leave."""
    loop = asyncio.get_running_loop()

    def factory():
        session = Session(rt)
        refs.append(weakref.ref(session))
        return session

    clients = []
    for _ in range(BURST):
        ours, theirs = socket.socketpair()
        await loop.connect_accepted_socket(factory, theirs)
        clients.append(await asyncio.open_connection(
            sock=ours, ssl=tls, server_hostname="mx.test" if tls else None))
    for reader, _ in clients:
        assert (await reader.readline()).startswith(b"* OK")
    open_now = len(rt.sessions)
    for i, (reader, writer) in enumerate(clients):
        if i % 2:
            writer.write(b"a1 LOGOUT\r\n")
            await reader.read()
        writer.close()
    async with asyncio.timeout(10):
        while rt.sessions:
            await asyncio.sleep(0.01)
    return open_now


def _proxy_bytes(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes still allocated by the product's code (any frame in proxy/)."""
    only = snapshot.filter_traces([tracemalloc.Filter(True, "*/proxy/*", all_frames=True)])
    return sum(stat.size for stat in only.statistics("filename"))


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_a_burst_of_sessions_leaves_nothing_behind(tmp_path, pki, tls):
    refs: list = []
    client = client_context(pki) if tls else None

    async def main():
        rt = _runtime(asyncio.get_running_loop(), tmp_path / "error.log", pki if tls else None)
        await _burst(rt, [], client)  # imports, caches and loop structures out of the count
        release_memory(rt.sessions)
        before = _proxy_bytes(tracemalloc.take_snapshot())
        opened = await _burst(rt, refs, client)
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
