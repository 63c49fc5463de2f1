"""`proxy_client_identity on` for POP3: `XCLIENT ADDR PORT DESTADDR DESTPORT SESSION` goes to
the backend before USER when its greeting starts `+OK [XCLIENT]`, as Dovecot's pop3-login
greets a proxy in its `login_trusted_networks` (Postern only; nginx lacks it and the backend
sees only the proxy).
"""

from __future__ import annotations

import pytest
from postern.scenarios.kit.client import Client
from postern.scenarios.kit.identity_support import IDENTITY, session_id_of
from postern.scenarios.kit.pop3_support import GREETING, OK, backend_login, logged_in, pop3
from postern.scenarios.kit.support import LogWatch

WHY = "proxy_client_identity: nginx sends the backend no client identity"


def _login_from(lab, proxy, source: str) -> tuple[str, int]:
    with Client(proxy.host, proxy.port, timeout=10, source=source) as c:
        c.expect(GREETING)
        c.send(b"USER alice\r\n").expect(OK)
        c.send(b"PASS secret\r\n").expect(logged_in(lab))
        c.send(b"NOOP\r\n").expect(b"+OK\r\n")
        return c.sock.getsockname()[:2]


def test_without_the_directive_no_xclient_is_sent(lab):
    """Off by default, even to a backend that offers XCLIENT: USER and PASS only, as from
    nginx (docs/behaviour.md §11.2)."""
    lab.pop3.faults.offer_xclient = True
    _login_from(lab, pop3(lab), "127.0.0.1")
    assert lab.pop3.commands == backend_login() + [b"NOOP"]


@pytest.mark.postern_only(WHY)
def test_xclient_carries_the_client_address_and_the_session_id(lab):
    """XCLIENT before USER: ADDR/PORT are the client's (connected from 127.0.0.2),
    DESTADDR/DESTPORT the proxy's listening address, SESSION the session's `PID-N` from the
    proxy's error log; the `+OK Updated` stays between proxy and backend (nginx: the last
    `+OK` of the backend login is the client's answer to PASS)."""
    lab.pop3.faults.offer_xclient = True
    proxy = pop3(lab, IDENTITY)
    log = LogWatch(proxy)
    ip, port = _login_from(lab, proxy, "127.0.0.2")
    session = session_id_of(log.wait_for(f"client {ip}:{port} connected"), (ip, port))
    expected = b"XCLIENT ADDR=127.0.0.2 PORT=%d DESTADDR=127.0.0.1 DESTPORT=%d SESSION=%s" % (
        port, proxy.port, session.encode())
    assert lab.pop3.commands == [expected, *backend_login(), b"NOOP"]
    assert lab.pop3.connections[0].xclient == {
        "ADDR": "127.0.0.2", "PORT": str(port), "DESTADDR": "127.0.0.1",
        "DESTPORT": str(proxy.port), "SESSION": session}


@pytest.mark.postern_only(WHY)
def test_xclient_carries_the_address_from_the_proxy_protocol_header(lab):
    """Behind a load balancer (listen ... proxy_protocol, set_real_ip_from): ADDR is the
    PROXY header's source, as Client-IP is (docs/behaviour.md §4.3); IPv6 goes plain, as
    Dovecot's own proxy writes it."""
    lab.pop3.faults.offer_xclient = True
    proxy = lab.proxy(server=IDENTITY + "\nset_real_ip_from 127.0.0.1;", protocol="pop3",
                      listen_params="proxy_protocol")
    with proxy.connect() as c:
        c.send(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 110\r\n")
        c.expect(GREETING)
        c.send(b"USER alice\r\n").expect(OK)
        c.send(b"PASS secret\r\n").expect(logged_in(lab))
    fields = lab.pop3.connections[0].xclient
    assert (fields["ADDR"], fields["PORT"], fields["DESTPORT"]) == (
        "2001:db8::7", "40000", str(proxy.port))


@pytest.mark.postern_only(WHY)
def test_no_xclient_to_a_backend_that_does_not_offer_it(lab):
    """A greeting without `[XCLIENT]` (Dovecot's greeting to an untrusted proxy, or another
    server; nginx: the greeting's `+OK` is all that is judged): no XCLIENT, a warning, and
    the login goes on."""
    proxy = pop3(lab, IDENTITY)
    log = LogWatch(proxy)
    _login_from(lab, proxy, "127.0.0.1")
    assert lab.pop3.commands == backend_login() + [b"NOOP"]
    line = log.line("upstream greeting has no [XCLIENT]")
    assert "[warn]" in line and "client identity not sent" in line


@pytest.mark.postern_only(WHY)
def test_refused_xclient_is_logged_and_the_login_goes_on(lab):
    """A `-ERR` to XCLIENT (nginx: any other reply in the login fails it; here the identity
    is optional) does not fail the login: a warning names the reply."""
    lab.pop3.faults.offer_xclient = True
    lab.pop3.faults.reject_xclient = "not from you"
    proxy = pop3(lab, IDENTITY)
    log = LogWatch(proxy)
    _login_from(lab, proxy, "127.0.0.1")
    assert lab.pop3.commands[1:] == backend_login() + [b"NOOP"]
    line = log.line("upstream rejected XCLIENT")
    assert "[warn]" in line and '"-ERR not from you"' in line and 'login: "alice"' in line
