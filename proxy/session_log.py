"""A session's log lines: nginx's context suffix, the debug lines, and the guard that turns
any unexpected exception in an event callback into a clean end of the session."""

from __future__ import annotations

import functools
import itertools
import os

from postern.proxy.log import MASK
from postern.proxy.phases import DIALOGUE

# nginx's connection numbers (the *N of a log line); the auth request and the backend
# connection take one each, as in nginx
conn_ids = itertools.count(1)


def guarded(method):
    """An event callback that ends its session cleanly on any unexpected exception."""

    @functools.wraps(method)
    def guarded(self, *args):
        try:
            return method(self, *args)
        except Exception as exc:  # noqa: BLE001 - any bug must end the session, not strand it
            self.crash(exc)
            return None

    return guarded


class SessionLog:
    """Log lines of proxy.session.Session, with the context nginx adds to them."""

    @property
    def session_id(self) -> str:
        """How a session is followed from log to log and to the backend: the worker's pid and
        the *N of its error-log lines (which read "PID#0: *N ...")."""
        return f"{os.getpid()}-{self.id}"

    def log(self, level: str, message: str) -> None:
        """`message` with nginx's context: "while <action>", client, server, login, upstream."""
        if not self.rt.log.enabled(level):
            return
        parts = [message]
        if self.action:
            parts.append(f" while {self.action}")
        starttls = " using starttls" if self._starttls else ""
        parts.append(f", client: {self.client_ip}{starttls}, server: {self.server_text}")
        login = self.machine.creds.login if self.machine else b""
        if login and self.phase != DIALOGUE:
            parts.append(f', login: "{login.decode("latin-1")}"')
            if self.upstream_name:
                parts.append(f", upstream: {self.upstream_name}")
        self.rt.log.log(level, "".join(parts), self.id)

    def _debug(self, message: str) -> None:
        """nginx writes debug lines without the "while ..., client: ..." context."""
        self.rt.log.log("debug", message, self.id)

    def _debug_auth_reply(self, resp) -> None:
        """The reply's headers as decoded (the password masked)."""
        self._debug("mail auth http process headers")
        status = b"OK" if resp.error is None and not resp.wait_status else (
            resp.error if resp.error is not None else b"WAIT")
        fields = [("Auth-Status", status), ("Auth-Server", resp.server),
                  ("Auth-Port", resp.port), ("Auth-User", resp.user),
                  ("Auth-Pass", MASK.encode() if resp.password is not None else None),
                  ("Auth-Wait", str(resp.wait).encode() if resp.wait else None),
                  ("Auth-Error-Code", resp.error_code)]
        for name, value in fields:
            if value:
                self._debug(f'mail auth http header: "{name}: '
                                  f'{value.decode("latin-1")}"')
        self._debug("mail auth http header done")

    def _debug_login_step(self, action: str) -> None:
        """A command to the backend: the step, never the data (it may carry the password)."""
        self._debug(self.proto.login_debug.get(action, f"mail proxy {action}"))

    def _debug_close(self) -> None:
        if self.backend is not None:
            raw = self.backend.get_extra_info("socket")
            self._debug(f"close mail proxy connection: {raw.fileno() if raw else -1}")
        raw = self.transport.get_extra_info("socket") if self.transport else None
        self._debug(f"close mail connection: {raw.fileno() if raw else -1}")
