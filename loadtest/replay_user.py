"""ReplayUser: sessions from a ``record_sessions`` recording, played at any scale.

``locust -f loadtest/ ReplayUser --replay FILE [--time-scale X]``: each task plays the next
session of the file (the users of a process share one cycle through it; each worker starts
at its own offset) against the target's endpoint for the session's protocol, with the
credentials of the user's lab (or --users-file) account and bodies of the recorded sizes
(loadtest/_replay.py). ``--time-scale`` multiplies the recorded think times (0: no pauses).
Each replayed command is a locust request (``replay login``, ``replay select`` ...); a
command the server refused is its own row (``replay select (NO)``), not a failure, since a
replay reproduces load and order, not the recorded outcomes; a broken connection is a
failure of ``replay <protocol> session``.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from locust import tag, task

if __package__ in (None, ""):  # loaded by `locust -f loadtest/` as a top-level module
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from postern.loadtest import _replay
from postern.loadtest._hooks import target_of
from postern.loadtest._session import MailUser, PhaseFailed, client_context, reason

_NEGATIVE = ("NO", "BAD", "-ERR")
_sessions: dict[str, itertools.cycle] = {}


def next_session(path: str, offset: int) -> dict | None:
    """The next recorded session of ``path`` (read once per process)."""
    if path not in _sessions:
        sessions = _replay.load(path)
        if not sessions:
            return None
        offset %= len(sessions)
        _sessions[path] = itertools.cycle(sessions[offset:] + sessions[:offset])
    return next(_sessions[path])


class ReplayUser(MailUser):
    weight = 1
    protocol = "imap"  # the base class's account and TLS set-up; each session has its own
    needs_option = "replay"

    @tag("replay")
    @task
    def replay(self) -> None:
        worker = getattr(self.environment.runner, "worker_index", 0) or 0
        session = next_session(self.options.replay, worker * 7919)
        target = target_of(self.environment)
        if session is None or target is None:
            self._fail("replay", "no session in the recording" if session is None
                       else "no target was set up")
            return
        protocol = session["protocol"]
        endpoint = target.endpoint(protocol)
        if endpoint is None:
            self._fail(protocol, f"the target has no {protocol.upper()} endpoint")
            return
        ctx = client_context(target.tls_ca) if endpoint.tls != "off" else None
        try:
            _replay.replay_session(
                session, endpoint.host, endpoint.port, self.login, self.password,
                tls=endpoint.tls, ctx=ctx, timeout=self.timeout, time_scale=self.time_scale,
                on_answer=lambda answer: self._report(protocol, answer))
        except Exception as exc:  # noqa: BLE001 - a failed session, with its reason
            self._fail(protocol, reason(exc))

    def _report(self, protocol: str, answer: _replay.Answer) -> None:
        refused = answer.status in _NEGATIVE or answer.status[:1] in ("4", "5")
        name = f"replay {answer.verb.lower()}" + (f" ({answer.status})" if refused else "")
        self.environment.events.request.fire(
            request_type=protocol.upper(), name=name, response_time=answer.seconds * 1000,
            response_length=0, exception=None, context={"user": self.login})

    def _fail(self, protocol: str, text: str) -> None:
        self.environment.events.request.fire(
            request_type=protocol.upper(), name=f"replay {protocol} session", response_time=0,
            response_length=0, exception=PhaseFailed(text), context={})
