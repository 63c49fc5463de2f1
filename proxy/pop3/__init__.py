"""POP3: the client dialogue before authentication and the login to the backend server."""

from postern.proxy.pop3.backend_starttls import Pop3BackendStartTls
from postern.proxy.pop3.dialogue import Pop3Dialogue
from postern.proxy.protocol import MailProtocol

POP3 = MailProtocol(
    name="pop3",
    dialogue=Pop3Dialogue,
    cert_error=b"-ERR SSL certificate error\r\n",
    no_cert=b"-ERR No required SSL certificate\r\n",
    # refused by limit_conn / limit_req: RFC 3206 SYS/TEMP
    limited=b"-ERR [SYS/TEMP] Too many connections, try again later\r\n",
    backend_starttls=lambda conf: Pop3BackendStartTls(conf.proxy_buffer),
    login_debug={"sending user name to upstream": "mail proxy send user",
                 "sending password to upstream": "mail proxy send pass"},
)
