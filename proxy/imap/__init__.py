"""IMAP: the client dialogue before authentication and the login to the backend server."""

from postern.proxy.imap.dialogue import INTERNAL_ERROR, ImapDialogue, failure_line
from postern.proxy.protocol import MailProtocol


def _open(conf, tls: bool, client_host: str, log_info: bool) -> ImapDialogue:
    return ImapDialogue(conf, tls=tls)


IMAP = MailProtocol(
    name="imap",
    open=_open,
    backend_login=ImapDialogue.backend_login,
    failure_line=failure_line,
    internal_error=INTERNAL_ERROR,
    cert_error=b"* BYE SSL certificate error\r\n",
    no_cert=b"* BYE No required SSL certificate\r\n",
    login_debug={"sending LOGIN command to upstream": "mail proxy send login",
                 "sending user name to upstream": "mail proxy send user",
                 # ngx_mail_proxy_imap_handler's word
                 "sending password to upstream": "mail proxy send passwd"},
)
