"""Smoke: an authenticated SMTP submission through the proxy (RFC 4954 §4, RFC 5321 §3.3)."""

import base64
import smtplib


def test_auth_plain_then_submit_with_xclient(lab):
    """RFC 4954 §4 AUTH PLAIN, then the upstream sees nginx's XCLIENT login (docs/behaviour.md §11.4)."""
    proxy = lab.proxy(protocol="smtp")
    with proxy.connect() as c:
        c.expect(b"220 mx.test ESMTP ready\r\n")
        c.send(b"EHLO client.example\r\n").expect(b"250-mx.test\r\n250 AUTH PLAIN LOGIN\r\n")
        blob = base64.b64encode(b"\0alice\0secret")
        c.send(b"AUTH PLAIN " + blob + b"\r\n").expect(b"235 2.0.0 OK\r\n")
        c.send(b"MAIL FROM:<alice@example.test>\r\n").expect(b"250 ", timeout=5)
    commands = [line for line in lab.smtp.command_lines]
    assert commands[:3] == [b"EHLO mx.test", b"XCLIENT ADDR=127.0.0.1 LOGIN=alice NAME=[UNAVAILABLE]",
                            b"EHLO client.example"], commands


def test_smtplib_sends_a_message(lab):
    """RFC 5321 §3.3 mail transaction by smtplib through the proxy after AUTH (RFC 4954)."""
    proxy = lab.proxy(protocol="smtp")
    with smtplib.SMTP(proxy.host, proxy.port, timeout=5) as s:
        s.ehlo("me.example")
        s.login("bob", "hunter2")
        s.sendmail("bob@example.test", ["alice@example.test"], b"Subject: hi\r\n\r\nbody\r\n")
    assert lab.smtp.messages[-1]
