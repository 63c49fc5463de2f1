"""Checks that look at several answers at once: Auth-Wait, SMTP codes, the attempt cut-off,
odd logins, the burst, latency, header size, HTTP status codes and the reply format."""

from __future__ import annotations

import difflib
import ipaddress
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from postern.proxy.auth_http import RESPONSE_LIMIT

from .cases import Case, Probe, Sent, Settings
from .judge import FAIL, PASS, WARN, Outcome, Row, worst
from .wire import Exchange, explain_invalid, header_fields, show, status_line

NEAR_LIMIT = 900  # header blocks this big leave little room for a longer error text
ENHANCED_CODE = re.compile(rb"[45]\d\d [245]\.\d{1,3}\.\d{1,3}")
REPLY_CODE = re.compile(rb"[45]\d\d(?: |$)")
KNOWN = ("Auth-Status", "Auth-Server", "Auth-Port", "Auth-User", "Auth-Pass", "Auth-Wait",
         "Auth-Error-Code")


@dataclass
class Answer:
    """One case as asked and as nginx read the (last) answer."""

    case: Case
    sent: Sent
    ex: Exchange
    out: Outcome
    earlier: list[Exchange] = field(default_factory=list)  # answers to WAIT, followed


def _last(ex: Exchange, name: bytes) -> bytes | None:
    value = None
    for n, v in header_fields(ex.raw):
        if n.lower() == name:
            value = v
    return value


def auth_wait_row(a: Answer, first: Answer | None = None) -> Row:
    """From the answer to a wrong password: will nginx keep the client connected?

    ``first``: the first protocol's answer; when this one reads differently and has no wait
    where that one had, the earlier failures most likely locked the account.
    """
    proto = a.case.protocol
    raw = _last(a.ex, b"auth-wait")
    row = Row(f"{proto}.auth-wait", f"{proto} Auth-Wait on failure", PASS, "", a.out,
              [(a.sent, a.ex)])
    before = first.out.response if first is not None and first is not a else None
    now = a.out.response
    if before is not None and now is not None and before.wait and not now.wait \
            and now.error != before.error:
        row.reason = (f'not judged: the refusal now reads "{show(now.error or b"")}" without '
                      f'the Auth-Wait of "{show(before.error or b"")}": the failures so far '
                      "have locked the account, it seems")
        return row
    # nginx reads Auth-Wait with ngx_atoi: anything but digits is ignored, and a failure
    # without a positive wait ends the session. Missing, 0 and "1.5" all mean the same.
    if raw is not None and raw.isdigit() and int(raw) > 0:
        row.reason = (f"Auth-Wait: {int(raw)}: nginx answers after {int(raw)} s and the "
                      "session continues")
        return row
    row.verdict = WARN
    if raw is None or raw == b"":
        what = "no Auth-Wait on failure"
    elif raw.isdigit():
        what = f"Auth-Wait: {show(raw)} on failure (0 means no wait)"
    else:
        what = (f'Auth-Wait "{show(raw)}" is not a whole number of seconds, so nginx ignores '
                "it")
    row.reason = (f"{what}: nginx sends the error line and closes the connection, so a client "
                  "that mistyped must reconnect (fine if intended)")
    return row


def error_code_row(a: Answer) -> Row:
    resp = a.out.response
    assert resp is not None
    row = Row("smtp.error-code", "smtp Auth-Error-Code", PASS, "", a.out, [(a.sent, a.ex)])
    code = resp.error_code
    if code is None:
        row.reason = "no Auth-Error-Code: nginx uses 535 5.7.0"
    elif not REPLY_CODE.match(code):
        row.verdict = FAIL
        row.reason = (f'Auth-Error-Code "{show(code)}" does not start with an SMTP failure '
                      "reply code (4xx or 5xx): nginx writes it as is, so the client sees no "
                      "valid failure reply")
    elif not ENHANCED_CODE.match(code):
        row.reason = (f'Auth-Error-Code "{show(code)}": a valid SMTP reply code without an '
                      "enhanced status (RFC 3463 5.7.8 is usual; nginx's default is 535 5.7.0)")
    elif not ENHANCED_CODE.fullmatch(code):
        row.verdict = WARN
        row.reason = (f'Auth-Error-Code "{show(code)}" has text after the enhanced status; '
                      "nginx appends the Auth-Status text after it anyway")
    elif code[:1] != code[4:5]:
        row.verdict = WARN
        row.reason = (f'Auth-Error-Code "{show(code)}": the enhanced status class should '
                      "match the reply code (4xx with 4.x.x, 5xx with 5.x.x; RFC 3463)")
    else:
        row.reason = f'Auth-Error-Code "{show(code)}"'
    return row


def attempts_row(answers: Sequence[Answer]) -> Row:
    """Attempts 1..N with a wrong password: the docs want Auth-Wait to stop after 10-20."""
    proto = answers[0].case.protocol
    row = Row(f"{proto}.attempts", f"{proto} attempts 1-{len(answers)}, wrong password", PASS,
              "", None, [(a.sent, a.ex) for a in answers])
    for a in answers:
        if a.out.kind in ("error", "ok"):
            row.verdict, row.client = FAIL, a.out
            if a.out.kind == "ok":
                row.reason = f"accepted a wrong password at attempt {a.case.attempt}"
            else:
                row.reason = f"attempt {a.case.attempt}: {a.out.nginx_says()}"
            return row
    texts = [a.out.response.error if a.out.response else None for a in answers]
    changed = next((n for n, t in enumerate(texts, 1) if t != texts[0]), None)
    note = (f'; from attempt {changed} the refusal reads "{show(texts[changed - 1] or b"")}" '
            "(an account lockout?)" if changed else "")
    row = _attempts_verdict(row, answers)
    row.reason += note
    return row


def _attempts_verdict(row: Row, answers: Sequence[Answer]) -> Row:
    waits = [a.out.response.wait if a.out.response else 0 for a in answers]
    with_wait = [n for n, w in enumerate(waits, 1) if w > 0]
    row.client = answers[-1].out
    if not with_wait:
        row.reason = "no Auth-Wait at any attempt: every failure closes the connection"
        return row
    last, n = with_wait[-1], len(answers)
    pattern = _runs(waits[:last])
    if last == n:
        row.verdict = FAIL if n > 20 else WARN
        row.reason = (f"Auth-Wait still sent at attempt {n} ({pattern}): nginx keeps memory for "
                      "every attempt until the session ends, so the docs ask the server to stop "
                      "sending Auth-Wait after 10-20 attempts (Auth-Login-Attempt)")
        return row
    row.client = answers[last].out
    which = "attempt 1" if last == 1 else f"attempts 1-{last}"
    row.reason = (f"Auth-Wait for {which} ({pattern}), none from attempt {last + 1}: "
                  "nginx closes the session then")
    if last > 20:
        row.verdict = WARN
        row.reason += "; the docs recommend stopping after 10-20 attempts"
    return row


def _runs(waits: list[int]) -> str:
    out: list[list[int]] = []
    for w in waits:
        if out and out[-1][0] == w:
            out[-1][1] += 1
        else:
            out.append([w, 1])
    return ", ".join(f"{w} s x{k}" if k > 1 else f"{w} s" for w, k in out)


def probe_row(probe: Probe, answers: Sequence[Answer], anyone: bool = False) -> Row:
    """An odd login or a wrong password: refused (or rewritten), never accepted or broken.

    ``anyone``: the server already accepted an unknown user, so an acceptance here is that
    same bug, not a decoding one.
    """
    row = Row(probe.id, probe.title, PASS, "", answers[0].out,
              [(a.sent, a.ex) for a in answers])
    judged = [(a, *_judge_probe(probe, a, anyone)) for a in answers]
    row.verdict = worst(*(v for _, v, _ in judged))
    bad = [(a, v, r) for a, v, r in judged if v == row.verdict]
    row.client = bad[0][0].out if row.verdict != PASS else None  # a refusal: no news
    reasons = {r for _, _, r in bad}
    sent_as = _sent_as(answers[0].sent.request, probe)
    if len(reasons) == 1:
        protos = ", ".join(a.case.protocol for a, _, _ in bad)
        row.reason = f"{reasons.pop()} ({protos}; sent as {sent_as})"
    else:
        row.reason = "; ".join(f"{a.case.protocol}: {r}" for a, _, r in bad) + \
            f" (sent as {sent_as})"
    return row


def _judge_probe(probe: Probe, a: Answer, anyone: bool) -> tuple[str, str]:
    out, login = a.out, a.case.user
    if out.kind == "error":
        return FAIL, f"the server broke on this input: {out.nginx_says()}"
    if out.kind == "wait":
        return WARN, "answered WAIT"
    if out.kind == "refused":
        return PASS, "refused"
    resp = out.response
    assert resp is not None
    if probe.id == "login.trailing-space":
        if resp.user is not None and resp.user != login:
            return PASS, f'accepted and rewritten to "{show(resp.user)}" (Auth-User)'
        return WARN, (f'accepted "{show(login)}" with its trailing space but sent no Auth-User: '
                      "nginx logs in to the backend with the space (POP3 USER keeps it)")
    status = status_line(a.ex.raw) or b""
    crashed = b" 5" in status[:13]
    note = (f" (with {show(status)}: the server's error handler says Auth-Status: OK)"
            if crashed else "")
    if anyone and probe.id.startswith("login.") and probe.id != "login.unknown":
        return FAIL, f"accepted, as it accepts any login (see unknown user){note}"
    what = "accepted" if probe.id.startswith("login.") else "accepted a wrong password"
    if probe.id.startswith("login."):
        what = f'accepted the login "{show(login[:60])}" with the right password'
    return FAIL, f"{what}: {probe.story}{note}"


def _sent_as(request: bytes, probe: Probe) -> str:
    if probe.id.startswith("cred.") and probe.id != "cred.sql-comment":
        return "Auth-Pass: ***"
    return _auth_user_line(request)


def _auth_user_line(request: bytes) -> str:
    for line in request.split(b"\r\n"):
        if line.startswith(b"Auth-User:"):
            return show(line[:80]) + ("..." if len(line) > 80 else "")
    return "?"


def burst_row(answers: Sequence[Answer], reference: Outcome | None) -> Row:
    n = len(answers)
    slowest = max(a.ex.elapsed for a in answers)
    row = Row("burst", f"burst of {n} concurrent requests", PASS, "", answers[0].out,
              [(a.sent, a.ex) for a in answers])
    broken = [a for a in answers if a.out.kind == "error"]
    if broken:
        row.verdict, row.client = FAIL, broken[0].out
        row.reason = (f"{len(broken)} of {n} concurrent requests failed; first: "
                      f"{broken[0].out.nginx_says()}")
        return row
    expected = reference.kind if reference else "ok"
    odd = [a for a in answers if a.out.kind != expected]
    if odd:
        row.verdict, row.client = WARN, odd[0].out
        row.reason = (f"{len(odd)} of {n} answered differently from the same request alone "
                      f"({odd[0].out.kind} instead of {expected}): rate limiting?")
        return row
    row.reason = f"all {n} answered ({expected}); slowest {_ms(slowest)}"
    return row


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def latency_row(answers: Sequence[Answer], s: Settings) -> Row:
    times = [(a.ex.elapsed, a) for a in answers if not a.ex.connect_failed]
    row = Row("latency", "latency against auth_http_timeout", PASS, "")
    if not times:
        row.reason = "no answers"
        return row
    late = [a for _, a in times if a.ex.timed_out]
    slowest, who = max(times, key=lambda t: t[0])
    median = statistics.median(t for t, _ in times)
    limit = f"auth_http_timeout {s.timeout:g} s"
    if late:
        row.verdict, row.client = FAIL, late[0].out
        row.reason = (f"{len(late)} of {len(times)} answers took longer than {limit} "
                      f"(first: {late[0].case.title}): nginx gives up and the client gets "
                      "the internal-error line")
    elif median > s.timeout / 2:
        row.verdict, row.client = FAIL, who.out
        row.reason = (f"the median answer takes {_ms(median)}, over half of {limit} (slowest "
                      f"{_ms(slowest)}, {who.case.title}): any extra load and nginx gives up")
    elif slowest > s.timeout / 10:
        row.verdict, row.client = WARN, who.out
        row.reason = (f"slowest answer {_ms(slowest)} ({who.case.title}) is over 10% of "
                      f"{limit}; median {_ms(median)}")
    else:
        row.reason = f"slowest {_ms(slowest)}, median {_ms(median)} of {len(times)} ({limit})"
    return row


def header_size_row(answers: Sequence[Answer]) -> Row:
    row = Row("header-size", "header block within 1024 bytes", PASS, "")
    over = [a for a in answers if a.ex.full]
    if over:
        a = over[0]
        size = a.ex.header_size
        row.verdict, row.client = FAIL, a.out
        row.reason = (f"{len(over)} answers had a header block over {RESPONSE_LIMIT} bytes "
                      f"(first: {a.case.title}, {size or 'more than 1024'} bytes): nginx "
                      "fails the login with the internal-error line")
        return row
    sizes = [(a.ex.header_size or 0, a) for a in answers if a.ex.response is not None]
    if not sizes:
        row.reason = "no complete answers"
        return row
    biggest, who = max(sizes, key=lambda t: t[0])
    row.reason = f"largest header block {biggest} bytes ({who.case.title})"
    if biggest > NEAR_LIMIT:
        row.verdict = WARN
        row.reason += f": close to nginx's {RESPONSE_LIMIT}-byte limit"
    return row


def http_status_row(answers: Sequence[Answer]) -> Row:
    """nginx ignores the HTTP status entirely (§10.3); say where that changes the meaning."""
    row = Row("http-status", "HTTP status codes", PASS, "")
    codes: dict[bytes, int] = {}
    notes: list[tuple[str, Outcome]] = []  # all warnings
    for a in answers:
        resp = a.ex.response
        if resp is None:
            continue
        line = status_line(a.ex.raw)
        title = a.case.title
        if line is None:
            text = (f"{title}: no HTTP status line; nginx reads headers from the first byte, "
                    "HTTP tools in between will not")
            notes.append((text, a.out))
            continue
        code = (line.split(b" ") + [b""])[1]
        codes[code] = codes.get(code, 0) + 1
        if code == b"200":
            continue
        if not any(n.lower() == b"auth-status" for n, _ in header_fields(a.ex.raw)):
            text = (f"{title}: HTTP {show(code)} without Auth-Status; nginx ignores the status "
                    "code and reads the reply as a success")
            notes.append((text, a.out))
        elif a.out.kind == "ok":
            text = (f"{title}: HTTP {show(code)} with a success; nginx ignores the status code, "
                    "so this logs the user in")
            notes.append((text, a.out))
    summary = ", ".join(f"{show(c)} x{k}" for c, k in sorted(codes.items()))
    if notes:
        row.verdict, row.client = WARN, notes[0][1]
        row.reason = f"{notes[0][0]} ({len(notes)} answers like this)"
    elif codes.keys() - {b"200"}:
        row.reason = f"{summary}; nginx ignores the code and Auth-Status decides, as intended"
    else:
        row.reason = f"status codes: {summary or 'none'}"
    return row


def reply_format_row(answers: Sequence[Answer]) -> Row:
    row = Row("reply-format", "reply format as nginx parses it", PASS, "")
    problems: list[tuple[str, str, Outcome]] = []
    bare_lf = False
    for a in answers:
        ex = a.ex
        if ex.response is None:
            if not (ex.timed_out or ex.connect_failed or ex.full or ex.eof):
                why = explain_invalid(ex.raw) or ex.error or "unparsable"
                problems.append((FAIL, f"{a.case.title}: {why}", a.out))
            continue
        fields = header_fields(ex.raw)
        end = ex.raw.find(b"\n")
        bare_lf |= end > 0 and ex.raw[end - 1] != 0x0D
        names = [n.decode("latin-1") for n, _ in fields]
        lowered = [n.lower() for n in names]
        for name in KNOWN:
            times = lowered.count(name.lower())
            if times > 1:
                text = (f"{a.case.title}: {name} sent {times} times; nginx uses the last one "
                        "(and an earlier failure status is not undone by a later OK)")
                problems.append((WARN, text, a.out))
        for name in names:
            if name.lower() in (k.lower() for k in KNOWN) or "auth" not in name.lower():
                continue
            bare = name[name.lower().index("auth"):]  # X-Auth-Status: meant Auth-Status
            near = difflib.get_close_matches(bare, KNOWN, n=1, cutoff=0.7)
            if near:
                text = f'{a.case.title}: nginx ignores "{name}" (meant "{near[0]}"?)'
                problems.append((WARN, text, a.out))
    if problems:
        row.verdict = worst(*(v for v, _, _ in problems))
        first = next(p for p in problems if p[0] == row.verdict)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        row.reason, row.client = first[1] + more, first[2]
    else:
        row.reason = "every answer parses the way nginx reads it"
        if bare_lf:
            row.reason += " (bare LF line ends: nginx accepts them)"
    return row


# Ports by well-known use (IANA); a backend on another protocol's port is a routing mistake,
# and nginx's mail proxy speaks plain text to backends, never TLS.
WELL_KNOWN = {"imap": {143}, "pop3": {110}, "smtp": {25, 587}}
TLS_PORTS = {993: "IMAPS", 995: "POP3S", 465: "SMTPS"}


def routing_row(answers: Sequence[Answer]) -> Row | None:
    """The backends the right password got, protocol by protocol (copy-paste bugs)."""
    got = {a.case.protocol: a for a in answers if a.out.kind == "ok" and a.out.backend}
    if not got:
        return None
    row = Row("routing", "backend per protocol", PASS, "", None,
              [(a.sent, a.ex) for a in got.values()])
    where = {p: a.out.backend for p, a in got.items()}
    listing = ", ".join(f"{p} {h}:{port}" for p, (h, port) in where.items())
    for proto, (host, port) in where.items():
        if ipaddress.ip_address(host).is_unspecified:
            row.verdict, row.client = FAIL, got[proto].out
            row.reason = (f"{proto} is sent to {host}, the any-address of a listen line, "
                          f"not a backend to connect to ({listing})")
            return row
        if port in TLS_PORTS:
            row.verdict, row.client = FAIL, got[proto].out
            row.reason = (f"{proto} is sent to port {port} ({TLS_PORTS[port]}, TLS from the "
                          f"first byte): nginx speaks plain {proto} to backends ({listing})")
            return row
        other = [p for p, ports in WELL_KNOWN.items() if port in ports and p != proto]
        if other and port not in WELL_KNOWN[proto]:
            row.verdict, row.client = FAIL, got[proto].out
            row.reason = (f"{proto} is sent to port {port}, the {other[0]} port: nginx would "
                          f"speak {proto} to a {other[0]} server ({listing})")
            return row
    if len(where) >= 3 and len(set(where.values())) == 1:
        row.verdict = WARN
        row.reason = (f"IMAP, POP3 and SMTP all get the same backend ({listing}): one server "
                      "rarely speaks all three on one port; a copy-paste routing mistake?")
        return row
    shared = [(p, q) for i, p in enumerate(where) for q in list(where)[i + 1:]
              if where[p] == where[q]]
    if shared:
        p, q = shared[0]
        row.verdict = WARN
        row.reason = (f"{p} and {q} get the same backend ({listing}): one port speaks one "
                      "protocol; a copy-paste routing mistake?")
        return row
    row.reason = listing
    return row


def lockout_row(before: Answer, after: Answer, failures: int) -> Row:
    """The right password again, after every wrong one: a lockout is a policy, not a bug."""
    row = Row("lockout", "right password after the failures", PASS, "", after.out,
              [(after.sent, after.ex)])
    if after.out.kind == "ok":
        row.reason = (f"still accepted after {failures} failed logins for this user: no "
                      "account lockout (Auth-Wait and attempts are the only brake)")
    elif after.out.kind == "refused" and before.out.kind == "ok":
        resp = after.out.response
        text = show(resp.error or b"") if resp is not None else ""
        row.reason = (f'refused after {failures} failed logins ("{text}"): the server locks '
                      "the account, a defensible policy; the account may now be locked")
    elif after.out.kind == "error":
        row.verdict = FAIL
        row.reason = f"after {failures} failed logins: {after.out.nginx_says()}"
    else:
        row.reason = f"{_describe_kind(after.out)} after {failures} failed logins"
    return row


def _describe_kind(out: Outcome) -> str:
    return {"ok": "accepted", "refused": "refused", "wait": "WAIT"}.get(out.kind, out.kind)


def side_effects_row(failures: int, user: bytes) -> Row:
    return Row("side-effects", "what this run did to the account", PASS,
               f'{failures} failed logins were sent for "{show(user)}" (wrong passwords and '
               "odd credentials, after every right-password check); a server that counts "
               "failures may have locked or delayed this account")
