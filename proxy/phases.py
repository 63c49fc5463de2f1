"""The phases of a client session, their transitions and their log context, in one table.

Each phase names what the session is doing; `action` is nginx's "while ..." context that
error-log lines carry while the session is in it (None: no context). A session changes phase
only through Session._enter(), which refuses a transition this table does not list.
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    ACCEPTED = "accepted"  # connection_made is deciding what comes first
    PROXY_PROTOCOL = "proxy_protocol"  # waiting for the PROXY protocol header
    HANDSHAKE = "handshake"  # implicit TLS: the handshake before the greeting
    LIMITED = "limited"  # limit_req: the greeting waits for the session's turn
    RESOLVING = "resolving"  # SMTP: looking up the client's host name
    DELAY = "delay"  # SMTP: smtp_greeting_delay, the client must stay silent
    DIALOGUE = "dialogue"  # the protocol machine talks with the client
    STARTTLS = "starttls"  # the handshake after STARTTLS/STLS
    AUTH = "auth"  # asking the auth_http server; the client is not read
    LOGIN = "login"  # logging in to the backend; the client is not read
    RELAY = "relay"  # bytes flow both ways
    CLOSED = "closed"


# the members as plain module names: `Phase.RELAY` is a slow attribute lookup on Python 3.11,
# and the relay tests the phase on every read
(ACCEPTED, PROXY_PROTOCOL, HANDSHAKE, LIMITED, RESOLVING, DELAY, DIALOGUE, STARTTLS, AUTH, LOGIN,
 RELAY, CLOSED) = Phase

KEEP = "keep"  # the table's word for "the action does not change"

# phase: (action on entering it, the phases it may go to next)
_TABLE: dict[Phase, tuple[str | None, frozenset[Phase]]] = {
    ACCEPTED: ("sending client greeting line",
               frozenset({PROXY_PROTOCOL, HANDSHAKE, LIMITED, RESOLVING, DELAY, DIALOGUE,
                          CLOSED})),
    PROXY_PROTOCOL: ("reading PROXY protocol",
                     frozenset({HANDSHAKE, LIMITED, RESOLVING, DELAY, DIALOGUE, CLOSED})),
    HANDSHAKE: ("SSL handshaking", frozenset({LIMITED, RESOLVING, DELAY, DIALOGUE, CLOSED})),
    LIMITED: (KEEP, frozenset({RESOLVING, DELAY, DIALOGUE, CLOSED})),
    RESOLVING: ("in resolving client address", frozenset({DELAY, DIALOGUE, CLOSED})),
    DELAY: ("in delay pipelining state", frozenset({DIALOGUE, CLOSED})),
    DIALOGUE: ("in auth state", frozenset({AUTH, STARTTLS, CLOSED})),
    STARTTLS: ("in starttls state", frozenset({DIALOGUE, CLOSED})),
    AUTH: ("in http auth state", frozenset({DIALOGUE, LOGIN, CLOSED})),
    LOGIN: ("connecting to upstream", frozenset({RELAY, CLOSED})),
    RELAY: (None, frozenset({CLOSED})),
    CLOSED: (KEEP, frozenset()),  # the last action stays, for lines logged while closing
}

ACTION: dict[Phase, str | None] = {phase: row[0] for phase, row in _TABLE.items()
                                   if row[0] is not KEEP}
NEXT: dict[Phase, frozenset[Phase]] = {phase: row[1] for phase, row in _TABLE.items()}

# the context of steps inside a phase
READING_UPSTREAM = "reading response from upstream"  # LOGIN: a backend reply or its failure
PROXYING = "proxying"  # RELAY: the proxy_timeout expired

# phases in which the dialogue waits for its replies to be written before reading more
READS_AFTER_REPLY = frozenset({DIALOGUE, HANDSHAKE, STARTTLS})


class PhaseError(RuntimeError):
    """A transition the table does not allow: a bug, ended like any other (crash())."""

