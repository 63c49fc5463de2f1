"""SMTP: the client dialogue before authentication and the login to the backend MTA."""

from postern.proxy.protocol import MailProtocol
from postern.proxy.smtp.backend_starttls import SmtpBackendStartTls
from postern.proxy.smtp.dialogue import DEFAULT_ERROR_CODE, SmtpDialogue


def _greeting_delay(conf) -> float:
    return conf.smtp_greeting_delay


SMTP = MailProtocol(
    name="smtp",
    dialogue=SmtpDialogue,
    cert_error=b"421 4.7.1 SSL certificate error\r\n",
    no_cert=b"421 4.7.1 No required SSL certificate\r\n",
    default_error_code=DEFAULT_ERROR_CODE,
    # the backend login can go on without one (XCLIENT, or no AUTH to the backend)
    password_required=False,
    auth_request_extra=SmtpDialogue.auth_request_extra,
    # Client-Host and XCLIENT NAME: the client's name is looked up before the greeting
    resolves_client_host=True,
    greeting_delay=_greeting_delay,
    # refused by limit_conn / limit_req: RFC 3463 4.7.0, a temporary security refusal
    limited=b"421 4.7.0 Too many connections, try again later\r\n",
    backend_starttls=lambda conf: SmtpBackendStartTls(conf.proxy_buffer, conf.server_name),
    login_debug={"sending HELO/EHLO to upstream": "mail proxy send ehlo"},
)
