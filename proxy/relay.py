"""The backend side of a session: the login conversation, then the byte relay.

Relay rules (spec §12): plain copy with no inspection; when either side ends, everything
already read from it is flushed to the other side and both are closed (no half-close);
backpressure pauses the reading side instead of buffering without bound.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.session import Session


class BackendProtocol(asyncio.Protocol):
    __slots__ = ("session", "transport")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        if self.session.phase == "closed":
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
        if client is not None and self.session.phase == "relay":
            client.resume_reading()
