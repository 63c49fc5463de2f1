"""What every protocol's pre-auth dialogue shares: nginx's command buffer and the actions a
dialogue asks its driver to carry out.

A dialogue is sans-IO: the driver feeds it client bytes with receive_data() and pulls
actions with next_action() until it returns None (more input needed). The driver owns the
socket, the timers, TLS and the auth request; the dialogue owns every protocol rule.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Send:
    """Write these bytes to the client."""

    data: bytes


@dataclass(frozen=True)
class Close:
    """Close the client connection after everything sent so far."""


@dataclass(frozen=True)
class Log:
    level: str
    message: str


@dataclass(frozen=True)
class Authenticate:
    """Credentials are complete: stop reading and ask the auth server."""


@dataclass(frozen=True)
class StartTls:
    """The STARTTLS reply was sent and buffered input discarded: do the handshake now."""


Action = Send | Close | Log | Authenticate | StartTls


@dataclass
class Credentials:
    """The session's auth fields, as nginx keeps them (login/passwd/auth_method/salt)."""

    login: bytes = b""
    password: bytes | None = None  # None: nginx's "no password" (EXTERNAL, after a salt)
    method: str = "plain"
    salt: bytes | None = None
    attempt: int = 0


class CommandBuffer:
    """nginx's per-session client buffer: fixed size, rewound only when fully consumed.

    Bytes the client sent beyond the free space wait in `backlog`, as they would in the
    kernel's socket buffer, so "too long command" and the pipelining quirks of spec §5.1
    come out exactly as nginx produces them.
    """

    __slots__ = ("size", "data", "pos", "backlog")

    def __init__(self, size: int) -> None:
        self.size = size
        self.data = bytearray()
        self.pos = 0
        self.backlog = bytearray()

    def feed(self, data: bytes) -> None:
        self.backlog += data

    def fill(self) -> None:
        """Move backlog into free space, as a recv() of (end - last) bytes would."""
        free = self.size - len(self.data)
        if free > 0 and self.backlog:
            self.data += self.backlog[:free]
            del self.backlog[:free]

    @property
    def full(self) -> bool:
        return len(self.data) >= self.size

    def rewind_if_consumed(self) -> None:
        if self.pos >= len(self.data):
            self.data.clear()
            self.pos = 0

    def discard(self) -> None:
        """STARTTLS: forget all plaintext read so far (CVE-2014-3556)."""
        self.data.clear()
        self.pos = 0
        self.backlog.clear()

    def take_all(self) -> bytes:
        """Unparsed client bytes, handed to the backend once the relay starts."""
        rest = bytes(self.data[self.pos:]) + bytes(self.backlog)
        self.discard()
        return rest

    def has_input(self) -> bool:
        return self.pos < len(self.data) or bool(self.backlog)
