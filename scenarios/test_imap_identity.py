"""`proxy_client_identity on` for IMAP: an RFC 2971 ID with the client's address, its port,
the proxy's address and the session id goes to the backend before LOGIN, in the
x-originating-ip form Dovecot trusts from `login_trusted_networks` (Postern only; nginx lacks
it and the backend sees only the proxy).
"""

from __future__ import annotations

import pytest
from postern.scenarios.kit.client import Client
from postern.scenarios.kit.identity_support import IDENTITY, session_id_of
from postern.scenarios.kit.imap_support import GREETING, LOGGED_IN, backend_login, greeted
from postern.scenarios.kit.support import LogWatch, wait_until

WHY = "proxy_client_identity: nginx sends the backend no client identity"


def _login_from(proxy, source: str) -> tuple[str, int]:
    with Client(proxy.host, proxy.port, timeout=10, source=source) as c:
        c.expect(GREETING)
        c.send(b"a1 LOGIN alice secret\r\n").expect(b"a1 " + LOGGED_IN)
        c.send(b"a2 NOOP\r\n").expect(b"a2 OK NOOP completed\r\n")
        return c.sock.getsockname()[:2]


def test_without_the_directive_no_id_is_sent(lab):
    """Off by default: the backend gets the login only, as from nginx (docs/behaviour.md
    §11.3)."""
    with greeted(lab) as c:
        c.send(b"a1 LOGIN alice secret\r\n").expect(b"a1 " + LOGGED_IN)
    assert lab.imap.commands == [backend_login(b"a1", b"alice", b"secret")]


@pytest.mark.postern_only(WHY)
def test_id_carries_the_client_address_and_the_session_id(lab):
    """RFC 2971 ID before LOGIN: x-originating-ip/port are the client's (connected from
    127.0.0.2), x-connected-ip/port the proxy's listening address, x-session-ext-id the
    session's `PID-N` from the proxy's error log; the ID replies stay between proxy and
    backend, and the client gets the LOGIN reply as always."""
    proxy = lab.proxy(server=IDENTITY)
    log = LogWatch(proxy)
    ip, port = _login_from(proxy, "127.0.0.2")
    session = session_id_of(log.wait_for(f"client {ip}:{port} connected"), (ip, port))
    expected = (b'I ID ("x-originating-ip" "127.0.0.2" "x-originating-port" "%d" '
                b'"x-connected-ip" "127.0.0.1" "x-connected-port" "%d" '
                b'"x-session-ext-id" "%s")' % (port, proxy.port, session.encode()))
    assert lab.imap.commands == [expected, backend_login(b"a1", b"alice", b"secret"),
                                 b"a2 NOOP"]
    assert lab.imap.connections[0].client_id == {
        "x-originating-ip": "127.0.0.2", "x-originating-port": str(port),
        "x-connected-ip": "127.0.0.1", "x-connected-port": str(proxy.port),
        "x-session-ext-id": session}


@pytest.mark.postern_only(WHY)
def test_id_carries_the_address_from_the_proxy_protocol_header(lab):
    """Behind a load balancer (listen ... proxy_protocol, set_real_ip_from): the real client
    is the PROXY header's source, as in Client-IP (docs/behaviour.md §4.3)."""
    proxy = lab.proxy(server=IDENTITY + "\nset_real_ip_from 127.0.0.1;",
                      listen_params="proxy_protocol")
    with proxy.connect() as c:
        c.send(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 143\r\n")
        c.expect(GREETING)
        c.send(b"a1 LOGIN alice secret\r\n").expect(b"a1 " + LOGGED_IN)
    assert lab.auth.requests[0].header("Client-IP") == "2001:db8::7"
    fields = lab.imap.connections[0].client_id
    assert (fields["x-originating-ip"], fields["x-originating-port"]) == ("2001:db8::7", "40000")
    assert fields["x-connected-port"] == str(proxy.port)


@pytest.mark.postern_only(WHY)
def test_refused_id_is_logged_and_the_login_goes_on(lab):
    """RFC 2971 ID refused: a backend that answers NO (one that does not trust the proxy)
    does not fail the login, as with Dovecot's own proxy: a warning names the reply."""
    lab.imap.faults.reject_id = "not from you"
    proxy = lab.proxy(server=IDENTITY)
    log = LogWatch(proxy)
    _login_from(proxy, "127.0.0.1")
    line = log.line("upstream rejected ID")
    assert '[warn]' in line and '"NO not from you"' in line
    assert "while reading response from upstream" in line and 'login: "alice"' in line
    wait_until(lambda: len(lab.imap.commands) == 3, what="the NOOP at the backend")
    assert lab.imap.commands[1:] == [backend_login(b"a1", b"alice", b"secret"), b"a2 NOOP"]
