"""A real Postfix behind the proxy, driven by real clients (Python's smtplib, swaks, curl), on
every target (docs/behaviour.md §11.4 XCLIENT login against a real MTA, §12 relay; RFC 5321, RFC 4954,
RFC 2920, Postfix XCLIENT).

Postfix trusts XCLIENT from 127.0.0.0/8 and delivers example.com into a maildir; with
`smtpd_sasl_authenticated_header` its Received header names the client address and login the
proxy passed by XCLIENT. The mock auth server sends the test user to Postfix. Without Postfix
(or swaks, curl) the scenarios are skipped, except under CI, where that is a failure.
"""

from __future__ import annotations

import email
import shutil
import smtplib
import subprocess
import uuid

import pytest
from postern.fakes.auth import User
from postern.scenarios.kit.real.common import require
from postern.scenarios.kit.real.postfix import postfix_naming_the_login

USER, PASSWORD = "carol", "c4rol pw"
SENDER, RECIPIENT = "carol@example.com", "dave@example.com"
# swaks --pipeline needs PIPELINING in the proxy's own EHLO (nginx advertises only these)
SERVER = 'smtp_capabilities PIPELINING 8BITMIME "SIZE 10240000";'


@pytest.fixture(scope="module")
def postfix(tmp_path_factory):
    yield from postfix_naming_the_login(tmp_path_factory.mktemp("postfix"))


@pytest.fixture
def real(lab, postfix):
    """The lab with the test user's SMTP backend pointing at Postfix."""
    lab.auth.users[USER] = User(PASSWORD, backends={"smtp": ("127.0.0.1", postfix.port)})
    return lab


def delivered_with(postfix, marker: str) -> email.message.Message:
    """The delivered message whose Subject carries `marker` (earlier ones may be there)."""
    for _ in range(2):
        for raw in postfix.delivered(timeout=15, count=len(postfix.delivered_paths()) + 1):
            msg = email.message_from_bytes(raw)
            if marker in (msg["Subject"] or ""):
                return msg
    raise AssertionError(f"no message with {marker!r} delivered\n{postfix.log_text()[-3000:]}")


def received(msg) -> str:
    """The first (topmost) Received header, unfolded."""
    return " ".join(msg.get_all("Received")[0].split())


def unique() -> str:
    return uuid.uuid4().hex[:12]


def test_smtplib_submission_is_delivered_with_xclient_identity(real, postfix):
    """RFC 4954 AUTH PLAIN through the proxy, then RFC 5321 MAIL/RCPT/DATA relayed to Postfix:
    the message is delivered, and its Received header names the client's HELO, the client
    address 127.0.0.1 and the login (`Authenticated sender: carol`), which Postfix learnt
    from nginx's XCLIENT, not from an AUTH of its own (`with ESMTPA`)."""
    proxy = real.proxy(SERVER, protocol="smtp")
    marker = unique()
    with smtplib.SMTP(proxy.host, proxy.port, local_hostname="client.example",
                      timeout=20) as s:
        s.ehlo()
        assert s.esmtp_features == {"pipelining": "", "8bitmime": "", "size": "10240000",
                                    "auth": " PLAIN LOGIN"}
        s.login(USER, PASSWORD, initial_response_ok=True)
        refused = s.sendmail(SENDER, [RECIPIENT], f"Subject: smtplib {marker}\r\n"
                             f"From: {SENDER}\r\nTo: {RECIPIENT}\r\n\r\nhello\r\n".encode())
        assert refused == {}
    msg = delivered_with(postfix, marker)
    line = received(msg)
    assert line.startswith("from client.example (unknown [127.0.0.1]) "
                           "(Authenticated sender: carol) by upstream.test (Postfix) "
                           "with ESMTPA id "), line
    assert msg["Return-Path"] == f"<{SENDER}>"
    [req] = real.auth.requests
    assert (req.auth_method, req.user, req.header("Auth-Pass")) == ("plain", USER, "c4rol%20pw")


def test_smtplib_from_another_address(real, postfix):
    """§11.4 XCLIENT ADDR= with a real Postfix: a client on 127.0.0.2 shows up as 127.0.0.2 in
    the Received header (RFC 5321 §4.4) although the proxy connects from 127.0.0.1."""
    proxy = real.proxy(SERVER, protocol="smtp")
    marker = unique()
    with smtplib.SMTP(proxy.host, proxy.port, local_hostname="two.example", timeout=20,
                      source_address=("127.0.0.2", 0)) as s:
        s.login(USER, PASSWORD)
        s.sendmail(SENDER, [RECIPIENT], f"Subject: from two {marker}\r\n\r\nhi\r\n".encode())
    line = received(delivered_with(postfix, marker))
    assert line.startswith("from two.example (unknown [127.0.0.2]) "
                           "(Authenticated sender: carol)"), line
    assert real.auth.requests[0].header("Client-IP") == "127.0.0.2"


def test_wrong_password_never_reaches_postfix(real, postfix):
    """§10.4: a refused login gets `535 5.7.0 <text>` from the proxy; Postfix never sees a
    connection."""
    proxy = real.proxy(SERVER, protocol="smtp")
    before = postfix.log_text().count("connect from")
    with smtplib.SMTP(proxy.host, proxy.port, timeout=20) as s:
        s.ehlo()
        s.user, s.password = USER, "wrong"
        # one mechanism only: login() would try LOGIN next on the closed connection
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            s.auth("PLAIN", s.auth_plain)
    assert err.value.smtp_code == 535
    assert err.value.smtp_error == b"5.7.0 Invalid login or password"
    assert postfix.log_text().count("connect from") == before


def _tool(name: str) -> str:
    path = shutil.which(name)
    require(None if path else f"{name} is not installed")
    return path


def _swaks(proxy, auth: str, marker: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_tool("swaks"), "--server", "127.0.0.1", "--port", str(proxy.port), "--ehlo",
         "swaks.example", "--from", SENDER, "--to", RECIPIENT, "--auth", auth,
         "--auth-user", USER, "--auth-password", PASSWORD, "--header",
         f"Subject: swaks {marker}", "--timeout", "20", *extra],
        capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("auth,extra", [("PLAIN", ()), ("LOGIN", ()),
                                        ("PLAIN", ("--pipeline",))])
def test_swaks_through_the_proxy(real, postfix, auth, extra):
    """swaks with AUTH PLAIN, AUTH LOGIN (RFC 4954) and with --pipeline (RFC 2920: MAIL, RCPT
    and DATA in one packet after the proxy's 235, relayed to Postfix as they come): the
    message is delivered with the login in its Received header."""
    proxy = real.proxy(SERVER, protocol="smtp")
    marker = unique()
    done = _swaks(proxy, auth, marker, *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "\n<-  235 2.0.0 OK\n" in done.stdout, done.stdout
    line = received(delivered_with(postfix, marker))
    assert line.startswith("from swaks.example (unknown [127.0.0.1]) "
                           "(Authenticated sender: carol)"), line
    assert [r.auth_method for r in real.auth.requests] == ["plain"]


def test_curl_smtp_upload(real, postfix, tmp_path):
    """RFC 4954 §4 / RFC 5321 §3.3 with curl's SMTP client (smtp:// with --mail-from,
    --mail-rcpt, -T and -u): AUTH through the proxy, then the upload relayed to Postfix and
    delivered with its body intact (§12 relay)."""
    proxy = real.proxy(SERVER, protocol="smtp")
    marker = unique()
    body = f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: curl {marker}\r\n\r\n" \
           f"uploaded by curl\r\n"
    upload = tmp_path / "message.eml"
    upload.write_text(body)
    done = subprocess.run(
        [_tool("curl"), "--silent", "--show-error", "--max-time", "20",
         f"smtp://127.0.0.1:{proxy.port}/curl.example", "--mail-from", SENDER,
         "--mail-rcpt", RECIPIENT, "-T", str(upload), "-u", f"{USER}:{PASSWORD}"],
        capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    msg = delivered_with(postfix, marker)
    assert msg.get_payload() == "uploaded by curl\n"
    assert received(msg).startswith("from curl.example (unknown [127.0.0.1]) "
                                    "(Authenticated sender: carol)"), received(msg)
    assert real.auth.requests[0].user == USER
