"""record_sessions (proxy/recorder.py): client bytes in, one JSON line of shapes out; and
through Postern, a recording that holds no password, login or message text."""

from __future__ import annotations

import base64
import imaplib
import json
import poplib
import random
import smtplib

import pytest
from postern.fakes.stack import Stack, default_script
from postern.proxy.recorder import Recorder

LOGIN, PASSWORD, BODY = "alice", "Sup3r-Secret", "Unmistakable-Body-Text"


def _record(tmp_path, protocol: str, *chunks: bytes, relay: tuple[bytes, ...] = ()) -> dict:
    path = tmp_path / f"{protocol}.jsonl"
    record = Recorder(str(path)).start(protocol, 0.0)
    for i, chunk in enumerate(chunks):
        record.client(chunk, 0.5 * (i + 1))
    for chunk in relay:
        record.relay_up(chunk, 9.0)
    record.relay_down(100)
    record.close("proxied", 10.0)
    (line,) = path.read_text().splitlines()
    return json.loads(line)


def test_imap_shapes_literals_and_credentials(tmp_path):
    relay = (b"a3 SELECT INBOX\r\na4 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER])\r\n",
             b'a5 APPEND "Sent" (\\Seen) {23}\r\n', b"Subject: x\r\n\r\nsecret!\r\n",
             b"\r\na6 IDLE\r\n", b"DONE\r\n", b"A" * 5000)
    rec = _record(tmp_path, "imap", b"a1 CAPABILITY\r\n", b"a2 LOGIN {5}\r\n",
                  b'alice "se\\"cret"\r\n', relay=relay)
    commands = rec["commands"]
    assert [c.get("verb") for c in commands] == ["CAPABILITY", "LOGIN", "SELECT", "UID FETCH",
                                                 "APPEND", "IDLE", "DONE"]
    assert commands[1] == {"t": 1.0, "verb": "LOGIN", "args": [{"login": 5}, {"secret": 7}]}
    assert commands[0]["t"] == 0.5 and commands[2]["t"] == 7.5  # since the line before
    assert commands[3]["args"] == ["1:*", "(FLAGS", "BODY.PEEK[HEADER])"]
    assert commands[4]["args"] == ['"Sent"', "(\\Seen)", {"lit": 23}]  # a special-use name
    assert rec["relay"] == {"up_bytes": sum(map(len, relay)), "up_chunks": 6, "down_bytes": 100,
                            "down_chunks": 1, "unparsed_chunks": 1}
    assert rec["protocol"] == "imap" and rec["outcome"] == "proxied" and rec["duration"] == 10.0
    assert len(rec["user"]) == 12 and "alice" not in json.dumps(rec)


@pytest.mark.parametrize("protocol, chunks, expected", [
    ("imap", (b"a AUTHENTICATE PLAIN\r\n", b"AGFsaWNlAHNlY3JldA==\r\n", b"b LOGOUT\r\n"),
     [{"verb": "AUTHENTICATE", "args": ["PLAIN"]}, {"sasl": 20}, {"verb": "LOGOUT"}]),
    ("pop3", (b"AUTH LOGIN YWxpY2U=\r\n", b"aHVudGVyMg==\r\n", b"QUIT\r\n"),
     [{"verb": "AUTH", "args": ["LOGIN", {"sasl": 8}]}, {"sasl": 12}, {"verb": "QUIT"}]),
    ("pop3", (b"USER alice\r\n", b"PASS hunter2\r\n", b"RETR 1\r\n"),
     [{"verb": "USER", "args": [{"login": 5}]}, {"verb": "PASS", "args": [{"secret": 7}]},
      {"verb": "RETR", "args": ["1"]}]),
    ("smtp", (b"EHLO client.example\r\n", b"AUTH LOGIN\r\n", b"YWxpY2U=\r\n",
              b"aHVudGVyMg==\r\n", b"MAIL FROM:<alice@example.test> SIZE=99\r\n", b"DATA\r\n",
              b"hunter2\r\n..dot\r\n.\r\nQUIT\r\n"),
     [{"verb": "EHLO", "args": [{"a": 14}]}, {"verb": "AUTH", "args": ["LOGIN"]}, {"sasl": 8},
      {"sasl": 12}, {"verb": "MAIL", "args": [{"addr": 18, "pre": "FROM:"}, "SIZE=99"]},
      {"verb": "DATA"}, {"body": 16}, {"verb": "QUIT"}]),
])
def test_sasl_lines_and_bodies_are_lengths(tmp_path, protocol, chunks, expected):
    rec = _record(tmp_path, protocol, *chunks)
    got = [{k: v for k, v in c.items() if k != "t" and v != []} for c in rec["commands"]]
    assert got == expected
    text = json.dumps(rec)
    assert "hunter2" not in text and "aHVudGVyMg" not in text and "YWxpY2U" not in text
    assert "alice" not in text


def test_a_large_chunk_with_a_literal_is_counted_not_read(tmp_path):
    """LITERAL+: APPEND's line and its 6000-byte literal in one write; the body's lines
    ("a2 SELECT SECRET") are skipped by counting, the next command is read."""
    body = b"Subject: x\r\n\r\n" + b"a2 SELECT SECRET\r\n" * 374
    chunk = b"a1 APPEND INBOX {%d+}\r\n" % len(body) + body
    rec = _record(tmp_path, "imap", relay=(chunk[:5000], chunk[5000:] + b"\r\n",
                                           b"a3 LOGOUT\r\n", b"B" * 5000))
    assert [(c.get("verb"), c.get("args")) for c in rec["commands"]] == [
        ("APPEND", ["INBOX", {"lit": len(body)}]), ("LOGOUT", [])]
    assert rec["relay"]["unparsed_chunks"] == 1 and "SECRET" not in json.dumps(rec)


def test_compressed_and_endless_lines_are_counted_not_kept(tmp_path):
    rec = _record(tmp_path, "imap", relay=(b"a1 COMPRESS DEFLATE\r\n", b"x2 LOGOUT\r\n"))
    assert [c["verb"] for c in rec["commands"]] == ["COMPRESS"]  # then deflate, not lines
    rec = _record(tmp_path, "pop3", relay=(b"A" * 3000, b"A" * 3000, b"QUIT\r\n"))
    assert rec["commands"] == [{"t": 9.0, "verb": "QUIT", "args": []}]
    assert rec["relay"]["unparsed_chunks"] == 1


def test_unknown_lines_are_lengths_only(tmp_path):
    rec = _record(tmp_path, "pop3", b"HELLO alice secret\r\n")
    assert rec["commands"] == [{"t": 0.5, "other": 18}]


def test_nothing_secret_reaches_the_recording_through_postern(tmp_path):
    """IMAP LOGIN and AUTHENTICATE, POP3 USER/PASS, SMTP AUTH and DATA through Postern: the
    recording has every session and command, and no password, login or body text."""
    path = tmp_path / "sessions.jsonl"
    script = default_script({LOGIN: PASSWORD})
    script.nginx.directives.append(f"record_sessions {path};")
    with Stack("postern", script=script, workdir=tmp_path / "stack", record=False) as stack:
        m = imaplib.IMAP4(*stack.addresses["imap"])
        m.login(LOGIN, PASSWORD)
        m.select("INBOX")
        m.append("INBOX", None, None, f"Subject: s\r\n\r\n{BODY}\r\n".encode())
        m.logout()
        m = imaplib.IMAP4(*stack.addresses["imap"])
        m.authenticate("PLAIN", lambda _: f"\0{LOGIN}\0{PASSWORD}".encode())
        m.logout()
        p = poplib.POP3(*stack.addresses["pop3"])
        p.user(LOGIN)
        p.pass_(PASSWORD)
        p.retr(1)
        p.quit()
        with smtplib.SMTP(*stack.addresses["smtp"]) as s:
            s.login(LOGIN, PASSWORD)
            s.sendmail(f"{LOGIN}@example.test", [f"{LOGIN}@example.test"],
                       f"Subject: s\r\n\r\n{BODY}\r\n".encode())
    text = path.read_text()
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["protocol"] for r in records] == ["imap", "imap", "pop3", "smtp"]
    assert {r["outcome"] for r in records} == {"proxied"}
    # one worker, one key: LOGIN, AUTHENTICATE PLAIN, USER and AUTH PLAIN name one user
    assert len({r["user"] for r in records}) == 1 and records[0]["user"] is not None
    verbs = [[c.get("verb") for c in r["commands"] if "verb" in c] for r in records]
    assert verbs[0] == ["CAPABILITY", "LOGIN", "SELECT", "APPEND", "LOGOUT"]
    assert verbs[3] == ["EHLO", "AUTH", "MAIL", "RCPT", "DATA", "QUIT"]
    for secret in (PASSWORD, LOGIN, BODY, base64.b64encode(f"\0{LOGIN}\0{PASSWORD}".encode())
                   .decode(), base64.b64encode(PASSWORD.encode()).decode()):
        assert secret not in text, secret


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_any_bytes_make_a_record_and_never_an_exception(tmp_path, protocol):
    """The recorder sits in the driver's read path: whatever a client sends (seeded random
    lines made of protocol words, literals, base64, NULs, bare LFs) must not raise."""
    rng = random.Random(16)
    words = [b"a1", b"LOGIN", b"AUTHENTICATE", b"AUTH", b"PLAIN", b"LOGIN", b"UID", b"DATA",
             b"{5}", b"{99999999999}", b"{3+}", b'"q\\"', b"DONE", b"MAIL", b"FROM:<a@b>",
             b"AGFsaWNlAHNlY3JldA==", b"\x00", b"\xff\xfe", b".", b"*", b""]
    record = Recorder(str(tmp_path / "fuzz.jsonl")).start(protocol, 0.0)
    for i in range(3000):
        line = b" ".join(rng.choice(words) for _ in range(rng.randint(0, 6)))
        chunk = line + rng.choice([b"\r\n", b"\n", b"", b"\r\n.\r\n"])
        if rng.random() < 0.5:
            record.client(chunk, float(i))
        else:
            record.relay_up(chunk * rng.choice([1, 1, 400]), float(i))
    record.close("proxied", 3000.0)
    assert json.loads((tmp_path / "fuzz.jsonl").read_text())["protocol"] == protocol
