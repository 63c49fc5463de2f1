"""Mail that survives the trip: what was submitted against what the mailboxes show.

In the style of imaptest's consistency checks. Every message ``DeliveryUser`` submits carries
a unique id (``Message-ID`` and an ``X-Postern-Check`` header, prefixed with this process's
run token); once the SMTP server accepted it (250 to DATA) the ``Checker`` expects it in the
recipient's INBOX. IMAP and POP3 sessions report what they find: a message found is
*delivered* (first sighting, with the delay since submission), found under two UIDs (UIDLs)
*duplicated*, with a body that is not byte for byte the submitted one *mismatched*; flags one
IMAP session set and a later one does not see are *flags mismatched*. At the end of a run
a sweep (``delivery_user.sweep``) keeps looking, for a grace period, for what was not yet
found by both IMAP and POP3; what is still missing then is *lost*.

One checker per process, shared by all its users (a message one user submits may be found by
another user's session of the same account); in distributed mode each worker checks the
messages its own users submitted (the run token tells them apart). No locust import here:
verdicts go to a callback (``Checker.report``), counts to the clients' record.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

HEADER = "X-Postern-Check"
FLAG = "\\Flagged"  # what an IMAP session sets on a message it found; later ones expect it
VERDICTS = ("delivered", "lost", "duplicated", "mismatched", "flags mismatched")
_ID = re.compile(rb"^X-Postern-Check:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
# lines a careless relay gets wrong: SMTP dot-stuffing, a lone dot, trailing blanks
_TRICKY = (".leading dot", "..two dots", ".", "trailing blank   ", "\tindented by a tab")


def body_of(raw: bytes) -> bytes:
    """The body: what no relay may touch (servers add Received: and Return-Path: above)."""
    end = raw.find(b"\r\n\r\n")
    return raw[end + 4:] if end >= 0 else b""


def check_id(raw: bytes) -> str | None:
    """The check id in a message's header block (None: not a checked message)."""
    end = raw.find(b"\r\n\r\n")
    match = _ID.search(raw[:end if end >= 0 else len(raw)])
    return match.group(1).decode("ascii", "replace") if match else None


def build_message(check: str, sender: str, rcpt: str, rng, words: int) -> bytes:
    """A plain-text message with the check id and a body of ``words`` words and the lines
    relays get wrong, CRLF throughout."""
    vocabulary = ("mail", "proxy", "relay", "postern", "inbox", "delivery", "byte", "line",
                  "header", "session", "server", "client", "message", "trip", "check")
    lines, line = [], []
    for _ in range(words):
        line.append(rng.choice(vocabulary))
        if len(line) >= 12:
            lines.append(" ".join(line))
            line = []
    lines.append(" ".join(line))
    for tricky in _TRICKY:
        lines.insert(rng.randrange(len(lines) + 1), tricky)
    head = (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: delivery check {check}\r\n"
            f"Message-ID: <{check}@loadtest.example.test>\r\n{HEADER}: {check}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
    return head.encode() + "".join(f"{text}\r\n" for text in lines).encode()


@dataclass
class Expected:
    """One accepted message and what the sessions have found of it."""

    check: str
    user: str
    digest: bytes
    size: int
    submitted: float
    found: dict[str, set[str]] = field(default_factory=lambda: {"imap": set(), "pop3": set()})
    flags_set: float | None = None  # when a session's STORE of the check flag was answered OK
    flagged_uid: str = ""           # on which UID (a duplicate has its own flags)
    verdicts: set[str] = field(default_factory=set)  # failures already reported

    def complete(self, protocols: tuple[str, ...]) -> bool:
        return all(self.found[p] for p in protocols)


Report = Callable[[str, float, int, str | None], None]  # verdict, ms, size, failure text


class Checker:
    """Expected against found, for this process; see the module docstring."""

    def __init__(self, report: Report | None = None) -> None:
        self.report = report or (lambda *_: None)
        self.token = f"{secrets.token_hex(4)}-{os.getpid()}"
        self._numbers = itertools.count(1)
        self.expected: dict[str, Expected] = {}
        self.counts: Counter[str] = Counter()
        self.unknown = 0  # our token, but never accepted (a session cut after DATA)
        self.protocols: tuple[str, ...] = ("imap", "pop3")  # where messages must be found
        self.closing = False  # the final sweep has begun: later submissions are not checked

    def new_id(self) -> str:
        return f"{self.token}-{next(self._numbers)}"

    def ours(self, check: str | None) -> bool:
        return check is not None and check.startswith(self.token + "-")

    def accepted(self, check: str, user: str, raw: bytes) -> None:
        """The server answered 250 to the message's DATA: it must arrive."""
        if self.closing:
            return
        body = body_of(raw)
        self.expected[check] = Expected(check, user, hashlib.sha256(body).digest(), len(raw),
                                        time.monotonic())
        self.counts["submitted"] += 1

    def pending(self, user: str | None = None) -> list[Expected]:
        """Messages not yet found by both IMAP and POP3 (of one user, or everyone's)."""
        return [e for e in self.expected.values()
                if not e.complete(self.protocols) and (user is None or e.user == user)]

    def users_pending(self) -> set[str]:
        return {e.user for e in self.pending()}

    def saw(self, where: str, key: str, raw: bytes) -> Expected | None:
        """A session (``where``: "imap" or "pop3") read a whole message under ``key`` (its
        UID or UIDL); returns its entry when it is one of ours."""
        check = check_id(raw)
        if not self.ours(check):
            return None
        entry = self.expected.get(check)
        if entry is None:
            self.unknown += 1
            return None
        first = not entry.found["imap"] and not entry.found["pop3"]
        entry.found[where].add(key)
        if first:
            self.counts["delivered"] += 1
            self.report("delivered", (time.monotonic() - entry.submitted) * 1000, entry.size,
                        None)
        if len(entry.found[where]) > 1:
            self._fail(entry, "duplicated", f"found {len(entry.found[where])} times by "
                       f"{where.upper()}")
        if hashlib.sha256(body_of(raw)).digest() != entry.digest:
            self._fail(entry, "mismatched", f"the body {where.upper()} returned is not the one "
                       "submitted")
        return entry

    def flags(self, check: str | None, uid: str, flags: set[str], asked: float) -> bool:
        """An IMAP session sees ``flags`` on a message (UID ``uid``), in answer to a FETCH sent at
        ``asked`` (time.monotonic()); True when it should set the check flag (nobody has
        yet), a failure when a STORE answered before that FETCH set it and it is gone (a
        FETCH sent earlier may cross another session's STORE: not a failure)."""
        entry = self.expected.get(check or "") if self.ours(check) else None
        if entry is None:
            return False
        if entry.flags_set is None:
            return True
        if entry.flagged_uid == uid and entry.flags_set < asked and FLAG not in flags:
            self._fail(entry, "flags mismatched", f"{FLAG} set by an earlier session is gone")
        return False

    def flagged(self, check: str, uid: str) -> None:
        """An IMAP session set the check flag on ``uid`` (its STORE answered OK)."""
        entry = self.expected.get(check)
        if entry is not None and entry.flags_set is None:
            entry.flags_set, entry.flagged_uid = time.monotonic(), uid

    def lose_missing(self, grace: float) -> None:
        """The end: what is still not found by both protocols is lost."""
        for entry in self.pending():
            missing = [p.upper() for p in self.protocols if not entry.found[p]]
            self._fail(entry, "lost", f"not found by {' or '.join(missing)} within "
                       f"{grace:g} s")

    def _fail(self, entry: Expected, verdict: str, text: str) -> None:
        if verdict in entry.verdicts:
            return
        entry.verdicts.add(verdict)
        self.counts[verdict] += 1
        self.report(verdict, (time.monotonic() - entry.submitted) * 1000, entry.size, text)

    def take(self) -> dict[str, int]:
        """The counts since the last report (a worker's share for the master)."""
        counts, self.counts = dict(self.counts), Counter()
        return counts


current = Checker()  # this process's; DeliveryUser replaces it at each test start
