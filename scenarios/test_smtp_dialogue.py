"""The SMTP dialogue before authentication (docs/behaviour.md §9, §5), on every target, exact bytes.

Greeting, HELO/EHLO and the EHLO block (RFC 5321 §4.1.1.1, RFC 4954 §3 AUTH keyword), the
commands nginx answers itself (RSET, NOOP, QUIT, RFC 5321 §4.1.1.5-10), the ones it refuses
(VRFY, EXPN, HELP, DATA, BDAT), max_errors, the fixed client buffer, pipelining (RFC 2920),
smtp_greeting_delay and the pre-authentication deadline.
"""

from __future__ import annotations

import socket
import time

import pytest
from postern.scenarios.kit.smtp_support import (  # noqa: F401 -- fixtures
    AUTH_REQUIRED,
    BAD_SEQUENCE,
    BYE,
    EHLO_DEFAULT,
    GREETING,
    HELO_REPLY,
    INVALID,
    INVALID_ARGUMENT,
    OK,
    PIPELINING,
    fresh_smtp_fixture,
    greet,
)
from postern.scenarios.kit.support import LogWatch

NONE = "smtp_auth plain login none;"


def smtp(lab, server: str = ""):
    return lab.proxy(server=server, protocol="smtp")


# -- greeting, HELO, EHLO -------------------------------------------------------------------

def test_greeting_names_server_name(lab):
    """RFC 5321 §4.2 / §9.1: `220 <server_name> ESMTP ready` is the first thing said."""
    with smtp(lab).connect() as c:
        c.expect(GREETING)
        c.expect_silence(0.2)


def test_helo_reply_is_server_name(lab):
    """RFC 5321 §4.1.1.1 / §9.4: HELO with one argument → `250 <server_name>`."""
    with greet(smtp(lab)) as c:
        c.send(b"HELO client.example\r\n").expect(HELO_REPLY)
        c.send(b"helo again\r\n").expect(HELO_REPLY)


@pytest.mark.parametrize("line", [b"HELO\r\n", b"HELO a b\r\n", b"EHLO\r\n",
                                  b"EHLO a b\r\n", b"EHLO   \r\n"])
def test_helo_and_ehlo_need_exactly_one_argument(lab, line):
    """§9.4: HELO/EHLO without an argument or with two → `501 5.5.4 Invalid argument` (a
    normal reply, not an error: six of them do not reach max_errors 5)."""
    with greet(smtp(lab)) as c:
        for _ in range(6):
            c.send(line).expect(INVALID_ARGUMENT)
        c.send(b"NOOP\r\n").expect(OK)


def test_extra_spaces_around_the_helo_argument(lab):
    """§9.3: arguments are separated by runs of spaces; leading and trailing ones do not make
    an argument, a tab is an ordinary character."""
    with greet(smtp(lab)) as c:
        c.send(b"HELO    me   \r\n").expect(HELO_REPLY)
        c.send(b"HELO a\tb\r\n").expect(HELO_REPLY)


def test_ehlo_default_block(lab):
    """RFC 5321 §4.1.1.1, RFC 4954 §3 / §9.5: the default EHLO reply is the server name and
    `AUTH PLAIN LOGIN` (nginx advertises nothing else, not even PIPELINING)."""
    with greet(smtp(lab)) as c:
        c.send(b"EHLO client.example\r\n").expect(EHLO_DEFAULT)
        c.send(b"ehlo lower.case\r\n").expect(EHLO_DEFAULT)


def test_ehlo_lists_smtp_capabilities_before_auth(lab):
    """§9.5, §18: `smtp_capabilities "SIZE 100" 8BITMIME` are listed in order after the
    name, then the AUTH line with every method in the fixed order."""
    proxy = smtp(lab, 'smtp_capabilities "SIZE 100" 8BITMIME;\n'
                      "smtp_auth external cram-md5 login plain;")
    with greet(proxy) as c:
        c.send(b"EHLO x\r\n").expect(b"250-mx.test\r\n250-SIZE 100\r\n250-8BITMIME\r\n"
                                     b"250 AUTH PLAIN LOGIN CRAM-MD5 EXTERNAL\r\n")


@pytest.mark.parametrize("methods,auth_line", [
    ("plain", b"250 AUTH PLAIN\r\n"),
    ("login", b"250 AUTH LOGIN\r\n"),
    ("cram-md5", b"250 AUTH CRAM-MD5\r\n"),
    ("external", b"250 AUTH EXTERNAL\r\n"),
    ("none login", b"250 AUTH LOGIN\r\n"),
    ("plain none cram-md5", b"250 AUTH PLAIN CRAM-MD5\r\n"),
])
def test_ehlo_auth_line_per_smtp_auth(lab, methods, auth_line):
    """RFC 4954 §3 / §9.5: the AUTH keyword lists exactly the enabled SASL methods (never
    `none`), in the order PLAIN, LOGIN, CRAM-MD5, EXTERNAL."""
    with greet(smtp(lab, f"smtp_auth {methods};")) as c:
        c.send(b"EHLO x\r\n").expect(b"250-mx.test\r\n" + auth_line)


def test_ehlo_with_smtp_auth_none_only_is_one_line(lab):
    """§9.5: with `smtp_auth none` alone there is no AUTH line: the reply is `250 mx.test`."""
    with greet(smtp(lab, "smtp_auth none;")) as c:
        c.send(b"EHLO x\r\n").expect(b"250 mx.test\r\n")


def test_ehlo_none_only_with_capabilities(lab):
    """§9.5: the last capability line takes the final `250 ` when there is no AUTH line."""
    with greet(smtp(lab, "smtp_auth none;\nsmtp_capabilities PIPELINING 8BITMIME;")) as c:
        c.send(b"EHLO x\r\n").expect(b"250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")


# -- what nginx answers itself ----------------------------------------------------------------

def test_noop_rset_and_quit(lab):
    """RFC 5321 §4.1.1.5, §4.1.1.9, §4.1.1.10: RSET and NOOP → `250 2.0.0 OK`; QUIT →
    `221 2.0.0 Bye` and the connection closes."""
    with greet(smtp(lab)) as c:
        c.send(b"NOOP\r\n").expect(OK)
        c.send(b"NOOP with arguments\r\n").expect(OK)
        c.send(b"RSET\r\n").expect(OK)
        c.send(b"QUIT\r\n").expect(BYE).expect_closed()


def test_mail_without_auth_needs_authentication(lab):
    """RFC 4954 §6 / §9.4: without `none`, MAIL → `530 5.7.1 Authentication required` (a
    normal reply: the session continues), logged as a rejection."""
    proxy = smtp(lab)
    log = LogWatch(proxy)
    with greet(proxy) as c:
        c.send(b"EHLO x\r\n").expect(EHLO_DEFAULT)
        for _ in range(6):
            c.send(b"MAIL FROM:<a@example.test>\r\n").expect(AUTH_REQUIRED)
        c.send(b"NOOP\r\n").expect(OK)
    log.wait_for('client was rejected: "MAIL FROM:<a@example.test>')


def test_rcpt_without_mail_is_a_bad_sequence(lab):
    """RFC 5321 §4.1.4 / §9.4: RCPT before MAIL → `503 5.5.1 Bad sequence of commands`."""
    with greet(smtp(lab)) as c:
        c.send(b"RCPT TO:<b@example.test>\r\n").expect(BAD_SEQUENCE)
        c.send(b"RCPT\r\n").expect(BAD_SEQUENCE)


def test_mail_and_rcpt_argument_rules_in_none_mode(lab):
    """§9.4 with `none`: MAIL without arguments → 501; a second MAIL → 503; RCPT without
    arguments → 501; RSET and HELO forget the stored MAIL."""
    with greet(smtp(lab, NONE)) as c:
        c.send(b"MAIL\r\n").expect(INVALID_ARGUMENT)
        c.send(b"MAIL FROM:<a@example.test>\r\n").expect(OK)
        c.send(b"MAIL FROM:<a@example.test>\r\n").expect(BAD_SEQUENCE)
        c.send(b"RCPT\r\n").expect(INVALID_ARGUMENT)
        c.send(b"RSET\r\n").expect(OK)
        c.send(b"RCPT TO:<b@example.test>\r\n").expect(BAD_SEQUENCE)
        c.send(b"MAIL FROM:<a@example.test>\r\n").expect(OK)
        c.send(b"HELO me\r\n").expect(HELO_REPLY)
        c.send(b"MAIL FROM:<a@example.test>\r\n").expect(OK)
    assert lab.auth.requests == []


@pytest.mark.parametrize("verb", [b"VRFY alice", b"EXPN staff", b"HELP", b"HELP me"])
def test_vrfy_expn_help_are_refused_but_not_counted(lab, verb):
    """RFC 5321 §3.5 lets a server refuse VRFY/EXPN; nginx knows the verbs and answers
    `500 5.5.1 Invalid command` without counting them (§5.3): more than max_errors of them
    leave the session open."""
    with greet(smtp(lab, "max_errors 2;")) as c:
        for _ in range(4):
            c.send(verb + b"\r\n").expect(INVALID)
        c.send(b"NOOP\r\n").expect(OK)


@pytest.mark.parametrize("line", [b"DATA", b"BDAT 10 LAST", b"XCLIENT ADDR=1.2.3.4",
                                  b"STARTTLSX", b"HELLO x", b"ETRN x", b"NOO", b"NO0P"])
def test_unknown_verbs_are_counted_errors(lab, line):
    """§9.3, §5.3: DATA, BDAT (RFC 3030), XCLIENT and any other verb nginx's parser does not
    know are parser-level errors: `500 5.5.1 Invalid command`, counted; the reply that reaches
    max_errors is still sent, then the connection closes."""
    proxy = smtp(lab, "max_errors 3;")
    log = LogWatch(proxy)
    with greet(proxy) as c:
        c.send(line + b"\r\n").expect(INVALID)
        c.send(b"NOOP\r\n").expect(OK)
        c.send(line + b"\r\n").expect(INVALID)
        c.send(line + b"\r\n").expect(INVALID).expect_closed()
    log.wait_for("client sent too many invalid commands")


def test_empty_line_and_leading_space_are_errors(lab):
    """§5.3: an empty line and a line starting with a space are parser-level errors."""
    with greet(smtp(lab, "max_errors 2;")) as c:
        c.send(b"\r\n").expect(INVALID)
        c.send(b" NOOP\r\n").expect(INVALID).expect_closed()


def test_max_errors_zero_behaves_like_one(lab):
    """§2.1: `max_errors 0` closes after the first counted error, its reply still sent."""
    with greet(smtp(lab, "max_errors 0;")) as c:
        c.send(b"DATA\r\n").expect(INVALID).expect_closed()


def test_eleven_arguments_are_fine_a_twelfth_is_an_error(lab):
    """§9.3: at most 11 arguments; the 12th makes the line a (counted) invalid command."""
    eleven = b" ".join(b"a%d" % i for i in range(11))
    with greet(smtp(lab, "max_errors 1;")) as c:
        c.send(b"NOOP " + eleven + b"\r\n").expect(OK)
        c.send(b"NOOP " + eleven + b" a11\r\n").expect(INVALID).expect_closed()


def test_tab_after_the_verb_is_an_error(lab):
    """§9.3: only a space ends the verb; `HELO<TAB>a` is a verb with a non-letter, a counted
    parser-level error."""
    with greet(smtp(lab, "max_errors 1;")) as c:
        c.send(b"HELO\ta\r\n").expect(INVALID).expect_closed()


def test_bare_lf_ends_a_line(lab):
    """§9.3: LF alone ends a command line as CRLF does."""
    with greet(smtp(lab)) as c:
        c.send(b"HELO me\n").expect(HELO_REPLY)
        c.send(b"NOOP\n").expect(OK)


def test_cr_without_lf_is_an_error(lab):
    """§5.3: a CR not followed by LF is malformed line syntax (counted)."""
    with greet(smtp(lab, "max_errors 1;")) as c:
        c.send(b"NOOP\rX\r\n").expect(INVALID).expect_closed()


def test_starttls_without_tls_configured_is_not_counted(lab):
    """RFC 3207 §4 / §9.4: with `starttls off` STARTTLS is an invalid command, handler-level:
    not counted."""
    with greet(smtp(lab, "max_errors 1;")) as c:
        for _ in range(3):
            c.send(b"STARTTLS\r\n").expect(INVALID)
        c.send(b"NOOP\r\n").expect(OK)


# -- the client buffer ------------------------------------------------------------------------

def test_too_long_command_is_answered_and_closes(lab):
    """§5.1: a line longer than smtp_client_buffer → `500 5.5.1 Invalid command` and close
    (not a counted error; the whole line was sent, so the close may come as a reset)."""
    proxy = smtp(lab, "smtp_client_buffer 128;")
    log = LogWatch(proxy)
    with greet(proxy) as c:
        c.send(b"HELO " + b"x" * 200 + b"\r\n")
        rest = c.read_all()
        assert INVALID.startswith(rest), rest
    log.wait_for("client sent too long command")


def test_command_filling_the_buffer_exactly_is_too_long(lab):
    """§5.1: 128 bytes without a line end fill `smtp_client_buffer 128`: the answer is the
    invalid-command line and the connection closes (nothing unread, so no reset)."""
    with greet(smtp(lab, "smtp_client_buffer 128;")) as c:
        c.send(b"NOOP " + b"y" * 123)
        c.expect(INVALID).expect_closed()


def test_command_that_fits_the_buffer_is_fine(lab):
    """§5.1: a line of exactly smtp_client_buffer bytes including CRLF is accepted."""
    with greet(smtp(lab, "smtp_client_buffer 128;")) as c:
        c.send(b"HELO " + b"z" * 121 + b"\r\n").expect(HELO_REPLY)
        c.send(b"NOOP\r\n").expect(OK)


def test_pipelined_noop_straddling_a_full_buffer_is_too_long(lab):
    """§5.1 QUIRK [verified]: no compaction, so 21 pipelined NOOPs (126 bytes) and the first
    two bytes of a 22nd fill `smtp_client_buffer 128`: 21 OKs, then the 22nd, short as it is,
    is "too long"."""
    with greet(smtp(lab, "smtp_client_buffer 128;")) as c:
        c.send(b"NOOP\r\n" * 21 + b"NO")
        c.expect(OK * 21 + INVALID).expect_closed()


def test_22_pipelined_noops_with_buffer_128(lab):
    """§5.1 QUIRK [verified], the spec's own case: 22 NOOPs in one packet; the 22nd straddles
    the end of the 128-byte buffer and gets the invalid-command line, then close (4 bytes stay
    unread, so a reset may swallow the tail of the replies)."""
    with greet(smtp(lab, "smtp_client_buffer 128;")) as c:
        c.send(b"NOOP\r\n" * 22)
        got = c.read_all()
    whole = OK * 21 + INVALID
    assert whole.startswith(got) and len(got) >= len(OK), got


def test_buffer_is_reused_once_consumed(lab):
    """§5.1: a consumed buffer is rewound, so many short commands one at a time never fill
    it."""
    with greet(smtp(lab, "smtp_client_buffer 128;")) as c:
        for _ in range(40):
            c.send(b"NOOP\r\n").expect(OK)


# -- pipelining -------------------------------------------------------------------------------

def test_pipelined_commands_in_one_packet(lab):
    """RFC 2920 §3.1 / §5.2: commands sent together are answered one by one, in order."""
    with greet(smtp(lab)) as c:
        c.send(b"HELO me\r\nNOOP\r\nRSET\r\nVRFY x\r\nAUTH\r\nQUIT\r\n")
        c.expect(HELO_REPLY + OK + OK + INVALID + INVALID_ARGUMENT + BYE).expect_closed()


def test_rejected_mail_eats_the_line_ends_of_pipelined_commands(lab):
    """nginx QUIRK (ngx_mail_smtp_log_rejected_command, error log at info): logging the 530
    rewrites every CR/LF of the client buffer as `_` in place, so the commands pipelined after
    the MAIL become one unfinished line, `VRFY x__QUIT__`, that the client's next line end
    completes (answered as VRFY: 500, not counted)."""
    with greet(smtp(lab)) as c:
        c.send(b"HELO me\r\nMAIL FROM:<a@b>\r\nVRFY x\r\nQUIT\r\n")
        c.expect(HELO_REPLY + AUTH_REQUIRED).expect_silence(0.3)
        c.send(b"\r\n").expect(INVALID)
        c.send(b"NOOP\r\n").expect(OK)


def test_commands_split_across_packets(lab):
    """§5.1: parsing resumes where it stopped; a command may arrive in pieces and a packet may
    end in the middle of the next one."""
    with greet(smtp(lab)) as c:
        c.send(b"HEL")
        c.expect_silence(0.2)
        c.send(b"O example.com")
        c.expect_silence(0.2)
        c.send(b"\r\nNO").expect(HELO_REPLY)
        c.send(b"OP\r\nRS").expect(OK)
        c.send(b"ET\r").expect_silence(0.2)
        c.send(b"\n").expect(OK)


def test_pipelined_error_then_rset(lab):
    """nginx-tests mail_smtp.t: an invalid command followed by a pipelined RSET → 500 then
    `250 2.0.0 OK`."""
    with greet(smtp(lab)) as c:
        c.send(b"INVALID COMMAND WITH ARGUMENTS\r\nRSET\r\n").expect(INVALID + OK)


# -- greeting delay and the pre-auth deadline -----------------------------------------------

def test_greeting_delay_rejects_an_early_talker(lab):
    """RFC 5321 §4.3.1 (the client must wait for the greeting) / §9.2: with
    smtp_greeting_delay, data before the greeting → `503 5.5.0 Improper use of SMTP command
    pipelining`, close, and the greeting is never sent."""
    proxy = smtp(lab, "smtp_greeting_delay 1s;")
    log = LogWatch(proxy)
    with proxy.connect() as c:
        c.send(b"EHLO early.example\r\n")
        c.expect(PIPELINING).expect_closed()
    log.wait_for('client was rejected before greeting: "EHLO early.example')


def test_greeting_delay_then_a_patient_client(lab):
    """§9.2: a client that waits gets the greeting after the delay and a normal session."""
    proxy = smtp(lab, "smtp_greeting_delay 1s;")
    with proxy.connect() as c:
        start = time.monotonic()
        c.expect_silence(0.5)
        c.expect(GREETING, timeout=5)
        assert 0.8 <= time.monotonic() - start <= 5, time.monotonic() - start
        c.send(b"EHLO x\r\n").expect(EHLO_DEFAULT)


def test_early_data_without_delay_is_just_pipelined(lab):
    """§9.2: without a greeting delay, data sent before the greeting is processed after it."""
    proxy = smtp(lab)
    with proxy.connect() as c:
        c.send(b"NOOP\r\n")
        c.expect(GREETING + OK)


def test_pre_auth_timeout_is_a_deadline(lab):
    """§5.4 QUIRK [verified]: `timeout` runs from the greeting and commands do not re-arm it:
    a client sending NOOPs is still closed, silently, about `timeout` after the greeting."""
    proxy = smtp(lab, "timeout 2s;")
    log = LogWatch(proxy)
    with greet(proxy, timeout=10) as c:
        start = time.monotonic()
        try:
            while time.monotonic() - start < 8:
                c.send(b"NOOP\r\n").expect(OK)
                time.sleep(0.4)
        except (AssertionError, OSError):
            pass
        c.expect_closed(timeout=8)
        elapsed = time.monotonic() - start
    assert 1.5 <= elapsed <= 7, elapsed
    log.wait_for("client timed out")


def test_client_eof_closes_silently(lab):
    """§5.1: a client EOF before authentication ends the session."""
    with greet(smtp(lab)) as c:
        c.send(b"NOOP\r\n").expect(OK)
        c.sock.shutdown(socket.SHUT_WR)
        c.expect_closed()
