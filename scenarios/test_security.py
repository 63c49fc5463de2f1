"""Security regressions, on any target (Postern, nginx, an external proxy):

- STARTTLS command injection: plaintext pipelined behind STARTTLS/STLS is discarded
  (RFC 3207 §4.2, RFC 2595 §3.1; CVE-2011-0411 class, nginx CVE-2014-3556);
- auth-request header injection: CR/LF in a login or password reaches the auth server as
  %0D%0A and never as a header of its own (docs/behaviour.md §10.2), whatever the way in (IMAP literal
  and quoted LOGIN, AUTHENTICATE, POP3 USER and AUTH, SMTP AUTH PLAIN/LOGIN, SMTP none-mode
  text), and never as a command to the upstream (XCLIENT LOGIN=, docs/behaviour.md §11.4);
- memory disclosure with `smtp_auth none` (CVE-2025-53859 class): a failed AUTH decode,
  then MAIL/RCPT, must not send stale or foreign credentials;
- oversize and pipelined abuse: a 1 MiB line, 10,000 pipelined NOOPs, a literal announcing
  2^63 bytes, a client that pipelines and never reads. The proxy must not crash nor grow
  without bound, and another session is served while the abuse goes on.

The exact replies asserted are nginx's; where nginx allows more than one outcome (an RST
eating the last reply, docs/behaviour.md §5.1), the check is on what must never happen.
"""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from postern.fakes.auth import Reply
from postern.scenarios.kit.client import Client, Closed
from postern.scenarios.kit.tls_support import throwaway_certificate

GREETING = {"imap": b"* OK IMAP4 ready\r\n", "pop3": b"+OK POP3 ready\r\n",
            "smtp": b"220 mx.test ESMTP ready\r\n"}
NOOP = {"imap": (b"a1 NOOP\r\n", b"a1 OK completed\r\n"), "pop3": (b"NOOP\r\n", b"+OK\r\n"),
        "smtp": (b"NOOP\r\n", b"250 2.0.0 OK\r\n")}
INVALID = {"imap": b"* BAD invalid command\r\n", "pop3": b"-ERR invalid command\r\n",
           "smtp": b"500 5.5.1 Invalid command\r\n"}
INJECTED = b"x\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 1"
ESCAPED = "x%0D%0AAuth-Status:%20OK%0D%0AAuth-Server:%20127.0.0.1%0D%0AAuth-Port:%201"
BASE_HEADERS = ["Host", "Auth-Method", "Auth-User", "Auth-Pass", "Auth-Protocol",
                "Auth-Login-Attempt", "Client-IP"]
PROTOCOLS = ("imap", "pop3", "smtp")


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> str:
    """Directives for a throwaway certificate (trustme) that both targets can read; TLS 1.3
    named because nginx 1.22's default lacks it."""
    cert, key = throwaway_certificate(tmp_path_factory, "security-tls")
    return (f"ssl_certificate {cert};\nssl_certificate_key {key};\n"
            "ssl_protocols TLSv1.2 TLSv1.3;\n")


def greeted(lab, protocol: str, server: str = "") -> Client:
    c = lab.proxy(server=server, protocol=protocol).connect(timeout=10)
    c.expect(GREETING[protocol])
    return c


def header_names(request) -> list[str]:
    return [name for name, _ in request.headers]


def assert_served(lab, protocol: str, server: str = "") -> None:
    """Another session gets its greeting and a NOOP answered (the proxy is alive)."""
    with greeted(lab, protocol, server) as other:
        command, reply = NOOP[protocol]
        other.send(command).expect(reply, timeout=10)


# -- STARTTLS command injection ---------------------------------------------------------

STARTTLS = {
    # (STARTTLS command, its reply, injected commands, probe after TLS, its reply)
    "imap": (b"a1 STARTTLS\r\n", b"a1 OK completed\r\n", b"a2 LOGIN alice secret\r\n",
             b"a3 NOOP\r\n", b"a3 OK completed\r\n"),
    "pop3": (b"STLS\r\n", b"+OK\r\n", b"USER alice\r\n",
             b"PASS secret\r\n", b"-ERR invalid command\r\n"),
    "smtp": (b"STARTTLS\r\n", b"220 2.0.0 Start TLS\r\n",
             b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n",
             b"NOOP\r\n", b"250 2.0.0 OK\r\n"),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_starttls_injection_is_discarded(lab, tls, protocol):
    """RFC 3207 §4.2 / RFC 2595 §3.1 (CVE-2011-0411 class; nginx CVE-2014-3556, docs/behaviour.md §5.2):
    commands pipelined in the same packet as STARTTLS/STLS are discarded, not run inside
    TLS: the first reply inside TLS answers the probe, and the injected login never reaches
    the auth server (for POP3 the probe is PASS, which without the injected USER is
    invalid)."""
    command, reply, injected, probe, probe_reply = STARTTLS[protocol]
    with greeted(lab, protocol, "starttls on;\n" + tls) as c:
        c.send(command + injected).expect(reply)
        c.starttls()
        c.send(probe).expect(probe_reply)
    assert lab.auth.requests == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_starttls_injection_split_from_the_handshake(lab, tls, protocol):
    """RFC 3207 §4.2: plaintext sent after STARTTLS but before the ClientHello is no command
    either: the handshake fails or the bytes are dropped; nothing reaches the auth server."""
    command, reply, injected, _, _ = STARTTLS[protocol]
    with greeted(lab, protocol, "starttls on;\n" + tls) as c:
        c.send(command).expect(reply)
        c.send(injected)
        try:
            c.starttls()
        except OSError:
            pass  # the plaintext broke the handshake: fine, as long as it ran nothing
        else:  # the bytes were dropped: the probe gets its own answer
            c.send(NOOP[protocol][0]).expect(NOOP[protocol][1])
    assert lab.auth.requests == []


# -- auth-request header injection through CR/LF ------------------------------------------

def check_escaped(lab, protocol: str, user: str | None = ESCAPED,
                  password: str | None = None) -> None:
    """Exactly one request, with nginx's header list (nothing injected) and the CR/LF of
    the login (or password) %-escaped (docs/behaviour.md §10.1-§10.2)."""
    assert len(lab.auth.requests) == 1, lab.auth.requests
    req = lab.auth.requests[0]
    expected = BASE_HEADERS + (["Client-Host"] if protocol == "smtp" else [])
    assert header_names(req) == expected, req.raw
    assert req.raw.count(b"\r\nAuth-Status") == 0 and req.raw.count(b"\r\nAuth-Server") == 0
    if user is not None:
        assert req.header("Auth-User") == user, req.raw
    if password is not None:
        assert req.header("Auth-Pass") == password, req.raw


def test_imap_literal_login_with_crlf_is_escaped(lab):
    """docs/behaviour.md §10.2 (RFC 3501 §4.3 literals carry any byte): a LOGIN user name sent as a
    literal with CR/LF and header-looking text reaches the auth server %0D%0A-escaped in
    Auth-User, and no header of its own appears."""
    lab.auth.push(Reply.fail("Nope"))
    with greeted(lab, "imap") as c:
        c.send(b"a1 LOGIN {%d}\r\n" % len(INJECTED)).expect(b"+ OK\r\n")
        c.send(INJECTED + b" {6}\r\n").expect(b"+ OK\r\n")
        c.send(b"secret\r\n").expect(b"a1 NO Nope\r\n")
        c.expect_closed()
    check_escaped(lab, "imap", password="secret")


def test_imap_literal_password_with_crlf_is_escaped(lab):
    """docs/behaviour.md §10.2: the same for the password literal (Auth-Pass)."""
    lab.auth.push(Reply.fail("Nope"))
    with greeted(lab, "imap") as c:
        c.send(b"a1 LOGIN alice {%d}\r\n" % len(INJECTED)).expect(b"+ OK\r\n")
        c.send(INJECTED + b"\r\n").expect(b"a1 NO Nope\r\n")
    check_escaped(lab, "imap", user="alice", password=ESCAPED)


def test_imap_quoted_login_cannot_carry_crlf(lab):
    """RFC 3501 §4.3 (a quoted string holds no CR/LF) and nginx §7.2: a line end inside a
    quoted user name ends the line — the rest is a line of its own — so the header text
    after it never reaches the auth server as a login, let alone as a header."""
    with greeted(lab, "imap") as c:
        c.send(b'a1 LOGIN "x\r\nAuth-Status: OK" secret\r\n')
        c.expect(b"a1 BAD invalid command\r\n* BAD invalid command\r\n")
        c.send(b"a2 NOOP\r\n").expect(b"a2 OK completed\r\n")
    assert lab.auth.requests == []


def test_imap_authenticate_plain_with_crlf_is_escaped(lab):
    """RFC 4616 §2 (authcid is UTF-8 without NUL, CR/LF allowed by SASL) and docs/behaviour.md §10.2:
    AUTHENTICATE PLAIN with CR/LF inside the decoded user name is %-escaped too."""
    lab.auth.push(Reply.fail("Nope"))
    with greeted(lab, "imap") as c:
        c.send(b"a1 AUTHENTICATE PLAIN " + b64(b"\0" + INJECTED + b"\0secret") + b"\r\n")
        c.expect(b"a1 NO Nope\r\n")
    check_escaped(lab, "imap", password="secret")


def test_pop3_user_line_cannot_carry_crlf(lab):
    """RFC 1939 §3 and nginx §8.2: USER takes the rest of its line; a CRLF ends it, the next
    line is an invalid command that resets the USER state, so PASS is refused and nothing
    is asked of the auth server."""
    with greeted(lab, "pop3") as c:
        c.send(b"USER x\r\nAuth-Status: OK\r\n").expect(b"+OK\r\n-ERR invalid command\r\n")
        c.send(b"PASS secret\r\n").expect(b"-ERR invalid command\r\n")
    assert lab.auth.requests == []


def test_pop3_user_with_bare_cr_is_invalid(lab):
    """RFC 1939 §3 (commands end CRLF) and nginx §8.2: a CR not followed by LF inside USER
    is a syntax error, not part of the login."""
    with greeted(lab, "pop3") as c:
        c.send(b"USER x\rAuth-Status: OK\r\n").expect(b"-ERR invalid command\r\n")
        c.send(b"PASS secret\r\n").expect(b"-ERR invalid command\r\n")
    assert lab.auth.requests == []


def test_pop3_auth_plain_with_crlf_is_escaped(lab):
    """RFC 5034 §4 / RFC 4616 and docs/behaviour.md §10.2: AUTH PLAIN whose decoded user name holds
    CR/LF (short enough for POP3's 128-byte buffer) is %-escaped in Auth-User."""
    injected = b"x\r\nAuth-Status: OK"
    lab.auth.push(Reply.fail("Nope"))
    with greeted(lab, "pop3") as c:
        c.send(b"AUTH PLAIN " + b64(b"\0" + injected + b"\0pw") + b"\r\n")
        c.expect(b"-ERR Nope\r\n")
    check_escaped(lab, "pop3", user="x%0D%0AAuth-Status:%20OK", password="pw")


def test_smtp_auth_plain_with_crlf_is_escaped(lab):
    """RFC 4954 §4 / RFC 4616 and docs/behaviour.md §10.2: SMTP AUTH PLAIN with CR/LF inside the user
    name and the password: both %-escaped, no extra header."""
    lab.auth.push(Reply.fail("Nope"))
    with greeted(lab, "smtp") as c:
        c.send(b"EHLO x\r\n").expect(b"250-mx.test\r\n250 AUTH PLAIN LOGIN\r\n")
        c.send(b"AUTH PLAIN " + b64(b"\0" + INJECTED + b"\0" + INJECTED) + b"\r\n")
        c.expect(b"535 5.7.0 Nope\r\n")
    check_escaped(lab, "smtp", password=ESCAPED)


def test_smtp_auth_login_with_crlf_is_escaped(lab):
    """RFC 4954 §4 (AUTH LOGIN, draft-murchison-sasl-login) and docs/behaviour.md §10.2: a base64 user
    name decoding to CR/LF and header text is %-escaped."""
    lab.auth.push(Reply.fail("Nope"))
    with greeted(lab, "smtp") as c:
        c.send(b"AUTH LOGIN\r\n").expect(b"334 VXNlcm5hbWU6\r\n")
        c.send(b64(INJECTED) + b"\r\n").expect(b"334 UGFzc3dvcmQ6\r\n")
        c.send(b64(b"secret") + b"\r\n").expect(b"535 5.7.0 Nope\r\n")
    check_escaped(lab, "smtp", password="secret")


def test_smtp_none_mode_text_cannot_carry_cr(lab):
    """RFC 5321 §2.3.8 (CR only in CRLF) and docs/behaviour.md §10.1 (Auth-SMTP-* are sent unescaped,
    safe only because a bare CR is a syntax error): HELO and MAIL with a bare CR are
    refused, and the clean MAIL/RCPT that follow make a request with nginx's header list."""
    lab.auth.push(Reply.fail("Nope"))
    with greeted(lab, "smtp", "smtp_auth none;") as c:
        c.send(b"HELO x\rAuth-Status: OK\r\n").expect(INVALID["smtp"])
        c.send(b"MAIL FROM:<a@b>\rAuth-Status: OK\r\n").expect(INVALID["smtp"])
        c.send(b"HELO x\r\n").expect(b"250 mx.test\r\n")
        c.send(b"MAIL FROM:<a@b>\r\n").expect(b"250 2.0.0 OK\r\n")
        c.send(b"RCPT TO:<c@d>\r\n").expect(b"535 5.7.0 Nope\r\n")
    req = lab.auth.requests[0]
    assert header_names(req) == BASE_HEADERS + ["Client-Host", "Auth-SMTP-Helo",
                                                "Auth-SMTP-From", "Auth-SMTP-To"], req.raw
    assert (req.header("Auth-SMTP-Helo"), req.header("Auth-SMTP-From")) == \
        ("x", "MAIL FROM:<a@b>")


@pytest.mark.nginx_min("1.29.2", "XCLIENT LOGIN= is xtext-encoded")
def test_smtp_login_with_crlf_is_no_upstream_command(lab):
    """docs/behaviour.md §11.4 (XCLIENT LOGIN= xtext, 1.29.2; Postfix XCLIENT_README) : an auth server
    that accepts a login holding CRLF and an SMTP command must not let that command reach
    the upstream: XCLIENT carries LOGIN= xtext-encoded, and the upstream sees no RCPT."""
    lab.smtp.clear()
    login = b"x\r\nRCPT TO:<victim@example.test>"
    lab.ok("smtp")
    with greeted(lab, "smtp") as c:
        c.send(b"EHLO client.example\r\n").expect(b"250-mx.test\r\n250 AUTH PLAIN LOGIN\r\n")
        c.send(b"AUTH PLAIN " + b64(b"\0" + login + b"\0secret") + b"\r\n")
        c.expect(b"235 2.0.0 OK\r\n")
        c.send(b"QUIT\r\n").readline()
    lines = lab.smtp.command_lines
    assert not any(line.upper().startswith(b"RCPT") for line in lines), lines
    assert lines[1] == b"XCLIENT ADDR=127.0.0.1 LOGIN=x+0D+0ARCPT+20TO:<victim@example.test> " \
                       b"NAME=[UNAVAILABLE]", lines


# -- memory disclosure with smtp_auth none (CVE-2025-53859 class) --------------------------

def none_session(lab, c: Client) -> None:
    c.send(b"MAIL FROM:<a@b>\r\n").expect(b"250 2.0.0 OK\r\n")
    c.send(b"RCPT TO:<c@d>\r\n").expect(b"535 5.7.0 Nope\r\n")


NONE_SERVER = "smtp_auth none plain login;"


def test_none_request_carries_only_what_this_client_typed(lab):
    """CVE-2025-53859 (memory disclosure to the auth server, docs/behaviour.md §15): long logins, then
    failed decodes, then MAIL/RCPT. Whatever a target keeps, the none request's Auth-User
    is empty or exactly a login this client typed, and Auth-Pass is empty — never bytes of
    the buffer that a stale length would reach (a later command, another password)."""
    lab.auth.push(Reply.fail("Nope"))
    long_login = b"L" * 1500
    with greeted(lab, "smtp", NONE_SERVER) as c:
        c.send(b"EHLO x\r\n").expect(b"250-mx.test\r\n250 AUTH PLAIN LOGIN\r\n")
        c.send(b"AUTH LOGIN " + b64(long_login) + b"\r\n").expect(b"334 UGFzc3dvcmQ6\r\n")
        c.send(b"!!!!\r\n").expect(INVALID["smtp"])
        c.send(b"AUTH PLAIN " + b64(b"\0short") + b"\r\n").expect(INVALID["smtp"])
        c.send(b"AUTH PLAIN " + b64(b"\0" + b"P" * 40 + b"\0") + b"Z\r\n")
        c.expect(INVALID["smtp"])
        none_session(lab, c)
    req = lab.auth.requests[0]
    assert req.header("Auth-Method") == "none"
    assert req.header("Auth-User") in ("", long_login.decode(), "short", "P" * 40), req.raw
    assert req.header("Auth-Pass") == "", req.raw
    assert b"MAIL FROM" not in req.raw.split(b"Auth-SMTP-From:")[0], req.raw


@pytest.mark.nginx_min("1.29.1", "MAIL FROM clears the stored login/password")
def test_none_request_after_failed_auth_has_no_credentials(lab):
    """CVE-2025-53859 fix (1.29.1, docs/behaviour.md §9.4): MAIL FROM clears login and password, so a
    half-entered AUTH LOGIN (user name given, password not base64) leaves nothing: empty
    Auth-User and Auth-Pass."""
    lab.auth.push(Reply.fail("Nope"))
    with greeted(lab, "smtp", NONE_SERVER) as c:
        c.send(b"AUTH LOGIN " + b64(b"L" * 1500) + b"\r\n").expect(b"334 UGFzc3dvcmQ6\r\n")
        c.send(b"!!!!\r\n").expect(INVALID["smtp"])
        none_session(lab, c)
    req = lab.auth.requests[0]
    assert (req.header("Auth-User"), req.header("Auth-Pass")) == ("", ""), req.raw


def test_none_request_never_shows_another_session(lab):
    """CVE-2025-53859 class across sessions: one client leaves a long user name and a
    password half-entered; another fails a decode and sends MAIL/RCPT. Nothing of the
    first session's secrets is in the second one's request."""
    lab.auth.push(Reply.fail("Nope"))
    secret = b"S3CR3T-" * 100
    with greeted(lab, "smtp", NONE_SERVER) as first, greeted(lab, "smtp", NONE_SERVER) as c:
        first.send(b"AUTH LOGIN " + b64(secret) + b"\r\n").expect(b"334 UGFzc3dvcmQ6\r\n")
        first.send(b"%%%%" + b64(secret) + b"\r\n").expect(INVALID["smtp"])
        c.send(b"AUTH PLAIN !!!!\r\n").expect(INVALID["smtp"])
        none_session(lab, c)
    req = lab.auth.requests[0]
    assert b"S3CR3T" not in req.raw, req.raw
    assert (req.header("Auth-User"), req.header("Auth-Pass")) == ("", ""), req.raw


# -- oversize and pipelined abuse ----------------------------------------------------------

def _send_quietly(sock: socket.socket, data: bytes, seconds: float = 20.0) -> int:
    """Send what the peer takes within `seconds`; stop at a reset (the proxy may close)."""
    sock.settimeout(seconds)
    sent = 0
    try:
        while sent < len(data):
            sent += sock.send(data[sent:sent + 65536])
    except OSError:
        pass
    return sent


def _rss_kib(pid: int | None) -> int | None:
    """Resident memory of a process and its children (nginx's or Postern's master and
    workers), from /proc; None where it cannot be read."""
    if pid is None:
        return None
    pids, total = {pid}, 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    pids.add(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def _pid(proxy) -> int | None:
    return getattr(proxy.instance, "pid", None)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_one_mebibyte_line_is_refused_and_others_are_served(lab, protocol):
    """RFC 5321 §4.5.3.1.4 (512-octet command lines), RFC 1939 §3, RFC 3501 §2.2 — and
    nginx §5.1 (a line longer than the client buffer is an invalid command, then close):
    a 1 MiB line without a line end gets at most the invalid-command reply, the connection
    closes within seconds, and another session is served meanwhile."""
    proxy = lab.proxy(protocol=protocol)
    with proxy.connect(timeout=10) as c:
        c.expect(GREETING[protocol])
        sender = threading.Thread(target=_send_quietly, args=(c.sock, b"A" * (1 << 20)))
        sender.start()
        assert_served(lab, protocol)
        rest = c.read_all(timeout=15)
        sender.join(30)
    assert INVALID[protocol].startswith(rest) or rest == INVALID[protocol], rest
    assert_served(lab, protocol)


PIPELINED_NOOPS = 10_000


def _pipeline(lab, protocol: str, command: bytes, reply: bytes, count: int,
              server: str = "") -> tuple[int, bytes, bool]:
    """Send `count` commands in one write while reading: (replies in order, the first other
    line, stalled: the connection stayed open with nothing more for 15 s)."""
    proxy = lab.proxy(server=server, protocol=protocol)
    with proxy.connect(timeout=30) as c:
        c.expect(GREETING[protocol])
        sender = threading.Thread(target=_send_quietly, args=(c.sock, command * count))
        sender.start()
        assert_served(lab, protocol, server)
        answered, tail, stalled = 0, b"", False
        deadline = time.monotonic() + 60
        while answered < count and time.monotonic() < deadline:
            try:
                line = c.readline(timeout=15)
            except TimeoutError:
                stalled = True
                break
            except (Closed, OSError):  # closed or reset after the buffer filled
                break
            if line != reply:
                tail = line
                break
            answered += 1
        sender.join(30)
    return answered, tail, stalled


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_ten_thousand_pipelined_noops(lab, protocol):
    """RFC 2920 §3.1 (SMTP pipelining), RFC 3501 §5.5, RFC 2449 §6.6 — and nginx §5.1-§5.2:
    10,000 NOOPs in one write, read as they come. Each reply is a NOOP's, in order; nginx's
    buffer without compaction ends the run early with the invalid-command reply and a close
    (which an RST may swallow). Either way the run ends — no stall — and another session
    is served meanwhile."""
    command, reply = NOOP[protocol]
    answered, tail, stalled = _pipeline(lab, protocol, command, reply, PIPELINED_NOOPS)
    assert not stalled, f"no reply for 15 s after {answered} NOOPs, connection still open"
    assert answered == PIPELINED_NOOPS or tail in (b"", INVALID[protocol]), (answered, tail)
    assert_served(lab, protocol)


def test_pipelined_commands_filling_the_buffer_exactly(lab):
    """nginx §5.1 (the buffer is rewound once fully consumed, then read again) and RFC 3501
    §5.5: 8-byte NOOPs fill the 4 KiB buffer exactly, so none straddles its end and every
    one of 2,048 is answered. Observed: nginx 1.22.1 answers the first 512 and then reads
    no more (the rest wait in the socket until `timeout`)."""
    answered, tail, stalled = _pipeline(lab, "imap", b"n NOOP\r\n", b"n OK completed\r\n",
                                        2048)
    if stalled and lab.target in ("nginx", "external"):
        pytest.xfail(f"nginx 1.22.1 stalls after {answered} NOOPs filling its buffer exactly")
    assert (answered, tail, stalled) == (2048, b"", False)


@pytest.mark.parametrize("length", [b"9223372036854775808", b"18446744073709551617"],
                         ids=["2^63", "2^64+1"])
def test_literal_announcing_huge_length(lab, length):
    """RFC 3501 §4.3 (literal = "{" number "}" CRLF *CHAR8, number < 2^32) and nginx §7.2
    (a literal must fit the command buffer; 1.29.6 checks the length for overflow): a
    literal of 2^63 (or 2^64+1, which wraps a 64-bit counter) bytes never makes the proxy
    wait for or allocate that much: it refuses the line, or its buffer fills and it closes;
    another session is served, and the proxy is still alive after."""
    proxy = lab.proxy()
    with proxy.connect(timeout=10) as c:
        c.expect(GREETING["imap"])
        c.send(b"a1 LOGIN {" + length + b"}\r\n")
        _send_quietly(c.sock, b"B" * 65536, seconds=10)
        assert_served(lab, "imap")
        rest = c.read_all(timeout=15)
    assert rest in (b"+ OK\r\n", b"+ OK\r\na1 BAD invalid command\r\n",
                    b"a1 BAD invalid command\r\n", b""), rest
    assert lab.auth.requests == []
    assert_served(lab, "imap")


BIG_CAPS = " ".join(f"X-CAPABILITY-{i:04d}" for i in range(60))  # ~1.2 KiB per reply
# Commands whose lengths add up to the client buffer exactly, so nginx never sees one
# straddle its end ("too long", docs/behaviour.md §5.1) and keeps answering while it can write.
SLOW = {
    "imap": (f"imap_client_buffer 64k; imap_capabilities IMAP4rev1 {BIG_CAPS};",
             b"c12 CAPABILITY\r\n" * 4096),
    "smtp": (f"smtp_client_buffer 64k; smtp_capabilities {BIG_CAPS};",
             b"EHLO c.example\r\n" * 4096),
    "pop3": (f"pop3_capabilities {BIG_CAPS};",
             (b"CAPA\n" * 10 + b"NOOP\r\n" * 13) * 512),   # 128 bytes a round
}
SLOW_LIMIT = 64 * 1024 * 1024


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_client_that_never_reads_is_bounded(lab, protocol):
    """nginx §5.2 (each reply is written before the next command is read) and RFC 2920 §3.1
    (a server may stop reading while its replies are not read): a client pipelining
    commands with 1 KiB replies and never reading meets backpressure — the proxy stops
    taking input rather than queueing it — within 64 MiB, its memory does not grow by as
    much, and another session is served during the stall."""
    server, block = SLOW[protocol]
    proxy = lab.proxy(server=server, protocol=protocol)
    before = _rss_kib(_pid(proxy))
    with proxy.connect(timeout=10) as c:
        c.expect(GREETING[protocol])
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.sock.setblocking(False)
        sent, deadline = 0, time.monotonic() + 4
        while time.monotonic() < deadline and sent < SLOW_LIMIT:
            try:
                sent += c.sock.send(block)
            except BlockingIOError:
                time.sleep(0.05)
            except OSError:
                break  # closed: bounded too
        c.sock.setblocking(True)
        assert_served(lab, protocol, server)
        after = _rss_kib(_pid(proxy))
    assert sent < SLOW_LIMIT, f"the proxy took {sent} bytes from a client that never reads"
    if before is not None and after is not None:
        assert after - before < SLOW_LIMIT // 1024, f"proxy memory grew by {after - before} KiB"
    assert_served(lab, protocol, server)


def test_abuse_leaves_the_proxy_running(lab):
    """nginx §13 (no client input takes the process down): after a burst of the abuses
    above on every protocol at once, each protocol's proxy still greets and answers."""
    for protocol in PROTOCOLS:
        proxy = lab.proxy(protocol=protocol)
        with proxy.connect(timeout=10) as c:
            c.expect(GREETING[protocol])
            _send_quietly(c.sock, os.urandom(256 * 1024), seconds=10)
        assert_served(lab, protocol)
        instance = proxy.instance
        if hasattr(instance, "running"):
            assert instance.running()
