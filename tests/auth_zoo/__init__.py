"""A zoo of auth_http servers, each a few lines: correct ones, and broken ones with one
realistic bug each (the docstring tells its story). tests/test_auth_zoo.py runs
`postern check-auth URL --user USER --password PASSWORD` against every one.

A server is a function from the parsed request to a reply: bytes (written at once, then
the connection is closed), or a `Raw` for socket behaviour (slowness, tiny segments, a
connection kept open or dropped). `directory.py` holds the shared user data and the
correct decision every server starts from.
"""

from .zoo import BROKEN, CORRECT, ZooServer

__all__ = ["BROKEN", "CORRECT", "ZooServer"]
