"""What a session needs from its server: settings, log, TLS, resolver, its siblings.

A module of its own so that the session and the relay need nothing from the worker that
creates them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from postern.proxy.conf.settings import Listen, ServerSettings
from postern.proxy.log import ErrorLog
from postern.proxy.metrics import NULL_SERVER
from postern.proxy.protocol import MailProtocol
from postern.proxy.protocols import PROTOCOLS

if TYPE_CHECKING:
    from postern.proxy.access_log import ServerAccessLog
    from postern.proxy.resolver import HostResolver
    from postern.proxy.tls import TlsServer


@dataclass
class ServerRuntime:
    conf: ServerSettings
    listen: Listen
    log: ErrorLog
    loop: asyncio.AbstractEventLoop
    sessions: set = field(default_factory=set)
    tls: TlsServer | None = None  # the server's TLS context (listen ... ssl, starttls)
    resolver: HostResolver | None = None  # SMTP client-host lookups, shared by sessions
    worker_connections: int = 0
    listeners: int = 0
    # servers sharing this (wildcard) socket, chosen per connection by local address
    by_address: dict = field(default_factory=dict)
    access_log: ServerAccessLog | None = None  # the server's access_log lines, if any
    metrics: object = NULL_SERVER  # proxy.metrics: this server's counters, or no-ops
    protocol: MailProtocol = field(init=False)  # the declaration of conf.protocol

    def __post_init__(self) -> None:
        self.protocol = PROTOCOLS[self.conf.protocol]

    def listen_text(self, sockname) -> str:
        return self.listen.text

    def select(self, sockname) -> ServerRuntime:
        if self.by_address and isinstance(sockname, tuple):
            return self.by_address.get((sockname[0], sockname[1]), self)
        return self
