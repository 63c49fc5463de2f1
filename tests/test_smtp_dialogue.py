"""The SMTP pre-auth machine, bytes in and actions out (docs/behaviour.md §9, §5, §6, §18)."""

from dataclasses import replace

import pytest
from postern.proxy.auth_http import AuthRequest, AuthResponse, build_request
from postern.proxy.conf.settings import LogTarget, SslSettings
from postern.proxy.dialogue import Authenticate, Close, Log, Send, StartTls
from postern.proxy.smtp.backend_login import SmtpBackendLogin
from postern.proxy.smtp.dialogue import SmtpDialogue, ehlo_replies, loggable

from tests.dialogue_support import SMTP_CONF, exchange, logs, runner, sent, sent_then_closed

CONF = SMTP_CONF
NONE = replace(CONF, smtp_auth=frozenset({"plain", "login", "none"}))
ONLY_NONE = replace(CONF, smtp_auth=frozenset({"none"}))
STARTTLS_ON = replace(CONF, ssl=SslSettings(starttls="on"))
STARTTLS_ONLY = replace(CONF, ssl=SslSettings(starttls="only"))

INVALID = b"500 5.5.1 Invalid command\r\n"
OK = b"250 2.0.0 OK\r\n"


run = runner(SmtpDialogue, CONF)


def test_greeting():
    assert SmtpDialogue(CONF).greeting() == b"220 mx.test ESMTP ready\r\n"


@pytest.mark.parametrize("line,reply", [
    (b"HELO me\r\n", b"250 mx.test\r\n"),
    (b"helo me\n", b"250 mx.test\r\n"),
    (b"EHLO x\r\n", b"250-mx.test\r\n250 AUTH PLAIN LOGIN\r\n"),
    (b"EHLO\r\n", b"501 5.5.4 Invalid argument\r\n"),
    (b"EHLO a b\r\n", b"501 5.5.4 Invalid argument\r\n"),
    (b"HELO\r\n", b"501 5.5.4 Invalid argument\r\n"),
    (b"HELO   me   \r\n", b"250 mx.test\r\n"),
    (b"MAIL FROM:<x>\r\n", b"530 5.7.1 Authentication required\r\n"),
    (b"RCPT TO:<x>\r\n", b"503 5.5.1 Bad sequence of commands\r\n"),
    (b"AUTH\r\n", b"501 5.5.4 Invalid argument\r\n"),
    (b"AUTH PLAIN\r\n", b"334 \r\n"),
    (b"auth login\r\n", b"334 VXNlcm5hbWU6\r\n"),
    (b"AUTH LOGIN dXNlcg==\r\n", b"334 UGFzc3dvcmQ6\r\n"),
    (b"NOOP\r\n", OK),
    (b"NOOP with args\r\n", OK),
    (b"RSET\r\n", OK),
    (b"NOOP 1 2 3 4 5 6 7 8 9 10 11\r\n", OK),
    (b"EHLO a\tb\r\n", b"250-mx.test\r\n250 AUTH PLAIN LOGIN\r\n"),  # a tab is no separator
])
def test_single_line_replies(line, reply):
    _, actions = run(line)
    assert sent(actions) == reply


@pytest.mark.parametrize("line", [
    b"VRFY x\r\n", b"EXPN x\r\n", b"HELP\r\n", b"DATA\r\n", b"BDAT 10\r\n",
    b"XCLIENT ADDR=1.2.3.4\r\n", b"AUTH CRAM-MD5\r\n", b"AUTH PLAIN =\r\n", b"AUTH DIGEST-MD5\r\n",
    b"AUTH EXTERNAL\r\n", b"AUTH PLAIN a b\r\n", b"AUTH LOGIN a b\r\n", b"AUTH CRAM-MD5 x\r\n",
    b"STARTTLS\r\n", b"\r\n", b" HELO x\r\n", b"HEL0 x\r\n", b"HELO x\ry\r\n",
    b"NOOP 1 2 3 4 5 6 7 8 9 10 11 12\r\n",
])
def test_invalid_commands(line):
    """Unknown verbs, disabled or malformed AUTH, and lines that are no command: `500 5.5.1`."""
    _, actions = run(line)
    assert sent(actions) == INVALID


def test_quit_says_bye_then_closes():
    sent_then_closed(run(b"QUIT\r\nNOOP\r\n")[1], b"221 2.0.0 Bye\r\n")


def test_ehlo_variants_from_section_18():
    conf = replace(CONF, smtp_auth=frozenset({"plain", "login", "none"}),
                   smtp_capabilities=("SIZE 100", "8BITMIME"), ssl=SslSettings(starttls="on"))
    m, actions = run(b"EHLO x\r\n", conf)
    assert sent(actions) == (b"250-mx.test\r\n250-SIZE 100\r\n250-8BITMIME\r\n"
                             b"250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n")
    m, actions = run(b"STARTTLS\r\n", machine=m)
    assert sent(actions) == b"220 2.0.0 Start TLS\r\n"
    assert isinstance(actions[-1], StartTls)
    m.tls_started()
    _, actions = run(b"EHLO y\r\n", machine=m)
    assert sent(actions) == (b"250-mx.test\r\n250-SIZE 100\r\n250-8BITMIME\r\n"
                             b"250 AUTH PLAIN LOGIN\r\n")


@pytest.mark.parametrize("conf,reply", [
    (CONF, b"250-mx.test\r\n250 AUTH PLAIN LOGIN\r\n"),
    (ONLY_NONE, b"250 mx.test\r\n"),
    (STARTTLS_ON, b"250-mx.test\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n"),
    (STARTTLS_ONLY, b"250-mx.test\r\n250 STARTTLS\r\n"),
    (replace(ONLY_NONE, ssl=SslSettings(starttls="only")), b"250-mx.test\r\n250 STARTTLS\r\n"),
    (replace(ONLY_NONE, ssl=SslSettings(starttls="on")), b"250-mx.test\r\n250 STARTTLS\r\n"),
    (replace(CONF, smtp_auth=frozenset({"external", "cram-md5", "login", "plain", "none"})),
     b"250-mx.test\r\n250 AUTH PLAIN LOGIN CRAM-MD5 EXTERNAL\r\n"),
    (replace(CONF, smtp_auth=frozenset({"login"}), smtp_capabilities=("PIPELINING",)),
     b"250-mx.test\r\n250-PIPELINING\r\n250 AUTH LOGIN\r\n"),
    (replace(ONLY_NONE, smtp_capabilities=("PIPELINING", "SIZE 10")),
     b"250-mx.test\r\n250-PIPELINING\r\n250 SIZE 10\r\n"),
    (replace(ONLY_NONE, smtp_capabilities=("PIPELINING",), ssl=SslSettings(starttls="only")),
     b"250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n"),
])
def test_ehlo_block(conf, reply):
    assert sent(run(b"EHLO x\r\n", conf)[1]) == reply


def test_ehlo_inside_tls_has_no_starttls():
    assert sent(run(b"EHLO x\r\n", STARTTLS_ONLY, tls=True)[1]) == \
        b"250-mx.test\r\n250 AUTH PLAIN LOGIN\r\n"
    assert ehlo_replies(CONF)[0] == b"250-mx.test\r\n250 AUTH PLAIN LOGIN\r\n"


def test_auth_plain_initial_response():
    m, actions = run(b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n")
    assert actions == [Authenticate()]
    assert (m.creds.login, m.creds.password, m.creds.method, m.creds.attempt) == \
        (b"user", b"secret", "plain", 1)


def test_auth_plain_challenge_form():
    m, actions = run(b"AUTH PLAIN\r\n")
    assert sent(actions) == b"334 \r\n"
    m, actions = run(b"AHVzZXIAc2VjcmV0\r\n", machine=m)
    assert actions == [Authenticate()]
    assert (m.creds.login, m.creds.password) == (b"user", b"secret")


def test_auth_login_both_forms():
    m = exchange(run, (b"AUTH LOGIN\r\n", b"334 VXNlcm5hbWU6\r\n"),
                 (b"dXNlcg==\r\n", b"334 UGFzc3dvcmQ6\r\n"))
    m, actions = run(b"c2VjcmV0\r\n", machine=m)
    assert actions == [Authenticate()]
    assert (m.creds.login, m.creds.password, m.creds.method) == (b"user", b"secret", "plain")
    m, actions = run(b"AUTH LOGIN dXNlcg==\r\nc2VjcmV0\r\n")
    assert sent(actions) == b"334 UGFzc3dvcmQ6\r\n"
    assert isinstance(actions[-1], Authenticate)


def test_auth_cram_md5_when_enabled():
    conf = replace(CONF, smtp_auth=frozenset({"plain", "cram-md5"}))
    m, actions = run(b"AUTH CRAM-MD5\r\n", conf)
    reply = sent(actions)
    assert reply.startswith(b"334 ") and reply.endswith(b"\r\n")
    import base64
    salt = base64.b64decode(reply[4:-2])
    assert salt.startswith(b"<") and salt.endswith(b"@mx.test>")
    assert m.creds.salt == salt + b"\r\n"
    digest = b"0123456789abcdef0123456789abcdef"
    m, actions = run(base64.b64encode(b"user " + digest) + b"\r\n", machine=m)
    assert actions == [Authenticate()]
    assert (m.creds.login, m.creds.password, m.creds.method) == (b"user", digest, "cram-md5")


def test_cram_md5_salt_is_kept_for_the_session():
    conf = replace(CONF, smtp_auth=frozenset({"plain", "cram-md5"}))
    m, a1 = run(b"AUTH CRAM-MD5\r\n*\r\n", conf)
    m, a2 = run(b"AUTH CRAM-MD5\r\n", machine=m)
    assert sent(a1)[:-len(INVALID)] == sent(a2)


def test_auth_external_quirk():
    # the initial-response form works even when `external` is not enabled (docs/behaviour.md §9.4)
    m, actions = run(b"AUTH EXTERNAL dXNlcg==\r\n")
    assert actions == [Authenticate()]
    assert (m.creds.login, m.creds.password, m.creds.method) == (b"user", None, "external")
    conf = replace(CONF, smtp_auth=frozenset({"plain", "external"}))
    m, actions = run(b"AUTH EXTERNAL\r\n", conf)
    assert sent(actions) == b"334 VXNlcm5hbWU6\r\n"
    m, actions = run(b"=\r\n", machine=m)
    assert actions == [Authenticate()]
    assert (m.creds.login, m.creds.method) == (b"", "external")


def test_sasl_lines_are_data_not_commands():
    m, actions = run(b"AUTH PLAIN\r\nQUIT\r\n")
    assert sent(actions) == b"334 \r\n" + INVALID
    assert not any(isinstance(a, Close) for a in actions)
    assert m.errors == 0 and m.mail_state == "start"
    m, actions = run(b"AUTH LOGIN\r\n*\r\nNOOP\r\n")
    assert sent(actions) == b"334 VXNlcm5hbWU6\r\n" + INVALID + OK
    assert logs(actions) == ["client sent invalid base64 encoding in AUTH LOGIN command"]


def test_bad_sasl_data_keeps_earlier_credentials():
    m, _ = run(b"AUTH LOGIN dXNlcg==\r\n")
    m, actions = run(b"!!\r\n", machine=m)
    assert sent(actions) == INVALID
    assert m.creds.login == b"user" and m.creds.password is None


def test_sasl_logs():
    assert logs(run(b"AUTH PLAIN dXNlcg==\r\n")[1]) == \
        ["client sent invalid login in AUTH PLAIN command"]
    assert logs(run(b"AUTH PLAIN AHVzZXI=\r\n")[1]) == \
        ["client sent invalid password in AUTH PLAIN command"]
    conf = replace(CONF, smtp_auth=frozenset({"plain", "cram-md5"}))
    m, _ = run(b"AUTH CRAM-MD5\r\n", conf)
    assert logs(run(b"dXNlciBzaG9ydA==\r\n", machine=m)[1]) == \
        ["client sent invalid CRAM-MD5 hash in AUTH CRAM-MD5 command"]


def test_starttls_only_refuses_auth_but_not_mail():
    conf = replace(STARTTLS_ONLY, smtp_auth=frozenset({"none"}))
    m, actions = run(b"EHLO x\r\nAUTH PLAIN AHVzZXIAcA==\r\nMAIL FROM:<a@b>\r\n", conf)
    assert sent(actions) == (b"250-mx.test\r\n250 STARTTLS\r\n" + INVALID + OK)
    assert m.errors == 0
    m, actions = run(b"AUTH PLAIN AHVzZXIAcA==\r\n", STARTTLS_ONLY, tls=True)
    assert actions == [Authenticate()]


def test_starttls_forgets_helo_mail_rcpt_keeps_esmtp_and_discards_pipelined_input():
    conf = replace(NONE, ssl=SslSettings(starttls="on"))
    m, actions = run(b"EHLO x\r\nMAIL FROM:<a@b>\r\nSTARTTLS\r\nRCPT TO:<c@d>\r\n", conf)
    assert sent(actions).endswith(OK + b"220 2.0.0 Start TLS\r\n")
    assert isinstance(actions[-1], StartTls)
    assert (m.helo, m.smtp_from, m.smtp_to, m.esmtp) == (b"", b"", b"", True)
    assert m.pending_input() == b""
    assert m.next_action() is None  # paused until the handshake
    m.tls_started()
    m, actions = run(b"STARTTLS\r\n", machine=m)
    assert sent(actions) == INVALID  # not twice
    m, actions = run(b"HELO y\r\n", machine=m)
    assert m.esmtp is True and m.helo == b"y"


def test_starttls_waits_for_data_arriving_later():
    m, _ = run(b"STARTTLS\r\n", STARTTLS_ON)
    m.receive_data(b"NOOP\r\n")
    assert m.next_action() is None
    m.tls_started()
    assert m.next_action() == Send(OK)


def test_none_mode_transcript_from_section_18():
    m, actions = run(b"HELO me\r\nMAIL FROM:<a@b>  SIZE=10\r\nRCPT TO:<c@d>\r\n", NONE,
                     machine=SmtpDialogue(NONE, client_host="[UNAVAILABLE]"))
    assert sent(actions) == b"250 mx.test\r\n" + OK
    assert isinstance(actions[-1], Authenticate)
    assert (m.helo, m.smtp_from, m.smtp_to) == (b"me", b"MAIL FROM:<a@b>  SIZE=10",
                                                b"RCPT TO:<c@d>")
    assert (m.creds.method, m.creds.login, m.creds.password, m.creds.attempt) == \
        ("none", b"", None, 1)
    req = AuthRequest(method=m.creds.method, user=m.creds.login, password=m.creds.password,
                      protocol=m.protocol, attempt=m.creds.attempt, client_ip="127.0.0.1")
    m.auth_request_extra(req)
    text = build_request(CONF.auth_http, (), req)
    assert text.endswith(b"Client-IP: 127.0.0.1\r\nClient-Host: [UNAVAILABLE]\r\n"
                         b"Auth-SMTP-Helo: me\r\nAuth-SMTP-From: MAIL FROM:<a@b>  SIZE=10\r\n"
                         b"Auth-SMTP-To: RCPT TO:<c@d>\r\n\r\n")
    assert b"Auth-User: \r\nAuth-Pass: \r\n" in text


def test_auth_request_extra_for_authenticated_sessions():
    m, _ = run(b"EHLO me\r\nAUTH PLAIN AHVzZXIAcA==\r\n",
               machine=SmtpDialogue(CONF, client_host="mail.example.test"))
    req = AuthRequest(method="plain", user=b"user", password=b"p", protocol="smtp", attempt=1,
                      client_ip="127.0.0.1")
    m.auth_request_extra(req)
    assert req.client_host == "mail.example.test"
    assert (req.smtp_helo, req.smtp_from, req.smtp_to) == (b"", b"", b"")


def test_mail_variants_in_none_mode():
    assert sent(run(b"MAIL\r\n", NONE)[1]) == b"501 5.5.4 Invalid argument\r\n"
    assert sent(run(b"MAIL FROM:<a> X\r\nMAIL FROM:<b>\r\n", NONE)[1]) == \
        OK + b"503 5.5.1 Bad sequence of commands\r\n"
    assert sent(run(b"MAIL FROM:<a>\r\nRCPT\r\n", NONE)[1]) == \
        OK + b"501 5.5.4 Invalid argument\r\n"
    m, _ = run(b"mail   from:<a>   \r\n", NONE)
    assert m.smtp_from == b"mail   from:<a>"  # up to the end of the last argument
    assert sent(run(b"MAIL FROM:<a>\r\nRSET\r\nMAIL FROM:<b>\r\n", NONE)[1]) == OK * 3
    assert sent(run(b"MAIL FROM:<a>\r\nHELO x\r\nMAIL FROM:<b>\r\n", NONE)[1]) == \
        OK + b"250 mx.test\r\n" + OK


def test_mail_clears_stale_credentials():
    m, _ = run(b"AUTH LOGIN dXNlcg==\r\n", NONE)
    assert m.creds.login == b"user"
    m, _ = run(b"*\r\nMAIL FROM:<a>\r\n", NONE, machine=m)
    assert (m.creds.login, m.creds.password) == (b"", None)


def test_mail_rejected_without_none_is_logged():
    _, actions = run(b"MAIL FROM:<x>\r\n")
    assert logs(actions) == ['client was rejected: "MAIL FROM:<x>__"']


def test_failed_none_auth_with_wait_keeps_mail_and_rcpt():
    m, actions = run(b"HELO me\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nMAIL FROM:<x>\r\n", NONE)
    assert isinstance(actions[-1], Authenticate)
    line = m.auth_failure(AuthResponse(error=b"Try later", error_code=b"451 4.3.0"))
    assert line == b"451 4.3.0 Try later\r\n"
    m.auth_failed(line)
    actions = []
    while (a := m.next_action()) is not None:
        actions.append(a)
    assert sent(actions) == line + b"503 5.5.1 Bad sequence of commands\r\n"
    assert m.creds.method == "plain"
    m, actions = run(b"RCPT TO:<e@f>\r\n", machine=m)
    assert isinstance(actions[-1], Authenticate)
    assert (m.smtp_from, m.smtp_to, m.creds.method, m.creds.attempt) == \
        (b"MAIL FROM:<a@b>", b"RCPT TO:<e@f>", "none", 2)


def test_auth_failure_lines():
    m = SmtpDialogue(CONF)
    assert m.auth_failure(AuthResponse(error=b"Bad login")) == b"535 5.7.0 Bad login\r\n"
    assert m.auth_failure(AuthResponse(error=b"x y", error_code=b"550 5.7.1")) == \
        b"550 5.7.1 x y\r\n"
    assert m.auth_failure(AuthResponse(error=b"x", error_code=b"")) == b"535 5.7.0 x\r\n"
    assert m.auth_failure(AuthResponse(error=b"")) is None  # SMTP QUIRK
    assert m.internal_error == b"451 4.3.2 Internal server error\r\n"


def test_auth_failed_returns_to_the_start_and_processes_pipelined_input():
    m, actions = run(b"AUTH PLAIN AHVzZXIAcA==\r\nNOOP\r\n")
    assert actions == [Authenticate()]
    m.receive_data(b"RSET\r\n")
    assert m.next_action() is None
    m.auth_failed(b"535 5.7.0 no\r\n")
    out = []
    while (a := m.next_action()) is not None:
        out.append(a)
    assert sent(out) == b"535 5.7.0 no\r\n" + OK + OK


def test_pipelining_answers_in_order():
    _, actions = run(b"HELO a\r\nNOOP\r\nRSET\r\nVRFY x\r\nQUIT\r\n")
    assert sent(actions) == b"250 mx.test\r\n" + OK + OK + INVALID + b"221 2.0.0 Bye\r\n"


def test_command_split_across_packets():
    m, actions = run(b"HE")
    assert actions == []
    m, actions = run(b"LO ex", machine=m)
    assert actions == []
    m, actions = run(b"ample\r", machine=m)
    assert actions == []
    m, actions = run(b"\n", machine=m)
    assert sent(actions) == b"250 mx.test\r\n"
    assert m.helo == b"example"


def test_max_errors_counts_parser_errors_only():
    conf = replace(CONF, max_errors=2)
    m, actions = run(b"VRFY a\r\nEXPN b\r\nHELP\r\nAUTH X\r\nXYZZ\r\nNOOP\r\n", conf)
    assert sent(actions) == INVALID * 5 + OK
    assert m.errors == 1
    m, actions = run(b"DATA\r\nNOOP\r\n", machine=m)
    assert sent(actions) == INVALID
    assert logs(actions) == ["client sent too many invalid commands"]
    assert isinstance(actions[-1], Close)


def test_max_errors_zero_behaves_like_one():
    _, actions = run(b"DATA\r\n", replace(CONF, max_errors=0))
    assert isinstance(actions[-1], Close)


def test_too_long_command_closes_and_logs_the_verb_only():
    conf = replace(CONF, smtp_client_buffer=64)
    _, actions = run(b"AUTH PLAIN " + b"A" * 80 + b"\r\n", conf)
    assert sent(actions) == INVALID
    assert logs(actions) == ['client sent too long command "AUTH ..."']
    assert isinstance(actions[-1], Close)
    _, actions = run(b"A" * 80, conf)
    assert logs(actions) == ['client sent too long command "..."']


def test_too_long_sasl_line_logs_nothing_of_it():
    conf = replace(CONF, smtp_client_buffer=64)
    m, _ = run(b"AUTH PLAIN\r\n", conf)
    _, actions = run(b"c2VjcmV0" * 10, conf, machine=m)
    assert logs(actions) == ['client sent too long command "..."']
    assert sent(actions) == INVALID


def test_no_compaction_quirk_pipelined_command_straddling_a_full_buffer():
    conf = replace(CONF, smtp_client_buffer=128)
    _, actions = run(b"NOOP\r\n" * 22, conf)
    replies = sent(actions)
    assert replies == OK * 21 + INVALID  # 21 * 6 = 126 bytes: the 22nd does not fit
    assert logs(actions) == ['client sent too long command "NOOP ..."']


def test_reject_early():
    m = SmtpDialogue(CONF)
    actions = m.reject_early(b"EHLO x\r\n")
    assert actions == [Log("info", 'client was rejected before greeting: "EHLO x__"'),
                       Send(b"503 5.5.0 Improper use of SMTP command pipelining\r\n"), Close()]
    assert m.next_action() is None
    actions = SmtpDialogue(CONF).reject_early(b"EHLO x\r\nAUTH PLAIN AHVzZXIAcA==\r\n")
    assert actions[0] == Log("info", 'client was rejected before greeting: '
                                     '"EHLO x__AUTH PLAIN ..."')


def test_loggable_never_shows_sasl_data():
    assert loggable(b"auth login\r\ndXNlcg==\r\ncGFzcw==\r\n") == "auth login ..."
    assert loggable(b"NOOP\r\nAUTH\r\n") == "NOOP__AUTH ..."
    assert loggable(b"MAIL FROM:<x>\r\n") == "MAIL FROM:<x>__"


def test_backend_login_is_built_from_the_session():
    conf = replace(NONE, xclient=True, proxy_smtp_auth=False, proxy_buffer=1024,
                   proxy_pass_error_message=True)
    m, _ = run(b"EHLO me\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n", conf,
               machine=SmtpDialogue(conf, client_host="h.example"))
    login = m.backend_login(conf, "192.0.2.7")
    assert isinstance(login, SmtpBackendLogin)
    assert (login.client_ip, login.client_host, login.helo, login.esmtp, login.method_none,
            login.mail, login.rcpt, login.xclient, login.size, login.pass_error_message) == \
        ("192.0.2.7", "h.example", b"me", True, True, b"MAIL FROM:<a@b>", b"RCPT TO:<c@d>",
         True, 1024, True)


def test_pending_input_after_auth():
    m, actions = run(b"AUTH PLAIN AHVzZXIAcA==\r\nMAIL FROM:<a>\r\n")
    assert actions == [Authenticate()]
    m.receive_data(b"RCPT TO:<b>\r\n")
    assert m.pending_input() == b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\n"


def test_sasl_transcript_observed_on_nginx_1_22():
    # "QUIT" is valid base64, so it is taken as the LOGIN user name; "*" and "" are not data
    m, actions = run(b"AUTH LOGIN\r\nQUIT\r\n*\r\nAUTH PLAIN\r\n\r\n")
    assert sent(actions) == (b"334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n" + INVALID +
                             b"334 \r\n" + INVALID)
    assert logs(actions) == ["client sent invalid base64 encoding in AUTH LOGIN command",
                             "client sent invalid login in AUTH PLAIN command"]
    assert m.errors == 0


def test_helo_after_ehlo_keeps_the_esmtp_flag_for_the_backend():
    # observed on nginx 1.22.1: EHLO client.example, HELO other -> backend gets "EHLO other"
    conf = replace(CONF, xclient=True)
    m, _ = run(b"EHLO client.example\r\nHELO other\r\nAUTH PLAIN AHVzZXIAcA==\r\n", conf)
    login = m.backend_login(conf, "127.0.0.1")
    assert (login.helo, login.esmtp) == (b"other", True)
    login.receive_data(b"220 b\r\n")
    login.receive_data(b"250 b\r\n")
    assert login.receive_data(b"220 b\r\n").data == b"EHLO other\r\n"


def test_loggable_with_leading_space_before_auth():
    assert loggable(b" auth plain AHVzZXIAcA==\r\n") == " auth plain ..."


PIPELINED_AFTER_MAIL = b"MAIL FROM:<a@b>\r\nVRFY x\r\nQUIT\r\n"


def test_rejected_mail_rewrites_line_ends_when_info_is_logged():
    # ngx_mail_smtp_log_rejected_command: CR/LF of the whole buffer become '_' in place
    m, actions = run(PIPELINED_AFTER_MAIL, machine=SmtpDialogue(CONF, log_info=True))
    assert sent(actions) == b"530 5.7.1 Authentication required\r\n"
    assert logs(actions) == ['client was rejected: "MAIL FROM:<a@b>__"']
    assert bytes(m.buffer.data) == b"MAIL FROM:<a@b>__VRFY x__QUIT__"
    _, actions = run(b"\r\n", machine=m)  # completes "VRFY x__QUIT__": a VRFY
    assert sent(actions) == INVALID
    assert not m.quit


def test_rejected_mail_keeps_line_ends_without_info_log():
    _, actions = run(PIPELINED_AFTER_MAIL, machine=SmtpDialogue(CONF, log_info=False))
    assert sent(actions) == (b"530 5.7.1 Authentication required\r\n" + INVALID +
                             b"221 2.0.0 Bye\r\n")


@pytest.mark.parametrize("levels,mangles", [
    ((), True),  # the main error_log decides; the lab and most mail proxies log at info
    (("error",), False),
    (("notice", "info"), True),
    (("debug",), True),
    (("warn", "crit"), False),
])
def test_log_info_follows_the_servers_error_log(levels, mangles):
    conf = replace(CONF, error_logs=tuple(LogTarget("stderr", level) for level in levels))
    assert SmtpDialogue(conf).log_info is mangles


def test_rejection_with_a_full_buffer_becomes_too_long():
    # the rewritten buffer has no line end left; a full one is then a "too long command",
    # while the bytes still in the kernel (backlog) keep their CRLF
    conf = replace(CONF, smtp_client_buffer=32)
    m, actions = run(b"MAIL FROM:<a@b>\r\nNOOP\r\n" + b"NOOP\r\n" * 4,
                     machine=SmtpDialogue(conf, log_info=True))
    assert sent(actions) == b"530 5.7.1 Authentication required\r\n" + INVALID
    assert isinstance(actions[-1], Close)
    assert bytes(m.buffer.backlog) == b"P\r\nNOOP\r\nNOOP\r\n"
