"""What the tests of the fake upstreams share: a raw line client for byte-exact assertions,
the event loops every fake is run on, and a fake started from its command line."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from postern.fakes.auth import MockAuthServer, User
from postern.fakes.imap import FakeImapServer

ROOT = Path(__file__).resolve().parents[1]

# Every fake is tested on both event loops: @pytest.fixture(**LOOPS), request.param is
# use_uvloop.
LOOPS = {"params": [True, False], "ids": ["uvloop", "asyncio"]}


class RawClient:
    """A line-oriented raw client for byte-exact assertions; each protocol's test module
    adds its way of reading a whole reply."""

    def __init__(self, srv, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((srv.host, srv.port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.file.readline()

    def read(self, n: int) -> bytes:
        return self.file.read(n)

    def eof(self) -> bool:
        return self.file.read(1) == b""

    def silent(self, seconds: float = 0.3) -> bool:
        """True when nothing (not even EOF) arrives within ``seconds``."""
        self.sock.settimeout(seconds)
        try:
            self.sock.recv(1)
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(5)
        return False

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class CliRun:
    """A fake started as `python -m <module> --listen 127.0.0.1:0 ...`: its port, and once
    it has been stopped, what it wrote."""

    port: int = 0
    output: bytes = b""


@contextmanager
def cli_fake(protocol: str, *args: str) -> Iterator[CliRun]:
    """Run `postern.fakes.<protocol>` from its command line; on leaving, terminate it and
    check that it stopped cleanly and never wrote the test password `secret`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", f"postern.fakes.{protocol}", "--listen", "127.0.0.1:0", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    run = CliRun()
    try:
        banner = proc.stdout.readline().decode()
        assert banner.startswith(f"{protocol} listening on 127.0.0.1:"), banner
        run.port = int(banner.rsplit(":", 1)[1])
        yield run
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    run.output = out + err
    assert proc.returncode == 0 and b"secret" not in run.output


def stalls(client: RawClient, command: bytes, srv, commands: int) -> None:
    """After `command` (the `commands`th the fake has seen) the fake records it and answers
    nothing; closes the client."""
    client.send(command)
    srv.wait_commands(commands)
    assert client.silent()
    client.close()


def exchange(client: RawClient, exchanges) -> None:
    """Send each line of `exchanges` ((line sent, reply line expected)) and check its reply."""
    for line, reply in exchanges:
        client.send(line)
        assert client.line() == reply


def answers_then_closes(client: RawClient, greeting: bytes, exchanges) -> None:
    """The fake greets (a line starting with `greeting`), answers each (line sent, reply
    expected) of `exchanges`, then closes (Faults(drop_after=len(exchanges))); closes the
    client."""
    assert client.line().startswith(greeting)
    exchange(client, exchanges)
    assert client.eof()
    client.close()


def stall_and_stall_after(srv, client_class, login, command: bytes, login_commands: int) -> None:
    """`faults.stall` silences the fake from the next command on; `faults.stall_after = n`
    silences a new session after its nth command (here: once logged in, `login_commands`)."""
    client = client_class(srv)
    login(client)
    srv.faults.stall = True
    stalls(client, command, srv, login_commands + 1)
    srv.faults.stall, srv.faults.stall_after = False, login_commands
    client = client_class(srv)
    login(client)
    stalls(client, command, srv, 2 * login_commands + 2)


def in_running_loop(srv, request: bytes, commands: int) -> tuple[bytes, bytes]:
    """Start `srv` with await inside asyncio.run, send `request` after its greeting and read
    until it closes; (the greeting line, everything after it)."""
    async def session() -> tuple[bytes, bytes]:
        await srv.start()
        try:
            reader, writer = await asyncio.open_connection(srv.host, srv.port)
            greeting = await reader.readline()
            writer.write(request)
            reply = await reader.read()
            writer.close()
            await srv.async_wait_commands(commands)
            return greeting, reply
        finally:
            await srv.stop()

    return asyncio.run(session())


def ask(auth, data: bytes, timeout: float = 10.0) -> bytes:
    """Send `data` to a mock auth server and read its answer up to its close."""
    with socket.create_connection((auth.host, auth.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@contextmanager
def alice_on_fake_imap() -> Iterator[MockAuthServer]:
    """A mock auth server that sends alice (password secret) to a fake IMAP backend."""
    with FakeImapServer({"alice": "secret"}) as imap, \
            MockAuthServer({"alice": User("secret", backends={"imap": ("127.0.0.1", imap.port)})}
                           ) as auth:
        yield auth
