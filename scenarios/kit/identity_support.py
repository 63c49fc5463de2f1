"""What the client-identity scenarios share (`proxy_client_identity`): the directive, and the
session id a proxy's error log gives the session of one client connection."""

from __future__ import annotations

import re

IDENTITY = "proxy_client_identity on;"


def session_id_of(error_log: str, client: tuple[str, int]) -> str:
    """`PID-N` of the session whose "client IP:PORT connected" line is in the log: the worker's
    pid and the *N of its lines, which is what the backend is told."""
    where = re.escape(f"{client[0]}:{client[1]}")
    found = re.search(rf"\] (\d+)#\d+: \*(\d+) client {where} connected", error_log)
    assert found, f"no connection line for {client} in the error log:\n{error_log}"
    return f"{found.group(1)}-{found.group(2)}"
