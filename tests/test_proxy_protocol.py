"""PROXY protocol v1/v2 reading and writing (docs/behaviour.md §4.2, §11.5)."""

import ipaddress

import pytest
from postern.proxy.proxy_protocol import (
    V2_SIGNATURE,
    BrokenHeader,
    ProxyInfo,
    read_header,
    trusted,
    v1_line,
    v2_header,
)


def test_v1_tcp4_and_rest_left_for_the_protocol():
    data = b"PROXY TCP4 192.0.2.1 127.0.0.1 40000 143\r\na1 NOOP\r\n"
    info, n = read_header(data)
    assert info == ProxyInfo("192.0.2.1", 40000, "127.0.0.1", 143)
    assert data[n:] == b"a1 NOOP\r\n"


def test_v1_unknown_has_no_addresses():
    assert read_header(b"PROXY UNKNOWN whatever\r\nx") == (None, 24)


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.0\r\n", b"PROXY TCP5 1 2 3 4\r\n", b"PROXY TCP4 192.0.2.1 127.0.0.1 40000\r\n",
    b"PROXY TCP4 192.0.2.1 127.0.0.1 70000 143\r\n", b"PROXY TCP4 x.y.z 127.0.0.1 1 2\r\n",
    b"PROXY TCP4 192.0.2.1 127.0.0.1 40000 143", b"PROX",
])
def test_v1_broken(data):
    with pytest.raises(BrokenHeader, match="broken header"):
        read_header(data)


def test_v2_round_trip_both_families():
    for client, local in ((("192.0.2.7", 5000), ("127.0.0.1", 143)),
                          (("2001:db8::1", 5000), ("::1", 143))):
        raw = v2_header(client, local) + b"rest"
        info, n = read_header(raw)
        assert (info.src_addr, info.src_port, info.dst_addr, info.dst_port) == (*client, *local)
        assert raw[n:] == b"rest"


def test_v2_local_command_and_truncated():
    local = V2_SIGNATURE + bytes((0x20, 0x00, 0, 0))
    assert read_header(local) == (None, 16)
    with pytest.raises(BrokenHeader):
        read_header(v2_header(("192.0.2.7", 1), ("127.0.0.1", 2))[:20])


def test_v1_line_and_mixed_families():
    assert v1_line(("192.0.2.1", 40000), ("127.0.0.1", 143)) == \
        b"PROXY TCP4 192.0.2.1 127.0.0.1 40000 143\r\n"
    assert v1_line(("2001:db8::1", 1), ("127.0.0.1", 143)) == \
        b"PROXY TCP6 2001:db8::1 ::ffff:127.0.0.1 1 143\r\n"
    assert v1_line(None, None) == b"PROXY UNKNOWN\r\n"


def test_trusted_networks():
    nets = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert trusted("127.0.0.2", nets) and trusted("::1", nets)
    assert not trusted("192.0.2.1", nets) and not trusted(None, nets)
    assert trusted(None, ("unix:",))
