"""XOAUTH2 and OAUTHBEARER in the three client dialogues: capabilities, the SASL-IR and the
challenge forms, malformed responses, and RFC 7628's failure (error challenge, the client's
dummy response, then the failure line)."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest
from postern.proxy.auth_http import AuthResponse
from postern.proxy.dialogue import Authenticate, Close
from postern.proxy.imap.dialogue import ImapDialogue
from postern.proxy.pop3.dialogue import Pop3Dialogue
from postern.proxy.smtp.dialogue import SmtpDialogue

from tests.dialogue_support import IMAP_CONF, POP3_CONF, SMTP_CONF, logs, runner, sent

OAUTH = frozenset({"plain", "xoauth2", "oauthbearer"})
IMAP = replace(IMAP_CONF, imap_auth=OAUTH)
POP3 = replace(POP3_CONF, pop3_auth=OAUTH)
SMTP = replace(SMTP_CONF, smtp_auth=OAUTH | {"login"})
run_imap = runner(ImapDialogue, IMAP)
run_pop3 = runner(Pop3Dialogue, POP3)
run_smtp = runner(SmtpDialogue, SMTP)

XOAUTH2 = base64.b64encode(b"user=u@example.com\x01auth=Bearer tok-1\x01\x01")
OAUTHBEARER = base64.b64encode(b"n,a=u@example.com,\x01auth=Bearer tok-1\x01\x01")
ERROR = base64.b64encode(b'{"status":"invalid_token","schemes":"bearer"}')


def test_capabilities_list_them_after_nginx_methods():
    _, out = run_imap(b"a CAPABILITY\r\n")
    assert sent(out) == (b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN AUTH=XOAUTH2 "
                         b"AUTH=OAUTHBEARER\r\na OK completed\r\n")
    _, out = run_pop3(b"CAPA\r\nAUTH\r\n")
    assert sent(out) == (b"+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\n"
                         b"SASL PLAIN LOGIN XOAUTH2 OAUTHBEARER\r\n.\r\n"
                         b"+OK methods supported:\r\nPLAIN\r\nLOGIN\r\nXOAUTH2\r\n"
                         b"OAUTHBEARER\r\n.\r\n")
    _, out = run_smtp(b"EHLO c\r\n")
    assert sent(out) == b"250-mx.test\r\n250 AUTH PLAIN LOGIN XOAUTH2 OAUTHBEARER\r\n"


def test_off_by_default():
    _, out = runner(ImapDialogue, IMAP_CONF)(b"a AUTHENTICATE XOAUTH2 " + XOAUTH2 + b"\r\n")
    assert sent(out) == b"a BAD invalid command\r\n"
    _, out = runner(Pop3Dialogue, POP3_CONF)(b"AUTH OAUTHBEARER\r\n")
    assert sent(out) == b"-ERR invalid command\r\n"
    _, out = runner(SmtpDialogue, SMTP_CONF)(b"AUTH XOAUTH2\r\n")
    assert sent(out) == b"500 5.5.1 Invalid command\r\n"
    assert b"XOAUTH2" not in sent(runner(SmtpDialogue, SMTP_CONF)(b"EHLO c\r\n")[1])


@pytest.mark.parametrize("run,first,prefix", [
    (run_imap, b"a AUTHENTICATE %s", b"+ "),
    (run_pop3, b"AUTH %s", b"+ "),
    (run_smtp, b"AUTH %s", b"334 "),
])
@pytest.mark.parametrize("mech,blob", [(b"XOAUTH2", XOAUTH2), (b"OAUTHBEARER", OAUTHBEARER)])
def test_initial_response_and_challenge_forms(run, first, prefix, mech, blob):
    m, out = run(first % mech + b" " + blob + b"\r\n")
    assert isinstance(out[-1], Authenticate) and sent(out) == b""
    assert (m.creds.login, m.creds.password, m.creds.method) == (
        b"u@example.com", b"tok-1", mech.lower().decode())
    m, out = run(first % mech.lower() + b"\r\n")
    assert sent(out) == prefix + b"\r\n"
    m, out = run(blob + b"\r\n", machine=m)
    assert isinstance(out[-1], Authenticate)
    assert (m.creds.login, m.creds.password) == (b"u@example.com", b"tok-1")


@pytest.mark.parametrize("run,line,reply", [
    (run_imap, b"a AUTHENTICATE XOAUTH2 %s\r\n", b"a BAD invalid command\r\n"),
    (run_pop3, b"AUTH XOAUTH2 %s\r\n", b"-ERR invalid command\r\n"),
    (run_smtp, b"AUTH XOAUTH2 %s\r\n", b"500 5.5.1 Invalid command\r\n"),
])
def test_malformed_response_is_a_clean_error(run, line, reply):
    bad = base64.b64encode(b"user=u\x01auth=Bearer secret-token\x01")
    m, out = run(line % bad)
    assert sent(out) == reply
    assert logs(out) == ["client sent invalid message in AUTH XOAUTH2 command"]
    assert m.creds.password is None and m.mail_state == "start"


def _failed(run, first: bytes, mech: str, close: bool):
    m, out = run(first)
    assert isinstance(out[-1], Authenticate) and m.failure_needs_reply()
    line = m.auth_failure(AuthResponse(error=b"Invalid token"))
    m.auth_failed(line, close=close)
    return m, line


# per protocol: the runner, its AUTH command (mechanism, response), its SASL challenge prefix,
# its failure line for the error "Invalid token", a NOOP and the NOOP's reply
FAILURES = [
    (run_imap, b"a1 AUTHENTICATE %s %s\r\n", b"+ ", b"a1 NO Invalid token\r\n",
     b"a2 NOOP\r\n", b"a2 OK completed\r\n"),
    (run_pop3, b"AUTH %s %s\r\n", b"+ ", b"-ERR Invalid token\r\n", b"NOOP\r\n", b"+OK\r\n"),
    (run_smtp, b"AUTH %s %s\r\n", b"334 ", b"535 5.7.8 Invalid token\r\n", b"NOOP\r\n",
     b"250 2.0.0 OK\r\n"),
]


@pytest.mark.parametrize("run,auth,prefix,line,noop,noop_reply", FAILURES)
@pytest.mark.parametrize("dummy", [b"AQ==", b"", b"*"])
def test_failure_is_error_challenge_then_line_then_close(run, auth, prefix, line, noop,
                                                         noop_reply, dummy):
    m, failure = _failed(run, auth % (b"OAUTHBEARER", OAUTHBEARER), "oauthbearer", close=True)
    assert failure == line
    _, out = run(b"", machine=m)
    assert sent(out) == prefix + ERROR + b"\r\n"
    _, out = run(dummy + b"\r\n", machine=m)
    assert sent(out) == line and isinstance(out[-1], Close)


@pytest.mark.parametrize("run,auth,prefix,line,noop,noop_reply", FAILURES)
def test_failure_after_auth_wait_goes_back_to_the_start(run, auth, prefix, line, noop,
                                                        noop_reply):
    m, _ = _failed(run, auth % (b"XOAUTH2", XOAUTH2), "xoauth2", close=False)
    _, out = run(b"\r\n" + noop, machine=m)  # the dummy response and the next command
    assert sent(out).endswith(line + noop_reply) and not any(isinstance(a, Close) for a in out)
    assert m.creds.method == "plain" and m.mail_state == "start"


def test_smtp_error_code_from_the_auth_server_wins():
    m, _ = run_smtp(b"AUTH XOAUTH2 %s\r\n" % XOAUTH2)
    assert m.auth_failure(AuthResponse(error=b"No", error_code=b"454 4.7.0")) == \
        b"454 4.7.0 No\r\n"
    m, _ = run_smtp(b"AUTH PLAIN AHUAcA==\r\n")
    assert m.auth_failure(AuthResponse(error=b"No")) == b"535 5.7.0 No\r\n"


def test_pop3_buffer_grows_for_tokens_only_with_oauth():
    blob = base64.b64encode(b"user=u\x01auth=Bearer " + b"t" * 2000 + b"\x01\x01")
    m, out = run_pop3(b"AUTH XOAUTH2 " + blob + b"\r\n")
    assert isinstance(out[-1], Authenticate) and m.creds.password == b"t" * 2000
    _, out = runner(Pop3Dialogue, POP3_CONF)(b"AUTH XOAUTH2 " + blob + b"\r\n")
    assert logs(out) == ['client sent too long command "AUTH ..."']
