"""The delivery checker of DeliveryUser (loadtest/_delivery.py), bytes in and verdicts out;
the locust runs that use it are in tests/test_loadtest.py."""

from __future__ import annotations

import random
import time

from postern.loadtest._delivery import FLAG, Checker, body_of, build_message, check_id
from postern.reports.render import delivery_headline


def _checker() -> tuple[Checker, list]:
    verdicts = []
    checker = Checker(lambda verdict, ms, size, failure: verdicts.append((verdict, failure)))
    return checker, verdicts


def _message(checker: Checker) -> tuple[str, bytes]:
    check = checker.new_id()
    return check, build_message(check, "a@example.test", "b@example.test", random.Random(1), 50)


def test_the_message_carries_its_id_and_the_lines_relays_get_wrong():
    checker, _ = _checker()
    check, raw = _message(checker)
    assert check_id(raw) == check and checker.ours(check)
    assert f"Message-ID: <{check}@".encode() in raw
    body = body_of(raw)
    assert b"\r\n.\r\n" in body and b"\r\n.leading dot\r\n" in body and body.endswith(b"\r\n")
    assert b"\n" not in body.replace(b"\r\n", b"")  # CRLF throughout
    assert not checker.ours(Checker().new_id())  # another process's (or worker's) message


def test_found_once_by_imap_and_pop3_is_delivered_and_nothing_else():
    checker, verdicts = _checker()
    check, raw = _message(checker)
    checker.accepted(check, "b", raw)
    assert checker.users_pending() == {"b"}
    received = b"Received: from proxy\r\nReturn-Path: <a@example.test>\r\n" + raw
    assert checker.saw("imap", "7", received) is not None
    assert checker.saw("imap", "7", received) is not None  # the same UID again: no duplicate
    assert checker.pending() != []  # POP3 has not found it yet
    checker.saw("pop3", "uidl-7", raw)
    checker.lose_missing(5)
    assert verdicts == [("delivered", None)]
    assert checker.pending() == [] and dict(checker.counts) == {"submitted": 1, "delivered": 1}


def test_duplicated_mismatched_and_lost_are_failures_with_reasons():
    checker, verdicts = _checker()
    check, raw = _message(checker)
    checker.accepted(check, "b", raw)
    checker.saw("imap", "1", raw)
    checker.saw("imap", "2", raw)
    altered = raw[:-3] + b"X\r\n"
    checker.saw("imap", "2", altered)
    other, raw2 = _message(checker)
    checker.accepted(other, "b", raw2)
    checker.lose_missing(5)
    assert [(v, f) for v, f in verdicts if f] == [
        ("duplicated", "found 2 times by IMAP"),
        ("mismatched", "the body IMAP returned is not the one submitted"),
        ("lost", "not found by POP3 within 5 s"),
        ("lost", "not found by IMAP or POP3 within 5 s")]
    assert dict(checker.counts) == {"submitted": 2, "delivered": 1, "duplicated": 1,
                                    "mismatched": 1, "lost": 2}
    assert checker.saw("imap", "9", raw.replace(check.encode(), b"unknown-1")) is None


def test_a_flag_set_must_be_seen_by_a_fetch_sent_after_it():
    checker, verdicts = _checker()
    check, raw = _message(checker)
    checker.accepted(check, "b", raw)
    before = time.monotonic()
    assert checker.flags(check, "4", set(), before)  # nobody set it yet: this session does
    checker.flagged(check, "4")
    assert not checker.flags(check, "4", set(), before)  # a FETCH that crossed the STORE
    assert not checker.flags(check, "4", {FLAG}, time.monotonic())
    assert not checker.flags(check, "5", set(), time.monotonic())  # a duplicate's own flags
    assert verdicts == []
    assert not checker.flags(check, "4", {"\\Seen"}, time.monotonic())
    assert verdicts == [("flags mismatched", f"{FLAG} set by an earlier session is gone")]


def test_report_headline():
    assert delivery_headline(None) is None and delivery_headline({"submitted": 0}) is None
    cards = delivery_headline({"submitted": 9, "lost": 2})
    assert cards[0] == {"label": "messages lost", "value": "2 of 9", "bad": True}
    assert cards[1] == {"label": "messages duplicated", "value": "0 of 9", "bad": False}
