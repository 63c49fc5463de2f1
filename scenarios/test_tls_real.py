"""Real clients over TLS through the proxy to real servers: `openssl s_client -starttls
imap|pop3|smtp` and curl with --ssl-reqd (STARTTLS) and imaps:// (implicit TLS), verifying the
proxy's certificate against the test CA, to Dovecot (IMAP, POP3) and Postfix (SMTP)
(docs/behaviour.md §2.7, §4.4, §11, §12; RFC 2595, RFC 3207, RFC 8314).

Without Dovecot, Postfix, curl or openssl the scenarios are skipped, except under CI, where
that is a failure.
"""

from __future__ import annotations

import base64
import email
import shutil
import subprocess
import uuid

import pytest
from postern.fakes.auth import User
from postern.scenarios.kit.real.common import available, require
from postern.scenarios.kit.real.dovecot import DovecotInstance
from postern.scenarios.kit.real.postfix import postfix_naming_the_login
from postern.scenarios.kit.tls_support import pki

__all__ = ["pki"]

USER, PASSWORD = "carol", "c4rol pw"
SENDER, RECIPIENT = "carol@example.com", "dave@example.com"
MESSAGE = (b"From: Dave <dave@example.com>\r\nTo: Carol <carol@example.com>\r\n"
           b"Subject: over TLS\r\nMessage-ID: <tls-1@example.com>\r\n"
           b"Date: Thu, 01 Jan 2026 12:00:00 +0000\r\n\r\n"
           + b"".join(b"line %04d of a body read through TLS\r\n" % i for i in range(400)))


def _tool(name: str) -> str:
    path = shutil.which(name)
    require(None if path else f"{name} is not installed")
    return path


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory):
    server = available(DovecotInstance, {USER: PASSWORD}, tmp_path_factory.mktemp("dovecot-tls"))
    with server as instance:
        instance.uid = instance.append(USER, None, MESSAGE)
        yield instance


@pytest.fixture(scope="module")
def postfix(tmp_path_factory):
    yield from postfix_naming_the_login(tmp_path_factory.mktemp("postfix-tls"))


@pytest.fixture
def mailstore(lab, dovecot):
    lab.auth.users[USER] = User(PASSWORD, backends=dovecot.backends("imap", "pop3"))
    return lab


@pytest.fixture
def mta(lab, postfix):
    lab.auth.users[USER] = User(PASSWORD, backends={"smtp": ("127.0.0.1", postfix.port)})
    return lab


def _s_client(proxy, starttls: str, lines: list[str], pki) -> str:
    """openssl s_client doing STARTTLS, verifying the proxy, then sending `lines` (CRLF)."""
    done = subprocess.run(
        [_tool("openssl"), "s_client", "-connect", f"127.0.0.1:{proxy.port}", "-starttls",
         starttls, "-CAfile", pki.ca_file, "-verify_return_error", "-crlf", "-quiet",
         "-ign_eof"],
        input="".join(line + "\n" for line in lines), capture_output=True, text=True,
        timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _tls_server(pki, mode: str = "on") -> str:
    return pki.server() + f"starttls {mode};\n"


def test_s_client_starttls_imap_to_dovecot(mailstore, dovecot, pki):
    """RFC 3501 §6.2.1, §7.4: openssl's IMAP STARTTLS (`. CAPABILITY`, `. STARTTLS`), then LOGIN, SELECT and a FETCH
    of the message Dovecot holds, through the proxy's TLS."""
    proxy = mailstore.proxy(_tls_server(pki, "only"))
    out = _s_client(proxy, "imap", [f'a1 LOGIN {USER} "{PASSWORD}"', "a2 SELECT INBOX",
                                    f"a3 UID FETCH {dovecot.uid} BODY.PEEK[]", "a4 LOGOUT"],
                    pki)
    assert "a1 OK" in out and "a2 OK" in out and "a3 OK" in out, out
    assert "line 0399 of a body read through TLS" in out
    assert "* BYE" in out
    req = mailstore.auth.requests[0]
    assert (req.header("Auth-SSL"), req.header("Auth-SSL-Protocol")) == ("on", "TLSv1.3")


def test_s_client_starttls_pop3_to_dovecot(mailstore, dovecot, pki):
    """RFC 2595 §4, §8.3: openssl's POP3 STLS, then USER/PASS, STAT and RETR against
    Dovecot."""
    proxy = mailstore.proxy(_tls_server(pki), protocol="pop3")
    out = _s_client(proxy, "pop3", [f"USER {USER}", f"PASS {PASSWORD}", "STAT", "RETR 1",
                                    "QUIT"], pki)
    assert "+OK 1 " in out, out
    assert "line 0399 of a body read through TLS" in out
    assert out.rstrip().endswith("+OK Logging out.")


def test_s_client_starttls_smtp_to_postfix(mta, postfix, pki):
    """RFC 3207 §4, §11.4: openssl's SMTP STARTTLS (EHLO, STARTTLS), then EHLO and AUTH PLAIN inside TLS: the
    proxy logs into Postfix by XCLIENT and answers 235."""
    proxy = mta.proxy(_tls_server(pki) + "smtp_capabilities 8BITMIME;", protocol="smtp")
    blob = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    out = _s_client(proxy, "smtp", ["EHLO tls.example", f"AUTH PLAIN {blob}", "QUIT"], pki)
    assert "250 AUTH PLAIN LOGIN" in out and "235 2.0.0 OK" in out, out
    assert "221 " in out
    assert "XCLIENT" not in out


def _curl(url: str, pki, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([_tool("curl"), "--silent", "--show-error", "--max-time", "30",
                           "--cacert", pki.ca_file, *extra, url],
                          capture_output=True, timeout=60, check=False)


def test_curl_ssl_reqd_imap_fetch(mailstore, dovecot, pki):
    """RFC 3501 §6.2.1, §4.4: curl --ssl-reqd: STARTTLS is required, the certificate verified (127.0.0.1 is in its
    SAN), and the message comes back byte for byte from Dovecot."""
    proxy = mailstore.proxy(_tls_server(pki))
    done = _curl(f"imap://127.0.0.1:{proxy.port}/INBOX;UID={dovecot.uid}", pki, "--ssl-reqd",
                 "--user", f"{USER}:{PASSWORD}")
    assert done.returncode == 0, done.stderr
    assert done.stdout == MESSAGE


def test_curl_ssl_reqd_pop3_retr(mailstore, dovecot, pki):
    """RFC 2595 §4, §8.3: curl's POP3 with --ssl-reqd (STLS), RETR from Dovecot byte for
    byte."""
    proxy = mailstore.proxy(_tls_server(pki), protocol="pop3")
    done = _curl(f"pop3://127.0.0.1:{proxy.port}/1", pki, "--ssl-reqd",
                 "--user", f"{USER}:{PASSWORD}")
    assert done.returncode == 0, done.stderr
    assert done.stdout == MESSAGE


def test_curl_imaps_implicit_tls(mailstore, dovecot, pki):
    """RFC 8314 §3.3, §4.1: curl's imaps:// against `listen ... ssl`."""
    proxy = mailstore.proxy(pki.server(), listen_params="ssl")
    done = _curl(f"imaps://127.0.0.1:{proxy.port}/INBOX;UID={dovecot.uid}", pki,
                 "--user", f"{USER}:{PASSWORD}")
    assert done.returncode == 0, done.stderr
    assert done.stdout == MESSAGE


def test_curl_ssl_reqd_smtp_delivers(mta, postfix, pki, tmp_path):
    """RFC 3207 §4, §11.4: curl's SMTP with --ssl-reqd: STARTTLS, AUTH through the proxy, the message delivered
    by Postfix with the client's identity from XCLIENT."""
    proxy = mta.proxy(_tls_server(pki), protocol="smtp")
    marker = uuid.uuid4().hex[:12]
    body = tmp_path / "mail.txt"
    body.write_bytes(f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: tls {marker}\r\n\r\n"
                     "sent over TLS\r\n".encode())
    done = _curl(f"smtp://127.0.0.1:{proxy.port}/curl.example", pki, "--ssl-reqd",
                 "--mail-from", SENDER, "--mail-rcpt", RECIPIENT, "--upload-file", str(body),
                 "--user", f"{USER}:{PASSWORD}")
    assert done.returncode == 0, done.stderr
    for _ in range(2):
        for raw in postfix.delivered(timeout=15, count=len(postfix.delivered_paths()) + 1):
            msg = email.message_from_bytes(raw)
            if marker in (msg["Subject"] or ""):
                received = " ".join(msg.get_all("Received")[0].split())
                assert "(Authenticated sender: carol)" in received, received
                assert mta.auth.requests[0].header("Auth-SSL") == "on"
                return
    raise AssertionError(f"not delivered\n{postfix.log_text()[-3000:]}")
