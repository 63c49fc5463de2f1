"""One auth_http exchange as nginx performs it, recorded byte for byte for the report.

The read loop follows proxy.auth_http's: a fresh connection per request, one deadline for
connect + send + read (nginx does not re-arm its timers), reads into a 1024-byte buffer, and
proxy.auth_http.parse_response() decides after every read. The bytes, the timing and the way
the exchange ended are kept so the judge can say *why* nginx would give up.

The helpers below the exchange only explain a reply nginx already accepted or refused (they
point at the offending line); they never decide anything parse_response() decides.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from typing import Any

from postern.proxy.auth_http import (
    RESPONSE_LIMIT,
    AuthResponse,
    AuthServerError,
    errno_text,
    parse_response,
)
from postern.proxy.conf.settings import AuthHttp

MEASURE_LIMIT = 65536  # how far past nginx's buffer we read to tell the real header size
MEASURE_TIME = 1.0


def peer_name(conf: AuthHttp) -> str:
    """The auth server as nginx names it in its error log."""
    return conf.text if conf.unix_path else f"{conf.addr}:{conf.port}"


@dataclass
class Exchange:
    """One request and whatever came back."""

    request: bytes
    raw: bytes = b""  # what nginx read (at most RESPONSE_LIMIT bytes)
    overflow: bytes = b""  # read past the limit only to measure an oversized header block
    elapsed: float = 0.0
    response: AuthResponse | None = None
    error: str | None = None  # nginx's error-log line ("" where it logs nothing) on failure
    timed_out: bool = False
    eof: bool = False  # the server closed before the header block was complete
    full: bool = False  # the 1024-byte buffer filled up without a complete header block
    connect_failed: bool = False
    tls_version: str | None = None  # an https:// URL (beyond nginx): "TLSv1.3"

    @property
    def header_size(self) -> int | None:
        """Bytes up to and including the empty line, or None when there was none."""
        return header_block_size(self.raw + self.overflow)


async def exchange(conf: AuthHttp, request: bytes, timeout: float,
                   tls: tuple[ssl.SSLContext, str] | None = None) -> Exchange:
    """`tls` (context, server name): an https:// URL, which Postern takes and nginx does not."""
    ex = Exchange(request)
    start = time.monotonic()
    talk = _Talk(conf, ex, tls)
    try:
        await asyncio.wait_for(talk.run(), timeout)
    except TimeoutError:
        ex.timed_out = True
        ex.error = f"auth http server {peer_name(conf)} timed out (110: Connection timed out)"
    except AuthServerError as err:
        ex.error = str(err)
    ex.elapsed = time.monotonic() - start
    if ex.full and talk.reader is not None:
        await _measure(talk.reader, ex)  # outside nginx's deadline: only for the report
    talk.close()
    return ex


class _Talk:
    """The connection of one exchange, kept open past a full buffer for _measure()."""

    def __init__(self, conf: AuthHttp, ex: Exchange, tls=None) -> None:
        self.conf, self.ex, self.tls = conf, ex, tls
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    async def run(self) -> None:
        conf, ex = self.conf, self.ex
        peer = peer_name(conf)
        try:
            self.reader, self.writer = await _open(conf, self.tls)
        except ssl.SSLError as exc:
            ex.connect_failed = True
            raise AuthServerError(f"SSL handshake with auth http server {peer} failed "
                                  f"({exc.reason or exc})") from None
        except OSError as exc:
            ex.connect_failed = True
            if conf.unix_path:  # the same log lines as proxy.auth_http.query()
                raise AuthServerError(f"connect() to {peer} failed {errno_text(exc)}") from None
            raise AuthServerError(f"recv() failed {errno_text(exc)}") from None
        if self.tls is not None:
            ex.tls_version = self.writer.get_extra_info("ssl_object").version()
        self.writer.write(ex.request)
        while True:
            try:
                chunk = await self.reader.read(RESPONSE_LIMIT - len(ex.raw))
            except OSError as exc:
                raise AuthServerError(f"recv() failed {errno_text(exc)}") from None
            if not chunk:  # nginx gives up on EOF without a log line
                ex.eof = True
                raise AuthServerError("")
            ex.raw += chunk
            resp = parse_response(ex.raw, peer)
            if resp is not None:
                ex.response = resp
                return
            if len(ex.raw) >= RESPONSE_LIMIT:  # nginx's next recv() reads 0 bytes: as EOF
                ex.full = True
                raise AuthServerError("")


async def _open(conf: AuthHttp, tls: tuple[ssl.SSLContext, str] | None):
    kw: dict[str, Any] = {} if tls is None else {"ssl": tls[0], "server_hostname": tls[1]}
    if conf.unix_path:
        return await asyncio.open_unix_connection(conf.unix_path, **kw)
    return await asyncio.open_connection(conf.addr, conf.port, **kw)


async def open_stream(s) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the auth server of these check-auth Settings (TLS for https://)."""
    return await _open(s.conf, s.tls_target)


async def _measure(reader: asyncio.StreamReader, ex: Exchange) -> None:
    """Read on past nginx's limit (briefly) so the report can say how big the block was."""
    try:
        async with asyncio.timeout(MEASURE_TIME):
            while header_block_size(ex.raw + ex.overflow) is None \
                    and len(ex.overflow) < MEASURE_LIMIT:
                chunk = await reader.read(4096)
                if not chunk:
                    return
                ex.overflow += chunk
    except (TimeoutError, OSError):
        return


# -- explaining a reply ------------------------------------------------------------------------

def header_block_size(data: bytes) -> int | None:
    """Length through the first empty line (CRLF or bare LF ends), None if there is none."""
    pos = 0
    while True:
        lf = data.find(b"\n", pos)
        if lf < 0:
            return None
        line = data[pos:lf]
        if line in (b"", b"\r") and pos > 0:
            return lf + 1
        pos = lf + 1


def header_fields(data: bytes) -> list[tuple[bytes, bytes]]:
    """The header lines of a reply parse_response() accepted, as (name, value) for display.

    Used only to describe what was sent (duplicates, a non-numeric Auth-Wait); the meaning
    of each field always comes from the AuthResponse.
    """
    lines = data.split(b"\n")
    if data.startswith(b"HTTP/"):
        lines = lines[1:]
    fields = []
    for line in lines:
        line = line.removesuffix(b"\r")
        if not line:
            break
        name, _, value = line.partition(b":")
        fields.append((name, value.strip(b" ")))
    return fields


def status_line(data: bytes) -> bytes | None:
    if not data.startswith(b"HTTP/"):
        return None
    end = min((i for i in (data.find(b"\r"), data.find(b"\n")) if i >= 0), default=len(data))
    return data[:end]


_NAME = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")


def explain_invalid(data: bytes) -> str | None:
    """Point at the line that made nginx reject a reply as malformed."""
    lines = data.split(b"\n")
    for number, line in enumerate(lines, 1):
        last = number == len(lines)  # not ended by LF: a trailing CR may be half a CRLF
        body = line[:-1] if line.endswith(b"\r") and not last else line
        cr = body.find(b"\r")
        if 0 <= cr < len(body) - (1 if last else 0):
            return (f"line {number} ({show(body[:cr][:40])}) ends with a bare CR; "
                    "nginx accepts only CRLF or LF line ends")
        if number == 1 and body.startswith(b"HTTP/"):
            continue
        if not body:
            return None
        name = body.partition(b":")[0]
        bad = next((b for b in name if b not in _NAME), None)
        if bad is not None or name[:1] == b"-":
            what = ("a leading '-'" if bad is None else "a space" if bad == 0x20
                    else f"'{chr(bad)}'" if 0x20 < bad < 0x7F else f"byte 0x{bad:02X}")
            return (f"header name {show(name[:40])} contains {what}; nginx allows only "
                    "letters, digits and '-' in header names")
    return None


def show(data: bytes) -> str:
    """Bytes for people: printable ASCII as is, \\r \\n \\t, other bytes as \\xNN."""
    out = []
    for b in data:
        if b == 0x5C:
            out.append("\\\\")
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        elif b in (0x0D, 0x0A, 0x09):
            out.append({0x0D: "\\r", 0x0A: "\\n", 0x09: "\\t"}[b])
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)
