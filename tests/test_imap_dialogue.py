"""The IMAP pre-auth machine, bytes in and actions out (docs/behaviour.md §7)."""

from dataclasses import replace

import pytest
from postern.proxy.auth_http import AuthResponse
from postern.proxy.conf.settings import SslSettings
from postern.proxy.dialogue import Authenticate, Close, Log, StartTls
from postern.proxy.imap.dialogue import ImapDialogue

from tests.dialogue_support import IMAP_CONF, exchange, runner, sent, sent_then_closed

CONF = IMAP_CONF


run = runner(ImapDialogue, CONF)


@pytest.mark.parametrize("line,reply", [
    (b"a1 NOOP\r\n", b"a1 OK completed\r\n"),
    (b"a1 noop\n", b"a1 OK completed\r\n"),
    (b" NOOP\r\n", b" OK completed\r\n"),
    (b"a1 CAPABILITY\r\n", b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN\r\na1 OK completed\r\n"),
    (b"a1 CAPABILITY extra args\r\n",
     b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN\r\na1 OK completed\r\n"),
    (b"a1 SELECT INBOX\r\n", b"a1 BAD invalid command\r\n"),
    (b"a1 ID NIL\r\n", b"a1 BAD invalid command\r\n"),
    (b"\r\n", b"* BAD invalid command\r\n"),
    (b"a+b NOOP\r\n", b"* BAD invalid command\r\n"),
    (b"a" * 32 + b" NOOP\r\n", b"a" * 32 + b" OK completed\r\n"),
    (b"a" * 33 + b" NOOP\r\n", b"* BAD invalid command\r\n"),
    (b"a1 NOOP\rx\n", b"a1 BAD invalid command\r\n"),
    (b"a1 STARTTLS\r\n", b"a1 BAD invalid command\r\n"),
    (b"a1 LOGIN onlyone\r\n", b"a1 BAD invalid command\r\n"),
    (b'a1 LOGIN "" x\r\n', b"a1 BAD invalid command\r\n"),
    (b"a1 AUTHENTICATE\r\n", b"a1 BAD invalid command\r\n"),
    (b"a1 AUTHENTICATE CRAM-MD5\r\n", b"a1 BAD invalid command\r\n"),
    (b"a1 AUTHENTICATE EXTERNAL\r\n", b"a1 BAD invalid command\r\n"),
    (b"a1 AUTHENTICATE DIGEST-MD5\r\n", b"a1 BAD invalid command\r\n"),
    (b"a1 AUTHENTICATE PLAIN\r\n", b"+ \r\n"),
    (b"a1 AUTHENTICATE LOGIN\r\n", b"+ VXNlcm5hbWU6\r\n"),
    (b"a1 AUTHENTICATE LOGIN dXNlcg==\r\n", b"+ UGFzc3dvcmQ6\r\n"),
    (b"a1 NOOP a b c d\r\n", b"a1 BAD invalid command\r\n"),
])
def test_single_line_replies(line, reply):
    _, actions = run(line)
    assert sent(actions) == reply


def test_logout_says_bye_then_closes():
    sent_then_closed(run(b"a1 LOGOUT\r\n")[1], b"* BYE\r\na1 OK completed\r\n")


def test_login_quoted_strings_are_unescaped():
    m, actions = run(b'a1 LOGIN "us er%\\"x" "p\\\\w"\r\n')
    assert isinstance(actions[-1], Authenticate)
    assert (m.creds.login, m.creds.password, m.creds.method) == (b'us er%"x', b"p\\w", "plain")
    assert m.tag == b"a1 " and m.creds.attempt == 1


@pytest.mark.parametrize("line,login,password", [
    (b'a LOGIN al\\ice "s\\ecret"\r\n', b"al\\ice", b"secret"),
    (b'a LOGIN "al\\ice" se\\cret\r\n', b"alice", b"se\\cret"),
    (b'a LOGIN "al\\ice" {4+}\r\n"\\%x\r\n', b"alice", b'"\\%x'),
])
def test_unescaping_is_per_quoted_argument_never_atoms_or_literals(line, login, password):
    m, actions = run(line)
    assert isinstance(actions[-1], Authenticate)
    assert (m.creds.login, m.creds.password) == (login, password)


def test_synchronising_literals():
    m = exchange(run, (b"a2 LOGIN {4}\r\n", b"+ OK\r\n"), (b"user {6}\r\n", b"+ OK\r\n"))
    m, actions = run(b"secret\r\n", machine=m)
    assert isinstance(actions[-1], Authenticate)
    assert (m.creds.login, m.creds.password) == (b"user", b"secret")


def test_non_synchronising_literal_and_zero_literal_quirk():
    m, actions = run(b"a LOGIN {4+}\r\nuser {1+}\r\nx\r\n")
    assert sent(actions) == b"" and (m.creds.login, m.creds.password) == (b"user", b"x")
    _, actions = run(b"a1 NOOP {0}\r\nX\r\n")
    assert sent(actions) == b"+ OK\r\na1 OK completed\r\n"


def test_invalid_line_announcing_nonsync_literal_closes():
    _, actions = run(b"a1 FOO {5+}\r\n")
    assert sent(actions) == b"a1 BAD invalid command\r\n" or sent(actions) == b"* BAD invalid command\r\n"
    assert isinstance(actions[-1], Close)


def test_max_errors_counts_parser_errors_only():
    conf = replace(CONF, max_errors=3)
    _, actions = run(b"a LOGIN onlyone\r\n" * 5 + b"b NOOP\r\n", conf)
    assert sent(actions).endswith(b"b OK completed\r\n")
    _, actions = run(b"a FOO\r\nb FOO\r\nc FOO\r\nd NOOP\r\n", conf)
    assert sent(actions) == b"a BAD invalid command\r\nb BAD invalid command\r\nc BAD invalid command\r\n"
    assert isinstance(actions[-1], Close)
    assert any(isinstance(a, Log) and "too many invalid" in a.message for a in actions)


def test_too_long_command_is_tagged_and_closes():
    conf = replace(CONF, imap_client_buffer=64)
    _, actions = run(b"a1 LOGIN " + b"x" * 100 + b"\r\n", conf)
    assert sent(actions) == b"a1 BAD invalid command\r\n"
    assert isinstance(actions[-1], Close)
    log = next(a for a in actions if isinstance(a, Log))
    assert "x" * 20 not in log.message  # never the arguments (could be a password)


def test_pipelined_command_straddling_full_buffer_is_too_long():
    conf = replace(CONF, imap_client_buffer=64)
    _, actions = run(b"ab NOOP\r\n" * 9, conf)  # 9 bytes each: the 8th straddles 64
    assert sent(actions) == b"ab OK completed\r\n" * 7 + b"* BAD invalid command\r\n"
    assert isinstance(actions[-1], Close)


def test_authenticate_plain_two_step_and_bad_base64():
    m, actions = run(b"a1 AUTHENTICATE PLAIN\r\n")
    m, actions = run(b"AHVzZXIAcGFzcw==\r\n", machine=m)
    assert isinstance(actions[-1], Authenticate)
    assert (m.creds.login, m.creds.password) == (b"user", b"pass")
    m, actions = run(b"a1 AUTHENTICATE PLAIN\r\n*\r\n")
    assert sent(actions) == b"+ \r\na1 BAD invalid command\r\n"


def test_authenticate_login_bad_username_is_untagged():
    _, actions = run(b"a1 AUTHENTICATE LOGIN\r\n!!!\r\n")
    assert sent(actions) == b"+ VXNlcm5hbWU6\r\nBAD invalid command\r\n"


def test_external_with_initial_response_even_when_disabled():
    m, actions = run(b"a1 AUTHENTICATE EXTERNAL dXNlcg==\r\n")
    assert isinstance(actions[-1], Authenticate)
    assert (m.creds.login, m.creds.password, m.creds.method) == (b"user", None, "external")


def test_cram_md5_challenge_and_response():
    conf = replace(CONF, imap_auth=frozenset({"plain", "cram-md5"}))
    m, actions = run(b"a1 CAPABILITY\r\na2 AUTHENTICATE CRAM-MD5\r\n", conf)
    out = sent(actions)
    assert b"AUTH=PLAIN AUTH=CRAM-MD5\r\n" in out
    import base64
    challenge = out.split(b"+ ")[-1].strip()
    assert base64.b64decode(challenge).endswith(b"@mx.test>")
    resp = base64.b64encode(b"user " + b"0" * 32)
    m, actions = run(resp + b"\r\n", machine=m)
    assert m.creds.method == "cram-md5" and m.creds.salt.endswith(b"@mx.test>\r\n")


def test_capability_variants_with_starttls():
    on = replace(CONF, ssl=SslSettings(starttls="on"))
    only = replace(CONF, ssl=SslSettings(starttls="only"))
    assert sent(run(b"a CAPABILITY\r\n", on)[1]).startswith(
        b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN STARTTLS\r\n")
    assert sent(run(b"a CAPABILITY\r\n", only)[1]).startswith(
        b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS STARTTLS LOGINDISABLED\r\n")
    assert sent(run(b"a CAPABILITY\r\n", only, tls=True)[1]).startswith(
        b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN\r\n")
    assert sent(run(b"a LOGIN u p\r\n", only)[1]) == b"a BAD invalid command\r\n"


def test_starttls_discards_pipelined_plaintext():
    on = replace(CONF, ssl=SslSettings(starttls="on"))
    m, actions = run(b"b STARTTLS\r\nc LOGIN injected x\r\n", on)
    assert sent(actions) == b"b OK completed\r\n" and isinstance(actions[-1], StartTls)
    m.tls_started()
    assert m.next_action() is None and not m.buffer.has_input()


def test_failed_auth_with_wait_continues_with_pipelined_input_and_stale_tag():
    m, actions = run(b"a1 LOGIN u p\r\na2 NOOP\r\n")
    assert isinstance(actions[-1], Authenticate)
    m.auth_failed(b"a1 NO bad\r\n")
    _, actions = run(b"", machine=m)
    assert sent(actions) == b"a1 NO bad\r\na2 OK completed\r\n"
    m2, _ = run(b"a1 LOGIN u p\r\n")
    m2.auth_failed(b"a1 NO bad\r\n")
    _, actions = run(b"+bad\r\n", machine=m2)
    # the stale tag is a place in the rewound buffer: the new line's bytes show through
    assert sent(actions) == b"a1 NO bad\r\n+baBAD invalid command\r\n"
    assert m2.creds.attempt == 1


def test_stale_tag_reads_the_buffer_where_the_old_tag_was():
    m, actions = run(b"a0 NOOP\r\na1 LOGIN u p\r\n")
    assert isinstance(actions[-1], Authenticate)
    assert m.auth_failure(AuthResponse(error=b"bad")) == b"a1 NO bad\r\n"
    m.auth_failed(b"a1 NO bad\r\n")
    _, actions = run(b"\n", machine=m)  # the old tag lay at offset 9, beyond the new bytes
    assert sent(actions) == b"a1 NO bad\r\na1 BAD invalid command\r\n"
    m, _ = run(b"a1 LOGIN u p\r\n")
    m.auth_failed(b"a1 NO bad\r\n")
    _, actions = run(b"\n", machine=m)  # one new byte, then the rest of the old tag
    assert sent(actions) == b"a1 NO bad\r\n\n1 BAD invalid command\r\n"


def test_unterminated_quote_leaks_into_next_command():
    m, actions = run(b'a LOGIN "u\r\n')
    assert sent(actions) == b"a BAD invalid command\r\n"  # one argument only
    m, actions = run(b"b LOGIN x y\r\n", machine=m)
    # the quote flag still set: "x y" is one argument, so LOGIN has one arg
    assert sent(actions) == b"b BAD invalid command\r\n"
