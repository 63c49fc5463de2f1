"""Run an asyncio fake either inside a running loop or on its own loop in a daemon thread.

A subclass implements ``async start()`` / ``async stop()``; this mixin adds the one-line
``with Fake(...) as fake:`` form for synchronous tests (like aiosmtpd's ``Controller``) and a
small helper to wait for recorded events from the test thread.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Self


def new_event_loop(use_uvloop: bool = True) -> asyncio.AbstractEventLoop:
    if use_uvloop:
        try:
            import uvloop
            return uvloop.new_event_loop()
        except ImportError:
            pass
    return asyncio.new_event_loop()


class BackgroundServer:
    """Mixin: ``__enter__`` starts the server on a private loop thread, ``__exit__`` stops it."""

    use_uvloop: bool = True
    _thread: threading.Thread | None = None
    _thread_loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    async def stop(self) -> None:  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    @property
    def _recorded(self) -> threading.Condition:
        cond = self.__dict__.get("_recorded_cond")
        if cond is None:
            cond = self.__dict__["_recorded_cond"] = threading.Condition()
        return cond

    def _notify_recorded(self) -> None:
        with self._recorded:
            self._recorded.notify_all()

    def _wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Block the calling (test) thread until ``predicate()`` holds."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and self._thread_loop is None:  # would block the server itself
            raise RuntimeError("the server runs in this loop: use the async wait helper")
        deadline = time.monotonic() + timeout
        with self._recorded:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
                self._recorded.wait(min(left, 0.05))

    def _append_record(self, records: list[Any], item: Any) -> None:
        with self._recorded:
            records.append(item)
            self._recorded.notify_all()

    def _wait_records(self, records: list[Any], n: int, timeout: float, what: str) -> list[Any]:
        """Block until ``records`` holds at least ``n`` items; returns a copy."""
        self._wait_for(lambda: len(records) >= n, timeout, what)
        return list(records)

    async def _async_wait_records(self, records: list[Any], n: int, timeout: float,
                                  what: str) -> list[Any]:
        await self._async_wait_for(lambda: len(records) >= n, timeout, what)
        return list(records)

    @staticmethod
    async def _async_wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            await asyncio.sleep(0.01)

    def start_in_thread(self, timeout: float = 10.0) -> Self:
        if self._thread is not None:
            raise RuntimeError("already running")
        loop = new_event_loop(self.use_uvloop)
        thread = threading.Thread(target=loop.run_forever, name=type(self).__name__, daemon=True)
        thread.start()
        self._thread_loop, self._thread = loop, thread
        try:
            self.call(self.start(), timeout)
        except BaseException:
            self._shutdown_loop()
            raise
        return self

    def stop_in_thread(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        try:
            self.call(self.stop(), timeout)
        finally:
            self._shutdown_loop()

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        """Run a coroutine on the server's loop thread and return its result."""
        if self._thread_loop is None:
            coro.close()
            raise RuntimeError("not running in a background thread")
        return asyncio.run_coroutine_threadsafe(coro, self._thread_loop).result(timeout)

    def _shutdown_loop(self) -> None:
        loop, thread = self._thread_loop, self._thread
        self._thread_loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        if not thread.is_alive():
            loop.close()

    def __enter__(self) -> Self:
        return self.start_in_thread()

    def __exit__(self, *exc: object) -> None:
        self.stop_in_thread()


async def _run_until_signalled(server: BackgroundServer, banner: Callable[[], str]) -> None:
    await server.start()
    print(banner(), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def run_server(server: BackgroundServer, banner: Callable[[], str], use_uvloop: bool) -> None:
    """Run a fake in the foreground until SIGINT/SIGTERM (shared by the fakes' CLIs)."""
    loop = new_event_loop(use_uvloop)
    try:
        loop.run_until_complete(_run_until_signalled(server, banner))
    finally:
        loop.close()


def hostport(text: str) -> tuple[str, int]:
    """argparse type for HOST:PORT ([::1]:PORT for IPv6)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def login_password(text: str) -> tuple[str, str]:
    """argparse type for LOGIN:PASSWORD (the password may contain ':')."""
    login, sep, password = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError("expected LOGIN:PASSWORD")
    return login, password


def byte_size(text: str) -> int:
    """argparse type for sizes such as 4096, 64K, 200M, 1.5GiB (binary units)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(text)


def mailbox_upstream_parser(proto: str, port: int, store: str) -> argparse.ArgumentParser:
    """The command line the IMAP and POP3 fakes share; each adds its own fault flags."""
    p = argparse.ArgumentParser(prog=f"postern fake-{proto}",
                                description=f"Fake {proto.upper()} upstream.")
    p.add_argument("--listen", type=hostport, default=("127.0.0.1", port), metavar="HOST:PORT")
    p.add_argument("--user", type=login_password, action="append", default=[],
                   metavar="LOGIN:PASSWORD")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--shared-content", action="store_true",
                   help=f"one generated {store} for all users (fast for many users)")
    p.add_argument("--large-message", type=byte_size, metavar="SIZE",
                   help=f"add one message of SIZE bytes (e.g. 200M) to every {store}")
    p.add_argument("--greeting", help="raw greeting line instead of the default")
    p.add_argument("--no-greeting", action="store_true")
    p.add_argument("--greeting-delay", type=float, default=0.0)
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--quiet", action="store_true")
    add_tls_arguments(p)
    return p


def add_tls_arguments(p: argparse.ArgumentParser) -> None:
    """--tls-cert/--tls-key offer STARTTLS; with --implicit-tls, TLS from the first byte."""
    p.add_argument("--tls-cert", metavar="PEM", help="certificate chain: offer STARTTLS")
    p.add_argument("--tls-key", metavar="PEM", help="its private key")
    p.add_argument("--implicit-tls", action="store_true", help="TLS from the first byte")


def tls_options(args: argparse.Namespace) -> dict[str, Any]:
    """The fake's tls= and implicit_tls= from add_tls_arguments's flags."""
    if not args.tls_cert:
        if args.implicit_tls or args.tls_key:
            raise SystemExit("--implicit-tls and --tls-key need --tls-cert")
        return {}
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.tls_cert, args.tls_key)
    return {"tls": ctx, "implicit_tls": args.implicit_tls}


def run_mailbox_upstream(cls: type, args: argparse.Namespace, proto: str, **faults: Any) -> int:
    """Start a fake from mailbox_upstream_parser's arguments and serve until interrupted."""
    import logging
    import sys

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    greeting: bytes | str | None = "default"
    if args.no_greeting:
        greeting = None
    elif args.greeting:
        greeting = args.greeting.encode()
    server = cls(dict(args.user), host=args.listen[0], port=args.listen[1], seed=args.seed,
                 shared_content=args.shared_content, large_message=args.large_message,
                 greeting=greeting, greeting_delay=args.greeting_delay, record=False,
                 **tls_options(args), **faults)
    run_server(server, lambda: f"{proto} listening on {server.host}:{server.port}",
               not args.no_uvloop)
    return 0
