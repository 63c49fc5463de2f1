"""The session's side of client TLS (ngx_mail_ssl_module's handshake handler).

TLS (implicit, after a PROXY header, or by STARTTLS) is a sans-IO layer
(proxy.tls.TlsConnection): raw client bytes go through it on the way in, everything for the
client goes through _write() on the way out.
"""

from __future__ import annotations

from postern.proxy.access_log import TLS_ERROR
from postern.proxy.phases import CLOSED, DIALOGUE, HANDSHAKE, STARTTLS
from postern.proxy.tls import TlsError


class ClientTls:
    """TLS glue of proxy.session.Session."""

    def _start_tls(self, initial: bytes = b"") -> None:
        """Implicit TLS at accept (or after the PROXY header), or STARTTLS once the reply
        went out and buffered plaintext was dropped. `timeout` bounds an implicit handshake;
        STARTTLS keeps the dialogue's deadline (as nginx 1.22 behaves)."""
        self.tls = self.rt.tls.connection()
        if self.machine is None:
            self._enter(HANDSHAKE)
            self._arm_timeout(self.conf.timeout)
        else:
            self._enter(STARTTLS)
            self._starttls = True
        self.transport.resume_reading()
        if initial:
            self.data_received(initial)

    def _tls_receive(self, raw: bytes) -> bytes:
        """Raw client bytes in, plaintext out; drives the handshake and answers for OpenSSL
        (handshake messages, tickets, alerts) on the way."""
        tls = self.tls
        handshaking = not tls.established
        try:
            plain = tls.receive(raw)
        except TlsError as err:
            out = tls.outgoing()  # the alert, e.g. no_application_protocol
            if out:
                self.transport.write(out)
            self.metrics.tls_failed(err)
            func = "SSL_do_handshake()" if handshaking else "SSL_read()"
            self.log("info", f"{func} failed (SSL: {err})")
            self._ending(TLS_ERROR)
            self.close(quiet=True)
            return b""
        out = tls.outgoing()
        if out:
            self.transport.write(out)
        if handshaking and tls.established:
            if self.debug:
                self._debug(f'SSL: {tls.protocol_version}, cipher: "{tls.cipher}"')
                if tls.resumed:
                    self._debug("SSL reused session")
            self._tls_established()
            if self.phase is CLOSED:
                return b""
        return plain

    def _tls_established(self) -> None:
        """ngx_mail_ssl_handshake_handler: the client-certificate check, then the greeting
        (implicit TLS) or the dialogue in its initial state (STARTTLS, no new greeting)."""
        failure = self.tls.check_client_certificate()
        if failure is not None:
            line, message = failure
            self.metrics.tls_failed("client certificate")
            self.log("info", message)
            self._ending(TLS_ERROR)
            self._write(line)
            self.close()
            return
        if self.machine is None:
            self._cancel_timer()
            self._after_proxy_protocol()
            return
        self._enter(DIALOGUE)
        self.machine.tls_started()
        self._drive()

    def _peer_closed(self) -> None:
        """close_notify from the client: an EOF, as nginx treats it (no close_notify back)."""
        self.close(quiet=True)

    def _write(self, data: bytes) -> None:
        """Everything for the client: encrypted once TLS is up."""
        if self.transport.is_closing():  # uvloop raises on a closed transport
            return
        self.bytes_sent += len(data)
        tls = self.tls
        if tls is not None and tls.established:
            data = tls.encrypt(data)
        self.transport.write(data)
