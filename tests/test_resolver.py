"""Client-host resolution (docs/behaviour.md §4.5) against a scripted DNS server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import time

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from postern.proxy.conf.settings import Resolver
from postern.proxy.resolver import TEMPUNAVAIL, UNAVAILABLE, HostResolver, valid_host_name
from postern.scenarios.kit.scripted_dns import ScriptedDns

PTR4 = "1.0.0.127.in-addr.arpa."
PTR6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
HOST = "mail.example.test."
NODATA: list = []


async def resolve(script: dict, client_ip: str = "127.0.0.1", *, timeout: float = 2.0,
                  valid: float | None = None, ipv4: bool = True, ipv6: bool = True,
                  resolver: HostResolver | None = None, server: ScriptedDns | None = None):
    """(host, log lines, questions asked, resolver, server) for one lookup."""
    server = server or ScriptedDns(script)
    async with serving(server) as port:
        resolver = resolver or HostResolver(
            Resolver((("127.0.0.1", port),), valid=valid, ipv4=ipv4, ipv6=ipv6), timeout)
        resolver._dns.nameservers[0].port = port  # a reused resolver follows the new server
        logs: list[tuple[str, str]] = []
        actions: list[str] = []
        host = await resolver.client_host(client_ip, lambda lv, msg: logs.append((lv, msg)),
                                          actions.append)
    return host, logs, server.queries, resolver, actions


@contextlib.asynccontextmanager
async def serving(server: ScriptedDns):
    """`server` answering on a free UDP port of 127.0.0.1 (the port is yielded)."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: server,
                                                       local_addr=("127.0.0.1", 0))
    try:
        yield transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


def lookup(script: dict, client_ip: str = "127.0.0.1", **kw):
    return asyncio.run(resolve(script, client_ip, **kw))


def confirmed(name: str = HOST, ip: str = "127.0.0.1", ttl: int = 300) -> dict:
    return {(name, "A"): [(name, ttl, "A", ip)], (name, "AAAA"): NODATA}


def test_normal_ptr_then_forward_confirmation():
    script = {(PTR4, "PTR"): [(PTR4, 300, "PTR", HOST)], **confirmed()}
    host, logs, queries, _, actions = lookup(script)
    assert host == "mail.example.test"
    assert logs == []
    assert queries[0] == (PTR4, "PTR")
    assert sorted(queries[1:]) == [(HOST, "A"), (HOST, "AAAA")]
    assert actions == ["in resolving client hostname"]


def test_ptr_nxdomain_is_unavailable():
    host, logs, queries, _, _ = lookup({(PTR4, "PTR"): dns.rcode.NXDOMAIN})
    assert host == UNAVAILABLE
    assert logs == [("error", "127.0.0.1 could not be resolved (3: Host not found)")]
    assert queries == [(PTR4, "PTR")]


@pytest.mark.parametrize("rcode,text", [(dns.rcode.SERVFAIL, "2: Server failure"),
                                        (dns.rcode.REFUSED, "5: Operation refused"),
                                        (dns.rcode.FORMERR, "1: Format error")])
def test_ptr_other_rcodes_are_tempunavail(rcode, text):
    host, logs, _, _, _ = lookup({(PTR4, "PTR"): rcode})
    assert host == TEMPUNAVAIL
    assert logs == [("error", f"127.0.0.1 could not be resolved ({text})")]


def test_empty_ptr_answer_counts_as_nxdomain():
    # ngx_resolver_process_ptr: "if (code == 0 && nan == 0) code = NGX_RESOLVE_NXDOMAIN"
    host, logs, _, _, _ = lookup({(PTR4, "PTR"): NODATA})
    assert host == UNAVAILABLE
    assert logs == [("error", "127.0.0.1 could not be resolved (3: Host not found)")]


def test_wrong_type_is_ignored_until_the_timeout():
    script = {(PTR4, "PTR"): [(PTR4, 300, "TXT", '"not a name"')]}
    start = time.monotonic()
    host, logs, _, _, _ = lookup(script, timeout=0.5)
    elapsed = time.monotonic() - start
    assert host == TEMPUNAVAIL
    assert logs == [("error", "127.0.0.1 could not be resolved (110: Operation timed out)")]
    assert 0.4 < elapsed < 5


def test_timeout_is_tempunavail():
    start = time.monotonic()
    host, logs, _, _, _ = lookup({(PTR4, "PTR"): "drop"}, timeout=0.5)
    assert host == TEMPUNAVAIL
    assert logs == [("error", "127.0.0.1 could not be resolved (110: Operation timed out)")]
    assert 0.4 < time.monotonic() - start < 5


def test_cname_then_ptr_rfc2317_delegation():
    alias = "1.0/26.0.0.127.in-addr.arpa."
    script = {(PTR4, "PTR"): [(PTR4, 300, "CNAME", alias), (alias, 300, "PTR", HOST)],
              **confirmed()}
    host, logs, _, _, _ = lookup(script)
    assert (host, logs) == ("mail.example.test", [])


def test_forward_mismatch_is_unavailable_without_a_log_line():
    script = {(PTR4, "PTR"): [(PTR4, 300, "PTR", HOST)], **confirmed(ip="192.0.2.1")}
    host, logs, _, _, _ = lookup(script)
    assert (host, logs) == (UNAVAILABLE, [])


def test_forward_nxdomain_and_servfail():
    ptr = {(PTR4, "PTR"): [(PTR4, 300, "PTR", HOST)]}
    host, logs, _, _, _ = lookup({**ptr, (HOST, "A"): dns.rcode.NXDOMAIN,
                                  (HOST, "AAAA"): dns.rcode.NXDOMAIN})
    assert host == UNAVAILABLE
    assert logs == [("error", '"mail.example.test" could not be resolved (3: Host not found)')]
    host, logs, _, _, _ = lookup({**ptr, (HOST, "A"): [(HOST, 300, "A", "127.0.0.1")],
                                  (HOST, "AAAA"): dns.rcode.SERVFAIL})
    assert host == TEMPUNAVAIL  # either query failing fails the name, as in nginx
    assert logs == [("error", '"mail.example.test" could not be resolved (2: Server failure)')]


def test_forward_no_data_at_all_is_nxdomain():
    host, logs, _, _, _ = lookup({(PTR4, "PTR"): [(PTR4, 300, "PTR", HOST)],
                                  (HOST, "A"): NODATA, (HOST, "AAAA"): NODATA})
    assert host == UNAVAILABLE
    assert logs == [("error", '"mail.example.test" could not be resolved (3: Host not found)')]


def test_forward_cname_only_answer_is_followed():
    real = "real.example.test."
    script = {(PTR4, "PTR"): [(PTR4, 300, "PTR", HOST)],
              (HOST, "A"): [(HOST, 300, "CNAME", real)],
              (HOST, "AAAA"): [(HOST, 300, "CNAME", real)], **confirmed(real)}
    host, logs, queries, _, _ = lookup(script)
    assert (host, logs) == ("mail.example.test", [])
    assert (real, "A") in queries


def test_forward_wrong_record_type_waits_for_the_timeout():
    script = {(PTR4, "PTR"): [(PTR4, 300, "PTR", HOST)],
              (HOST, "A"): [(HOST, 300, "A", "127.0.0.1")],
              (HOST, "AAAA"): [(HOST, 300, "A", "127.0.0.1")]}
    host, logs, _, _, _ = lookup(script, timeout=0.5)
    assert host == TEMPUNAVAIL
    assert logs == [("error",
                     '"mail.example.test" could not be resolved (110: Operation timed out)')]


@pytest.mark.parametrize("name", ["bad_name.example.", "sp\\032ace.example.", "x\\;y.test."])
def test_invalid_characters_are_tempunavail_and_stop_the_lookup(name):
    host, logs, queries, _, _ = lookup({(PTR4, "PTR"): [(PTR4, 300, "PTR", name)]})
    shown = name.rstrip(".").replace("\\032", " ").replace("\\;", ";")
    assert host == TEMPUNAVAIL
    assert logs == [("error", f'127.0.0.1 resolved to invalid host name "{shown}"')]
    assert queries == [(PTR4, "PTR")]


def test_root_name_is_invalid():
    host, logs, _, _, _ = lookup({(PTR4, "PTR"): [(PTR4, 300, "PTR", ".")]})
    assert host == TEMPUNAVAIL
    assert logs == [("error", '127.0.0.1 resolved to invalid host name ""')]


def test_valid_host_name_rule():
    assert valid_host_name(b"a-b.c9.example")
    assert not valid_host_name(b"")
    assert not valid_host_name(b"a_b")
    assert not valid_host_name(b"caf\xc3\xa9")


def test_ipv6_client_and_ipv4_off():
    script = {(PTR6, "PTR"): [(PTR6, 300, "PTR", HOST)],
              (HOST, "AAAA"): [(HOST, 300, "AAAA", "2001:db8::1")]}
    host, logs, queries, _, _ = lookup(script, "2001:db8::1", ipv4=False)
    assert (host, logs) == ("mail.example.test", [])
    assert (HOST, "A") not in queries


def test_ipv6_off_never_confirms_an_ipv6_client():
    script = {(PTR6, "PTR"): [(PTR6, 300, "PTR", HOST)],
              (HOST, "A"): [(HOST, 300, "A", "127.0.0.1")]}
    host, _, queries, _, _ = lookup(script, "2001:db8::1", ipv6=False)
    assert host == UNAVAILABLE
    assert (HOST, "AAAA") not in queries


def test_unix_socket_client_is_tempunavail():
    host, logs, queries, _, _ = lookup({}, "unix:")
    assert (host, logs, queries) == (TEMPUNAVAIL, [], [])


def test_answers_are_cached_for_their_ttl_and_failures_are_not():
    script = {(PTR4, "PTR"): [(PTR4, 300, "PTR", HOST)], **confirmed()}

    async def twice():
        host1, _, _, res, _ = await resolve(script)
        server = ScriptedDns(script)
        host2, _, queries, _, _ = await resolve(script, resolver=res, server=server)
        return host1, host2, queries

    host1, host2, queries = asyncio.run(twice())
    assert host1 == host2 == "mail.example.test"
    assert queries == []  # all from the cache

    async def failing_twice():
        bad = {(PTR4, "PTR"): dns.rcode.SERVFAIL}
        _, _, _, res, _ = await resolve(bad)
        server = ScriptedDns(bad)
        await resolve(bad, resolver=res, server=server)
        return server.queries

    assert asyncio.run(failing_twice()) == [(PTR4, "PTR")]


def test_ttl_expiry_and_valid_override():
    now = [1000.0]

    def clock() -> float:
        return now[0]

    async def scenario(valid: float | None, advance: float) -> list:
        script = {(PTR4, "PTR"): [(PTR4, 10, "PTR", HOST)], **confirmed(ttl=10)}
        res = HostResolver(Resolver((("127.0.0.1", 53),), valid=valid), 2.0, clock=clock)
        await resolve(script, resolver=res)
        now[0] += advance
        server = ScriptedDns(script)
        await resolve(script, resolver=res, server=server)
        return server.queries

    assert asyncio.run(scenario(None, 5)) == []
    assert len(asyncio.run(scenario(None, 11))) == 3  # PTR, A and AAAA asked again
    assert len(asyncio.run(scenario(60, 11))) == 0  # valid=60s outlives the 10s TTL
    assert len(asyncio.run(scenario(1, 2))) == 3  # ... and valid=1s cuts it short


def test_concurrent_sessions_share_one_lookup():
    script = {(PTR4, "PTR"): [(PTR4, 300, "PTR", HOST)], **confirmed()}

    async def together():
        server = ScriptedDns(script)
        async with serving(server) as port:
            res = HostResolver(Resolver((("127.0.0.1", port),)), 2.0)
            hosts = await asyncio.gather(*(res.client_host("127.0.0.1") for _ in range(5)))
        return hosts, server.queries

    hosts, queries = asyncio.run(together())
    assert hosts == ["mail.example.test"] * 5
    assert len(queries) == 3


def test_a_cancelled_session_does_not_cancel_the_shared_lookup():
    script = {(PTR4, "PTR"): [(PTR4, 300, "PTR", HOST)], **confirmed()}

    async def scenario():
        async with serving(ScriptedDns(script)) as port:
            res = HostResolver(Resolver((("127.0.0.1", port),)), 2.0)
            first = asyncio.ensure_future(res.client_host("127.0.0.1"))
            second = asyncio.ensure_future(res.client_host("127.0.0.1"))
            await asyncio.sleep(0)
            first.cancel()
            return await second

    assert asyncio.run(scenario()) == "mail.example.test"
