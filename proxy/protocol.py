"""The contract of one mail protocol, declared once per protocol (nginx's ngx_mail_protocol_t).

Each protocol package (proxy.imap, proxy.pop3, proxy.smtp) builds one MailProtocol; the
registry is proxy.protocols.PROTOCOLS. The driver, the TLS layer and the auth exchange read
every protocol difference from here, so none of them tests a protocol's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


def _no_delay(conf: Any) -> float:
    return 0.0


@dataclass(frozen=True)
class MailProtocol:
    name: str  # Auth-Protocol, the ALPN name, the word in debug lines
    # the sans-IO dialogue class before authentication; its open(), backend_login(),
    # failure_line() and internal_error are the protocol's (see the properties below)
    dialogue: type
    cert_error: bytes  # ngx_mail_verify_cert(): the client certificate failed verification
    no_cert: bytes  # ngx_mail_verify_cert(): ssl_verify_client on and no certificate sent
    default_error_code: bytes | None = None  # the code before a failure without Auth-Error-Code
    # whether a success needs a password (Auth-Pass, or the client's own): nginx's
    # "did not send password"
    password_required: bool = True
    # (machine, AuthRequest) -> None: the protocol's own auth request fields
    auth_request_extra: Callable[[Any, Any], None] | None = None
    # before its greeting: the client's host name looked up (with `resolver`), then a delay
    resolves_client_host: bool = False
    greeting_delay: Callable[[Any], float] = _no_delay
    # (conf) -> the sans-IO STARTTLS steps towards the backend (proxy_ssl starttls)
    backend_starttls: Callable[[Any], Any] | None = None
    # debug words of ngx_mail_proxy_<protocol>_handler, by backend login action
    login_debug: Mapping[str, str] = field(default_factory=dict)
    # the refusal of a session over a limit_conn / limit_req limit (proxy.limits)
    limited: bytes = b""

    @property
    def open(self) -> Callable[..., Any]:
        """(conf, tls, client_host, log_info) -> the dialogue machine."""
        return self.dialogue.open

    @property
    def backend_login(self) -> Callable[..., Any]:
        """(machine, conf, client_ip, ClientIdentity or None) -> the sans-IO backend login
        machine."""
        return self.dialogue.backend_login

    @property
    def failure_line(self) -> Callable[[bytes, bytes | None, bytes], bytes | None]:
        """(Auth-Status text, Auth-Error-Code or None, the client's tag) -> the line a
        failed Auth-Status becomes, or None where the protocol does not take the status
        as a failure."""
        return self.dialogue.failure_line

    @property
    def internal_error(self) -> bytes:
        """nginx's reply when the session ends on an internal error."""
        return self.dialogue.internal_error
