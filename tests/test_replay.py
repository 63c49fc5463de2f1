"""Record and replay: sessions recorded through Postern (record_sessions) and replayed
through Postern again by loadtest/_replay.py repeat their commands in order; the made-up
parts (credentials, literals, bodies) have the recorded sizes."""

from __future__ import annotations

import base64
import imaplib
import poplib
import smtplib

from postern.fakes.stack import Stack, default_script
from postern.loadtest import _replay

USERS = {"alice": "Sup3r-Secret", "load0001": "other-pw"}


def _stack(tmp_path, name: str) -> tuple[Stack, object]:
    path = tmp_path / f"{name}.jsonl"
    script = default_script(USERS)
    script.nginx.directives.append(f"record_sessions {path};")
    return Stack("postern", script=script, workdir=tmp_path / name, record=False), path


def _clients(stack: Stack) -> None:
    m = imaplib.IMAP4(*stack.addresses["imap"])
    m.login("alice", USERS["alice"])
    m.select("INBOX")
    m.fetch("1:3", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    m.uid("STORE", "1", "+FLAGS", r"(\Flagged)")
    m.append("Sent", r"(\Seen)", None, b"Subject: hi\r\n\r\nprivate words\r\n")
    m.logout()
    m = imaplib.IMAP4(*stack.addresses["imap"])
    m.authenticate("PLAIN", lambda _: f"\0alice\0{USERS['alice']}".encode())
    m.logout()
    p = poplib.POP3(*stack.addresses["pop3"])
    p.capa()
    p.user("alice")
    p.pass_(USERS["alice"])
    p.uidl()
    p.retr(1)
    p.quit()
    with smtplib.SMTP(*stack.addresses["smtp"]) as s:
        s.login("alice", USERS["alice"])
        s.sendmail("alice@example.test", ["alice@example.test"],
                   b"Subject: x\r\n\r\nprivate words\r\n.dot\r\n")


def test_replayed_sessions_repeat_the_recorded_commands(tmp_path):
    first, first_path = _stack(tmp_path, "recorded")
    with first:
        _clients(first)
    recorded = _replay.load(first_path)
    assert [s["protocol"] for s in recorded] == ["imap", "imap", "pop3", "smtp"]
    second, second_path = _stack(tmp_path, "replayed")
    answers = []
    with second:
        for session in recorded:
            answers.append(_replay.replay_session(
                session, *second.addresses[session["protocol"]], "load0001",
                USERS["load0001"], timeout=10, time_scale=0))
        assert second.smtp.wait_messages(1)[0].content == _replay.message(
            recorded[3]["commands"][-2]["body"])  # a body of the recorded size
    replayed = _replay.load(second_path)
    assert [_replay.verbs(s) for s in replayed] == [_replay.verbs(s) for s in recorded]
    assert _replay.verbs(recorded[0]) == ["CAPABILITY", "LOGIN", "SELECT", "FETCH",
                                          "UID STORE", "APPEND", "LOGOUT"]
    for session in answers:  # every command answered positively, the APPEND to Sent too
        assert all(a.status in ("OK", "+", "+OK", "235", "250", "221", "354")
                   for a in session), session
    assert replayed[0]["commands"][5]["args"][-1] == recorded[0]["commands"][5]["args"][-1]
    assert {r["outcome"] for r in replayed} == {"proxied"}


def test_made_up_parts():
    assert [len(_replay.message(n)) for n in (0, 1, 5, 24, 100, 1000)] == [0, 1, 5, 24, 100, 1000]
    assert _replay.message(100).endswith(b"\r\n")
    synth = _replay.Synth("bob", "pw")
    assert synth.arg({"login": 9}, quote=True) == (b'"bob"', None)
    assert synth.arg({"addr": 20, "pre": "FROM:"}, quote=False) == (b"FROM:<bob@example.test>",
                                                                     None)
    assert synth.arg({"lit": 30}, quote=True) == (b"{30}", _replay.message(30))
    synth.mechanism = "LOGIN"
    assert [synth.sasl(), synth.sasl()] == [base64.b64encode(b"bob"), base64.b64encode(b"pw")]
