"""Every mail protocol Postern speaks, by the name `mail { server { protocol ...; } }` uses."""

from __future__ import annotations

from proxy.imap import IMAP
from proxy.pop3 import POP3
from proxy.protocol import MailProtocol
from proxy.smtp import SMTP

PROTOCOLS: dict[str, MailProtocol] = {p.name: p for p in (IMAP, POP3, SMTP)}
