"""DeliveryUser: mail that survives the trip, checked under load (loadtest/_delivery.py).

Each session submits one message over SMTP to the user's own account (AUTH, MAIL, RCPT,
DATA through the target), then looks for what it and the other users of that account
submitted: an IMAP session (SELECT INBOX, UID FETCH of every message's check header and
flags, the whole message of those not yet read, UID STORE +FLAGS \\Flagged on the ones no
session flagged yet) and a POP3 session (UIDL, TOP n 0 of the UIDLs not yet looked at, RETR
of the checked ones). The steps are locust requests of type CHECK (``check submit``,
``check imap``, ``check pop3``); the verdicts are rows of their own: ``message delivered``
(its time: from the 250 to DATA to the first sighting), ``message lost``, ``message
duplicated``, ``message mismatched``, ``flags mismatched`` (failures, with the reason).

At the end of the run (``test_stop``; in distributed mode when the master asks, as the test
stops) the process goes on looking for up to ``--delivery-grace`` seconds for what was not
yet found by both IMAP and POP3; then what is missing is lost. The counts go to the
clients' record, and the report's headline says "messages lost: 0 of N".
"""

from __future__ import annotations

import imaplib
import poplib
import re
import smtplib
import sys
import time
from pathlib import Path

import gevent
from locust import events, tag, task
from locust import stats as locust_stats
from locust.runners import MasterRunner, WorkerRunner

if __package__ in (None, ""):  # loaded by `locust -f loadtest/` as a top-level module
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from postern.loadtest import _delivery
from postern.loadtest._corpus import DOMAIN
from postern.loadtest._hooks import target_of
from postern.loadtest._session import MailUser, PhaseFailed, client_context, expect, words

HELO_NAME = "loadgen.example.test"
_UID = re.compile(rb"UID (\d+)")
_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")


def address(login: str) -> str:
    return login if "@" in login else f"{login}@{DOMAIN}"


# -- the three sessions, usable without locust (the final sweep runs them too) -------------

def submit(endpoint, login: str, password: str, ctx, timeout: float, rcpt: str,
           raw: bytes) -> None:
    """One SMTP submission; raises unless DATA was answered 250."""
    cls = smtplib.SMTP_SSL if endpoint.tls == "implicit" else smtplib.SMTP
    kw = {"context": ctx} if endpoint.tls == "implicit" else {}
    with cls(endpoint.host, endpoint.port, local_hostname=HELO_NAME, timeout=timeout,
             **kw) as s:
        s.ehlo()
        if endpoint.tls == "starttls":
            s.starttls(context=ctx)
            s.ehlo()
        if "auth" in s.esmtp_features:
            s.login(login, password)
        refused = s.sendmail(address(login), [rcpt], raw)
        expect(not refused, f"RCPT refused: {refused}")


def imap_check(checker: _delivery.Checker, endpoint, login: str, password: str, ctx,
               timeout: float, read: set[str]) -> int:
    """Look through the INBOX; ``read`` holds the UIDs already read whole (this account's,
    this process's). Returns how many messages were read."""
    if endpoint.tls == "implicit":
        m = imaplib.IMAP4_SSL(endpoint.host, endpoint.port, ssl_context=ctx, timeout=timeout)
    else:
        m = imaplib.IMAP4(endpoint.host, endpoint.port, timeout=timeout)
    try:
        if endpoint.tls == "starttls":
            m.starttls(ctx)
        _ok(m.login(login, password), "LOGIN")
        _ok(m.select("INBOX"), "SELECT INBOX")
        asked = time.monotonic()
        typ, data = m.uid("FETCH", "1:*",
                          f"(UID FLAGS BODY.PEEK[HEADER.FIELDS ({_delivery.HEADER})])")
        _ok((typ, data), "UID FETCH check headers")
        seen = 0
        for uid, flags, head in _fetched(data):
            check = _delivery.check_id(head + b"\r\n")
            if not checker.ours(check):
                continue
            if uid not in read:
                typ, body = m.uid("FETCH", uid, "(BODY.PEEK[])")
                _ok((typ, body), "UID FETCH body")
                whole = next((item[1] for item in body if isinstance(item, tuple)), b"")
                read.add(uid)
                seen += 1
                checker.saw("imap", uid, whole)
            if checker.flags(check, uid, flags, asked):
                _ok(m.uid("STORE", uid, "+FLAGS.SILENT", f"({_delivery.FLAG})"), "UID STORE")
                checker.flagged(check, uid)
        m.logout()
        m = None
        return seen
    finally:
        if m is not None:
            m.shutdown()


def pop3_check(checker: _delivery.Checker, endpoint, login: str, password: str, ctx,
               timeout: float, looked: set[str]) -> int:
    """Look through the maildrop; ``looked`` holds the UIDLs already looked at. Messages are
    left on the server (RSET before QUIT is not needed: nothing is deleted)."""
    if endpoint.tls == "implicit":
        p = poplib.POP3_SSL(endpoint.host, endpoint.port, context=ctx, timeout=timeout)
    else:
        p = poplib.POP3(endpoint.host, endpoint.port, timeout=timeout)
    try:
        if endpoint.tls == "starttls":
            p.stls(ctx)
        p.user(login)
        p.pass_(password)
        _resp, listing, _octets = p.uidl()
        seen = 0
        for line in listing:
            number, _, uidl = line.decode("latin-1").partition(" ")
            if uidl in looked:
                continue
            looked.add(uidl)
            _resp, head, _ = p.top(int(number), 0)
            if not checker.ours(_delivery.check_id(b"\r\n".join(head) + b"\r\n\r\n")):
                continue
            _resp, lines, _ = p.retr(int(number))
            seen += 1
            checker.saw("pop3", uidl, b"\r\n".join(lines) + b"\r\n")
        p.quit()
        p = None
        return seen
    finally:
        if p is not None:
            p.close()


def _ok(reply, what: str) -> None:
    typ, data = reply
    expect(typ == "OK", f"{what} answered {typ} {words(data)}".strip())


def _fetched(data) -> list[tuple[str, set[str], bytes]]:
    """(UID, flags, header literal) of each message in imaplib's FETCH answer; the items
    around a literal may come before it or after it."""
    out = []
    items = list(data or ())
    for i, item in enumerate(items):
        if not isinstance(item, tuple):
            continue
        meta = item[0] + (items[i + 1] if i + 1 < len(items) and
                          isinstance(items[i + 1], bytes) else b"")
        uid, flags = _UID.search(meta), _FLAGS.search(meta)
        if uid is None:
            continue
        names = set(flags.group(1).decode("ascii", "replace").split()) if flags else set()
        out.append((uid.group(1).decode(), names, item[1]))
    return out


# -- the user ------------------------------------------------------------------------------

_read: dict[str, set[str]] = {}     # login -> IMAP UIDs read whole, by any user of the process
_looked: dict[str, set[str]] = {}   # login -> POP3 UIDLs looked at


class DeliveryUser(MailUser):
    weight = 1
    protocol = "smtp"

    @tag("delivery")
    @task
    def round_trip(self) -> None:
        endpoint = self.require_endpoint()
        with self.session("delivery check"):
            self._run(endpoint)

    def _run(self, endpoint) -> None:
        target = target_of(self.environment)
        checker = _delivery.current
        # a target without IMAP (or POP3) cannot be asked for the message there
        checker.protocols = tuple(p for p in ("imap", "pop3") if target.endpoint(p))
        rcpt = address(self.login)
        check = checker.new_id()
        raw = _delivery.build_message(check, address(self.login), rcpt, self.rng,
                                      self.rng.randint(20, 2000))
        with self.named("check submit") as s:
            submit(endpoint, self.login, self.password, self.tls_context, self.timeout, rcpt,
                   raw)
            checker.accepted(check, self.login, raw)
            s.size = len(raw)
        self.think()
        for protocol, look, seen in (("imap", imap_check, _read),
                                     ("pop3", pop3_check, _looked)):
            place = target.endpoint(protocol)
            if place is None:
                continue
            ctx = client_context(target.tls_ca) if place.tls != "off" else None
            with self.named(f"check {protocol}") as s:
                s.size = look(checker, place, self.login, self.password, ctx, self.timeout,
                              seen.setdefault(self.login, set()))

    def named(self, name: str):
        step = self.step(name)
        step.request_type, step.name = "CHECK", name
        return step


# -- the verdicts and the final sweep ------------------------------------------------------

def _report_to(environment):
    def report(verdict: str, ms: float, size: int, failure: str | None) -> None:
        environment.events.request.fire(
            request_type="CHECK", name=verdict if verdict.startswith("flags") else
            f"message {verdict}", response_time=ms, response_length=size,
            exception=PhaseFailed(failure) if failure else None, context={})
    return report


def _runs_here(environment) -> bool:
    return "DeliveryUser" in {c.__name__ for c in environment.user_classes} and \
        not isinstance(environment.runner, MasterRunner)


@events.test_start.add_listener
def _new_checker(environment, **_) -> None:
    if _runs_here(environment):
        _delivery.current = _delivery.Checker(_report_to(environment))
        _read.clear()
        _looked.clear()


@events.test_stop.add_listener
def _final_sweep(environment, **_) -> None:
    """A single process (or a worker the master did not ask, see below) sweeps at the end."""
    if _runs_here(environment) and not _delivery.current.closing:
        sweep(environment)


def sweep(environment) -> None:
    """Keep looking for up to --delivery-grace seconds for what was accepted so far (later
    submissions are not checked); then what is missing is lost."""
    checker = _delivery.current
    target = target_of(environment)
    checker.closing = True
    if target is None or not checker.expected:
        return
    opts = environment.parsed_options
    grace = float(opts.delivery_grace)
    passwords = dict(target.users)
    deadline = time.monotonic() + grace
    users = {e.user for e in checker.expected.values()}  # everyone once: the flags too
    errors: set[str] = set()
    while users:
        for login in sorted(users):
            for protocol, look, seen in (("imap", imap_check, _read),
                                         ("pop3", pop3_check, _looked)):
                place = target.endpoint(protocol)
                if place is None:
                    continue
                ctx = client_context(target.tls_ca) if place.tls != "off" else None
                try:
                    look(checker, place, login, passwords[login], ctx, opts.timeout,
                         seen.setdefault(login, set()))
                except Exception as exc:  # noqa: BLE001 - reported once, the sweep goes on
                    text = f"{protocol.upper()}: {exc}"
                    if text not in errors:
                        errors.add(text)
                        environment.events.request.fire(
                            request_type="CHECK", name="check sweep", response_time=0,
                            response_length=0, exception=PhaseFailed(text), context={})
        users = checker.users_pending()
        if not users or time.monotonic() >= deadline:
            break
        gevent.sleep(0.5)
    checker.lose_missing(grace)
    if getattr(opts, "csv_prefix", None) and not isinstance(environment.runner, WorkerRunner):
        # locust rewrites its CSV files once a second and not again at exit: let it write
        # once more, with the verdicts of the sweep in them
        gevent.sleep(locust_stats.CSV_STATS_INTERVAL_SEC + 0.2)


# -- distributed mode: the master has each worker sweep before it stops or quits ------------
# A headless master quits by sending "quit" and waiting half a second for the workers' last
# statistics, too short for a sweep; so at test_stopping it asks each worker to sweep now
# (its users still running) and waits for every "delivery_done", which follows the worker's
# statistics with the verdicts in them.
_done: set[str] = set()


@events.init.add_listener
def _messages(environment, runner, **_) -> None:
    if isinstance(runner, WorkerRunner):
        runner.register_message("delivery_sweep", _worker_sweep, concurrent=True)
    elif isinstance(runner, MasterRunner):
        runner.register_message("delivery_done", lambda msg, **_: _done.add(msg.data))


def _worker_sweep(environment, msg, **_) -> None:
    runner = environment.runner
    if _runs_here(environment) and not _delivery.current.closing:
        sweep(environment)
    runner._send_stats()  # the verdicts' requests and counts, before the "done"
    runner.send_message("delivery_done", runner.client_id)


@events.test_stopping.add_listener
def _sweep_workers(environment, **_) -> None:
    runner = environment.runner
    if not isinstance(runner, MasterRunner) or \
            "DeliveryUser" not in {c.__name__ for c in environment.user_classes}:
        return
    workers = {c.id for c in runner.clients.all}
    _done.clear()
    for worker in workers:
        runner.send_message("delivery_sweep", None, worker)
    opts = environment.parsed_options
    deadline = time.monotonic() + float(opts.delivery_grace) + 2 * float(opts.timeout) + 5
    while not workers <= _done and time.monotonic() < deadline:
        gevent.sleep(0.2)
