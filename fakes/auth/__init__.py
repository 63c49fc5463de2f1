"""The scriptable mock auth_http server (``fakes.auth.server``) and its command line
(``fakes.auth.cli``, ``python -m postern.fakes.auth``); the names tests use are here."""

from postern.fakes.auth.server import (
    DEFAULT_FAIL,
    MASK,
    AuthRequest,
    Backend,
    Faults,
    MockAuthServer,
    Reply,
    User,
    unescape,
)

__all__ = ["DEFAULT_FAIL", "MASK", "AuthRequest", "Backend", "Faults", "MockAuthServer", "Reply",
           "User", "unescape"]
