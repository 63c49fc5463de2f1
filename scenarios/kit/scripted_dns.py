"""A scripted DNS server on 127.0.0.1 for client-host resolution checks (docs/behaviour.md §4.5).

The script maps (name, type) questions to an answer: a list of RRset texts
`(owner, ttl, type, data...)`, an rcode (int, e.g. dns.rcode.SERVFAIL) or "drop" (no reply,
so the asker times out). Unknown questions get NXDOMAIN. Every question is recorded.

    with DnsServer({(PTR, "PTR"): [(PTR, 300, "PTR", "mail.example.test.")]}) as dns_server:
        ...  # `resolver 127.0.0.1:{dns_server.port};`

`ScriptedDns` is the same thing as an asyncio datagram protocol, for tests that run the
resolver in their own loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from typing import Self

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import dns.reversename
import dns.rrset


def ptr_name(ip: str) -> str:
    """`1.0.0.127.in-addr.arpa.` for 127.0.0.1 (and the ip6.arpa form for IPv6)."""
    return dns.reversename.from_address(str(ipaddress.ip_address(ip))).to_text()


class DnsScript:
    """The answering logic, shared by both servers."""

    def __init__(self, script: dict) -> None:
        self.script = {(name.lower(), qtype): spec for (name, qtype), spec in script.items()}
        self.queries: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def reply(self, data: bytes) -> bytes | None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        key = (question.name.to_text().lower(), dns.rdatatype.to_text(question.rdtype))
        with self._lock:
            self.queries.append(key)
        spec = self.script.get(key, dns.rcode.NXDOMAIN)
        if spec == "drop":
            return None
        reply = dns.message.make_response(query)
        if isinstance(spec, int):
            reply.set_rcode(spec)
        else:
            for owner, ttl, rdtype, *rdata in spec:
                reply.answer.append(dns.rrset.from_text(owner, ttl, "IN", rdtype, *rdata))
        return reply.to_wire()


class ScriptedDns(asyncio.DatagramProtocol):
    """The script as an asyncio protocol: bind it with loop.create_datagram_endpoint."""

    def __init__(self, script: dict) -> None:
        self._script = DnsScript(script)
        self.queries = self._script.queries
        self.transport: asyncio.DatagramTransport | None = None

    @property
    def script(self) -> dict:
        return self._script.script

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        answer = self._script.reply(data)
        if answer is not None:
            self.transport.sendto(answer, addr)


class DnsServer:
    """The script served from a thread on 127.0.0.1:<free port> (UDP)."""

    def __init__(self, script: dict) -> None:
        self._script = DnsScript(script)
        self.queries = self._script.queries
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def script(self) -> dict:
        return self._script.script

    def start(self) -> Self:
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                answer = self._script.reply(data)
            except dns.exception.DNSException:  # a malformed question gets no answer
                answer = None
            if answer is not None:
                self.sock.sendto(answer, addr)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
