"""The backend connection's transport callbacks, handed to its session (proxy.relay.BackendSide);
a module of its own so that the TLS relay (proxy.relay_tls) can build on them."""

from __future__ import annotations

import asyncio

from postern.proxy.phases import CLOSED, RELAY


class BackendProtocol(asyncio.Protocol):
    """The backend connection's transport callbacks, handed to its session."""

    __slots__ = ("session", "transport")

    def __init__(self, session) -> None:
        self.session = session
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        if self.session.phase is CLOSED:
            transport.abort()
            return
        self.session.on_backend_connected(transport)

    def data_received(self, data: bytes) -> None:
        self.session.on_backend_data(data)

    def eof_received(self) -> bool:
        self.session.on_backend_closed()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.on_backend_closed(exc)

    def pause_writing(self) -> None:
        client = self.session.transport
        if client is not None:
            client.pause_reading()

    def resume_writing(self) -> None:
        client = self.session.transport
        if client is not None and self.session.phase is RELAY:
            client.resume_reading()
