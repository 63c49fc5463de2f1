"""Which of Postern's auth_http client extensions (README: Beyond nginx) a server works with.

Asked with the right password only (no failed logins), after the checks nginx needs:

* ``ext.keepalive``: the reference request twice as HTTP/1.1 on one connection, the replies
  framed by h11 as auth_pool.py frames them. A server that closes after each reply is fine
  (auth_http_keepalive then gains nothing); one whose second reply never comes, or whose
  framing h11 cannot follow, must not be used with auth_http_keepalive.
* ``ext.server-names``: whether the server names its backends by host name (which nginx
  refuses and auth_http_server_names allows) or by IP address (works either way).
* ``ext.https``: for an https:// URL, the TLS version and whether the certificate verified.

None of these fail a run: they are not what nginx needs, only what Postern can use.
"""

from __future__ import annotations

import asyncio
import ssl

import h11
from postern.proxy.auth_http import (
    RESPONSE_LIMIT,
    AuthResponse,
    is_host_name,
    parse_response,
    request_head,
)
from postern.proxy.auth_pool import close_delimited

from .cases import Settings
from .judge import PASS, WARN, Row
from .wire import open_stream, show


async def keepalive_row(s: Settings, request: bytes) -> Row:
    title = "keep-alive (auth_http_keepalive)"
    head = request_head(s.conf)
    request = request_head(s.conf, http11=True) + request[len(head):]
    try:
        async with asyncio.timeout(s.timeout):
            reader, writer = await open_stream(s)
    except (OSError, TimeoutError) as err:
        return Row("ext.keepalive", title, WARN, f"could not connect again: {err}")
    conn = h11.Connection(h11.CLIENT)
    replies: list[AuthResponse | None] = []
    how = ""
    try:
        for _ in range(2):
            conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
            conn.send(h11.EndOfMessage())
            writer.write(request)
            resp, framing = await asyncio.wait_for(_one_reply(reader, conn, s), s.timeout)
            replies.append(resp)
            how = how or framing
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return Row("ext.keepalive", title, PASS,
                           "closes the connection after each reply (or answers HTTP/1.0): "
                           "works with auth_http_keepalive, which then gains nothing")
            conn.start_next_cycle()
    except TimeoutError:
        return Row("ext.keepalive", title, WARN,
                   f"the {'second' if replies else 'first'} reply on a kept-alive HTTP/1.1 "
                   f"connection did not come within {s.timeout:g} s: do not use "
                   "auth_http_keepalive with this server")
    except (h11.ProtocolError, ConnectionError, EOFError) as err:
        return Row("ext.keepalive", title, WARN,
                   f"HTTP/1.1 replies cannot be framed ({err or 'closed mid-reply'}): do not "
                   "use auth_http_keepalive with this server")
    finally:
        writer.close()
    if any(r is None or r.error is not None or r.wait_status for r in replies):
        return Row("ext.keepalive", title, WARN,
                   "answers the right password differently over HTTP/1.1: do not use "
                   "auth_http_keepalive with this server")
    return Row("ext.keepalive", title, PASS,
               f"keeps HTTP/1.1 connections alive: 2 replies on one connection ({how}), "
               "so auth_http_keepalive saves a connection per login")


async def _one_reply(reader: asyncio.StreamReader, conn: h11.Connection,
                     s: Settings) -> tuple[AuthResponse | None, str]:
    """One reply: nginx's reading of its header block, and how it was framed."""
    raw, framing = b"", ""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            chunk = await reader.read(65536)
            if len(raw) < RESPONSE_LIMIT:
                raw += chunk[:RESPONSE_LIMIT - len(raw)]
            conn.receive_data(chunk)
            if not chunk and conn.their_state is not h11.DONE:
                if conn.their_state is h11.SEND_BODY:
                    continue  # a close-delimited body ends here
                raise EOFError
            continue
        if isinstance(event, h11.Response):
            if close_delimited(event):  # no need to wait for the close
                return parse_response(raw, "auth"), framing
            names = {n.lower() for n, _ in event.headers}
            framing = "Content-Length" if b"content-length" in names else "chunked"
        if isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return parse_response(raw, "auth"), framing


def server_names_row(resp: AuthResponse | None) -> Row | None:
    """From the right password's answer: a host name or an address in Auth-Server."""
    if resp is None or resp.error is not None or not resp.server:
        return None
    title = "host names in Auth-Server"
    try:
        resp.backend("auth")
    except Exception:  # noqa: BLE001 -- AuthServerError: not an address nginx takes
        if is_host_name(resp.server):
            return Row("ext.server-names", title, PASS,
                       f'names its backend by host name ("{show(resp.server)}"): nginx refuses '
                       "that; Postern takes it with auth_http_server_names on (and a resolver)")
        return None
    return Row("ext.server-names", title, PASS,
               "names its backends by IP address: works with and without "
               "auth_http_server_names")


def https_row(s: Settings, version: str | None) -> Row | None:
    if not s.conf.ssl:
        return None
    verified = ("the certificate verified" if s.tls_verify else
                "the certificate NOT verified (--no-verify)")
    return Row("ext.https", "https (auth_http https://)", PASS if s.tls_verify else WARN,
               f"{version or 'TLS'}, {verified}: use auth_http https://... with "
               "auth_http_ssl_trusted_certificate (and auth_http_ssl_name)")


def tls_context(cafile: str | None, verify: bool, cert: str | None,
                key: str | None) -> ssl.SSLContext:
    """The client context of an https:// URL, as proxy/auth_tls.py builds Postern's."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify:
        if cafile:
            ctx.load_verify_locations(cafile=cafile)
        else:
            ctx.load_default_certs()
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx
