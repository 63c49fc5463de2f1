"""The driver's glue for TLS towards the backend (proxy_ssl): the secure login machine in
place of the plain one, then the relay through the TLS object.

The plaintext relay is not touched: with TLS, the backend transport is wrapped (writes are
encrypted) and its protocol replaced by one that decrypts before handing data to the
session, so the session's relay code is the same for both.
"""

from __future__ import annotations

import asyncio

from postern.proxy.backend_protocol import BackendProtocol
from postern.proxy.backend_secure import SecureBackendLogin
from postern.proxy.backend_tls import backend_context, backend_tls_mode
from postern.proxy.phases import PROXYING
from postern.proxy.tls import TlsError


def secure_login(session, login, addr: str, port: int):
    """The login machine for this session: `login` itself unless TLS is chosen."""
    conf = session.conf
    if not conf.proxy_ssl.used:
        return login
    exchange = session._exchange
    mode, name = backend_tls_mode(conf.proxy_ssl, exchange and exchange.response)
    if mode == "off":
        return login
    tls = backend_context(conf).connection(addr, port, name)
    starttls = session.proto.backend_starttls(conf) if mode == "starttls" else None
    return SecureBackendLogin(login, tls, starttls)


def relay_over_tls(session) -> None:
    """Logged in over TLS: the relay goes through the TLS object from here on."""
    machine = session._login_machine
    if not isinstance(machine, SecureBackendLogin):
        return
    tls = machine.tls
    tls.save_session()
    raw = session.backend
    session.backend = TlsTransport(raw, tls)
    raw.set_protocol(TlsRelayProtocol(session, raw, tls))


class TlsTransport:
    """The backend transport as the relay sees it: plaintext in, TLS records out."""

    __slots__ = ("raw", "tls")

    def __init__(self, raw: asyncio.Transport, tls) -> None:
        self.raw = raw
        self.tls = tls

    def write(self, data: bytes) -> None:
        if not self.raw.is_closing():
            self.raw.write(self.tls.encrypt(data))

    def close(self) -> None:
        if not self.raw.is_closing() and not self.tls.peer_closed:
            notify = self.tls.close_notify()
            if notify:
                self.raw.write(notify)
        self.tls.shut_quietly()
        self.raw.close()

    def __getattr__(self, name: str):  # pause_reading, resume_reading, abort, get_extra_info
        return getattr(self.raw, name)


class TlsRelayProtocol(BackendProtocol):
    """The backend connection's callbacks during a TLS relay: BackendProtocol's, with records
    decrypted before the session sees them."""

    __slots__ = ("tls",)

    def __init__(self, session, transport: asyncio.Transport, tls) -> None:
        super().__init__(session)
        self.transport = transport
        self.tls = tls

    def data_received(self, data: bytes) -> None:
        session, tls = self.session, self.tls
        try:
            plain = tls.receive(data)
        except TlsError as err:
            session.action = PROXYING
            session.log("error", f"SSL_read() failed (SSL: {err})")
            session.close(quiet=True)
            return
        out = tls.outgoing()  # OpenSSL's own answers (key updates)
        if out:
            self.transport.write(out)
        if plain:
            session.on_backend_data(plain)
        if tls.peer_closed:
            session.on_backend_closed()
