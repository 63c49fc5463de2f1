"""IMAP: the client dialogue before authentication and the login to the backend server."""

from postern.proxy.imap.backend_starttls import ImapBackendStartTls
from postern.proxy.imap.dialogue import ImapDialogue
from postern.proxy.protocol import MailProtocol

IMAP = MailProtocol(
    name="imap",
    dialogue=ImapDialogue,
    cert_error=b"* BYE SSL certificate error\r\n",
    no_cert=b"* BYE No required SSL certificate\r\n",
    # refused by limit_conn / limit_req: RFC 5530 UNAVAILABLE
    limited=b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n",
    backend_starttls=lambda conf: ImapBackendStartTls(conf.proxy_buffer),
    login_debug={"sending LOGIN command to upstream": "mail proxy send login",
                 "sending user name to upstream": "mail proxy send user",
                 # ngx_mail_proxy_imap_handler's word
                 "sending password to upstream": "mail proxy send passwd"},
)
