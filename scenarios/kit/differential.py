"""`--differential`: each scenario against two targets in one run (Postern and nginx unless
two `--target`s are given), and a third check per scenario, `test_x[differential]`, that
compares what the client saw on each: the full transcript of every connection, in order.

Before comparing, what legitimately differs between two runs is normalised: the random
salts `<R.T@host>` (APOP greeting, CRAM-MD5), the base64 CRAM-MD5 challenge and the digest a
client computes from it, port numbers, and per-run values a scenario or a fake makes up
(ids, timestamps, UIDVALIDITY: tokens of 8+ characters with digits, mapped one to one). Equality is decided per direction (all client
bytes, all server bytes, whether the server closed), so that how replies were split into
TCP reads does not matter; the diff shown is the interleaved C:/S: transcript (difflib).
A connection closed with `expect_closed(lenient=True)`, or one that saw a reset, may have
lost its last replies to the RST nginx sends when it closes with unread input (docs/behaviour.md §5.1),
so there a shorter tail of server lines is accepted.

Scenarios marked `nginx_min` for a newer nginx than the one compared, or that are an
expected failure on one of the two targets, are expected to differ: their differential
check is then an expected failure, reported, not a failure.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import re
from dataclasses import dataclass

import pytest

SALT = re.compile(rb"<\d+\.\d+(?:\.\d+)?@[^>\s]*>")
B64_LINE = re.compile(rb"(\+ |334 )([A-Za-z0-9+/]+={0,2})")
HEX_DIGEST = re.compile(rb"[0-9a-fA-F]{32}")
APOP = re.compile(rb"(?i)(APOP \S+ )[0-9a-f]{32}")


@dataclass
class Side:
    """One target's view of one scenario."""

    target: str
    outcome: str
    connections: list[list[tuple[str, bytes]]]   # per connection: (who, bytes) in order
    closed: list[bool]
    lenient: list[bool]
    ports: set[int]


class TranscriptsDiffer(AssertionError):
    pass


def _b64(data: bytes) -> bytes | None:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


def normalise_line(who: str, line: bytes, ports: set[int]) -> bytes:
    line = SALT.sub(b"<R.T@host>", line)
    if who == "S":
        m = B64_LINE.fullmatch(line.rstrip(b"\r\n"))
        decoded = _b64(m.group(2)) if m else None
        if decoded is not None and SALT.fullmatch(decoded):
            line = m.group(1) + b"<CRAM-MD5 challenge>" + line[len(line.rstrip(b"\r\n")):]
    else:
        body = line.rstrip(b"\r\n")
        decoded = _b64(body) if body else None
        if decoded and b" " in decoded:
            user, _, digest = decoded.rpartition(b" ")
            if HEX_DIGEST.fullmatch(digest):
                line = b"<CRAM-MD5 response of " + user + b">" + line[len(body):]
        line = APOP.sub(rb"\1<digest>", line)
    for port in ports:
        line = re.sub(rb"(?<!\d)%d(?!\d)" % port, b"<port>", line)
    return line


def lines(events: list[tuple[str, bytes]], ports: set[int]) -> list[tuple[str, bytes]]:
    """Consecutive same-direction chunks joined, then cut into lines, normalised."""
    merged: list[list] = []
    for who, data in events:
        if merged and merged[-1][0] == who and not data.startswith(b"<TLS"):
            merged[-1][1] += data
        else:
            merged.append([who, data])
    out = []
    for who, data in merged:
        for line in data.splitlines(keepends=True) or [data]:
            out.append((who, normalise_line(who, line, ports)))
    return out


def _direction(rows: list[tuple[str, bytes]], who: str) -> list[bytes]:
    return b"".join(data for w, data in rows if w == who).splitlines(keepends=True)


TOKEN = re.compile(rb"[A-Za-z0-9]+|[^A-Za-z0-9]+")
VOLATILE = re.compile(rb"[0-9]{8,}|(?=[a-z0-9]*[0-9])(?=[a-z0-9]*[a-z])[a-z0-9]{8,}"
                      rb"|(?=[A-Z0-9]*[0-9])(?=[A-Z0-9]*[A-Z])[A-Z0-9]{8,}")


def _equivalent(xs: list[bytes], ys: list[bytes], mapping: dict) -> bool:
    """Equal, or different only in per-run values (ids, timestamps, UIDVALIDITY: 8+
    characters with digits) that map one to one throughout the connection."""
    if len(xs) != len(ys):
        return False
    for x, y in zip(xs, ys):
        if x == y:
            continue
        tx, ty = TOKEN.findall(x), TOKEN.findall(y)
        if len(tx) != len(ty):
            return False
        for a, b in zip(tx, ty):
            if a != b and not (VOLATILE.fullmatch(a) and VOLATILE.fullmatch(b)
                               and mapping.setdefault(a, b) == b):
                return False
    return True


def _same(a: list, b: list, closed: tuple[bool, bool], lenient: bool) -> bool:
    mapping: dict[bytes, bytes] = {}
    if not _equivalent(_direction(a, "C"), _direction(b, "C"), mapping):
        return False
    sa, sb = _direction(a, "S"), _direction(b, "S")
    if lenient:  # an RST may have eaten the tail of either side
        n = min(len(sa), len(sb))
        return _equivalent(sa[:n], sb[:n], mapping)
    return _equivalent(sa, sb, mapping) and closed[0] == closed[1]


MAX_DIFF_LINES = 300


def _show(who: str, data: bytes) -> str:
    text = repr(data)
    return f"{who}: {text[:200]}" + ("…" if len(text) > 200 else "")


def compare(a: Side, b: Side) -> str | None:
    """None when the two sides saw the same conversations, else the diff to show."""
    ports = a.ports | b.ports
    out, differ = [], False
    for i in range(max(len(a.connections), len(b.connections))):
        rows_a = lines(a.connections[i], ports) if i < len(a.connections) else []
        rows_b = lines(b.connections[i], ports) if i < len(b.connections) else []
        closed = (a.closed[i] if i < len(a.closed) else False,
                  b.closed[i] if i < len(b.closed) else False)
        lenient = (i < len(a.lenient) and a.lenient[i]) or (i < len(b.lenient) and b.lenient[i])
        if i < len(a.connections) and i < len(b.connections) and \
                _same(rows_a, rows_b, closed, lenient):
            continue
        differ = True
        text_a = [_show(w, d) for w, d in rows_a] + (["S: <closed>"] if closed[0] else [])
        text_b = [_show(w, d) for w, d in rows_b] + (["S: <closed>"] if closed[1] else [])
        out.append(f"connection {i + 1}" + (" (lenient close)" if lenient else "") + ":")
        diff = list(difflib.unified_diff(text_a, text_b, a.target, b.target, lineterm="", n=3))
        out += diff[:MAX_DIFF_LINES] + ([f"... {len(diff) - MAX_DIFF_LINES} more diff lines"]
                                        if len(diff) > MAX_DIFF_LINES else [])
    if not differ:
        return None
    head = f"transcripts differ: {a.target} {a.outcome}, {b.target} {b.outcome}"
    return "\n".join([head, *out])


class DifferentialItem(pytest.Item):
    """The comparison of one scenario's two runs; runs after both of them."""

    def __init__(self, *, pair: tuple[str, str], key: str, store: dict, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pair, self.key, self.store = pair, key, store

    def runtest(self) -> None:
        sides = self.store.get(self.key, {})
        missing = [t for t in self.pair if t not in sides]
        if missing:
            pytest.skip(f"differential: no run on {', '.join(missing)}")
        a, b = sides[self.pair[0]], sides[self.pair[1]]
        for side in (a, b):
            if side.outcome == "skipped":
                pytest.skip(f"differential: skipped on {side.target}")
        diff = compare(a, b)
        if diff is not None:
            for side in (a, b):
                if side.outcome == "xfailed":  # the scenario itself expects this target off
                    pytest.xfail(f"expected difference: the scenario is an expected failure "
                                 f"on {side.target}\n{diff}")
            raise TranscriptsDiffer(diff)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, TranscriptsDiffer):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, self.name


def pair_key(nodeid: str, target: str) -> str:
    """`test_x[imap-postern]` -> `test_x[imap]` (the scenario, target left out)."""
    base, _, params = nodeid.partition("[")
    rest = [p for p in params.rstrip("]").split("-") if p and p != target]
    return base + (f"[{'-'.join(rest)}]" if rest else "")


def add_items(items: list[pytest.Item], pair: tuple[str, str], store: dict,
              target_of, expected_difference) -> None:
    """Insert a DifferentialItem after the later of each scenario's two runs."""
    partners: dict[str, dict[str, int]] = {}
    for i, item in enumerate(items):
        target = target_of(item)
        if target in pair:
            partners.setdefault(pair_key(item.nodeid, target), {})[target] = i
    inserts = []
    for key, found in partners.items():
        if len(found) < 2:
            continue
        first = items[found[pair[0]]]
        name = key.rpartition("::")[2]
        base, _, params = name.partition("[")
        name = base + "[" + (params.rstrip("]") + "-" if params else "") + "differential]"
        item = DifferentialItem.from_parent(first.parent, name=name, pair=pair, key=key,
                                            store=store)
        item.user_properties = list(getattr(first, "user_properties", []))
        item.own_markers = [m for m in first.own_markers if m.name != "parametrize"]
        why = expected_difference(first)
        if why:
            item.add_marker(pytest.mark.xfail(reason=f"expected difference: {why}",
                                              strict=False))
        inserts.append((max(found.values()), item))
    for index, item in sorted(inserts, key=lambda x: -x[0]):
        items.insert(index + 1, item)
