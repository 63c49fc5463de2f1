"""The client's identity for the backend (`proxy_client_identity`, which nginx lacks).

Behind a proxy every backend sees the proxy's address. A backend that trusts the proxy
(Dovecot's `login_trusted_networks`) takes the real one from IMAP `ID` (x-originating-ip, ...)
or POP3 `XCLIENT` before the login; the protocol's backend login machine writes the command
from this record. The session id lets a session be followed from Postern's logs to the
backend's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ClientIdentity:
    session_id: str
    client_ip: str | None = None  # the real client's, after the PROXY header and realip
    client_port: int | None = None
    local_ip: str | None = None  # the proxy's address the client connected to
    local_port: int | None = None


def of_session(session: Any) -> ClientIdentity | None:
    """The identity of a proxy.session.Session, or None where its server{} does not send it."""
    if not session.conf.proxy_client_identity:
        return None
    client, local = session.client_addr, session.local_addr  # None on unix sockets
    return ClientIdentity(
        session_id=session.session_id,
        client_ip=client[0] if client else None, client_port=client[1] if client else None,
        local_ip=local[0] if local else None, local_port=local[1] if local else None)
