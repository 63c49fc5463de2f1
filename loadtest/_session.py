"""The base of the mail users: one timed, reported step per protocol phase.

Every phase of a session (``imap connect``, ``imap login``, ...) is timed and reported as
its own locust request, and recorded in microseconds by ``loadtest._clients`` along with the
whole session (its duration, outcome and phase order) for the report. A failed phase is reported with its reason (the server's words
where there are some) and abandons the session: the connection is closed, the user waits
its pause and starts a new session. Nothing is swallowed; a user being stopped at the end
of a run (GreenletExit) is not a failure and is not reported.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import socket
import ssl
import time
from typing import Any, Self

import gevent
from gevent import GreenletExit
from locust import User
from locust.exception import InterruptTaskSet, RescheduleTask, StopUser
from postern.loadtest._clients import recorder
from postern.loadtest._hooks import install, target_of
from postern.loadtest._profiles import Dealer, Profile
from postern.loadtest._target import Endpoint

install()

_accounts = itertools.count()


class PhaseFailed(Exception):
    """A protocol step went wrong; the message is the reason shown in locust's failures."""


def reason(exc: BaseException) -> str:
    """A short, stable description: the same problem must group under one failure row."""
    if isinstance(exc, PhaseFailed):
        return str(exc)
    if isinstance(exc, socket.timeout):
        return "timed out (no answer within --timeout)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return "connection reset by the server"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    args = [a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a) for a in exc.args]
    kind = type(exc).__qualname__  # IMAP4.error, error_proto, SMTPAuthenticationError ...
    return f"{kind}: {' '.join(args)}" if args else kind


class Step:
    """``with self.step("imap select") as s: ...; s.size += n`` times and reports a phase."""

    __slots__ = ("context", "events", "name", "request_type", "size", "started", "user")

    def __init__(self, events, request_type: str, name: str, context: dict,
                 user: MailUser | None = None) -> None:
        self.events, self.request_type, self.name = events, request_type, name
        self.context = context
        self.user = user
        self.size = 0
        self.started = 0.0

    def __enter__(self) -> Self:
        self.started = time.perf_counter()
        return self

    def pause_clock(self, seconds: float) -> None:
        """Leave ``seconds`` out of the reported time (IDLE's hold is not latency)."""
        self.started += seconds

    def __exit__(self, etype, exc, tb) -> bool:
        seconds = time.perf_counter() - self.started
        if exc is not None and (not isinstance(exc, Exception) or isinstance(
                exc, (StopUser, RescheduleTask, InterruptTaskSet))):
            return False  # the user is being stopped: not a result
        failure = None if exc is None else PhaseFailed(reason(exc))
        self.events.request.fire(request_type=self.request_type, name=self.name,
                                 response_time=seconds * 1000, response_length=self.size,
                                 exception=failure, context=self.context)
        recorder.phase(self.request_type, self.name, seconds)
        if self.user is not None:
            self.user.phase_done(self.name, failure)
        if failure is not None:
            raise RescheduleTask() from exc
        return False


def expect(condition: bool, text: str) -> None:
    if not condition:
        raise PhaseFailed(text)


def words(data: Any) -> str:
    """Server text for a failure message, from imaplib/poplib/smtplib's return values."""
    if isinstance(data, (list, tuple)):
        return " ".join(words(d) for d in data if d is not None)
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)


class MailUser(User):
    """One mail account's sessions against the target's endpoint for ``protocol``."""

    abstract = True
    protocol = ""

    def __init__(self, environment) -> None:
        super().__init__(environment)
        self.endpoint: Endpoint | None = None
        self.missing = ""
        self.login = self.password = ""
        self.sessions = 0
        self._turn = 0
        self.rng = random.Random()
        self.tls_context: ssl.SSLContext | None = None
        self._sequence: list[str] = []
        self._failure: str | None = None
        self.profile: Profile | None = None
        self.tls_ca_file: str | None = None

    def wait_time(self) -> float:
        """The pause between two sessions: --pause when given, else the profile's."""
        text = str(self.options.pause or "")
        if text:
            low, _, high = text.partition("-")
            return self.rng.uniform(float(low), float(high or low))
        return self.profile.pause.draw(self.rng) * self.time_scale if self.profile else 1.0

    @property
    def time_scale(self) -> float:
        return float(getattr(self.options, "time_scale", 1.0) or 1.0)

    def think(self) -> None:
        """A client's pause between two commands (its user reading, its timers)."""
        if self.profile is not None:
            seconds = self.profile.think.draw(self.rng) * self.time_scale
            if seconds > 0:
                gevent.sleep(seconds)

    def hold(self) -> float:
        """How long this session holds IDLE: --imap-idle when given, else the profile's."""
        forced = float(getattr(self.options, "imap_idle", -1))
        if forced >= 0:
            return forced
        return self.profile.hold.draw(self.rng) * self.time_scale if self.profile else 0.0

    @property
    def options(self):
        return self.environment.parsed_options

    def on_start(self) -> None:
        target = target_of(self.environment)
        self.endpoint = target.endpoint(self.protocol) if target else None
        if self.endpoint is None:
            self.missing = "no target was set up (see the log)" if target is None else \
                f"the target has no {self.protocol.upper()} endpoint"
            return
        worker = getattr(self.environment.runner, "worker_index", 0) or 0
        index = worker * 100_003 + next(_accounts)
        self.login, self.password = target.users[index % len(target.users)]
        self._turn = index
        self.rng.seed(self.options.seed * 1_000_003 + index)
        self.profile = dealer(self.options, self.protocol)
        self.tls_ca_file = target.tls_ca
        if self.endpoint.tls != "off":
            self.tls_context = client_context(target.tls_ca)

    def require_endpoint(self) -> Endpoint:
        """The endpoint, or one reported failure and the end of this user."""
        if self.endpoint is None:
            self.environment.events.request.fire(
                request_type=self.protocol.upper(), name=f"{self.protocol} connect",
                response_time=0, response_length=0, exception=PhaseFailed(self.missing),
                context={})
            raise StopUser()
        return self.endpoint

    def run_session(self, body) -> None:
        """One task: the endpoint (or the end of this user), then ``body(endpoint)`` as one
        session named after the profile (the protocol's name where the mix has none)."""
        endpoint = self.require_endpoint()
        with self.session(self.profile.label if self.profile else self.protocol):
            body(endpoint)

    def step(self, phase: str) -> Step:
        name = f"{self.protocol} {phase}"
        return Step(self.environment.events, self.protocol.upper(), name,
                    {"user": self.login, "via": self.endpoint.via if self.endpoint else None},
                    self)

    def phase_done(self, name: str, failure: PhaseFailed | None) -> None:
        self._sequence.append(name)
        if failure is not None and self._failure is None:
            self._failure = f"{name}: {failure}"

    @contextlib.contextmanager
    def session(self, profile: str):
        """One whole session of ``profile``: its duration, outcome (the first failed phase
        and its reason) and phase order go to the clients' record. A user stopped mid-session
        is not a result."""
        self._sequence, self._failure = [], None
        self.sessions += 1
        started = time.perf_counter()
        stopped = False
        try:
            yield
        except (StopUser, InterruptTaskSet, GreenletExit):
            stopped = True
            raise
        except RescheduleTask:
            raise
        except Exception as exc:
            if self._failure is None:
                self._failure = f"{profile}: {reason(exc)}"
            raise
        finally:
            if not stopped and self._sequence:
                recorder.session(profile, self.protocol, time.perf_counter() - started,
                                 self._failure, self._sequence)

    def choose(self, methods: list[str], offered: str = "") -> str:
        """The next of the usable login methods (each user rotates through all of them), or
        a failed "login" step naming what the server offered when there is none."""
        if not methods:
            with self.step("login"):
                raise PhaseFailed(f"no usable login method in {offered}")
        self._turn += 1
        return methods[self._turn % len(methods)]

    @property
    def timeout(self) -> float:
        return float(self.options.timeout)


_mixes: dict[str, dict] = {}
_dealers: dict[tuple[str, str], Dealer] = {}


def dealer(options, protocol: str) -> Profile | None:
    """The next user's profile for ``protocol`` (None: the mix has none)."""
    path = getattr(options, "profiles", "") or ""
    key = (path, protocol)
    if key not in _dealers:
        mix = profile_mix(options).get(protocol) or []
        if not mix:
            return None
        _dealers[key] = Dealer(mix)
    return _dealers[key].next()


def profile_mix(options) -> dict:
    """The profile mix of --profiles (read once per process and file)."""
    from postern.loadtest import _profiles

    path = getattr(options, "profiles", "") or str(_profiles.DEFAULT_FILE)
    if path not in _mixes:
        _mixes[path] = _profiles.load(path)
    return _mixes[path]


def no_delay(sock: socket.socket) -> None:
    """Send small writes at once: the stdlib clients write a command and its CRLF
    separately (imaplib's AUTHENTICATE answer), which Nagle's algorithm plus the peer's
    delayed ACK would turn into a 40 ms stall billed to the server."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def client_context(ca: str | None) -> ssl.SSLContext:
    """Verify against ``ca`` when given; a load test measures, it does not audit, otherwise."""
    if ca:
        return ssl.create_default_context(cafile=ca)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
