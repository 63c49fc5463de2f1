"""Every mail protocol Postern speaks, by the name `mail { server { protocol ...; } }` uses."""

from __future__ import annotations

from postern.proxy.imap import IMAP
from postern.proxy.pop3 import POP3
from postern.proxy.protocol import MailProtocol
from postern.proxy.smtp import SMTP

PROTOCOLS: dict[str, MailProtocol] = {p.name: p for p in (IMAP, POP3, SMTP)}
