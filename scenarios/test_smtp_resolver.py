"""The SMTP client's host name through the proxy (docs/behaviour.md §4.5): `resolver` pointing at a
scripted DNS server on 127.0.0.1, on every target.

nginx looks the client address up (PTR), checks the name (RFC 1034 characters, CVE-2026-28753)
and confirms it with a forward lookup; the outcome is the auth request's Client-Host and the
XCLIENT NAME= sent to the upstream (Postfix XCLIENT). Each scenario has its own DNS server, and
so its own proxy: answers never come from another scenario's cache.
"""

from __future__ import annotations

import time

import dns.rcode
import pytest
from postern.fakes.auth import Reply
from postern.scenarios.kit.client import Client
from postern.scenarios.kit.scripted_dns import DnsServer, ptr_name
from postern.scenarios.kit.smtp_support import (  # noqa: F401 -- fixtures
    AUTH_OK,
    GREETING,
    OK,
    PIPELINING,
    UPSTREAM_OK,
    fresh_smtp_fixture,
    greet,
    none_request,
    plain,
    smtp_request,
)
from postern.scenarios.kit.support import LogWatch

HOST = "mail.example.test"
PTR = ptr_name("127.0.0.1")


def confirmed(ip: str = "127.0.0.1", name: str = HOST) -> dict:
    return {(name + ".", "A"): [(name + ".", 300, "A", ip)], (name + ".", "AAAA"): []}


def resolving(lab, script: dict, extra: str = ""):
    """(proxy, dns server) for a proxy resolving through this scenario's own DNS server."""
    server = DnsServer(script).start()
    _servers.append(server)
    proxy = lab.proxy(server=f"resolver 127.0.0.1:{server.port};\nresolver_timeout 1s;\n{extra}",
                      protocol="smtp")
    return proxy, server


_servers: list[DnsServer] = []


@pytest.fixture(autouse=True)
def _stop_dns_servers():
    yield
    while _servers:
        _servers.pop().stop()


def login_and_check(lab, proxy, host: bytes) -> None:
    """AUTH PLAIN through the proxy; Client-Host and XCLIENT NAME= carry `host`."""
    with greet(proxy, timeout=10) as c:
        c.send(b"EHLO client.example\r\n")
        while c.readline()[3:4] == b"-":
            pass
        c.send(b"AUTH PLAIN " + plain() + b"\r\n").expect(AUTH_OK)
        c.send(b"NOOP\r\n").expect(UPSTREAM_OK)
    assert [r.raw for r in lab.auth.requests] == [smtp_request(host=host)]
    assert lab.smtp.command_lines[1] == \
        b"XCLIENT ADDR=127.0.0.1 LOGIN=alice NAME=" + host


def test_confirmed_name_in_client_host_and_xclient(lab):
    """§4.5 steps 3-4: PTR → mail.example.test, whose A record is the client address: the
    name is Client-Host and XCLIENT NAME=; the PTR question comes first, then A and AAAA."""
    proxy, dns_server = resolving(lab, {(PTR, "PTR"): [(PTR, 300, "PTR", HOST + ".")],
                                        **confirmed()})
    login_and_check(lab, proxy, HOST.encode())
    assert dns_server.queries[0] == (PTR, "PTR")
    assert (HOST + ".", "A") in dns_server.queries


def test_confirmed_name_in_a_none_request(lab):
    """§10.1: the resolved name is the Client-Host of an `smtp_auth none` request too."""
    proxy, _ = resolving(lab, {(PTR, "PTR"): [(PTR, 300, "PTR", HOST + ".")], **confirmed()},
                         "smtp_auth none;")
    lab.auth.push(Reply.ok("127.0.0.1", lab.smtp.port))
    with greet(proxy, timeout=10) as c:
        c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n").expect(OK + UPSTREAM_OK)
    assert [r.raw for r in lab.auth.requests] == [
        none_request(b"", b"MAIL FROM:<a@b>", b"RCPT TO:<c@d>", host=HOST.encode())]
    assert lab.smtp.command_lines[1] == b"XCLIENT ADDR=127.0.0.1 NAME=" + HOST.encode()


def test_ptr_nxdomain_is_unavailable(lab):
    """§4.5: NXDOMAIN for the PTR question → `[UNAVAILABLE]`, logged as `could not be
    resolved (3: Host not found)`."""
    proxy, _ = resolving(lab, {(PTR, "PTR"): dns.rcode.NXDOMAIN})
    log = LogWatch(proxy)
    login_and_check(lab, proxy, b"[UNAVAILABLE]")
    log.wait_for("127.0.0.1 could not be resolved (3: Host not found)")


def test_ptr_servfail_is_tempunavail(lab):
    """§4.5: any other failure (SERVFAIL) → `[TEMPUNAVAIL]`, `(2: Server failure)`."""
    proxy, _ = resolving(lab, {(PTR, "PTR"): dns.rcode.SERVFAIL})
    log = LogWatch(proxy)
    login_and_check(lab, proxy, b"[TEMPUNAVAIL]")
    log.wait_for("127.0.0.1 could not be resolved (2: Server failure)")


def test_ptr_timeout_is_tempunavail_after_resolver_timeout(lab):
    """§4.5: no answer within `resolver_timeout 1s` → the greeting comes after about a
    second and the host is `[TEMPUNAVAIL]` (`110: Operation timed out`)."""
    proxy, _ = resolving(lab, {(PTR, "PTR"): "drop"})
    log = LogWatch(proxy)
    with proxy.connect(timeout=10) as c:
        start = time.monotonic()
        c.expect(GREETING, timeout=9)
        assert 0.8 <= time.monotonic() - start <= 8
        c.send(b"AUTH PLAIN " + plain() + b"\r\n").expect(AUTH_OK)
    assert lab.auth.requests[0].header("Client-Host") == "[TEMPUNAVAIL]"
    assert lab.smtp.command_lines[1].endswith(b" NAME=[TEMPUNAVAIL]")
    log.wait_for("127.0.0.1 could not be resolved (110: Operation timed out)")


def test_forward_mismatch_is_unavailable(lab):
    """§4.5 step 4: the name's A record is another address → `[UNAVAILABLE]`."""
    proxy, _ = resolving(lab, {(PTR, "PTR"): [(PTR, 300, "PTR", HOST + ".")],
                               **confirmed("127.0.0.9")})
    login_and_check(lab, proxy, b"[UNAVAILABLE]")


def test_forward_nxdomain_is_unavailable(lab):
    """§4.5 step 4: the PTR name does not exist forward → `[UNAVAILABLE]`, logged with the
    name."""
    proxy, _ = resolving(lab, {(PTR, "PTR"): [(PTR, 300, "PTR", HOST + ".")]})
    log = LogWatch(proxy)
    login_and_check(lab, proxy, b"[UNAVAILABLE]")
    log.wait_for(f'"{HOST}" could not be resolved (3: Host not found)')


def test_forward_servfail_is_tempunavail(lab):
    """§4.5 step 4: a temporary failure of the forward lookup → `[TEMPUNAVAIL]`."""
    proxy, _ = resolving(lab, {(PTR, "PTR"): [(PTR, 300, "PTR", HOST + ".")],
                               (HOST + ".", "A"): dns.rcode.SERVFAIL,
                               (HOST + ".", "AAAA"): dns.rcode.SERVFAIL})
    login_and_check(lab, proxy, b"[TEMPUNAVAIL]")


def test_invalid_ptr_name_is_tempunavail(lab):
    """CVE-2026-28753 (§4.5, nginx 1.29.7, backported to Debian's 1.22.1): a PTR name with
    characters outside RFC 1034's letters, digits, `-` and `.` is never used: `[TEMPUNAVAIL]`,
    and no forward lookup is made."""
    bad = "bad_name.example.test"
    proxy, dns_server = resolving(lab, {(PTR, "PTR"): [(PTR, 300, "PTR", bad + ".")],
                                        **confirmed(name=bad)})
    login_and_check(lab, proxy, b"[TEMPUNAVAIL]")
    assert dns_server.queries == [(PTR, "PTR")]


def test_client_talking_while_resolving_is_answered_after_the_greeting(lab):
    """§4.5: the client's input is left unread during the lookup and processed after the
    greeting (no greeting delay: not an early-talker rejection)."""
    proxy, _ = resolving(lab, {(PTR, "PTR"): "drop"})
    with proxy.connect(timeout=10) as c:
        c.send(b"NOOP\r\n")
        c.expect(GREETING + OK, timeout=9)


def test_other_client_address_resolved(lab):
    """§4.5, §11.4: a client from 127.0.0.2 is looked up as 2.0.0.127.in-addr.arpa; its
    confirmed name and address reach the auth server and XCLIENT."""
    ptr = ptr_name("127.0.0.2")
    proxy, _ = resolving(lab, {(ptr, "PTR"): [(ptr, 300, "PTR", "two.example.test.")],
                               **confirmed("127.0.0.2", "two.example.test")})
    lab.auth.push(Reply.ok("127.0.0.1", lab.smtp.port))
    with Client(proxy.host, proxy.port, timeout=10, source="127.0.0.2") as c:
        c.expect(GREETING, timeout=9)
        c.send(b"AUTH PLAIN " + plain() + b"\r\n").expect(AUTH_OK)
    [req] = lab.auth.requests
    assert (req.header("Client-IP"), req.header("Client-Host")) == ("127.0.0.2",
                                                                    "two.example.test")
    assert lab.smtp.command_lines[1] == \
        b"XCLIENT ADDR=127.0.0.2 LOGIN=alice NAME=two.example.test"


def test_client_talking_while_resolving_with_greeting_delay_is_rejected(lab):
    """§4.5 + §9.2: input left unread during the lookup is seen as soon as the greeting delay
    starts, so the client is an early talker: `503 5.5.0 Improper use of SMTP command
    pipelining` and close, without a greeting."""
    proxy, _ = resolving(lab, {(PTR, "PTR"): "drop"}, "smtp_greeting_delay 2s;")
    with proxy.connect(timeout=10) as c:
        c.send(b"EHLO early.example\r\n")
        c.expect(PIPELINING, timeout=9).expect_closed()
