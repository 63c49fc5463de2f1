"""The driver in-process: an unexpected exception anywhere ends the session cleanly (the
internal-error reply, one [alert] line with the traceback, the descriptor closed), and the
session invariant (relaying, timed, or closed) holds at every step."""

from __future__ import annotations

import asyncio
import socket

import pytest
from postern.proxy.conf.settings import AuthHttp, Listen, LogTarget, ServerSettings
from postern.proxy.imap.dialogue import ImapDialogue
from postern.proxy.log import ErrorLog
from postern.proxy.runtime import ServerRuntime
from postern.proxy.session import Session


def _runtime(loop, log_path, **kw) -> ServerRuntime:
    conf = ServerSettings(file="test.conf", line=1, listens=(), protocol="imap",
                          auth_http=AuthHttp("127.0.0.1:9", "127.0.0.1", "/", "127.0.0.1", 9),
                          server_name="mx.test", **kw)
    log = ErrorLog([LogTarget("file", "info", str(log_path))], hostname="h")
    return ServerRuntime(conf, Listen("127.0.0.1:1143", "127.0.0.1", 1143), log, loop)


async def _exchange(rt, send: bytes) -> tuple[bytes, list[Session]]:
    """Connect a socketpair as a client, send `send`, read until EOF (or 3 s)."""
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    sessions: list[Session] = []

    def factory():
        sessions.append(Session(rt))
        return sessions[-1]

    await loop.connect_accepted_socket(factory, theirs)
    ours.setblocking(False)
    await loop.sock_sendall(ours, send)
    got = b""
    async with asyncio.timeout(3):
        while chunk := await loop.sock_recv(ours, 4096):
            got += chunk
    ours.close()
    await asyncio.sleep(0)
    return got, sessions


@pytest.mark.parametrize("where", ["receive_data", "next_action"])
def test_a_bug_in_the_dialogue_ends_the_session(tmp_path, monkeypatch, where):
    def broken(self, *args):
        raise ValueError("boom")

    monkeypatch.setattr(ImapDialogue, where, broken)
    log_path = tmp_path / "error.log"

    async def main():
        rt = _runtime(asyncio.get_running_loop(), log_path)
        got, sessions = await _exchange(rt, b"a1 NOOP\r\n")
        return got, sessions, rt

    got, sessions, rt = asyncio.run(main())
    assert got.endswith(b"* BAD internal server error\r\n"), got
    assert sessions[0].phase == "closed" and sessions[0].invariant_violation() is None
    assert not rt.sessions
    alerts = [line for line in log_path.read_text().splitlines() if "[alert]" in line]
    assert len(alerts) == 1, alerts
    assert "unexpected ValueError: boom (traceback: " in alerts[0], alerts[0]
    assert "dialogue.py:" in alerts[0] or "session.py:" in alerts[0]


def test_a_bug_in_the_auth_task_ends_the_session(tmp_path, monkeypatch):
    """Item 1 of the robustness list: an exception while the auth request is built (a client
    certificate the header code cannot read) once left the session paused for ever."""
    def broken(self):
        raise ValueError("unparsable certificate")

    monkeypatch.setattr(Session, "_auth_request", broken)
    log_path = tmp_path / "error.log"

    async def main():
        rt = _runtime(asyncio.get_running_loop(), log_path)
        return await _exchange(rt, b"a1 LOGIN alice secret\r\n")

    got, sessions = asyncio.run(main())
    assert got == b"* OK IMAP4 ready\r\n* BAD internal server error\r\n"
    assert sessions[0].phase == "closed"
    assert "[alert]" in log_path.read_text()


def test_invariant_names_a_stranded_session(tmp_path):
    async def main():
        rt = _runtime(asyncio.get_running_loop(), tmp_path / "error.log")
        s = Session(rt)
        s.phase = "auth"
        return s.invariant_violation()

    assert asyncio.run(main()) == "phase auth with neither timer nor task"
