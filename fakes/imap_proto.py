"""IMAP4rev1 syntax for the fake upstream, without I/O.

``CommandReader`` splits the client byte stream into command units (lines joined with their
literals) and says when a synchronising literal needs a ``+`` continuation; ``tokenize`` turns a
unit into atoms, strings, literals and lists; the rest renders FETCH data and evaluates sequence
sets and SEARCH keys over a ``fakes.mailbox.Mailbox``.
"""

from __future__ import annotations

import email
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.utils import getaddresses

from postern.fakes.mailbox import Entry, Message, StoredMessage

_LITERAL_AT_END = re.compile(rb"\{(\d+)(\+?)\}\r?\n$")
MAX_LINE = 1 << 20


class Literal(bytes):
    """Literal data inside a command (as opposed to the text around it)."""


class ParseError(ValueError):
    pass


@dataclass
class Unit:
    """One parsed piece of the client stream.

    kind ``command``: a complete command; ``raw`` is exactly what arrived (literals included,
    final CRLF stripped), ``segments`` alternates text and ``Literal`` pieces.
    kind ``continue``: a synchronising literal of ``size`` octets was announced by ``tag``.
    kind ``rejected``: the same, while rejecting literals; the command is abandoned.
    """

    kind: str
    raw: bytes = b""
    segments: list[bytes] = field(default_factory=list)
    tag: str = ""
    size: int = 0


class CommandReader:
    """Incremental command splitter; ``feed()`` returns the units completed so far."""

    def __init__(self) -> None:
        self.reject_sync_literals = False
        self._buf = bytearray()
        self._raw: list[bytes] = []
        self._segments: list[bytes] = []
        self._literal: int | None = None

    def feed(self, data: bytes) -> list[Unit]:
        self._buf += data
        out: list[Unit] = []
        while True:
            if self._literal is not None:
                if len(self._buf) < self._literal:
                    break
                lit = Literal(self._buf[:self._literal])
                del self._buf[:self._literal]
                self._raw.append(lit)
                self._segments.append(lit)
                self._literal = None
                continue
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > MAX_LINE:  # a runaway line: answer it as one command
                    end = len(self._buf) - 1
                else:
                    break
            line = bytes(self._buf[:end + 1])
            del self._buf[:end + 1]
            self._raw.append(line)
            m = _LITERAL_AT_END.search(line)
            if m is None:
                self._segments.append(line.rstrip(b"\r\n"))
                raw = b"".join(self._raw)
                raw = raw[:-2] if raw.endswith(b"\r\n") else raw.removesuffix(b"\n")
                out.append(Unit("command", raw, self._segments))
                self._raw, self._segments = [], []
                continue
            self._segments.append(line[:m.start()])
            size, sync = int(m.group(1)), not m.group(2)
            tag = b"".join(self._raw).split(b" ", 1)[0].decode("ascii", "replace")
            if sync and self.reject_sync_literals:
                raw = b"".join(self._raw).rstrip(b"\r\n")
                out.append(Unit("rejected", raw, self._segments, tag, size))
                self._raw, self._segments = [], []
                continue
            if sync:
                out.append(Unit("continue", tag=tag, size=size))
            self._literal = size
        return out


Token = str | bytes | list  # atom/quoted string, Literal, parenthesised list


def tokenize(segments: Sequence[bytes]) -> list[Token]:
    """Atoms keep ``[...]`` sections whole (``BODY.PEEK[HEADER.FIELDS (A B)]<0.10>``)."""
    root: list[Token] = []
    stack = [root]
    for seg in segments:
        if isinstance(seg, Literal):
            stack[-1].append(seg)
            continue
        s = seg.decode("utf-8", "surrogateescape")
        i, n = 0, len(s)
        while i < n:
            c = s[i]
            if c == " ":
                i += 1
            elif c == "(":
                stack[-1].append(new := [])
                stack.append(new)
                i += 1
            elif c == ")":
                if len(stack) == 1:
                    raise ParseError("unbalanced ')'")
                stack.pop()
                i += 1
            elif c == '"':
                i, text = _quoted(s, i + 1)
                stack[-1].append(text)
            else:
                j = i
                while j < n and s[j] not in ' ()"':
                    if s[j] == "[":
                        close = s.find("]", j)
                        if close < 0:
                            raise ParseError("unbalanced '['")
                        j = close
                    j += 1
                stack[-1].append(s[i:j])
                i = j
    if len(stack) != 1:
        raise ParseError("unbalanced '('")
    return root


def _quoted(s: str, i: int) -> tuple[int, str]:
    out = []
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
        elif c == '"':
            return i + 1, "".join(out)
        else:
            out.append(c)
            i += 1
    raise ParseError("unterminated quoted string")


def text(token: Token) -> str:
    """A string argument, whichever way (atom, quoted, literal) it was sent."""
    if isinstance(token, list):
        raise ParseError("expected a string, got a list")
    return token.decode("utf-8", "surrogateescape") if isinstance(token, bytes) else token


def quote(value: str | bytes | None) -> bytes:
    """An nstring: NIL, a quoted string, or a literal when quoting cannot carry the bytes."""
    if value is None:
        return b"NIL"
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    if any(b > 126 or b in (10, 13, 0) for b in data) or len(data) > 1000:
        return b"{%d}\r\n%s" % (len(data), data)
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


# -- sequence sets ------------------------------------------------------------------------

def parse_seqset(spec: str, largest: int) -> list[tuple[int, int]]:
    """Ranges for ``1,3:5,7:*``; ``*`` is ``largest`` (the highest number in use)."""
    ranges = []
    for part in spec.split(","):
        lo_s, _, hi_s = part.partition(":")
        try:
            lo = largest if lo_s == "*" else int(lo_s)
            hi = lo if not hi_s else largest if hi_s == "*" else int(hi_s)
        except ValueError:
            raise ParseError(f"invalid sequence set {spec!r}") from None
        if (lo_s != "*" and lo < 1) or (hi_s not in ("", "*") and hi < 1):
            raise ParseError(f"invalid sequence set {spec!r}")
        ranges.append((min(lo, hi), max(lo, hi)))
    return ranges


def in_set(n: int, ranges: list[tuple[int, int]]) -> bool:
    return any(lo <= n <= hi for lo, hi in ranges)


# -- FETCH ----------------------------------------------------------------------------------

MACROS = {"ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
          "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
          "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"]}
_SECTION = re.compile(r"^(BODY(?:\.PEEK)?)\[([^\]]*)\](?:<(\d+)(?:\.(\d+))?>)?$", re.IGNORECASE)
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
Stream = tuple[Message, int, int]  # message bytes [start, end) to be streamed as they are
Part = bytes | Stream


def fetch_items(args: Sequence[Token]) -> list[str]:
    items: list[str] = []
    for tok in args:
        for item in (tok if isinstance(tok, list) else [tok]):
            name = text(item)
            items.extend(MACROS.get(name.upper(), [name]))
    if not items:
        raise ParseError("no fetch attributes")
    return items


def internaldate(when: datetime) -> str:
    off = when.utcoffset()
    minutes = int(off.total_seconds() // 60) if off else 0
    sign, minutes = ("-", -minutes) if minutes < 0 else ("+", minutes)
    return (f'"{when.day:02d}-{_MONTHS[when.month - 1]}-{when.year} '
            f'{when:%H:%M:%S} {sign}{minutes // 60:02d}{minutes % 60:02d}"')


def render_fetch(entry: Entry, items: list[str], uid: bool,
                 readonly: bool = False) -> list[Part]:
    """The parenthesised FETCH data as parts; non-PEEK body items set \\Seen first."""
    names = [i.upper() for i in items]
    if uid and "UID" not in names:
        items, names = ["UID", *items], ["UID", *names]
    seen_now = not readonly and "\\Seen" not in entry.flags and any(
        n in ("RFC822", "RFC822.TEXT") or n.startswith("BODY[") for n in names)
    if seen_now:
        entry.flags.add("\\Seen")
    out: list[Part] = []
    msg = entry.message
    for item, name in zip(items, names):
        sep = b" " if out else b""
        if name == "UID":
            out.append(b"%sUID %d" % (sep, entry.uid))
        elif name == "FLAGS":
            out.append(sep + b"FLAGS (" + " ".join(sorted(entry.flags)).encode() + b")")
        elif name == "RFC822.SIZE":
            out.append(b"%sRFC822.SIZE %d" % (sep, msg.size))
        elif name == "INTERNALDATE":
            out.append(sep + b"INTERNALDATE " + internaldate(entry.internaldate).encode())
        elif name == "ENVELOPE":
            out.append(sep + b"ENVELOPE " + envelope(msg.header))
        elif name in ("BODYSTRUCTURE", "BODY"):
            out.append(sep + name.encode() + b" " + bodystructure(msg))
        elif name in ("RFC822", "RFC822.HEADER", "RFC822.TEXT"):
            start = msg.header_size if name == "RFC822.TEXT" else 0
            end = msg.header_size if name == "RFC822.HEADER" else msg.size
            out += [sep + b"%s {%d}\r\n" % (name.encode(), end - start), (msg, start, end)]
        elif m := _SECTION.match(item):
            data = section(msg, m.group(2))
            label = f"BODY[{m.group(2)}]"
            if m.group(3) is not None:
                label += f"<{m.group(3)}>"
                data = _partial(data, int(m.group(3)), m.group(4))
            size = data[2] - data[1] if isinstance(data, tuple) else len(data)
            out.append(sep + label.encode() + b" {%d}\r\n" % size)
            out.append(data)
        else:
            raise ParseError(f"unknown fetch attribute {item}")
    if seen_now and "FLAGS" not in names:  # tell the client its flags changed
        out.append(b" FLAGS (" + " ".join(sorted(entry.flags)).encode() + b")")
    return out


def _partial(data: Part, origin: int, length: str | None) -> Part:
    if isinstance(data, tuple):
        msg, start, end = data
        start = min(start + origin, end)
        return msg, start, end if length is None else min(end, start + int(length))
    return data[origin:] if length is None else data[origin:origin + int(length)]


def section(msg: Message, spec: str) -> Part:
    """The bytes of a BODY[...] section: whole, HEADER, TEXT, HEADER.FIELDS[.NOT], parts."""
    spec_u = spec.upper()
    if spec_u == "":
        return (msg, 0, msg.size)
    if spec_u == "HEADER":
        return (msg, 0, msg.header_size)
    if spec_u == "TEXT":
        return (msg, msg.header_size, msg.size)
    if spec_u.startswith("HEADER.FIELDS"):
        return header_fields(msg.header, spec_u)
    if not spec_u[:1].isdigit():
        raise ParseError(f"unknown section {spec}")
    path, _, rest = _split_part(spec_u)
    return _part_section(msg, path, rest)


def _split_part(spec: str) -> tuple[str, str, str]:
    nums = []
    parts = spec.split(".")
    while parts and parts[0].isdigit():
        nums.append(parts.pop(0))
    return ".".join(nums), ".", ".".join(parts)


def header_fields(header: bytes, spec: str) -> bytes:
    negate = spec.startswith("HEADER.FIELDS.NOT")
    wanted = set(spec[spec.find("(") + 1:spec.rfind(")")].split())
    out, keep = [], False
    for line in header.split(b"\r\n"):
        if not line:
            continue
        if line[:1] not in (b" ", b"\t"):
            keep = (line.split(b":", 1)[0].decode("ascii", "replace").upper() in wanted) != negate
        if keep:
            out.append(line + b"\r\n")
    return b"".join(out) + b"\r\n"


def _part_section(msg: Message, path: str, rest: str) -> bytes:
    if not isinstance(msg, StoredMessage):  # generated single-part bodies: part 1 is the text
        return msg.read(msg.header_size) if path == "1" and rest in ("", "TEXT") else b""
    part = email.message_from_bytes(msg.raw, policy=policy.compat32)
    for num in path.split("."):
        payload = part.get_payload()
        if part.is_multipart():
            if not 0 < int(num) <= len(payload):
                return b""
            part = payload[int(num) - 1]
        elif num != "1":
            return b""
    if rest in ("MIME", "HEADER"):
        return b"".join(f"{k}: {v}\r\n".encode() for k, v in part.items()) + b"\r\n"
    body = part.get_payload()
    if isinstance(body, list):  # a multipart's text: re-serialise its children
        return part.as_bytes(policy=policy.SMTP).split(b"\r\n\r\n", 1)[-1]
    return body.encode("utf-8", "surrogateescape")


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n(?=[ \t])", "", value)


def envelope(header: bytes) -> bytes:
    h = email.message_from_bytes(header, policy=policy.compat32)

    def addresses(name: str, fallback: str | None = None) -> bytes:
        values = h.get_all(name) or (h.get_all(fallback) if fallback else None)
        if not values:
            return b"NIL"
        items = []
        for display, addr in getaddresses([_unfold(str(v)) for v in values]):
            local, _, domain = addr.partition("@")
            items.append(b"(" + b" ".join([quote(display or None), b"NIL", quote(local),
                                           quote(domain or None)]) + b")")
        return b"(" + b"".join(items) + b")" if items else b"NIL"

    def field(name: str) -> bytes:
        value = h.get(name)
        return quote(None if value is None else _unfold(str(value)))

    return b"(" + b" ".join([
        field("Date"), field("Subject"), addresses("From"), addresses("Sender", "From"),
        addresses("Reply-To", "From"), addresses("To"), addresses("Cc"), addresses("Bcc"),
        field("In-Reply-To"), field("Message-ID")]) + b")"


def bodystructure(msg: Message) -> bytes:
    if not isinstance(msg, StoredMessage) or msg.size > (8 << 20):
        # Large or pattern bodies: describe from the header alone, never parse the body.
        h = email.message_from_bytes(msg.header, policy=policy.compat32)
        lines = msg.read(msg.header_size, msg.header_size + 65536).count(b"\n")
        lines = lines * max(1, (msg.size - msg.header_size) // 65536)
        return _leaf(h, msg.size - msg.header_size, lines)
    return _structure(email.message_from_bytes(msg.raw, policy=policy.compat32))


def _structure(part: email.message.Message) -> bytes:
    if part.is_multipart():
        return (b"(" + b"".join(_structure(p) for p in part.get_payload()) + b" " +
                quote(part.get_content_subtype().upper()) + b")")
    body = part.get_payload()
    data = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else b""
    return _leaf(part, len(data), data.count(b"\n"))


def _leaf(part: email.message.Message, size: int, lines: int) -> bytes:
    maintype, subtype = part.get_content_maintype(), part.get_content_subtype()
    params = [p for k, v in (part.get_params(header="content-type") or [])[1:]
              for p in (quote(k.upper()), quote(str(v)))]
    fields = [quote(maintype.upper()), quote(subtype.upper()),
              b"(" + b" ".join(params) + b")" if params else b"NIL",
              quote(part.get("Content-ID")), quote(part.get("Content-Description")),
              quote((part.get("Content-Transfer-Encoding") or "7BIT").upper()), b"%d" % size]
    if maintype == "text":
        fields.append(b"%d" % lines)
    return b"(" + b" ".join(fields) + b")"


# -- SEARCH ---------------------------------------------------------------------------------

Predicate = Callable[[int, Entry], bool]
_FLAG_KEYS = {"SEEN": "\\Seen", "ANSWERED": "\\Answered", "FLAGGED": "\\Flagged",
              "DELETED": "\\Deleted", "DRAFT": "\\Draft"}


def search_predicate(args: list[Token], largest_seq: int, largest_uid: int) -> Predicate:
    """AND of the keys; supports flags, NOT, OR, UID/sequence sets, header and size keys."""
    args = list(args)
    if args and text(args[0]).upper() == "CHARSET":
        del args[:2]
    preds = []
    while args:
        preds.append(_search_key(args, largest_seq, largest_uid))
    return lambda seq, e: all(p(seq, e) for p in preds)


def _search_key(args: list[Token], ls: int, lu: int) -> Predicate:
    tok = args.pop(0)
    if isinstance(tok, list):
        inner = search_predicate(tok, ls, lu)
        return inner
    key = text(tok).upper()
    if key == "ALL":
        return lambda seq, e: True
    if key in _FLAG_KEYS:
        return lambda seq, e: _FLAG_KEYS[key] in e.flags
    if key.startswith("UN") and key[2:] in _FLAG_KEYS:
        return lambda seq, e: _FLAG_KEYS[key[2:]] not in e.flags
    if key in ("NEW", "RECENT"):
        return lambda seq, e: False
    if key == "OLD":
        return lambda seq, e: True
    if key == "NOT":
        p = _search_key(args, ls, lu)
        return lambda seq, e: not p(seq, e)
    if key == "OR":
        a, b = _search_key(args, ls, lu), _search_key(args, ls, lu)
        return lambda seq, e: a(seq, e) or b(seq, e)
    if key == "UID":
        ranges = parse_seqset(text(args.pop(0)), lu)
        return lambda seq, e: in_set(e.uid, ranges)
    if key in ("LARGER", "SMALLER"):
        n = int(text(args.pop(0)))
        return (lambda seq, e: e.message.size > n) if key == "LARGER" else \
            (lambda seq, e: e.message.size < n)
    if key in ("FROM", "TO", "CC", "BCC", "SUBJECT", "HEADER"):
        name = text(args.pop(0)) if key == "HEADER" else key
        needle = text(args.pop(0)).lower().encode()
        return lambda seq, e: needle in header_fields(
            e.message.header, f"HEADER.FIELDS ({name.upper()})").lower()
    if key in ("BODY", "TEXT"):
        needle = text(args.pop(0)).lower().encode()
        return lambda seq, e: needle in e.message.read(
            0 if key == "TEXT" else e.message.header_size, 1 << 24).lower()
    if key[:1].isdigit() or key[:1] == "*":
        ranges = parse_seqset(key, ls)
        return lambda seq, e: in_set(seq, ranges)
    raise ParseError(f"unsupported search key {key}")
