"""POP3: the client dialogue before authentication and the login to the backend server."""

from postern.proxy.pop3.dialogue import INTERNAL_ERROR, Pop3Dialogue, failure_line
from postern.proxy.protocol import MailProtocol


def _open(conf, tls: bool, client_host: str, log_info: bool) -> Pop3Dialogue:
    return Pop3Dialogue(conf, tls=tls)


POP3 = MailProtocol(
    name="pop3",
    open=_open,
    backend_login=Pop3Dialogue.backend_login,
    failure_line=failure_line,
    internal_error=INTERNAL_ERROR,
    cert_error=b"-ERR SSL certificate error\r\n",
    no_cert=b"-ERR No required SSL certificate\r\n",
    login_debug={"sending user name to upstream": "mail proxy send user",
                 "sending password to upstream": "mail proxy send pass"},
)
