"""Smoke: greeting, CAPABILITY and a proxied login, on every target (RFC 3501 §6.1.1, §6.2.3)."""


def test_greeting_and_capability(lab):
    """RFC 3501 §7.1.1 greeting, §6.1.1 CAPABILITY, §6.1.3 LOGOUT: nginx's own answers."""
    with lab.proxy().connect() as c:
        c.expect(b"* OK IMAP4 ready\r\n")
        c.send(b"a1 CAPABILITY\r\n")
        c.expect(b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN\r\na1 OK completed\r\n")
        c.send(b"a2 LOGOUT\r\n").expect(b"* BYE\r\na2 OK completed\r\n").expect_closed()


def test_login_is_proxied_with_exact_auth_request(lab):
    """RFC 3501 §6.2.3 LOGIN through the proxy; the auth request is nginx's (docs/behaviour.md §10.1)."""
    with lab.proxy().connect() as c:
        lab.login(c)
        c.send(b"a2 SELECT INBOX\r\n")
        while not (line := c.readline()).startswith(b"a2 "):
            pass
        assert line.startswith(b"a2 OK")
    req = lab.auth.requests[0]
    assert req.raw == (b"GET /auth HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\n"
                       b"Auth-User: alice\r\nAuth-Pass: secret\r\nAuth-Protocol: imap\r\n"
                       b"Auth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\n\r\n")
    assert lab.imap.commands[:3] == [b"a1 LOGIN {5}", b"alice {6}", b"secret"] or \
        lab.imap.commands[0].startswith(b"a1 LOGIN")
