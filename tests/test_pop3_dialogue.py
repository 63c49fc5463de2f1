"""The POP3 pre-auth machine, bytes in and actions out (docs/behaviour.md §8, §5, §16 items 4, 5, 6, 8).

Expected bytes come from the spec's captured exchanges (§18) and were re-checked against
Debian's nginx 1.22.1 (the oracle) where marked "oracle".
"""

import base64
import re
from dataclasses import replace

import pytest
from postern.proxy.auth_http import AuthResponse
from postern.proxy.conf.settings import SslSettings
from postern.proxy.dialogue import Authenticate, Close, Send, StartTls
from postern.proxy.pop3.backend_login import Pop3BackendLogin
from postern.proxy.pop3.dialogue import Pop3Dialogue

from tests.dialogue_support import POP3_CONF, logs, runner, sent, sent_then_closed

CONF = POP3_CONF
SALTED = replace(CONF, pop3_auth=frozenset({"plain", "apop", "cram-md5"}),
                 ssl=SslSettings(starttls="on"))
ON = replace(CONF, ssl=SslSettings(starttls="on"))
ONLY = replace(CONF, ssl=SslSettings(starttls="only"))

INVALID = b"-ERR invalid command\r\n"
CAPA = b"+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nSASL PLAIN LOGIN\r\n.\r\n"
SALT_RE = re.compile(rb"<\d+\.\d+@mx\.test>\r\n")


run = runner(Pop3Dialogue, CONF)


# -- greeting ---------------------------------------------------------------------------------

def test_plain_greeting_has_no_salt():
    m = Pop3Dialogue(CONF)
    assert m.greeting() == b"+OK POP3 ready\r\n"
    assert m.creds.salt is None
    assert (m.protocol, m.internal_error) == ("pop3", b"-ERR internal server error\r\n")


@pytest.mark.parametrize("methods", [{"plain", "apop"}, {"cram-md5"}, {"apop"}])
def test_greeting_carries_the_salt_when_apop_or_cram_md5(methods):
    m = Pop3Dialogue(replace(CONF, pop3_auth=frozenset(methods)))
    greeting = m.greeting()
    assert greeting.startswith(b"+OK POP3 ready <") and SALT_RE.fullmatch(greeting[15:])
    assert greeting == b"+OK POP3 ready " + m.creds.salt  # the salt keeps its CRLF


# -- docs/behaviour.md §18 captured exchange -------------------------------------------------------------

def test_captured_exchange_with_apop_cram_md5_and_starttls_on():
    m = Pop3Dialogue(SALTED)
    m.greeting()
    sasl_line = b"SASL PLAIN LOGIN CRAM-MD5\r\n"
    steps = [
        (b"CAPA\r\n", b"+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\n" + sasl_line
         + b"STLS\r\n.\r\n"),
        (b"AUTH\r\n", b"+OK methods supported:\r\nPLAIN\r\nLOGIN\r\nCRAM-MD5\r\n.\r\n"),
        (b"USER  a b \r\n", b"+OK\r\n"),
        (b"CAPA\r\n", b"+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\n" + sasl_line
         + b".\r\n"),
        (b"STAT\r\n", INVALID),
        (b"PASS x\r\n", INVALID),
    ]
    for line, reply in steps:
        _, actions = run(line, machine=m)
        assert sent(actions) == reply, line
    assert m.creds.login == b"a b "  # leading spaces skipped, the rest kept
    assert m.mail_state == "start" and m.errors == 1  # only STAT is a parser error


def test_starttls_only_capa_and_refusals():
    _, actions = run(b"CAPA\r\n", ONLY)
    assert sent(actions) == b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nSTLS\r\n.\r\n"
    # oracle: every way to authenticate is refused, NOOP and QUIT are not
    _, actions = run(b"USER x\r\nAUTH\r\nAUTH PLAIN\r\nAPOP a b\r\nNOOP\r\nQUIT\r\n",
                     replace(ONLY, pop3_auth=frozenset({"plain", "apop"})))
    assert sent(actions) == INVALID * 4 + b"+OK\r\n+OK\r\n"
    assert isinstance(actions[-1], Close)


def test_starttls_only_drops_user_case_insensitively():
    conf = replace(ONLY, pop3_capabilities=("TOP", "user", "UIDL", "PIPELINING"))
    assert sent(run(b"CAPA\r\n", conf)[1]) == (
        b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nPIPELINING\r\nSTLS\r\n.\r\n")


# -- CAPA and AUTH listings -----------------------------------------------------------------

@pytest.mark.parametrize("conf,tls,reply", [
    (CONF, False, CAPA),
    (ON, False, CAPA[:-3] + b"STLS\r\n.\r\n"),
    (ON, True, CAPA),  # inside TLS: no STLS
    (ONLY, True, CAPA),
    (replace(CONF, pop3_auth=frozenset({"apop"})), False,  # §16.8: bare SASL line
     b"+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nSASL\r\n.\r\n"),
    (replace(CONF, pop3_auth=frozenset({"external"}), pop3_capabilities=("TOP", "user")), False,
     b"+OK Capability list follows\r\nTOP\r\nuser\r\nSASL EXTERNAL\r\n.\r\n"),
    (replace(CONF, pop3_auth=frozenset({"plain", "apop", "cram-md5", "external"})), False,
     (b"+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\n"
      b"SASL PLAIN LOGIN CRAM-MD5 EXTERNAL\r\n.\r\n")),
])
def test_capa_variants(conf, tls, reply):
    assert sent(run(b"CAPA\r\n", conf, tls=tls)[1]) == reply


def test_capa_ignores_arguments():
    assert sent(run(b"CAPA a b c\r\n")[1]) == CAPA  # oracle


@pytest.mark.parametrize("methods,reply", [
    ({"plain"}, b"+OK methods supported:\r\nPLAIN\r\nLOGIN\r\n.\r\n"),
    ({"apop"}, b"+OK methods supported:\r\n.\r\n"),  # oracle: APOP adds no line
    ({"plain", "apop", "cram-md5", "external"},
     b"+OK methods supported:\r\nPLAIN\r\nLOGIN\r\nCRAM-MD5\r\nEXTERNAL\r\n.\r\n"),
])
def test_auth_listing(methods, reply):
    _, actions = run(b"AUTH\r\nNOOP\r\n", replace(CONF, pop3_auth=frozenset(methods)))
    assert sent(actions) == reply + b"+OK\r\n"  # the listing ends the AUTH command


# -- single lines ---------------------------------------------------------------------------

@pytest.mark.parametrize("line,reply", [
    (b"NOOP\r\n", b"+OK\r\n"),
    (b"noop\n", b"+OK\r\n"),
    (b"NoOp x y z\r\n", b"+OK\r\n"),
    (b"NOOP a b c d\r\n", INVALID),  # a 4th argument
    (b"NOOP\rx\n", INVALID),
    (b"\r\n", INVALID),
    (b"\n", INVALID),
    (b" NOOP\r\n", INVALID),
    (b"NOP\r\n", INVALID),
    (b"NOOPS\r\n", INVALID),
    (b"NO0P\r\n", INVALID),
    (b"STAT\r\n", INVALID),
    (b"RETR 1\r\n", INVALID),
    (b"TOP 1 2\r\n", INVALID),
    (b"PASS x\r\n", INVALID),  # before USER
    (b"USER\r\n", INVALID),
    (b"USER \r\n", INVALID),
    (b"APOP user 0123\r\n", INVALID),  # apop not enabled
    (b"STLS\r\n", INVALID),  # starttls off
    (b"AUTH FOO\r\n", INVALID),
    (b"AUTH CRAM-MD5\r\n", INVALID),  # not enabled
    (b"AUTH CRAM-MD5 x\r\n", INVALID),
    (b"AUTH EXTERNAL\r\n", INVALID),  # not enabled (the challenge form is checked)
    (b"AUTH LOGIN a b\r\n", INVALID),
    (b"AUTH PLAIN a b\r\n", INVALID),
    (b"AUTH PLAIN\r\n", b"+ \r\n"),
    (b"auth plain\r\n", b"+ \r\n"),
    (b"AUTH LOGIN\r\n", b"+ VXNlcm5hbWU6\r\n"),
    (b"AUTH LOGIN dXNlcg==\r\n", b"+ UGFzc3dvcmQ6\r\n"),
    (b"USER alice\r\n", b"+OK\r\n"),
])
def test_single_line_replies(line, reply):
    _, actions = run(line)
    assert sent(actions) == reply


def test_quit_answers_then_closes_in_both_states():
    for data in (b"QUIT\r\nNOOP\r\n", b"USER a\r\nQUIT\r\nNOOP\r\n"):
        m, actions = run(data)
        assert sent(actions).endswith(b"+OK\r\n") and isinstance(actions[-1], Close)
        assert m.next_action() is None  # nothing after QUIT is answered
    assert sent(run(b"USER a\r\nQUIT\r\n")[1]) == b"+OK\r\n+OK\r\n"


def test_line_split_across_reads():
    m = Pop3Dialogue(CONF)
    out = []
    for byte in b"NOOP\r\nCAPA\r\nUSER a b\r\n":
        out += run(bytes([byte]), machine=m)[1]
    assert sent(out) == b"+OK\r\n" + CAPA + b"+OK\r\n"
    assert m.creds.login == b"a b"


# -- USER / PASS ----------------------------------------------------------------------------

@pytest.mark.parametrize("data,login,password", [
    (b"USER alice\r\nPASS secret\r\n", b"alice", b"secret"),
    (b"USER  a b\r\nPASS  x \r\n", b"a b", b"x "),  # docs/behaviour.md §8.2: spaces are data
    (b"user al ice \nPass p a s s\n", b"al ice ", b"p a s s"),
    (b"USER u\r\nPASS %\"\\\t\r\n", b"u", b"%\"\\\t"),  # no quoting, tabs are data
])
def test_user_pass_take_the_rest_of_the_line(data, login, password):
    m, actions = run(data)
    assert sent(actions) == b"+OK\r\n"
    assert isinstance(actions[-1], Authenticate)
    assert (m.creds.login, m.creds.password, m.creds.method) == (login, password, "plain")
    assert m.creds.attempt == 1


def test_pass_without_argument_returns_to_the_initial_state():
    m, actions = run(b"USER a\r\nPASS\r\nPASS x\r\n")
    assert sent(actions) == b"+OK\r\n" + INVALID * 2 and m.mail_state == "start"
    assert m.errors == 0


@pytest.mark.parametrize("second", [b"STAT\r\n", b"USER b\r\n", b"AUTH\r\n", b"AUTH PLAIN\r\n",
                                    b"STLS\r\n", b"APOP a b\r\n", b"\r\n"])
def test_anything_else_after_user_resets_to_the_initial_state(second):
    # §16.8: the reply is -ERR and USER must be repeated (oracle)
    m, actions = run(b"USER a\r\n" + second + b"PASS x\r\n", SALTED)
    assert sent(actions) == b"+OK\r\n" + INVALID + INVALID
    assert m.mail_state == "start"
    m, actions = run(b"USER a\r\nPASS x\r\n", machine=m)
    assert isinstance(actions[-1], Authenticate)


def test_user_state_keeps_noop():
    _, actions = run(b"USER a\r\nNOOP\r\nPASS x\r\n")
    assert sent(actions) == b"+OK\r\n+OK\r\n" and isinstance(actions[-1], Authenticate)


def test_user_at_the_buffer_limit():
    line = b"USER " + b"u" * 121 + b"\r\n"  # exactly 128 bytes
    m, actions = run(line)
    assert sent(actions) == b"+OK\r\n" and m.creds.login == b"u" * 121
    sent_then_closed(run(b"USER " + b"u" * 122 + b"\r\n")[1], INVALID)


# -- APOP -----------------------------------------------------------------------------------

def test_apop_when_enabled():
    m = Pop3Dialogue(replace(CONF, pop3_auth=frozenset({"apop"})))
    salt = m.greeting()[15:]
    _, actions = run(b"APOP user 00000000000000000000000000000000\r\n", machine=m)
    assert actions == [Authenticate()]
    assert (m.creds.login, m.creds.password, m.creds.method) == (
        b"user", b"0" * 32, "apop")  # the digest is not validated
    assert m.creds.salt == salt


@pytest.mark.parametrize("line", [b"APOP user\r\n", b"APOP\r\n"])
def test_apop_needs_two_arguments(line):
    m, actions = run(line, replace(CONF, pop3_auth=frozenset({"apop"})))
    assert sent(actions) == INVALID and m.errors == 0


def test_apop_with_too_many_arguments_is_a_parser_error():
    m, actions = run(b"APOP a b c d\r\n", replace(CONF, pop3_auth=frozenset({"apop"})))
    assert sent(actions) == INVALID and m.errors == 1


# -- AUTH -----------------------------------------------------------------------------------

def test_auth_plain_both_forms():
    blob = base64.b64encode(b"authz\0us er\0p w")
    m, actions = run(b"AUTH PLAIN " + blob + b"\r\n")
    assert actions == [Authenticate()]
    assert (m.creds.login, m.creds.password, m.creds.method) == (b"us er", b"p w", "plain")
    m, actions = run(b"AUTH PLAIN\r\n" + blob + b"\r\n")
    assert sent(actions) == b"+ \r\n" and isinstance(actions[-1], Authenticate)
    assert (m.creds.login, m.creds.password) == (b"us er", b"p w")


def test_auth_login_both_forms():
    user, password = base64.b64encode(b"alice"), base64.b64encode(b"s e c")
    m, actions = run(b"AUTH LOGIN\r\n" + user + b"\r\n" + password + b"\r\n")
    assert sent(actions) == b"+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n"
    assert isinstance(actions[-1], Authenticate)
    assert (m.creds.login, m.creds.password, m.creds.method) == (b"alice", b"s e c", "plain")
    m, actions = run(b"AUTH LOGIN " + user + b"\r\n" + password + b"\r\n")
    assert sent(actions) == b"+ UGFzc3dvcmQ6\r\n" and isinstance(actions[-1], Authenticate)


def test_auth_login_empty_username_is_accepted():
    # oracle: an empty line decodes to an empty login; the next line is the password
    m, actions = run(b"AUTH LOGIN\r\n\r\nNOOP\r\n")
    assert sent(actions) == b"+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n"
    assert isinstance(actions[-1], Authenticate) and m.creds.login == b""


def test_plain_and_login_always_accepted():
    # §16.6: pop3_auth without plain still takes USER/PASS, AUTH PLAIN and AUTH LOGIN
    conf = replace(CONF, pop3_auth=frozenset({"cram-md5"}))
    assert isinstance(run(b"USER a\r\nPASS b\r\n", conf)[1][-1], Authenticate)
    assert isinstance(run(b"AUTH PLAIN AGEAYg==\r\n", conf)[1][-1], Authenticate)
    assert isinstance(run(b"AUTH LOGIN YQ==\r\nYg==\r\n", conf)[1][-1], Authenticate)


def test_cram_md5_challenge_is_the_greeting_salt():
    conf = replace(CONF, pop3_auth=frozenset({"plain", "cram-md5"}))
    m = Pop3Dialogue(conf)
    salt = m.greeting()[15:]
    _, actions = run(b"AUTH CRAM-MD5\r\n", machine=m)
    assert sent(actions) == b"+ " + base64.b64encode(salt[:-2]) + b"\r\n"
    response = base64.b64encode(b"user " + b"f" * 32)
    _, actions = run(response + b"\r\n", machine=m)
    assert actions == [Authenticate()]
    assert (m.creds.login, m.creds.password, m.creds.method) == (b"user", b"f" * 32, "cram-md5")
    assert m.creds.salt == salt


def test_external_challenge_form_when_enabled():
    m, actions = run(b"AUTH EXTERNAL\r\ndXNlcg==\r\n",
                     replace(CONF, pop3_auth=frozenset({"external"})))
    assert sent(actions) == b"+ VXNlcm5hbWU6\r\n" and isinstance(actions[-1], Authenticate)
    assert (m.creds.login, m.creds.password, m.creds.method) == (b"user", None, "external")


def test_external_initial_response_accepted_even_when_disabled():
    # §16.5 quirk (oracle: the auth request goes out with login "user")
    m, actions = run(b"AUTH EXTERNAL dXNlcg==\r\n")
    assert actions == [Authenticate()]
    assert (m.creds.login, m.creds.password, m.creds.method) == (b"user", None, "external")


@pytest.mark.parametrize("external", [b"AUTH EXTERNAL dXNlcg==\r\n",
                                      b"AUTH EXTERNAL\r\ndXNlcg==\r\n"])
def test_external_keeps_a_password_from_a_waited_out_attempt(external):
    # ngx_mail_auth_external sets only the login (oracle: the request after a waited USER/PASS
    # failure carries the old Auth-Pass, and the upstream login then uses it)
    m, _ = run(b"USER a\r\nPASS old\r\n", replace(CONF, pop3_auth=frozenset({"external"})))
    m.auth_failed(b"-ERR wait\r\n")
    m, actions = run(external, machine=m)
    assert isinstance(actions[-1], Authenticate)
    assert (m.creds.login, m.creds.password, m.creds.method) == (b"user", b"old", "external")


@pytest.mark.parametrize("data,log", [
    (b"AUTH PLAIN\r\n*\r\n", "client sent invalid base64 encoding in AUTH PLAIN command"),
    (b"AUTH PLAIN\r\nAHVzZXI=\r\n", "client sent invalid password in AUTH PLAIN command"),
    (b"AUTH PLAIN dXNlcg==\r\n", "client sent invalid login in AUTH PLAIN command"),
    (b"AUTH LOGIN\r\n!!!\r\n", "client sent invalid base64 encoding in AUTH LOGIN command"),
    (b"AUTH LOGIN !!!\r\n", "client sent invalid base64 encoding in AUTH LOGIN command"),
    (b"AUTH LOGIN\r\nYQ==\r\n!\r\n", "client sent invalid base64 encoding in AUTH LOGIN command"),
    (b"AUTH EXTERNAL !\r\n", "client sent invalid base64 encoding in AUTH EXTERNAL command"),
])
def test_bad_sasl_data_is_a_handler_error(data, log):
    m, actions = run(data + b"NOOP\r\n")
    assert sent(actions).endswith(INVALID + b"+OK\r\n")  # back to the initial state
    assert logs(actions) == [log]
    assert m.errors == 0 and m.mail_state == "start"


def test_bad_cram_md5_response():
    conf = replace(CONF, pop3_auth=frozenset({"cram-md5"}))
    m = Pop3Dialogue(conf)
    m.greeting()
    _, actions = run(b"AUTH CRAM-MD5\r\n" + base64.b64encode(b"user short") + b"\r\n",
                     machine=m)
    assert sent(actions).endswith(INVALID)
    assert logs(actions) == ["client sent invalid CRAM-MD5 hash in AUTH CRAM-MD5 command"]


def test_sasl_line_with_four_words_is_a_parser_error():
    m, actions = run(b"AUTH PLAIN\r\na b c d\r\nNOOP\r\n")  # oracle
    assert sent(actions) == b"+ \r\n" + INVALID + b"+OK\r\n" and m.errors == 1


def test_sasl_line_is_not_a_command():
    # during an exchange QUIT is just (bad) base64 data
    m, actions = run(b"AUTH PLAIN\r\nQUIT\r\n")
    assert sent(actions) == b"+ \r\n" + INVALID and not m.quit


def test_failed_decode_keeps_stored_credentials():
    m, _ = run(b"USER keep\r\n")
    m, actions = run(b"STAT\r\nAUTH LOGIN !!!\r\n", machine=m)
    assert sent(actions) == INVALID * 2
    assert m.creds.login == b"keep"  # CVE-2025-53859: no clobbering on decode errors


# -- STLS -----------------------------------------------------------------------------------

def test_stls_discards_pipelined_plaintext_and_hands_over():
    m, actions = run(b"STLS\r\nUSER injected\r\nPASS x\r\n", ON)
    assert actions == [Send(b"+OK\r\n"), StartTls()]
    assert m.next_action() is None  # paused until the handshake is done
    assert not m.buffer.has_input()
    m.tls_started()
    assert m.next_action() is None
    m, actions = run(b"CAPA\r\nSTLS\r\n", machine=m)
    assert sent(actions) == CAPA + INVALID  # inside TLS: no STLS offered or accepted
    assert m.errors == 0


def test_stls_with_starttls_only_then_login_works():
    m, actions = run(b"STLS\r\n", ONLY)
    assert actions == [Send(b"+OK\r\n"), StartTls()]
    m.tls_started()
    m, actions = run(b"USER a\r\nPASS b\r\n", machine=m)
    assert sent(actions) == b"+OK\r\n" and isinstance(actions[-1], Authenticate)


def test_stls_refused_with_implicit_tls():
    assert sent(run(b"STLS\r\n", ON, tls=True)[1]) == INVALID


# -- errors, max_errors, the 128-byte buffer ------------------------------------------------

def test_max_errors_counts_parser_errors_only():
    conf = replace(CONF, max_errors=3)
    _, actions = run(b"PASS x\r\nAPOP a b\r\nAUTH FOO\r\nSTLS\r\nUSER\r\nNOOP\r\n", conf)
    assert sent(actions) == INVALID * 5 + b"+OK\r\n"  # oracle: handler errors do not count
    m, actions = run(b"STAT\r\n\r\n NOOP\r\nNOOP\r\n", conf)
    assert sent(actions) == INVALID * 3 and isinstance(actions[-1], Close)
    assert logs(actions) == ["client sent too many invalid commands"]
    assert m.next_action() is None


def test_max_errors_default_and_zero():
    _, actions = run(b"STAT\r\n" * 4 + b"NOOP\r\n")
    assert sent(actions) == INVALID * 4 + b"+OK\r\n"
    sent_then_closed(run(b"STAT\r\n" * 5 + b"NOOP\r\n")[1], INVALID * 5)
    _, actions = run(b"STAT\r\nNOOP\r\n", replace(CONF, max_errors=0))
    assert sent(actions) == INVALID and isinstance(actions[-1], Close)  # 0 behaves like 1


def test_invalid_line_is_skipped_across_reads():
    m, actions = run(b"XXXX and a long")
    assert actions == []
    m, actions = run(b" tail\r\nNOOP\r\n", machine=m)
    assert sent(actions) == INVALID + b"+OK\r\n" and m.errors == 1


def test_pipelining_answers_in_order():
    m, actions = run(b"CAPA\r\nNOOP\r\nUSER a\r\nNOOP\r\nPASS b\r\nNOOP\r\n")
    assert sent(actions) == CAPA + b"+OK\r\n" * 3 and isinstance(actions[-1], Authenticate)
    assert m.next_action() is None  # nothing more while the auth request runs
    assert m.pending_input() == b"NOOP\r\n"  # forwarded to the backend after login


def test_exactly_full_buffer_of_pipelined_noops_is_too_long():
    # §16.3 / oracle: 21 NOOPs fill 126 bytes, the 22nd straddles byte 128 (no compaction)
    _, actions = run(b"NOOP\r\n" * 21 + b"NOOP\r\n")
    assert sent(actions) == b"+OK\r\n" * 21 + INVALID
    assert isinstance(actions[-1], Close)
    assert logs(actions) == ['client sent too long command "NOOP ..."']


def test_buffer_is_rewound_when_fully_consumed():
    m = Pop3Dialogue(CONF)
    for _ in range(40):  # 240 bytes in all, one command at a time
        _, actions = run(b"NOOP\r\n", machine=m)
        assert actions == [Send(b"+OK\r\n")]


def test_long_auth_plain_blob_fails_and_closes():
    # §16.4: a long AUTH PLAIN initial response cannot fit into 128 bytes
    secret = b"correct horse battery staple " * 4
    blob = base64.b64encode(b"\0someone@example.test\0" + secret)
    m, actions = run(b"AUTH PLAIN " + blob + b"\r\n")
    assert sent(actions) == INVALID and isinstance(actions[-1], Close)
    assert logs(actions) == ['client sent too long command "AUTH ..."']
    assert m.errors == 0  # not counted, but closes anyway


@pytest.mark.parametrize("data", [
    b"PASS " + b"hunter2" * 30,
    b"USER a\r\nPASS " + b"hunter2" * 30 + b"\r\n",
    b"AUTH LOGIN\r\n" + base64.b64encode(b"hunter2" * 20) + b"\r\n",
    b"hunter2" * 30,
])
def test_too_long_log_never_shows_arguments(data):
    m = Pop3Dialogue(CONF)
    if data.startswith(b"AUTH LOGIN"):
        run(b"AUTH LOGIN\r\n", machine=m)
        data = data[len(b"AUTH LOGIN\r\n"):]
    _, actions = run(data, machine=m)
    assert isinstance(actions[-1], Close) and sent(actions).endswith(INVALID)
    [message] = logs(actions)
    assert message.startswith("client sent too long command ")
    assert "hunter2" not in message and "aHVudGVy" not in message


# -- after the auth request -------------------------------------------------------------------

def test_auth_failure_line():
    m = Pop3Dialogue(CONF)
    assert m.auth_failure(AuthResponse(error=b"Invalid login")) == b"-ERR Invalid login\r\n"
    assert m.auth_failure(AuthResponse(error=b"")) == b"-ERR \r\n"  # empty status fails too


def test_failed_auth_with_wait_answers_then_processes_pipelined_input():
    m, actions = run(b"USER a\r\nPASS b\r\nNOOP\r\nPASS c\r\n")
    assert isinstance(actions[-1], Authenticate) and m.creds.attempt == 1
    m.auth_failed(b"-ERR denied\r\n")
    _, actions = run(b"", machine=m)
    # back to the initial state: PASS without a new USER is refused (docs/behaviour.md §10.4)
    assert sent(actions) == b"-ERR denied\r\n+OK\r\n" + INVALID
    m, actions = run(b"USER a\r\nPASS d\r\n", machine=m)
    assert isinstance(actions[-1], Authenticate) and m.creds.attempt == 2


def test_failed_apop_resets_the_method():
    conf = replace(CONF, pop3_auth=frozenset({"apop"}))
    m, actions = run(b"APOP u 0123\r\n", conf)
    assert actions == [Authenticate()] and m.creds.method == "apop"
    m.auth_failed(b"-ERR no\r\n")
    assert m.creds.method == "plain"
    assert sent(run(b"", machine=m)[1]) == b"-ERR no\r\n"


def test_backend_login_carries_the_credentials():
    m, _ = run(b"USER a b\r\nPASS c d\r\n")
    login = m.backend_login(replace(CONF, proxy_buffer=1024, proxy_pass_error_message=True))
    assert isinstance(login, Pop3BackendLogin)
    assert (login.login, login.password, login.size, login.pass_error_message) == (
        b"a b", b"c d", 1024, True)
    m, _ = run(b"AUTH EXTERNAL dXNlcg==\r\n")
    m.creds.password = b"from-auth-pass"  # what the driver stores from Auth-Pass
    assert m.backend_login(CONF).password == b"from-auth-pass"
