"""A TLS backend over memory BIOs for the tests of TLS towards the backend: the server half
of a handshake and its records, with no socket."""

from __future__ import annotations

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL


class MemoryTlsServer:
    """One server connection; `names` are the certificate's DNS names / IP addresses."""

    def __init__(self, ca: trustme.CA, *names: str, max_version: int = 0) -> None:
        leaf = ca.issue_cert(*names)
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.use_certificate(x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()))
        ctx.use_privatekey(serialization.load_pem_private_key(leaf.private_key_pem.bytes(),
                                                              None))
        if max_version:
            ctx.set_max_proto_version(max_version)
            ctx.set_min_proto_version(max_version)
        self.sni: bytes | None = None
        ctx.set_tlsext_servername_callback(self._servername)
        ctx.set_session_id(b"memory-tls-server")  # so that sessions may resume
        self.context = ctx
        self.new()

    def _servername(self, conn: SSL.Connection) -> None:
        self.sni = conn.get_servername()

    def new(self) -> None:
        """A fresh connection on the same context (sessions may resume)."""
        if getattr(self, "ssl", None) is not None:  # freed unshut, its session would go
            self.ssl.set_shutdown(SSL.SENT_SHUTDOWN | SSL.RECEIVED_SHUTDOWN)
        self.ssl = SSL.Connection(self.context, None)
        self.ssl.set_accept_state()
        self.received = b""

    def feed(self, raw: bytes) -> None:
        """Client records in; the server's answers (handshake, tickets, alerts) wait in its
        outgoing BIO for out() or send()."""
        self.ssl.bio_write(raw)
        try:
            self.ssl.do_handshake()
            while True:
                self.received += self.ssl.recv(65536)
        except (SSL.WantReadError, SSL.ZeroReturnError):
            pass
        except SSL.Error:
            pass  # the alert is in the outgoing BIO

    def send(self, plain: bytes) -> bytes:
        self.ssl.sendall(plain)
        return self.out()

    def out(self) -> bytes:
        chunks = []
        while True:
            try:
                chunks.append(self.ssl.bio_read(65536))
            except SSL.WantReadError:
                return b"".join(chunks)

    def take(self) -> bytes:
        data, self.received = self.received, b""
        return data
