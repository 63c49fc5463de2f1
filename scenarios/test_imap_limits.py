"""IMAP pre-auth limits: the fixed client buffer (too long commands, the straddling pipeline),
max_errors counting and the close after a `{n+}` announcement on an invalid line (docs/behaviour.md §5.1,
§5.3, §7.2).

Where nginx closes with unread client bytes still queued, the kernel resets the connection
and replies after the first may be lost: those checks accept a prefix of the expected bytes
that holds at least the reply nginx always delivers, and require the close (docs/behaviour.md §5.1).
"""

from __future__ import annotations

from postern.scenarios.kit.imap_support import INVALID, greeted
from postern.scenarios.kit.support import expect_prefix_then_close

SMALL_BUFFER = "imap_client_buffer 64;"


def test_too_long_command_exactly_fills_the_buffer(lab):
    """nginx: a command that fills imap_client_buffer without ending is "too long": tagged
    BAD (the tag was complete), then close; no auth request (docs/behaviour.md §5.1)."""
    with greeted(lab, SMALL_BUFFER) as c:
        line = b"a1 LOGIN alice " + b"x" * 49
        assert len(line) == 64
        c.send(line).expect(b"a1 " + INVALID).expect_closed()
    with greeted(lab, SMALL_BUFFER) as c:
        c.send(b"z" * 64).expect(b"* " + INVALID).expect_closed()  # no tag yet
    assert lab.auth.requests == []


def test_too_long_command_with_more_queued(lab):
    """nginx: a line longer than imap_client_buffer is answered BAD and the connection is
    closed; the rest of the line stays unread (a reset follows the reply)."""
    with greeted(lab, SMALL_BUFFER) as c:
        c.send(b"a1 LOGIN alice " + b"x" * 200 + b"\r\n")
        expect_prefix_then_close(c, b"a1 " + INVALID, at_least=b"a1 " + INVALID)
    assert lab.auth.requests == []


def test_command_just_fitting_the_buffer(lab):
    """nginx: a complete line of exactly imap_client_buffer bytes is fine, and the buffer is
    reused from its start for the next command once fully consumed."""
    with greeted(lab, SMALL_BUFFER) as c:
        line = b"a1 NOOP " + b"y" * 54 + b"\r\n"
        assert len(line) == 64
        for _ in range(3):
            c.send(line).expect(b"a1 OK completed\r\n")


def test_literal_must_fit_the_buffer(lab):
    """nginx: a literal is read into the same command buffer, so one that cannot fit gets its
    `+ OK` but ends as a too long command once the buffer is full (docs/behaviour.md §7.2)."""
    with greeted(lab, SMALL_BUFFER) as c:
        c.send(b"a1 LOGIN alice {80}\r\n").expect(b"+ OK\r\n")  # 21 bytes of 64 used
        c.send(b"x" * 43).expect(b"a1 " + INVALID).expect_closed()
    assert lab.auth.requests == []


def test_pipelined_command_straddling_a_full_buffer(lab):
    """nginx QUIRK (docs/behaviour.md §5.1): no buffer compaction — pipelined commands are answered until
    one straddles the end of the full buffer, which is then "too long" (untagged, its tag not
    yet complete) and the connection closes."""
    with greeted(lab, SMALL_BUFFER) as c:
        c.send(b"ab NOOP\r\n" * 7 + b"a")  # exactly 64 bytes: the 8th command has one byte
        c.expect(b"ab OK completed\r\n" * 7 + b"* " + INVALID).expect_closed()
    with greeted(lab, SMALL_BUFFER) as c:
        c.send(b"ab NOOP\r\n" * 9)  # 81 bytes in one packet: the 8th straddles byte 64
        expect_prefix_then_close(c, b"ab OK completed\r\n" * 7 + b"* " + INVALID,
                                 at_least=b"ab OK completed\r\n")


def test_max_errors_counts_parser_errors(lab):
    """nginx max_errors (1.21.0): parser-level errors are counted; the reply to the one that
    reaches the limit is still sent, then the connection closes (docs/behaviour.md §5.3)."""
    with greeted(lab, "max_errors 3;") as c:
        c.send(b"a1 FOO\r\n").expect(b"a1 " + INVALID)
        c.send(b"a2 NOOP\r\n").expect(b"a2 OK completed\r\n")  # a success resets nothing
        c.send(b"a+3 NOOP\r\n").expect(b"* " + INVALID)
        c.send(b"a4 SELECT INBOX\r\n").expect(b"a4 " + INVALID).expect_closed()


def test_max_errors_ignores_handler_errors(lab):
    """nginx: handler-level errors (a known verb used wrongly, STARTTLS unavailable, disabled
    or malformed SASL) are not counted — even with max_errors 1 — while the first parser-level
    error closes (docs/behaviour.md §5.3)."""
    with greeted(lab, "max_errors 1;") as c:
        for line in (b"a LOGIN onlyone\r\n", b'a LOGIN "" x\r\n', b"a STARTTLS\r\n",
                     b"a AUTHENTICATE CRAM-MD5\r\n", b"a AUTHENTICATE PLAIN !\r\n",
                     b"a AUTHENTICATE FOO\r\n", b"a LOGIN onlyone\r\n"):
            c.send(line).expect(b"a " + INVALID)
        c.send(b"a AUTHENTICATE PLAIN\r\n").expect(b"+ \r\n")
        c.send(b"*\r\n").expect(b"a " + INVALID)
        c.send(b"b NOOP\r\n").expect(b"b OK completed\r\n")
        c.send(b"c NOOP x y z w\r\n").expect(b"c " + INVALID).expect_closed()
    assert lab.auth.requests == []


def test_max_errors_zero_behaves_like_one(lab):
    """nginx: `max_errors 0` does not disable the limit; it behaves like 1 (docs/behaviour.md §2.1)."""
    with greeted(lab, "max_errors 0;") as c:
        c.send(b"a1 NOOP\r\n").expect(b"a1 OK completed\r\n")
        c.send(b"a2 ID NIL\r\n").expect(b"a2 " + INVALID).expect_closed()


def test_max_errors_default_is_five(lab):
    """nginx: max_errors defaults to 5 — four invalid commands keep the connection, the fifth
    is answered and closes it."""
    with greeted(lab) as c:
        for i in range(1, 5):
            c.send(b"e%d FOO\r\n" % i).expect(b"e%d " % i + INVALID)
        c.send(b"ok NOOP\r\n").expect(b"ok OK completed\r\n")
        c.send(b"e5 FOO\r\n").expect(b"e5 " + INVALID).expect_closed()


def test_invalid_line_announcing_non_sync_literal_closes(lab):
    """nginx (1.21.0): an invalid line ending in a `{n+}` announcement closes the connection
    after the BAD, since the literal bytes cannot be skipped (RFC 7888 §4); a synchronising
    `{n}` on an invalid line does not."""
    with greeted(lab) as c:
        c.send(b"a1 FOO {5}\r\n").expect(b"a1 " + INVALID)
        c.send(b"a2 NOOP\r\n").expect(b"a2 OK completed\r\n")
        c.send(b"a3 FOO {5+}\r\n").expect(b"a3 " + INVALID).expect_closed()
    with greeted(lab) as c:
        c.send(b"b1 SELECT {12+}\n").expect(b"b1 " + INVALID).expect_closed()  # bare LF
