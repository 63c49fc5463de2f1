"""The IMAP client dialogue before authentication: greeting, CAPABILITY, NOOP, LOGOUT, tags,
unknown commands, pipelining and STARTTLS where it is not configured (docs/behaviour.md §7, RFC 3501).

Every scenario runs on each target and asserts the exact bytes the client sees;
the helpers it shares with the other IMAP scenarios are in scenarios/kit/imap_support.py.
"""

from __future__ import annotations

import time

from postern.fakes.auth import Reply
from postern.scenarios.kit.client import Closed
from postern.scenarios.kit.imap_support import (
    CAPS,
    INVALID,
    LOGGED_IN,
    auth_request,
    backend_login,
    greeted,
    read_tagged,
)

# -- greeting and the simple commands ------------------------------------------------------

def test_greeting_is_exact_and_alone(lab):
    """RFC 3501 §7.1.1 (server greeting): nginx sends `* OK IMAP4 ready` and nothing else —
    no capability code, no server name; the next bytes answer the first command."""
    with greeted(lab) as c:
        c.expect_silence(0.3)
        c.send(b"a1 NOOP\r\n").expect(b"a1 OK completed\r\n")


def test_capability_defaults(lab):
    """RFC 3501 §6.1.1 / nginx imap_capabilities default `IMAP4 IMAP4rev1 UIDPLUS` and
    imap_auth default `plain`: one untagged line, then the tagged OK; the verb is
    case-insensitive."""
    with greeted(lab) as c:
        c.send(b"a1 capability\r\n")
        c.expect(CAPS + b" AUTH=PLAIN\r\na1 OK completed\r\n")
        c.send(b"A2 CAPABILITY\r\n")
        c.expect(CAPS + b" AUTH=PLAIN\r\nA2 OK completed\r\n")
    assert lab.auth.requests == []


def test_capability_custom_list(lab):
    """nginx imap_capabilities: the configured tokens replace the default list, in order,
    and AUTH= tokens still follow them."""
    with greeted(lab, 'imap_capabilities IMAP4rev1 "SASL-IR" ID XYZZY;') as c:
        c.send(b"a1 CAPABILITY\r\n")
        c.expect(b"* CAPABILITY IMAP4rev1 SASL-IR ID XYZZY AUTH=PLAIN\r\na1 OK completed\r\n")


def test_capability_server_list_replaces_mail_list(lab):
    """nginx: list directives inherit by replacement — a server-level imap_capabilities
    hides the mail-level one entirely (docs/behaviour.md §1)."""
    with greeted(lab, "imap_capabilities IMAP4rev1;", mail="imap_capabilities QUOTA IDLE;") as c:
        c.send(b"a1 CAPABILITY\r\n")
        c.expect(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\na1 OK completed\r\n")


def test_capability_auth_tokens_in_fixed_order(lab):
    """nginx imap_auth: AUTH= tokens come in the fixed order PLAIN, LOGIN, CRAM-MD5,
    EXTERNAL whatever the configured order (RFC 3501 §6.2.2 AUTH=<mech>)."""
    with greeted(lab, "imap_auth external cram-md5 login plain;") as c:
        c.send(b"a1 CAPABILITY\r\n")
        c.expect(CAPS + b" AUTH=PLAIN AUTH=LOGIN AUTH=CRAM-MD5 AUTH=EXTERNAL\r\n"
                 b"a1 OK completed\r\n")


def test_capability_login_only(lab):
    """nginx imap_auth login: only AUTH=LOGIN is advertised (PLAIN is not implied)."""
    with greeted(lab, "imap_auth login;") as c:
        c.send(b"a1 CAPABILITY\r\n")
        c.expect(CAPS + b" AUTH=LOGIN\r\na1 OK completed\r\n")


def test_capability_cram_md5_and_external(lab):
    """nginx imap_auth cram-md5 external: exactly those two tokens, CRAM-MD5 first."""
    with greeted(lab, "imap_auth external cram-md5;") as c:
        c.send(b"a1 CAPABILITY\r\n")
        c.expect(CAPS + b" AUTH=CRAM-MD5 AUTH=EXTERNAL\r\na1 OK completed\r\n")


def test_capability_extra_arguments_ignored(lab):
    """nginx: CAPABILITY ignores up to three arguments (RFC 3501 §6.1.1 takes none); a
    fourth is a syntax error of the parser."""
    with greeted(lab) as c:
        c.send(b'a1 CAPABILITY x "y z" {1+}\r\nw\r\n')
        c.expect(CAPS + b" AUTH=PLAIN\r\na1 OK completed\r\n")
        c.send(b"a2 CAPABILITY a b c d\r\n").expect(b"a2 " + INVALID)
        c.send(b"a3 NOOP\r\n").expect(b"a3 OK completed\r\n")


def test_noop(lab):
    """RFC 3501 §6.1.2 NOOP: `<tag> OK completed`, nothing sent upstream or to auth."""
    with greeted(lab) as c:
        c.send(b"x.1 NOOP\r\n").expect(b"x.1 OK completed\r\n")
        c.send(b"x.2 noop ignored args\r\n").expect(b"x.2 OK completed\r\n")
    assert lab.auth.requests == [] and lab.imap.commands == []


def test_logout_says_bye_then_closes(lab):
    """RFC 3501 §6.1.3 LOGOUT: untagged BYE, tagged OK in one write, then the server closes;
    a command pipelined after LOGOUT is never answered."""
    with greeted(lab) as c:
        c.send(b"a1 LOGOUT\r\na2 NOOP\r\n")
        c.expect(b"* BYE\r\na1 OK completed\r\n").expect_closed()
    with greeted(lab) as c:
        c.send(b"a1 logout\r\n").expect(b"* BYE\r\na1 OK completed\r\n").expect_closed()


# -- tags ----------------------------------------------------------------------------------

def test_tag_of_32_characters_is_the_limit(lab):
    """nginx (1.21.0): a tag is at most 32 characters; 33 is invalid before the tag is
    complete, so the reply is untagged `* BAD`."""
    tag32 = b"A-._z0123456789" + b"t" * 17
    assert len(tag32) == 32
    with greeted(lab) as c:
        c.send(tag32 + b" NOOP\r\n").expect(tag32 + b" OK completed\r\n")
        c.send(tag32 + b"x NOOP\r\n").expect(b"* " + INVALID)
        c.send(b"a1 NOOP\r\n").expect(b"a1 OK completed\r\n")


def test_tag_with_invalid_characters(lab):
    """nginx (1.21.0): tag characters are A-Z a-z 0-9 - . _ only (stricter than RFC 3501
    §9 `tag`); anything else is a parser error answered with `* BAD`."""
    with greeted(lab) as c:
        for line in (b"a+b NOOP\r\n", b"a*1 NOOP\r\n", b"{1} NOOP\r\n", b'"a" NOOP\r\n'):
            c.send(line).expect(b"* " + INVALID)
        c.send(b"a1 NOOP\r\n").expect(b"a1 OK completed\r\n")


def test_empty_tag_from_a_leading_space(lab):
    """nginx QUIRK (docs/behaviour.md §7.2): a line starting with a space has the empty tag and is valid,
    so ` NOOP` is answered ` OK completed` (a leading space, no tag)."""
    with greeted(lab) as c:
        c.send(b" NOOP\r\n").expect(b" OK completed\r\n")
        c.send(b" CAPABILITY\r\n").expect(CAPS + b" AUTH=PLAIN\r\n OK completed\r\n")


def test_spaces_between_tag_and_command_are_skipped(lab):
    """nginx: extra spaces after the tag are skipped, and the stored tag keeps exactly one;
    a line ending right after the tag is invalid (tagged, the tag being complete)."""
    with greeted(lab) as c:
        c.send(b"a1    NOOP\r\n").expect(b"a1 OK completed\r\n")
        c.send(b"a2 \r\n").expect(b"a2 " + INVALID)
        c.send(b"a3\r\n").expect(b"* " + INVALID)


def test_stale_tag_after_a_waited_failure(lab):
    """nginx QUIRK (docs/behaviour.md §7.3): after an auth failure with Auth-Wait the old tag is still
    stored — as a place and length in the command buffer, which the auth request rewound — so
    a next line that is invalid before its tag completes is answered with whatever bytes sit
    there now: its own first bytes when the old tag was at the buffer start, the old tag when
    it lay further in. The session goes on; logins count up (docs/behaviour.md §10.4)."""
    lab.auth.push(Reply.fail("Nope", wait=1), Reply.fail("Nope", wait=1))
    with greeted(lab) as c:
        c.send(b"a1 LOGIN alice wrong\r\n")
        c.expect(b"a1 NO Nope\r\n", timeout=5)
        c.send(b"+bad\r\n").expect(b"+ba" + INVALID)
        c.send(b"b0 NOOP\r\nb1 LOGIN alice wrong\r\n")
        c.expect(b"b0 OK completed\r\nb1 NO Nope\r\n", timeout=5)
        c.send(b"+bad\r\n").expect(b"b1 " + INVALID)
        c.send(b"a2 LOGIN alice secret\r\n").expect(b"a2 " + LOGGED_IN)
    assert [r.raw for r in lab.auth.requests] == [
        auth_request(password=b"wrong"), auth_request(password=b"wrong", attempt=2),
        auth_request(attempt=3)]
    assert lab.imap.commands == [backend_login(b"a2", b"alice", b"secret")]


# -- commands nginx does not know before authentication -----------------------------------

def test_unknown_commands_before_auth(lab):
    """nginx: only NOOP LOGIN LOGOUT STARTTLS CAPABILITY AUTHENTICATE exist before auth;
    SELECT (RFC 3501 §6.3.1), ID (RFC 2971), ENABLE (RFC 5161) and the rest are tagged
    `BAD invalid command`, nothing reaches the upstream."""
    with greeted(lab) as c:
        for cmd in (b"SELECT INBOX", b"ID NIL", b"ENABLE UTF8=ACCEPT", b"FETCH 1 BODY[]"):
            c.send(b"a1 " + cmd + b"\r\n").expect(b"a1 " + INVALID)
        c.send(b"a2 NOOP\r\n").expect(b"a2 OK completed\r\n")
    assert lab.auth.requests == [] and lab.imap.commands == []


def test_malformed_command_words(lab):
    """nginx: the verb is letters only and must be complete; an empty line, a verb with a
    digit or a prefix of a known verb are parser errors (docs/behaviour.md §7.2)."""
    with greeted(lab) as c:
        c.send(b"\r\n").expect(b"* " + INVALID)
        c.send(b"a1 NOOP1\r\n").expect(b"a1 " + INVALID)
        c.send(b"a2 NOO\r\n").expect(b"a2 " + INVALID)
        c.send(b"a3 NOOPS\r\n").expect(b"a3 " + INVALID)
        c.send(b"a4 NOOP\r\n").expect(b"a4 OK completed\r\n")


def test_line_endings(lab):
    """RFC 3501 §2.2 lines end in CRLF; nginx also accepts a bare LF, and a CR followed by
    anything else makes the line invalid (answered once its LF arrives)."""
    with greeted(lab) as c:
        c.send(b"a1 NOOP\n").expect(b"a1 OK completed\r\n")
        c.send(b"a2 NOOP\rX\r\n").expect(b"a2 " + INVALID)
        c.send(b"a3 CAPABILITY\n").expect(CAPS + b" AUTH=PLAIN\r\na3 OK completed\r\n")


def test_starttls_without_tls_configured(lab):
    """RFC 3501 §6.2.1 STARTTLS is only offered with `starttls on|only`; without it nginx
    answers `BAD invalid command`, a handler-level error that max_errors does not count."""
    with greeted(lab, "max_errors 1;") as c:
        c.send(b"a1 STARTTLS\r\n").expect(b"a1 " + INVALID)
        c.send(b"a2 starttls\r\n").expect(b"a2 " + INVALID)
        c.send(b"a3 CAPABILITY\r\n").expect(CAPS + b" AUTH=PLAIN\r\na3 OK completed\r\n")


# -- pipelining ----------------------------------------------------------------------------

def test_pipelining_in_one_packet(lab):
    """nginx (1.21.0) / RFC 3501 §5.5: commands sent together are answered one by one, in
    order, including a LOGIN whose pipelined follower goes to the upstream after login."""
    with greeted(lab) as c:
        c.send(b"a NOOP\r\nb CAPABILITY\r\nc FOO\r\nd LOGIN alice secret\r\ne NOOP\r\n")
        c.expect(b"a OK completed\r\n" + CAPS + b" AUTH=PLAIN\r\nb OK completed\r\n"
                 b"c " + INVALID + b"d " + LOGGED_IN)
        assert read_tagged(c, b"e") == b"e OK NOOP completed\r\n"
    assert [r.raw for r in lab.auth.requests] == [auth_request()]
    assert lab.imap.commands == [backend_login(b"d", b"alice", b"secret"), b"e NOOP"]


def test_pipelining_across_packets(lab):
    """nginx: parsing resumes where it stopped, so a command split over packets (mid-tag,
    mid-verb, between CR and LF) is answered once complete and not before."""
    with greeted(lab) as c:
        for part in (b"a", b"1 NO", b"OP\r"):
            c.send(part)
            c.expect_silence(0.15)
        c.send(b"\na2 LOG").expect(b"a1 OK completed\r\n")
        c.send(b"IN alice sec")
        c.expect_silence(0.15)
        c.send(b"ret\r\n").expect(b"a2 " + LOGGED_IN)
    assert [r.raw for r in lab.auth.requests] == [auth_request()]


def test_pipelined_authenticate_exchange(lab):
    """RFC 4616 / RFC 3501 §6.2.2: an AUTHENTICATE PLAIN whose response line is sent in the
    same packet gets the `+ ` continuation and then the login result, in order."""
    with greeted(lab) as c:
        c.send(b"a1 AUTHENTICATE PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\n")
        c.expect(b"+ \r\na1 " + LOGGED_IN)
    assert [r.raw for r in lab.auth.requests] == [auth_request()]


def test_preauth_timeout_is_a_total_deadline(lab):
    """nginx: pre-auth timeout is a total deadline (docs/behaviour.md §5.4) — armed at the greeting and
    not re-armed by commands; with `timeout 2s` a client sending NOOP every 0.5 s is closed
    silently about 2 s after the greeting."""
    with greeted(lab, "timeout 2s;") as c:
        start = time.monotonic()
        answered = 0
        while time.monotonic() - start < 8:
            tag = b"n%d" % answered
            try:
                c.send(tag + b" NOOP\r\n")
                line = c.readline()
            except (OSError, Closed):  # reset on send, or EOF
                break
            assert line == tag + b" OK completed\r\n", c.dump()
            answered += 1
            time.sleep(0.5)
        elapsed = time.monotonic() - start
        assert c.eof or c.buffer == b"", c.dump()
    assert 1.5 <= elapsed <= 4.5, f"closed after {elapsed:.2f}s\n{c.dump()}"
    assert answered >= 2, c.dump()
