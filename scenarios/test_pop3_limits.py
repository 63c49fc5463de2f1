"""POP3 pre-auth limits: the fixed 128-byte command buffer (too long commands, long AUTH PLAIN
blobs, the straddling pipeline) and max_errors counting (docs/behaviour.md §5.1, §5.3, §8.2, §16 items 2-4).

Where nginx closes with unread client bytes still queued, the kernel resets the connection
and replies after the first may be lost: those checks accept a prefix of the expected bytes
that holds at least the reply nginx always delivers, and require the close (docs/behaviour.md §5.1). The strict variants send exactly 128 bytes so nothing is left
unread.
"""

from __future__ import annotations

import base64

from postern.fakes.auth import Reply
from postern.scenarios.kit.pop3_support import (
    CAPA,
    GREETING,
    INVALID,
    OK,
    auth_request,
    greeted,
    logged_in,
    pop3,
)
from postern.scenarios.kit.support import LogWatch, expect_prefix_then_close

BUFFER = 128  # nginx's POP3 command buffer, fixed (no pop3_client_buffer)


# -- the 128-byte buffer ---------------------------------------------------------------------

def test_command_exactly_filling_the_buffer_is_too_long(lab):
    """nginx: 128 bytes without a line end fill the buffer: `-ERR invalid command` and close
    (logged "client sent too long command"); nothing goes to the auth server."""
    for line in (b"USER " + b"u" * 123, b"AUTH PLAIN " + b"A" * 117, b"X" * BUFFER):
        assert len(line) == BUFFER
        with greeted(lab) as c:
            c.send(line).expect(INVALID).expect_closed()
    assert lab.auth.requests == []


def test_complete_line_of_128_bytes_fits(lab):
    """nginx: a complete line of exactly 128 bytes (CRLF included) is fine, and the buffer is
    reused from its start once fully consumed."""
    lines = [verb + b" " + fill * 121 + b"\r\n" for verb, fill in
             ((b"USER", b"u"), (b"NOOP", b"n"), (b"PASS", b"p"))]
    assert {len(line) for line in lines} == {BUFFER}
    lab.auth.push(Reply.fail("No"))
    with greeted(lab) as c:
        c.send(lines[0]).expect(OK)
        c.send(lines[1]).expect(OK)
        c.send(lines[2]).expect(b"-ERR No\r\n").expect_closed()
    assert [r.raw for r in lab.auth.requests] == [auth_request(b"u" * 121, b"p" * 121)]


def test_long_auth_plain_blob_fails_and_closes(lab):
    """nginx QUIRK (docs/behaviour.md §16 item 4): a realistic AUTH PLAIN initial response longer than the
    128-byte buffer cannot be read: `-ERR invalid command` and close, no auth request (a reset
    follows the reply, docs/behaviour.md §5.1)."""
    blob = base64.b64encode(b"\0" + b"a" * 60 + b"@example.com\0" + b"p" * 40)
    with greeted(lab) as c:
        c.send(b"AUTH PLAIN " + blob + b"\r\n")
        expect_prefix_then_close(c, INVALID, at_least=INVALID)
    assert lab.auth.requests == []


def test_long_sasl_response_line_fails_and_closes(lab):
    """nginx: the two-step form does not help — the response line must fit the same buffer;
    128 bytes without a line end → `-ERR invalid command` and close."""
    with greeted(lab) as c:
        c.send(b"AUTH PLAIN\r\n").expect(b"+ \r\n")
        c.send(b"A" * BUFFER).expect(INVALID).expect_closed()
    assert lab.auth.requests == []


def test_pipelined_command_straddling_a_full_buffer(lab):
    """nginx QUIRK (docs/behaviour.md §5.1): no buffer compaction — 21 pipelined NOOPs (126 bytes) are
    answered, the 22nd straddles the end of the full buffer and is "too long": invalid reply,
    then close. Exactly 128 bytes are sent, so nothing is left unread."""
    data = b"NOOP\r\n" * 21 + b"NO"
    assert len(data) == BUFFER
    with greeted(lab) as c:
        c.send(data).expect(OK * 21 + INVALID).expect_closed()


def test_pipeline_longer_than_the_buffer(lab):
    """nginx QUIRK (docs/behaviour.md §5.1): with more than 128 bytes pipelined, the command crossing byte
    128 is "too long" even though it is short; the connection closes (leniently compared: the
    rest was never read)."""
    with greeted(lab) as c:
        c.send(b"CAPA\r\n" * 30)
        expect_prefix_then_close(c, CAPA * 21 + INVALID, at_least=CAPA)


def test_pipeline_ending_exactly_at_the_buffer_end(lab):
    """nginx: when the pipelined commands end exactly at byte 128 the buffer is consumed and
    rewound, so the next packet starts afresh and the session goes on."""
    data = b"NOOP\r\n" * 18 + b"USER alice\r\n" + b"NOOP  \r\n"
    assert len(data) == BUFFER, len(data)
    with greeted(lab) as c:
        c.send(data).expect(OK * 20)
        c.send(b"PASS secret\r\n").expect(logged_in(lab))
    assert [r.raw for r in lab.auth.requests] == [auth_request()]


# -- max_errors (nginx 1.21.0) ---------------------------------------------------------------

def test_max_errors_counts_unknown_verbs(lab):
    """nginx max_errors: STAT/LIST/RETR before authentication are parser-level errors and
    counted; the reply to the one reaching the limit is still sent, then close (docs/behaviour.md §5.3)."""
    with greeted(lab, "max_errors 3;") as c:
        c.send(b"STAT\r\n").expect(INVALID)
        c.send(b"NOOP\r\n").expect(OK)  # a success resets nothing
        c.send(b"LIST\r\n").expect(INVALID)
        c.send(b"RETR 1\r\n").expect(INVALID).expect_closed()
    assert lab.auth.requests == []


def test_max_errors_ignores_handler_errors(lab):
    """nginx: handler-level errors (a known verb used wrongly: PASS before USER, USER without
    a name, STLS unavailable, APOP or CRAM-MD5 disabled, bad base64, an intruder in the USER
    state) are not counted, even with max_errors 1; the first parser error closes."""
    with greeted(lab, "max_errors 1;") as c:
        for line in (b"PASS x\r\n", b"USER\r\n", b"STLS\r\n", b"APOP a b\r\n",
                     b"AUTH CRAM-MD5\r\n", b"AUTH EXTERNAL\r\n", b"AUTH PLAIN !\r\n",
                     b"AUTH FOO\r\n", b"AUTH LOGIN YQ== YQ==\r\n"):
            c.send(line).expect(INVALID)
        c.send(b"USER alice\r\n").expect(OK)
        c.send(b"USER bob\r\n").expect(INVALID)
        c.send(b"AUTH PLAIN\r\n").expect(b"+ \r\n")
        c.send(b"*\r\n").expect(INVALID)
        c.send(b"NOOP\r\n").expect(OK)
        c.send(b"UIDL\r\n").expect(INVALID).expect_closed()
    assert lab.auth.requests == []


def test_max_errors_zero_behaves_like_one(lab):
    """nginx: `max_errors 0` does not disable the limit; it behaves like 1 (docs/behaviour.md §2.1)."""
    with greeted(lab, "max_errors 0;") as c:
        c.send(b"NOOP\r\n").expect(OK)
        c.send(b"STAT\r\n").expect(INVALID).expect_closed()


def test_max_errors_default_is_five(lab):
    """nginx: max_errors defaults to 5 — four invalid commands keep the connection, the fifth
    is answered and closes it; malformed lines (empty, leading space) count too."""
    with greeted(lab) as c:
        for line in (b"STAT\r\n", b"\r\n", b" NOOP\r\n", b"NOOP a b c d\r\n"):
            c.send(line).expect(INVALID)
        c.send(b"NOOP\r\n").expect(OK)
        c.send(b"TOP 1 1\r\n").expect(INVALID).expect_closed()


def test_max_errors_reached_with_pipelined_input(lab):
    """nginx: pipelined invalid commands are answered one by one until the limit, then the
    connection closes and what follows is never answered (lenient: unread bytes may reset)."""
    with greeted(lab, "max_errors 2;") as c:
        c.send(b"STAT\r\nNOOP\r\nLIST\r\nNOOP\r\nNOOP\r\n")
        expect_prefix_then_close(c, INVALID + OK + INVALID, at_least=INVALID)


# -- what nginx logs ---------------------------------------------------------------------------

def test_limit_and_decoding_errors_are_logged(lab):
    """docs/behaviour.md §14: nginx logs at info level `client sent too long command "..."`, `client sent
    too many invalid commands` and the SASL decoding errors, each `while in auth state` with
    the client and server; the client sees only `-ERR invalid command`. nginx's too-long line
    shows the whole buffer; Postern shows only a known verb, so a PASS line that overflows
    never puts the password in the log (a deliberate difference, passwords stay out of logs)."""
    proxy = pop3(lab, "max_errors 2;")
    log = LogWatch(proxy)
    where = f"while in auth state, client: 127.0.0.1, server: 127.0.0.1:{proxy.port}"
    with proxy.connect() as c:
        c.expect(GREETING)
        c.send(b"AUTH PLAIN !\r\n").expect(INVALID)
        c.send(b"AUTH PLAIN " + base64.b64encode(b"alice") + b"\r\n").expect(INVALID)
        c.send(b"AUTH PLAIN " + base64.b64encode(b"\0alice") + b"\r\n").expect(INVALID)
        c.send(b"AUTH LOGIN !\r\n").expect(INVALID)
        c.send(b"STAT\r\nLIST\r\n").expect(INVALID + INVALID).expect_closed()
    with proxy.connect() as c:
        c.expect(GREETING)
        c.send(b"PASS " + b"p" * 123).expect(INVALID).expect_closed()
    for message in ("client sent invalid base64 encoding in AUTH PLAIN command",
                    "client sent invalid login in AUTH PLAIN command",
                    "client sent invalid password in AUTH PLAIN command",
                    "client sent invalid base64 encoding in AUTH LOGIN command",
                    "client sent too many invalid commands",
                    'client sent too long command "PASS '):
        line = log.line(message)
        assert "[info]" in line and where in line[line.index(message):], line
    if lab.target == "postern":  # house rule: nginx logs the whole buffer, password and all
        assert "p" * 20 not in log.text(), log.text()
