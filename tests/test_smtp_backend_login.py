"""Logging into the SMTP backend (docs/behaviour.md §11.4): every row of the sequence table, every failure."""

from __future__ import annotations

import base64

import pytest
from postern.proxy.backend_login import LoggedIn, LoginFailed, SendToBackend
from postern.proxy.smtp.backend_login import AUTH_OK, SmtpBackendLogin, xtext

GREETING = b"220 backend.test ESMTP\r\n"
EHLO_REPLY = b"250-backend.test\r\n250-XCLIENT NAME ADDR LOGIN\r\n250 8BITMIME\r\n"
REPLIES = {b"EHLO": EHLO_REPLY, b"HELO": b"250 backend.test\r\n",
           b"XCLIENT": b"220 backend.test ESMTP\r\n", b"AUTH": b"235 2.7.0 Authenticated\r\n",
           b"MAIL": b"250 2.1.0 Ok\r\n", b"RCPT": b"250 2.1.5 Ok\r\n"}


def machine(**kw) -> SmtpBackendLogin:
    args = {"server_name": "mx.test", "client_ip": "127.0.0.1",
            "client_host": "[UNAVAILABLE]", "login": b"user", "password": b"secret",
            "helo": b"client.example", "esmtp": True, "method_none": False, "mail": b"",
            "rcpt": b"", "xclient": True, "proxy_smtp_auth": False, "proxy_buffer": 4096,
            "pass_error_message": False}
    args.update(kw)
    return SmtpBackendLogin(**args)


def converse(m: SmtpBackendLogin, replies=None, greeting=GREETING):
    """Play a backend: returns (lines nginx sent, final outcome)."""
    replies = {**REPLIES, **(replies or {})}
    assert m.start() is None
    sent: list[bytes] = []
    outcome = m.receive_data(greeting)
    while isinstance(outcome, SendToBackend):
        sent.append(outcome.data)
        outcome = m.receive_data(replies[outcome.data.split(b" ", 1)[0].rstrip(b"\r\n")])
    return sent, outcome


AUTH_LINE = b"AUTH PLAIN " + base64.b64encode(b"\0user\0secret") + b"\r\n"


@pytest.mark.parametrize("xclient,smtp_auth,esmtp,helo,expected", [
    # xclient on, proxy_smtp_auth off, auth: EHLO srv, XCLIENT with LOGIN, client's HELO/EHLO
    (True, False, True, b"client.example",
     [b"EHLO mx.test\r\n", b"XCLIENT ADDR=127.0.0.1 LOGIN=user NAME=[UNAVAILABLE]\r\n",
      b"EHLO client.example\r\n"]),
    (True, False, False, b"client.example",
     [b"EHLO mx.test\r\n", b"XCLIENT ADDR=127.0.0.1 LOGIN=user NAME=[UNAVAILABLE]\r\n",
      b"HELO client.example\r\n"]),
    (True, False, False, b"",
     [b"EHLO mx.test\r\n", b"XCLIENT ADDR=127.0.0.1 LOGIN=user NAME=[UNAVAILABLE]\r\n"]),
    # xclient on, proxy_smtp_auth on: no LOGIN=, then AUTH PLAIN
    (True, True, True, b"client.example",
     [b"EHLO mx.test\r\n", b"XCLIENT ADDR=127.0.0.1 NAME=[UNAVAILABLE]\r\n",
      b"EHLO client.example\r\n", AUTH_LINE]),
    (True, True, False, b"",
     [b"EHLO mx.test\r\n", b"XCLIENT ADDR=127.0.0.1 NAME=[UNAVAILABLE]\r\n", AUTH_LINE]),
    # xclient off, proxy_smtp_auth off: only our HELO/EHLO (by the client's choice)
    (False, False, True, b"client.example", [b"EHLO mx.test\r\n"]),
    (False, False, False, b"client.example", [b"HELO mx.test\r\n"]),
    (False, False, False, b"", [b"HELO mx.test\r\n"]),
    # xclient off, proxy_smtp_auth on
    (False, True, True, b"c", [b"EHLO mx.test\r\n", AUTH_LINE]),
    (False, True, False, b"", [b"HELO mx.test\r\n", AUTH_LINE]),
])
def test_authenticated_sequences(xclient, smtp_auth, esmtp, helo, expected):
    sent, outcome = converse(machine(xclient=xclient, proxy_smtp_auth=smtp_auth, esmtp=esmtp,
                                     helo=helo))
    assert sent == expected
    assert outcome == LoggedIn(AUTH_OK)  # the backend's last reply is replaced
    assert AUTH_OK == b"235 2.0.0 OK\r\n"


NONE_KW = {"method_none": True, "login": b"", "password": None,
           "mail": b"MAIL FROM:<a@b>  SIZE=10", "rcpt": b"RCPT TO:<c@d>"}


@pytest.mark.parametrize("xclient,smtp_auth,esmtp,helo,expected", [
    (True, False, False, b"me",
     [b"EHLO mx.test\r\n", b"XCLIENT ADDR=127.0.0.1 NAME=[UNAVAILABLE]\r\n", b"HELO me\r\n",
      b"MAIL FROM:<a@b>  SIZE=10\r\n", b"RCPT TO:<c@d>\r\n"]),
    (True, True, True, b"me",
     [b"EHLO mx.test\r\n", b"XCLIENT ADDR=127.0.0.1 NAME=[UNAVAILABLE]\r\n", b"EHLO me\r\n",
      b"MAIL FROM:<a@b>  SIZE=10\r\n", b"RCPT TO:<c@d>\r\n"]),
    (True, False, False, b"",
     [b"EHLO mx.test\r\n", b"XCLIENT ADDR=127.0.0.1 NAME=[UNAVAILABLE]\r\n",
      b"MAIL FROM:<a@b>  SIZE=10\r\n", b"RCPT TO:<c@d>\r\n"]),
    (False, False, False, b"me",
     [b"HELO mx.test\r\n", b"MAIL FROM:<a@b>  SIZE=10\r\n", b"RCPT TO:<c@d>\r\n"]),
    (False, True, True, b"me",
     [b"EHLO mx.test\r\n", b"MAIL FROM:<a@b>  SIZE=10\r\n", b"RCPT TO:<c@d>\r\n"]),
])
def test_none_sequences_relay_the_rcpt_reply(xclient, smtp_auth, esmtp, helo, expected):
    sent, outcome = converse(machine(xclient=xclient, proxy_smtp_auth=smtp_auth, esmtp=esmtp,
                                     helo=helo, **NONE_KW))
    assert sent == expected
    assert outcome == LoggedIn(b"250 2.1.5 Ok\r\n")


@pytest.mark.parametrize("reply", [b"550 rcpt rejected by backend\r\n",
                                   b"451 4.3.0 later\r\n", b"xyz!\r\n",
                                   b"550-one\r\n550 two\r\n"])
def test_none_rcpt_reply_is_relayed_whatever_it_says(reply):
    _, outcome = converse(machine(**NONE_KW), {b"RCPT": reply})
    assert outcome == LoggedIn(reply)


def test_none_with_a_login_from_the_auth_server_still_sends_no_login():
    # the auth server may answer Auth-User; XCLIENT for `none` still carries it (nginx sends
    # LOGIN= whenever the login is non-empty and proxy_smtp_auth is off)
    sent, _ = converse(machine(**{**NONE_KW, "login": b"bob"}))
    assert sent[1] == b"XCLIENT ADDR=127.0.0.1 LOGIN=bob NAME=[UNAVAILABLE]\r\n"


@pytest.mark.parametrize("login,encoded", [
    (b"us er+=", b"us+20er+2B+3D"),  # the §18 capture
    (b"user@example.com", b"user@example.com"),
    (b"a\x00b\x1fc\x7fd\xffe", b"a+00b+1Fc+7Fd+FFe"),
    (b"~!\"#$%&'()*,-./:;<>?[\\]^_`{|}", b"~!\"#$%&'()*,-./:;<>?[\\]^_`{|}"),
])
def test_xtext(login, encoded):
    assert xtext(login) == encoded
    sent, _ = converse(machine(login=login))
    assert sent[1] == b"XCLIENT ADDR=127.0.0.1 LOGIN=" + encoded + b" NAME=[UNAVAILABLE]\r\n"


def test_xclient_variants():
    sent, _ = converse(machine(client_ip="2001:db8::1", client_host="h.example.test",
                               login=b""))
    assert sent[1] == b"XCLIENT ADDR=IPV6:2001:db8::1 NAME=h.example.test\r\n"
    sent, _ = converse(machine(client_host="[TEMPUNAVAIL]"))
    assert sent[1] == b"XCLIENT ADDR=127.0.0.1 LOGIN=user NAME=[TEMPUNAVAIL]\r\n"


def test_xclient_accepts_250_too():
    _, outcome = converse(machine(), {b"XCLIENT": b"250 2.0.0 Ok\r\n"})
    assert outcome == LoggedIn(AUTH_OK)


def test_auth_plain_with_empty_password_and_odd_bytes():
    sent, outcome = converse(machine(xclient=False, proxy_smtp_auth=True, login=b"u\xff",
                                     password=b""))
    assert sent[-1] == b"AUTH PLAIN " + base64.b64encode(b"\0u\xff\0") + b"\r\n"
    assert outcome == LoggedIn(AUTH_OK)


def test_no_password_available():
    m = machine(xclient=False, proxy_smtp_auth=True, password=None)
    sent, outcome = converse(m)
    assert sent == [b"EHLO mx.test\r\n"]
    assert outcome == LoginFailed(None, "error", "no password available")
    assert m.action == "sending AUTH to upstream"


def test_multi_line_replies_wait_for_the_last_line():
    m = machine(xclient=False)
    assert m.receive_data(b"220-backend.test ESMTP\r\n") is None
    assert m.receive_data(b"220-more\r\n") is None
    out = m.receive_data(b"220 done\r\n")
    assert out == SendToBackend(b"EHLO mx.test\r\n")
    assert m.receive_data(b"250-backend.test\r\n250-PIPE") is None
    assert m.receive_data(b"LINING\r\n") is None
    assert m.receive_data(b"250 8BITMIME\r\n") == LoggedIn(AUTH_OK)


def test_reply_split_across_packets():
    m = machine(xclient=False)
    assert m.receive_data(b"22") is None
    assert m.receive_data(b"0 x") is None
    assert m.receive_data(b"\r") is None
    assert m.receive_data(b"\n") == SendToBackend(b"EHLO mx.test\r\n")


def test_short_multi_line_tail():
    m = machine(xclient=False)
    assert m.receive_data(b"220-a\r\n220\r\n") == SendToBackend(b"EHLO mx.test\r\n")


def test_only_the_first_line_code_counts():
    # a multi-line reply whose last line has another code is judged by its first line
    m = machine(xclient=False)
    assert m.receive_data(b"220-a\r\n554 b\r\n") == SendToBackend(b"EHLO mx.test\r\n")


# Every step, failing: (machine options, the step's verb or "greeting", expected lines sent).
STEPS = [
    ({}, "greeting", []),
    ({}, b"EHLO", [b"EHLO mx.test\r\n"]),
    ({}, b"XCLIENT", [b"EHLO mx.test\r\n",
                      b"XCLIENT ADDR=127.0.0.1 LOGIN=user NAME=[UNAVAILABLE]\r\n"]),
    ({"esmtp": False, "xclient": False}, b"HELO", [b"HELO mx.test\r\n"]),
    ({"proxy_smtp_auth": True, "xclient": False}, b"AUTH",
     [b"EHLO mx.test\r\n", AUTH_LINE]),
    ({**NONE_KW, "xclient": False}, b"MAIL",
     [b"EHLO mx.test\r\n", b"MAIL FROM:<a@b>  SIZE=10\r\n"]),
]


def fail_at(opts: dict, step, reply: bytes):
    m = machine(**opts)
    if step == "greeting":
        return m, converse(m, greeting=reply)
    return m, converse(m, {step: reply})


@pytest.mark.parametrize("opts,step,expected_sent", STEPS)
@pytest.mark.parametrize("reply", [b"554 5.7.1 go away\r\n", b"421 4.3.2 busy\r\n"])
def test_each_step_failing_without_pass_error_message(opts, step, expected_sent, reply):
    _, (sent, outcome) = fail_at(opts, step, reply)
    assert sent == expected_sent
    shown = reply[:-2].decode()
    assert outcome == LoginFailed(None, "error", f'upstream sent invalid response: "{shown}"')


@pytest.mark.parametrize("opts,step,expected_sent", STEPS)
def test_each_step_failing_with_pass_error_message(opts, step, expected_sent):
    reply = b"554-5.7.1 go away\r\n554 5.7.1 really\r\n"
    _, (sent, outcome) = fail_at({**opts, "pass_error_message": True}, step, reply)
    assert sent == expected_sent
    assert outcome == LoginFailed(reply, "info", 'upstream sent invalid response: '
                                                 '"554-5.7.1 go away\r\n554 5.7.1 really"')


@pytest.mark.parametrize("step,reply", [
    ("greeting", b"250 not a greeting\r\n"),
    (b"EHLO", b"220 wrong code\r\n"),  # own EHLO needs 250, 220 is not enough
    (b"XCLIENT", b"550 5.7.0 Error: insufficient authorization\r\n"),
    (b"AUTH", b"250 not 235\r\n"),
])
def test_expected_codes(step, reply):
    opts = {"proxy_smtp_auth": True}
    _, (_, outcome) = fail_at(opts, step, reply)
    assert isinstance(outcome, LoginFailed)


def test_client_helo_after_xclient_needs_250():
    m = machine()
    replies = iter([EHLO_REPLY, b"220 xclient ok\r\n", b"220 not 250\r\n"])
    outcome = m.receive_data(GREETING)
    sent = []
    while isinstance(outcome, SendToBackend):
        sent.append(outcome.data)
        outcome = m.receive_data(next(replies))
    assert sent[-1] == b"EHLO client.example\r\n"
    assert outcome == LoginFailed(None, "error", 'upstream sent invalid response: '
                                                 '"220 not 250"')


def test_actions_follow_the_steps():
    m = machine(proxy_smtp_auth=True)
    seen = []
    outcome = m.receive_data(GREETING)
    while isinstance(outcome, SendToBackend):
        seen.append(m.action)
        verb = outcome.data.split(b" ", 1)[0]
        outcome = m.receive_data(REPLIES[verb])
        assert m.action != "" and m.state
    assert seen == ["sending HELO/EHLO to upstream", "sending XCLIENT to upstream",
                    "sending client HELO/EHLO to upstream", "sending AUTH to upstream"]
    m = machine(**NONE_KW, xclient=False)
    seen = []
    outcome = m.receive_data(GREETING)
    while isinstance(outcome, SendToBackend):
        seen.append(m.action)
        outcome = m.receive_data(REPLIES[outcome.data.split(b" ", 1)[0]])
    assert seen == ["sending HELO/EHLO to upstream", "sending MAIL FROM to upstream",
                    "sending RCPT TO to upstream"]


def test_too_long_response_line():
    m = machine(proxy_buffer=16)
    out = m.receive_data(b"220 " + b"x" * 30)
    assert out == LoginFailed(None, "error",
                              'upstream sent too long response line: "220 xxxxxxxxxxx"')


def test_bytes_after_the_last_reply_are_relayed():
    # a full proxy_buffer ending in CRLF is judged; what the kernel still holds follows it
    m = machine(**NONE_KW, xclient=False, proxy_buffer=13)
    assert m.receive_data(b"220 b ESMTP\r\n") == SendToBackend(b"EHLO mx.test\r\n")
    assert m.receive_data(b"250 ok\r\n") == SendToBackend(b"MAIL FROM:<a@b>  SIZE=10\r\n")
    assert m.receive_data(b"250 ok\r\n") == SendToBackend(b"RCPT TO:<c@d>\r\n")
    assert m.receive_data(b"250 rcpt ok\r\n250 more\r\n") == \
        LoggedIn(b"250 rcpt ok\r\n250 more\r\n")
