"""The POP3 client dialogue before authentication: greeting (with and without the APOP salt),
CAPA, the AUTH listing, NOOP, QUIT, unknown verbs, the USER state, pipelining, STLS where it is
not configured and the pre-auth deadline (docs/behaviour.md §8, RFC 1939, RFC 2449, RFC 1734/5034).

Every scenario runs on each target and asserts the exact bytes the client sees;
the helpers it shares with the other POP3 scenarios are in scenarios/kit/pop3_support.py.
"""

from __future__ import annotations

import re
import time

import pytest
from postern.scenarios.kit.client import Closed
from postern.scenarios.kit.pop3_support import (
    AUTH_LIST,
    CAPA,
    CAPA_HEAD,
    INVALID,
    OK,
    SALT,
    SALTED,
    auth_request,
    backend_login,
    greeted,
    greeted_with_salt,
    logged_in,
    pop3,
)

# -- greeting --------------------------------------------------------------------------------

def test_greeting_without_salt(lab):
    """RFC 1939 §4 greeting; nginx default pop3_auth plain: exactly `+OK POP3 ready`, no
    timestamp, and nothing else until the client speaks."""
    with greeted(lab) as c:
        c.expect_silence(0.3)
        c.send(b"NOOP\r\n").expect(OK)
    assert lab.auth.requests == []


def test_greeting_with_salt_for_apop(lab):
    """RFC 1939 §7 APOP timestamp: with apop enabled the greeting ends with `<R.T@server_name>`
    (server_name mx.test), T the current Unix time; each connection gets its own salt."""
    before = int(time.time())
    first, salt1 = greeted_with_salt(lab, "pop3_auth plain apop;")
    second, salt2 = greeted_with_salt(lab, "pop3_auth plain apop;")
    with first, second:
        for salt in (salt1, salt2):
            stamp = int(SALT.fullmatch(salt).group(2))
            assert before - 2 <= stamp <= time.time() + 2, salt
        assert salt1 != salt2
        first.send(b"NOOP\r\n").expect(OK)


def test_greeting_with_salt_for_cram_md5_only(lab):
    """nginx: cram-md5 alone also puts the salt in the greeting (it is the CRAM-MD5 challenge
    later, RFC 2195 §2)."""
    c, _ = greeted_with_salt(lab, "pop3_auth cram-md5;")
    with c:
        c.send(b"NOOP\r\n").expect(OK)


def test_salt_names_the_servers_server_name(lab):
    """nginx server_name (docs/behaviour.md §2.1): the salt's domain is the server's own server_name, which
    replaces the mail-level one."""
    with pop3(lab, "pop3_auth apop;\nserver_name pop.example.org;").connect() as c:
        line = c.readline()
        assert re.fullmatch(rb"\+OK POP3 ready <\d+\.\d+@pop\.example\.org>\r\n", line), line


# -- CAPA (RFC 2449) -------------------------------------------------------------------------

def test_capa_defaults(lab):
    """RFC 2449 §5 CAPA; nginx pop3_capabilities default `TOP USER UIDL`, then the SASL line
    for pop3_auth plain (PLAIN and LOGIN), then `.`; the verb is case-insensitive."""
    with greeted(lab) as c:
        c.send(b"CAPA\r\n").expect(CAPA)
        c.send(b"capa\r\n").expect(CAPA)
        c.send(b"Capa ignored args\r\n").expect(CAPA)
    assert lab.auth.requests == [] and lab.pop3.commands == []


def test_capa_custom_capabilities(lab):
    """nginx pop3_capabilities: the configured lines replace the defaults, in order, quoted
    ones with their spaces (RFC 2449 §6 e.g. `EXPIRE NEVER`); the SASL line still follows."""
    with greeted(lab, 'pop3_capabilities "EXPIRE NEVER" TOP PIPELINING "IMPLEMENTATION x";') as c:
        c.send(b"CAPA\r\n").expect(CAPA_HEAD + b"EXPIRE NEVER\r\nTOP\r\nPIPELINING\r\n"
                                   b"IMPLEMENTATION x\r\nSASL PLAIN LOGIN\r\n.\r\n")


def test_capa_server_list_replaces_mail_list(lab):
    """nginx: list directives inherit by replacement (docs/behaviour.md §1): a server-level
    pop3_capabilities hides the mail-level one."""
    with greeted(lab, "pop3_capabilities UIDL;", mail="pop3_capabilities TOP USER;") as c:
        c.send(b"CAPA\r\n").expect(CAPA_HEAD + b"UIDL\r\nSASL PLAIN LOGIN\r\n.\r\n")
    with greeted(lab, "", mail="pop3_capabilities TOP USER;") as c:
        c.send(b"CAPA\r\n").expect(CAPA_HEAD + b"TOP\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n")


def test_capa_sasl_line_follows_pop3_auth(lab):
    """RFC 2449 §6.3 SASL capability; nginx lists the enabled mechanisms in the fixed order
    PLAIN, LOGIN, CRAM-MD5, EXTERNAL (plain implies LOGIN; APOP is never a SASL name)."""
    head = CAPA_HEAD + b"TOP\r\nUSER\r\nUIDL\r\n"
    c, _ = greeted_with_salt(lab, "pop3_auth external cram-md5 plain;")
    with c:
        c.send(b"CAPA\r\n").expect(head + b"SASL PLAIN LOGIN CRAM-MD5 EXTERNAL\r\n.\r\n")
    with greeted(lab, "pop3_auth external;") as c:
        c.send(b"CAPA\r\n").expect(head + b"SASL EXTERNAL\r\n.\r\n")


def test_capa_bare_sasl_line_with_apop_only(lab):
    """nginx QUIRK (docs/behaviour.md §8.4): with no SASL mechanism enabled (pop3_auth apop) the SASL line
    is still there, bare — although RFC 2449 §6.3 wants at least one mechanism."""
    c, _ = greeted_with_salt(lab, "pop3_auth apop;")
    with c:
        c.send(b"CAPA\r\n").expect(CAPA_HEAD + b"TOP\r\nUSER\r\nUIDL\r\nSASL\r\n.\r\n")


def test_capa_with_apop_and_sasl_mechanisms(lab):
    """nginx: apop between plain and cram-md5 adds nothing to the SASL line (docs/behaviour.md §8.4)."""
    c, _ = greeted_with_salt(lab, SALTED)
    with c:
        c.send(b"CAPA\r\n").expect(CAPA_HEAD + b"TOP\r\nUSER\r\nUIDL\r\n"
                                   b"SASL PLAIN LOGIN CRAM-MD5\r\n.\r\n")


@pytest.mark.parametrize("dialogue,password", [
    ([(b"USER alice\r\n", OK), (b"CAPA\r\n", CAPA), (b"NOOP\r\n", OK)], b"PASS secret\r\n"),
    ([(b"NOOP\n", OK), (b"NOOP\rX\r\n", INVALID), (b"CAPA\n", CAPA), (b"USER alice\n", OK)],
     b"PASS secret\n"),
], ids=["capa-in-user-state", "line-endings"])
def test_capa_and_line_endings_before_the_login(lab, dialogue, password):
    """RFC 2449 §5 (CAPA in the AUTHORIZATION state); nginx answers it after USER with the
    same list and stays in the USER state, so PASS still completes the login. RFC 1939 §3:
    lines end in CRLF; nginx also accepts a bare LF, and a CR followed by anything else makes
    the line invalid (answered once its LF arrives)."""
    with greeted(lab) as c:
        for line, reply in dialogue:
            c.send(line).expect(reply)
        c.send(password).expect(logged_in(lab))
    assert [r.raw for r in lab.auth.requests] == [auth_request()]


# -- AUTH listing (RFC 1734 / RFC 5034) ------------------------------------------------------

def test_auth_without_arguments_lists_mechanisms(lab):
    """nginx: `AUTH` alone (the RFC 1734 §2 listing form) answers `+OK methods supported:`,
    one line per enabled SASL mechanism in PLAIN, LOGIN, CRAM-MD5, EXTERNAL order, `.`."""
    with greeted(lab) as c:
        c.send(b"AUTH\r\n").expect(AUTH_LIST)
        c.send(b"auth\r\n").expect(AUTH_LIST)
    c, _ = greeted_with_salt(lab, "pop3_auth external cram-md5 plain apop;")
    with c:
        c.send(b"AUTH\r\n").expect(b"+OK methods supported:\r\nPLAIN\r\nLOGIN\r\nCRAM-MD5\r\n"
                                   b"EXTERNAL\r\n.\r\n")
    c, _ = greeted_with_salt(lab, "pop3_auth apop;")
    with c:
        c.send(b"AUTH\r\n").expect(b"+OK methods supported:\r\n.\r\n")


# -- NOOP, QUIT ------------------------------------------------------------------------------

def test_noop(lab):
    """RFC 1939 §5 NOOP (nginx accepts it before authentication too): `+OK`, nothing goes to
    the auth server or upstream; arguments are ignored."""
    with greeted(lab) as c:
        c.send(b"NOOP\r\n").expect(OK)
        c.send(b"noop x y z\r\n").expect(OK)
    assert lab.auth.requests == [] and lab.pop3.commands == []


def test_quit_answers_then_closes(lab):
    """RFC 1939 §4 QUIT in the AUTHORIZATION state: `+OK`, then the server closes; a command
    pipelined after QUIT is never answered."""
    with greeted(lab) as c:
        c.send(b"QUIT\r\nNOOP\r\n").expect(OK).expect_closed()
    with greeted(lab) as c:
        c.send(b"quit\r\n").expect(OK).expect_closed()


def test_quit_in_user_state(lab):
    """RFC 1939 §4: QUIT after USER also answers `+OK` and closes; no auth request."""
    with greeted(lab) as c:
        c.send(b"USER alice\r\n").expect(OK)
        c.send(b"QUIT\r\n").expect(OK).expect_closed()
    assert lab.auth.requests == []


# -- commands nginx does not know before authentication -------------------------------------

def test_transaction_commands_before_auth_are_invalid(lab):
    """RFC 1939 §5: STAT, LIST, RETR, DELE, RSET, UIDL, TOP are TRANSACTION-state commands;
    nginx does not know them (`-ERR invalid command`) and nothing reaches the upstream."""
    with greeted(lab, "max_errors 20;") as c:
        for cmd in (b"STAT", b"LIST", b"RETR 1", b"DELE 1", b"RSET", b"UIDL", b"TOP 1 0",
                    b"LAST", b"XTND XLST"):
            c.send(cmd + b"\r\n").expect(INVALID)
        c.send(b"NOOP\r\n").expect(OK)
    assert lab.auth.requests == [] and lab.pop3.commands == []


def test_malformed_command_words(lab):
    """nginx (docs/behaviour.md §8.2): the verb is exactly 4 letters; an empty line, a leading space, a
    digit, a 3- or 5-letter word are all parser errors."""
    with greeted(lab, "max_errors 20;") as c:
        for line in (b"\r\n", b" NOOP\r\n", b"NOO1\r\n", b"NOO\r\n", b"NOOPS\r\n",
                     b"CAPAB\r\n", b"USER1 x\r\n", b"\tNOOP\r\n"):
            c.send(line).expect(INVALID)
        c.send(b"NOOP\r\n").expect(OK)


def test_too_many_arguments(lab):
    """nginx: at most three arguments; a fourth is a parser error (NOOP and CAPA ignore up to
    three)."""
    with greeted(lab) as c:
        c.send(b"NOOP a b c\r\n").expect(OK)
        c.send(b"NOOP a b c d\r\n").expect(INVALID)
        c.send(b"CAPA a b c d\r\n").expect(INVALID)
        c.send(b"NOOP\r\n").expect(OK)


def test_stls_without_tls_configured(lab):
    """RFC 2595 §4 STLS is only offered with `starttls on|only`; without it nginx answers
    `-ERR invalid command`, a handler-level error that max_errors does not count."""
    with greeted(lab, "max_errors 1;") as c:
        c.send(b"STLS\r\n").expect(INVALID)
        c.send(b"stls\r\n").expect(INVALID)
        c.send(b"CAPA\r\n").expect(CAPA)


# -- the USER state (docs/behaviour.md §8.3) --------------------------------------------------------------

def test_pass_before_user_is_invalid(lab):
    """RFC 1939 §7 PASS is only valid right after USER; nginx refuses it in the initial state
    (handler-level, not counted) and asks nothing of the auth server."""
    with greeted(lab, "max_errors 1;") as c:
        c.send(b"PASS secret\r\n").expect(INVALID)
        c.send(b"PASS secret\r\n").expect(INVALID)
        c.send(b"NOOP\r\n").expect(OK)
    assert lab.auth.requests == []


def test_user_needs_an_argument(lab):
    """RFC 1939 §7 USER name: without a name nginx answers `-ERR invalid command` (handler
    level) and stays in the initial state."""
    with greeted(lab, "max_errors 1;") as c:
        c.send(b"USER\r\n").expect(INVALID)
        c.send(b"USER   \r\n").expect(INVALID)
        c.send(b"PASS secret\r\n").expect(INVALID)
        c.send(b"USER alice\r\n").expect(OK)
        c.send(b"PASS secret\r\n").expect(logged_in(lab))
    assert [r.raw for r in lab.auth.requests] == [auth_request()]


def test_any_other_command_after_user_resets_to_start(lab):
    """nginx (docs/behaviour.md §8.3): in the USER state anything but PASS, CAPA, NOOP, QUIT — a second
    USER, AUTH, APOP, STLS — is `-ERR invalid command` and drops back to the initial state,
    so a following PASS is refused and USER must be repeated."""
    for intruder in (b"USER bob", b"AUTH", b"AUTH PLAIN", b"STLS", b"APOP alice x"):
        with greeted(lab) as c:
            c.send(b"USER alice\r\n").expect(OK)
            c.send(intruder + b"\r\n").expect(INVALID)
            c.send(b"PASS secret\r\n").expect(INVALID)
            c.send(b"USER alice\r\n").expect(OK)
            c.send(b"QUIT\r\n").expect(OK).expect_closed()
    assert lab.auth.requests == []


def test_unknown_command_after_user_resets_and_counts(lab):
    """nginx: an unknown verb after USER is a parser error — counted toward max_errors — and
    also drops back to the initial state."""
    with greeted(lab, "max_errors 2;") as c:
        c.send(b"USER alice\r\n").expect(OK)
        c.send(b"STAT\r\n").expect(INVALID)
        c.send(b"PASS secret\r\n").expect(INVALID)
        c.send(b"USER alice\r\n").expect(OK)
        c.send(b"LIST\r\n").expect(INVALID).expect_closed()
    assert lab.auth.requests == []


def test_captured_exchange_of_spec_18(lab):
    """The docs/behaviour.md §18 capture with `pop3_auth plain apop cram-md5; starttls on;` minus STLS
    (no certificate here, so `starttls off`): CAPA, AUTH, `USER  a b ` (two spaces, trailing
    space), CAPA in the USER state, STAT → invalid and back to the start, PASS → invalid."""
    c, _ = greeted_with_salt(lab, SALTED)
    sasl = b"SASL PLAIN LOGIN CRAM-MD5\r\n"
    with c:
        c.send(b"CAPA\r\n").expect(CAPA_HEAD + b"TOP\r\nUSER\r\nUIDL\r\n" + sasl + b".\r\n")
        c.send(b"AUTH\r\n").expect(b"+OK methods supported:\r\nPLAIN\r\nLOGIN\r\nCRAM-MD5\r\n"
                                   b".\r\n")
        c.send(b"USER  a b \r\n").expect(OK)
        c.send(b"CAPA\r\n").expect(CAPA_HEAD + b"TOP\r\nUSER\r\nUIDL\r\n" + sasl + b".\r\n")
        c.send(b"STAT\r\n").expect(INVALID)
        c.send(b"PASS x\r\n").expect(INVALID)
    assert lab.auth.requests == []


# -- pipelining (nginx 1.21.0) ---------------------------------------------------------------

def test_pipelining_in_one_packet(lab):
    """RFC 2449 §6.6 PIPELINING / nginx 1.21.0: commands sent together are answered one by one
    in order, up to the login; what follows PASS goes to the upstream after the login."""
    with greeted(lab) as c:
        c.send(b"NOOP\r\nCAPA\r\nSTAT\r\nUSER alice\r\nPASS secret\r\nNOOP\r\n")
        c.expect(OK + CAPA + INVALID + OK + logged_in(lab) + OK)
    assert [r.raw for r in lab.auth.requests] == [auth_request()]
    assert lab.pop3.commands == backend_login() + [b"NOOP"]


def test_pipelining_across_packets(lab):
    """nginx: parsing resumes where it stopped, so a command split over packets (mid-verb,
    mid-argument, between CR and LF) is answered once complete and not before."""
    with greeted(lab) as c:
        for part in (b"NO", b"OP\r"):
            c.send(part)
            c.expect_silence(0.15)
        c.send(b"\nUS").expect(OK)
        c.send(b"ER ali")
        c.expect_silence(0.15)
        c.send(b"ce\r\nPASS sec").expect(OK)
        c.expect_silence(0.15)
        c.send(b"ret\r\n").expect(logged_in(lab))
    assert [r.raw for r in lab.auth.requests] == [auth_request()]


# -- the pre-auth deadline -------------------------------------------------------------------

def test_preauth_timeout_is_a_total_deadline(lab):
    """nginx: the pre-auth timeout is a total deadline (docs/behaviour.md §5.4) — armed at the greeting and
    not re-armed by commands; with `timeout 2s` a client sending NOOP every 0.5 s is closed
    silently about 2 s after the greeting."""
    with greeted(lab, "timeout 2s;") as c:
        start = time.monotonic()
        answered = 0
        while time.monotonic() - start < 8:
            try:
                c.send(b"NOOP\r\n")
                line = c.readline()
            except (OSError, Closed):  # reset on send, or EOF
                break
            assert line == OK, c.dump()
            answered += 1
            time.sleep(0.5)
        elapsed = time.monotonic() - start
        assert c.eof or c.buffer == b"", c.dump()
    assert 1.5 <= elapsed <= 4.5, f"closed after {elapsed:.2f}s\n{c.dump()}"
    assert answered >= 2, c.dump()


def test_preauth_timeout_in_user_state_is_silent(lab):
    """nginx: the deadline also runs in the USER state; expiry closes without a reply."""
    with greeted(lab, "timeout 1s;") as c:
        c.send(b"USER alice\r\n").expect(OK)
        start = time.monotonic()
        c.expect_closed(timeout=5)
        assert time.monotonic() - start <= 3.5
    assert lab.auth.requests == []
