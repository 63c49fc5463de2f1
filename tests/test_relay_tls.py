"""The driver's glue for TLS to the backend (proxy.relay_tls): the plain login machine and
relay stay as they are without proxy_ssl; with it, the relay's writes are encrypted and its
reads decrypted, and a broken record ends the session with one log line."""

from __future__ import annotations

from types import SimpleNamespace

import trustme
from OpenSSL import SSL
from postern.proxy.backend_secure import SecureBackendLogin
from postern.proxy.backend_tls import BackendTlsContext
from postern.proxy.conf.settings import BackendTlsSettings
from postern.proxy.imap.backend_login import ImapBackendLogin
from postern.proxy.phases import RELAY
from postern.proxy.protocols import PROTOCOLS
from postern.proxy.relay_tls import TlsRelayProtocol, TlsTransport, relay_over_tls, secure_login

from tests.backend_tls_support import MemoryTlsServer


class Transport:
    def __init__(self) -> None:
        self.written = b""
        self.closed = False
        self.protocol = None

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def set_protocol(self, protocol) -> None:
        self.protocol = protocol

    def pause_reading(self) -> None:
        self.paused = True

    def take(self) -> bytes:
        data, self.written = self.written, b""
        return data


class Session(SimpleNamespace):
    def __init__(self, proxy_ssl: BackendTlsSettings, reply=None) -> None:
        super().__init__(conf=SimpleNamespace(proxy_ssl=proxy_ssl, proxy_buffer=4096),
                         _exchange=SimpleNamespace(response=reply), proto=PROTOCOLS["imap"],
                         phase=RELAY, transport=Transport(), backend=Transport(), logged=[],
                         data=[], closed=False, action=None)

    def log(self, level: str, message: str) -> None:
        self.logged.append((level, message, self.action))

    def on_backend_data(self, data: bytes) -> None:
        self.data.append(data)

    def on_backend_closed(self, exc=None) -> None:
        self.closed = True

    def close(self, quiet: bool = False) -> None:
        self.closed = True


def login():
    return ImapBackendLogin(b"a1 ", b"alice", b"secret", 4096, False)


def test_without_proxy_ssl_the_plain_machine_and_transport_stay():
    session = Session(BackendTlsSettings())
    machine = login()
    assert secure_login(session, machine, "127.0.0.1", 143) is machine
    session._login_machine = machine
    backend = session.backend
    relay_over_tls(session)
    assert session.backend is backend and backend.protocol is None


def test_mode_off_from_the_auth_reply_keeps_the_plain_machine():
    reply = SimpleNamespace(backend_tls=b"off", backend_tls_name=None)
    session = Session(BackendTlsSettings(mode="on", auth_header=True), reply)
    machine = login()
    assert secure_login(session, machine, "127.0.0.1", 143) is machine


def logged_in_session():
    """A session whose TLS login is done against a memory server; (session, server)."""
    conf = BackendTlsSettings(mode="on")
    session = Session(conf)
    server = MemoryTlsServer(trustme.CA(), "imap.test")
    session._login_machine = machine = SecureBackendLogin(
        login(), BackendTlsContext(conf).connection("127.0.0.1", 993))
    outcome = machine.start()
    while machine.stage == "handshake":
        server.feed(outcome.data)
        outcome = machine.receive_data(server.out())
    if outcome is not None:
        server.feed(outcome.data)
    relay_over_tls(session)
    return session, server


def test_relay_encrypts_writes_and_decrypts_reads():
    session, server = logged_in_session()
    raw = session.backend.raw
    assert isinstance(session.backend, TlsTransport)
    assert isinstance(raw.protocol, TlsRelayProtocol)
    session.backend.write(b"a2 NOOP\r\n")
    server.feed(raw.take())
    assert server.take() == b"a2 NOOP\r\n"
    raw.protocol.data_received(server.send(b"a2 OK done\r\n"))
    assert session.data == [b"a2 OK done\r\n"]
    session.backend.pause_reading()  # the rest of the transport's interface passes through
    assert raw.paused


def test_close_sends_close_notify_and_a_peer_close_notify_ends_the_session():
    session, server = logged_in_session()
    raw = session.backend.raw
    records = server.send(b"* BYE\r\n")
    server.ssl.shutdown()  # close_notify
    raw.protocol.data_received(records + server.out())
    assert session.data == [b"* BYE\r\n"] and session.closed
    session.backend.close()
    assert raw.closed and raw.take() == b""  # no close_notify back to a closed peer


def test_close_notify_on_our_close():
    session, server = logged_in_session()
    raw = session.backend.raw
    session.backend.close()
    assert raw.closed
    server.feed(raw.take())
    assert server.ssl.get_shutdown() & SSL.RECEIVED_SHUTDOWN


def test_a_broken_record_is_one_log_line_and_the_end():
    session, _ = logged_in_session()
    session.backend.raw.protocol.data_received(b"\x17\x03\x03\x00\x05garbage")
    [(level, message, action)] = session.logged
    assert (level, action) == ("error", "proxying") and session.closed
    assert message.startswith("SSL_read() failed (SSL: ")


def test_session_reuse_key_is_saved_at_relay_start():
    session, _ = logged_in_session()
    ctx = session._login_machine.tls.context
    assert ctx.conf.session_reuse and list(ctx.sessions) == [("127.0.0.1", 993, "127.0.0.1")]
