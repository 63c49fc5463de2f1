"""The SMTP client's host name, found the way nginx finds it (docs/behaviour.md §4.5).

PTR lookup of the client address, an RFC 1034 check of the name (nginx 1.29.7,
CVE-2026-28753), then a forward lookup (A and/or AAAA per the `resolver` directive's
ipv4=/ipv6=) that must return the client address. The result is the name, `[UNAVAILABLE]` (a
permanent answer: NXDOMAIN, no data, no matching address) or `[TEMPUNAVAIL]` (anything else).

The answers are read with nginx's rules rather than a stub resolver's: the first PTR record of
the answer wins whatever its owner (CNAME records are skipped), an empty NOERROR answer counts
as NXDOMAIN, an answer that nginx's parser cannot use (no PTR, a wrong record type, no reply at
all) is not an error but silence, so the lookup waits for `resolver_timeout`. Successful
answers are cached for their TTL, or for `valid=` when set; failures are not cached.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.reversename
from postern.proxy.conf.settings import Resolver

UNAVAILABLE = "[UNAVAILABLE]"
TEMPUNAVAIL = "[TEMPUNAVAIL]"

NXDOMAIN = 3
TIMEDOUT = 110  # NGX_ETIMEDOUT on Linux, as nginx prints it
_STRERROR = {1: "Format error", 2: "Server failure", 3: "Host not found", 4: "Unimplemented",
             5: "Operation refused", TIMEDOUT: "Operation timed out"}
RESEND = 5.0  # nginx's resolver resend_timeout
MAX_RECURSION = 50  # NGX_RESOLVER_MAX_RECURSION: CNAME chain limit
_HOST_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")

LogFn = Callable[[str, str], None]


def strerror(code: int) -> str:
    """ngx_resolver_strerror."""
    return _STRERROR.get(code, "Unknown error")


def valid_host_name(name: bytes) -> bool:
    """Non-empty, and letters, digits, '-' and '.' only (nginx 1.29.7)."""
    return bool(name) and _HOST_BYTES.issuperset(name)


@dataclass(frozen=True)
class _Failed:
    code: int  # a DNS rcode, or TIMEDOUT


@dataclass(frozen=True)
class _Silent:
    """A reply nginx's parser ignores: it keeps waiting until its timer fires."""


@dataclass(frozen=True)
class _Found:
    value: object  # PTR: the name (bytes); forward: frozenset of addresses
    ttl: int


@dataclass(frozen=True)
class _Alias:
    target: dns.name.Name
    ttl: int


_SILENT = _Silent()


class HostResolver:
    """One per `resolver` configuration; shared by the sessions of a worker (it caches)."""

    def __init__(self, settings: Resolver, timeout: float,
                 clock: Callable[[], float] | None = None) -> None:
        self.settings = settings
        self.timeout = timeout
        self._clock = clock
        self._cache: dict[tuple, tuple[object, float]] = {}
        self._inflight: dict[tuple, asyncio.Task] = {}
        dns_resolver = dns.asyncresolver.Resolver(configure=False)
        dns_resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, port)
                                    for ip, port in settings.addresses]
        dns_resolver.timeout = min(RESEND, timeout)
        dns_resolver.lifetime = timeout
        dns_resolver.retry_servfail = False
        dns_resolver.cache = None  # ours keeps nginx's TTL rules (valid=)
        self._dns = dns_resolver

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    async def client_host(self, client_ip: str, log: LogFn | None = None,
                          action: Callable[[str], None] | None = None) -> str:
        """The Client-Host value for this client address. `log(level, message)` receives
        nginx's error lines; `action(text)` is told when the second lookup starts (nginx's
        log context changes from "in resolving client address" to "... client hostname")."""
        log = log or (lambda level, message: None)
        try:
            addr = ipaddress.ip_address(client_ip)
        except ValueError:
            return TEMPUNAVAIL  # a UNIX-socket client
        ptr = await self._shared(("ptr", addr), lambda: self._ptr(addr))
        if isinstance(ptr, _Failed):
            log("error", f"{client_ip} could not be resolved "
                         f"({ptr.code}: {strerror(ptr.code)})")
            return UNAVAILABLE if ptr.code == NXDOMAIN else TEMPUNAVAIL
        name: bytes = ptr.value  # type: ignore[assignment]
        text = name.decode("latin-1")
        if not valid_host_name(name):
            log("error", f'{client_ip} resolved to invalid host name "{text}"')
            return TEMPUNAVAIL
        if action:
            action("in resolving client hostname")
        found = await self._shared(("name", name.lower()), lambda: self._forward(name))
        if isinstance(found, _Failed):
            log("error", f'"{text}" could not be resolved '
                         f"({found.code}: {strerror(found.code)})")
            return UNAVAILABLE if found.code == NXDOMAIN else TEMPUNAVAIL
        return text if addr in found.value else UNAVAILABLE  # type: ignore[operator]

    async def host_addresses(self, name: bytes) -> list[str] | int:
        """The addresses of a host name (A/AAAA as `resolver` ipv4=/ipv6= allow, IPv4 first),
        or the error code of the failed lookup; cached like the client-host lookups."""
        found = await self._shared(("name", name.lower()), lambda: self._forward(name))
        if isinstance(found, _Failed):
            return found.code
        addrs = sorted(found.value, key=lambda a: (a.version, a))  # type: ignore[attr-defined]
        return [str(a) for a in addrs]

    # -- caching and sharing -------------------------------------------------------------
    async def _shared(self, key: tuple, lookup: Callable[[], Awaitable[object]]) -> object:
        """A cached answer, or one lookup shared by every session asking the same thing."""
        cached = self._cache.get(key)
        if cached is not None:
            if cached[1] > self._now():
                return cached[0]
            del self._cache[key]
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._remember(key, lookup))
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        # a closing session must not cancel the lookup others wait for
        return await asyncio.shield(task)

    async def _remember(self, key: tuple, lookup: Callable[[], Awaitable[object]]) -> object:
        result = await lookup()
        if isinstance(result, _Found):
            valid = self.settings.valid if self.settings.valid is not None else result.ttl
            self._cache[key] = (result, self._now() + valid)
        return result

    # -- the two lookups -----------------------------------------------------------------
    async def _ptr(self, addr) -> object:
        deadline = self._now() + self.timeout
        reply = await self._query(dns.reversename.from_address(str(addr)), "PTR", deadline)
        if isinstance(reply, list):
            reply = _read_ptr(reply)
        return await self._settle(reply, deadline)

    async def _forward(self, name: bytes) -> object:
        deadline = self._now() + self.timeout  # one timer for the whole CNAME chain
        qname = dns.name.from_text(name + b".")
        families = [f for f, on in (("A", self.settings.ipv4), ("AAAA", self.settings.ipv6))
                    if on]
        for _ in range(MAX_RECURSION + 1):
            replies = await asyncio.gather(*(self._query(qname, f, deadline)
                                             for f in families))
            parts = [_read_addresses(r, f) if isinstance(r, list) else r
                     for r, f in zip(replies, families)]
            result = _combine(parts)
            if not isinstance(result, _Alias):
                return await self._settle(result, deadline)
            qname = result.target
        return _Failed(NXDOMAIN)  # CNAME chain too long

    async def _settle(self, result: object, deadline: float) -> object:
        if isinstance(result, _Silent):
            await asyncio.sleep(max(0.0, deadline - self._now()))
            return _Failed(TIMEDOUT)
        return result

    async def _query(self, qname: dns.name.Name, rdtype: str, deadline: float) -> object:
        """The answer section (a list of RRsets) or a _Failed/_Silent verdict."""
        remaining = deadline - self._now()
        if remaining <= 0:
            return _Failed(TIMEDOUT)
        try:
            answer = await self._dns.resolve(qname, rdtype, raise_on_no_answer=False,
                                             lifetime=remaining, search=False)
        except dns.resolver.NXDOMAIN:
            return _Failed(NXDOMAIN)
        except dns.resolver.NoNameservers as exc:
            # an rcode (SERVFAIL, REFUSED, ...) fails the lookup; a network error is silence
            for error in reversed(exc.kwargs.get("errors") or []):
                response = error[-1] if isinstance(error, tuple) and error else None
                if response is not None and response.rcode() != 0:
                    return _Failed(response.rcode())
            return _SILENT
        except dns.exception.Timeout:
            return _Failed(TIMEDOUT)
        except dns.exception.DNSException:
            return _SILENT
        return list(answer.response.answer)


def _read_ptr(rrsets: list) -> object:
    """ngx_resolver_process_ptr: the first PTR record, CNAMEs skipped."""
    if not rrsets:
        return _Failed(NXDOMAIN)  # NOERROR with nothing in it: nginx says "Host not found"
    for rrset in rrsets:
        if rrset.rdclass != dns.rdataclass.IN:
            return _SILENT
        if rrset.rdtype == dns.rdatatype.PTR and len(rrset):
            target = next(iter(rrset)).target
            return _Found(b".".join(label for label in target.labels if label), rrset.ttl)
    return _SILENT  # "no PTR type in DNS response"


def _read_addresses(rrsets: list, family: str) -> object:
    """ngx_resolver_process_a for one query type."""
    if not rrsets:
        return _Found(frozenset(), 0)  # no data for this family
    wanted = dns.rdatatype.A if family == "A" else dns.rdatatype.AAAA
    other = dns.rdatatype.AAAA if family == "A" else dns.rdatatype.A
    addrs: set = set()
    ttl: int | None = None
    alias = None
    for rrset in rrsets:
        if rrset.rdclass != dns.rdataclass.IN or rrset.rdtype == other:
            return _SILENT  # nginx logs "unexpected A record" and ignores the reply
        ttl = rrset.ttl if ttl is None else min(ttl, rrset.ttl)
        if rrset.rdtype == wanted:
            addrs.update(ipaddress.ip_address(rr.address) for rr in rrset)
        elif rrset.rdtype == dns.rdatatype.CNAME:
            alias = next(iter(rrset)).target
    if addrs:
        return _Found(frozenset(addrs), ttl or 0)
    if alias is not None:
        return _Alias(alias, ttl or 0)
    return _SILENT  # "no A or CNAME types in DNS response"


def _combine(parts: list) -> object:
    """The A and AAAA answers together, as nginx's node for the name ends up."""
    if any(isinstance(p, _Silent) for p in parts):
        return _SILENT
    failed = [p for p in parts if isinstance(p, _Failed)]
    if failed:
        # either query failing fails the name; a temporary error outranks NXDOMAIN
        return next((f for f in failed if f.code != NXDOMAIN), failed[0])
    found = [p for p in parts if isinstance(p, _Found)]
    addrs = frozenset().union(*(p.value for p in found))
    if addrs:
        return _Found(addrs, min(p.ttl for p in found if p.value))
    alias = next((p for p in parts if isinstance(p, _Alias)), None)
    if alias is not None:
        return alias
    return _Failed(NXDOMAIN)  # no data for any family
