"""The order of the checks, chosen for a real directory with a real account in it.

1. The first answer says whether this is an auth_http server at all (a web page, TLS, a mail
   server's greeting are said once, and the run stops there).
2. Everything the right password must pass: every protocol and method, the burst, the odd
   logins (other users), case files. Nothing has failed for the account yet, so a server
   with an account lockout answers these truthfully.
3. Everything that must be refused for the account: the first protocol's wrong password and
   the adversarial credentials on it (the likeliest bypasses first, before a lockout can hide
   them), then the other wrong passwords and digests and the other protocols, then one bounded
   series of wrong-password attempts (one protocol).
4. The right password once more: a refusal now is recognised as a lockout, not a fault.

Cases are asked one at a time (so latencies are the server's, not the queue's), except the
burst. A WAIT answer is followed as nginx follows it, a few rounds at most.
"""

from __future__ import annotations

import asyncio
import re

from . import extensions, summary
from .cases import (
    Case,
    Settings,
    attempt_cases,
    build,
    probe_cases,
    probes,
    protocol_cases,
    relay_case,
)
from .judge import FAIL, WARN, Row, is_failure, judge_case, outcome
from .summary import Answer
from .wire import Exchange, exchange, header_block_size, header_fields, peer_name, show, status_line

MAX_TIMEOUTS = 3  # past this many, the server is too slow to finish the run in useful time
FOLLOW_ROUNDS = 3
FOLLOW_LONGEST = 5  # seconds of Auth-Wait we are willing to sleep when following WAIT


class Unreachable(Exception):
    pass


class TooSlow(Exception):
    pass


class WrongEndpoint(Exception):
    def __init__(self, row: Row) -> None:
        super().__init__(row.reason)
        self.row = row


class Runner:
    def __init__(self, s: Settings) -> None:
        self.s = s
        self.peer = peer_name(s.conf)
        self.answers: list[Answer] = []  # every exchange, for the summaries
        self.timeouts = 0
        self.failures = 0  # requests the account's owner would count as failed logins

    async def ask(self, case: Case) -> Answer:
        """One case, following WAIT the way nginx does (ngx_mail_auth_http_process_headers)."""
        s, sent = self.s, build(case, self.s)
        waiting, earlier = False, []
        if case.expect == "refused" and case.user == s.user:
            self.failures += 1
        for round_ in range(FOLLOW_ROUNDS + 1):
            ex = await exchange(s.conf, sent.request, s.timeout, s.tls_target)
            self._count(ex)
            if ex.timed_out:
                self.timeouts += 1
                if self.timeouts >= MAX_TIMEOUTS:  # recorded first, so the counts agree
                    self.answers.append(Answer(case, sent, ex, outcome(case, ex, self.peer, s)))
                    raise TooSlow
            if ex.error is not None:
                break
            resp = ex.response
            assert resp is not None
            waiting = waiting or resp.wait_status
            last_round = round_ == FOLLOW_ROUNDS or resp.wait > FOLLOW_LONGEST
            if is_failure(case.protocol, resp):
                if not (waiting and resp.wait and not last_round):
                    break
            elif not waiting or last_round:
                break
            if resp.wait:
                await asyncio.sleep(resp.wait)
                waiting = False
            self.answers.append(Answer(case, sent, ex, outcome(case, ex, self.peer, s, True)))
            earlier.append(ex)
        answer = Answer(case, sent, ex, outcome(case, ex, self.peer, s, waiting), earlier)
        self.answers.append(answer)
        return answer

    def _count(self, ex: Exchange) -> None:
        if ex.connect_failed and not self.answers:
            raise Unreachable(ex.error)
        if not self.answers:
            row = endpoint_row(ex)
            if row is not None:
                raise WrongEndpoint(row)

    async def row(self, case: Case) -> tuple[Row, Answer]:
        a = await self.ask(case)
        verdict, reason = judge_case(case, a.out, a.sent)
        exchanges = [(a.sent, ex) for ex in [*a.earlier, a.ex]]
        return Row(case.id, case.title, verdict, reason, a.out, exchanges), a


HEADER_LINE = re.compile(rb"[A-Za-z0-9][A-Za-z0-9-]*:")
TLS_RECORDS = (b"\x15\x03", b"\x16\x03")  # a TLS alert or handshake record, version 3.x


def endpoint_row(ex: Exchange) -> Row | None:
    """The first answer, when it shows the URL is not an auth_http server at all."""
    raw = ex.raw
    if not raw:
        return None
    title = "an auth_http server at this URL"
    if raw[:2] in TLS_RECORDS:
        return Row("endpoint", title, FAIL, "this speaks TLS; nginx's auth_http is plain HTTP "
                   "(point check-auth, and nginx, at the server's plain-HTTP port; Postern "
                   "takes it as an https:// URL)")
    line = status_line(raw)
    first = raw.split(b"\n", 1)[0]
    if line is None and b"auth" not in raw.lower() and not HEADER_LINE.match(first):
        return Row("endpoint", title, FAIL, f'this is not an auth_http server: it answers '
                   f'"{show(first[:60])}", not HTTP (a mail or other server on this port?)')
    size = header_block_size(raw)
    if line is None or size is None or b"auth" in raw[:size].lower():
        return None  # an incomplete or auth-like reply: judged as usual
    names = [n.decode("latin-1") for n, _ in header_fields(raw)]
    body = raw.partition(b"\r\n\r\n")[2] or raw.partition(b"\n\n")[2]
    reason = (f"this is not an auth_http server: it answers {show(line)} with no Auth-* header "
              f"(headers: {', '.join(names[:6]) or 'none'}), so nginx reads every reply as a "
              "success without a backend")
    if b"auth-status" in body.lower():
        reason += "; the body carries Auth-* lines, but nginx reads headers only"
    elif b"<" in body[:200] or b"html" in raw.lower():
        reason += "; it sends a web page: is the URL's path right?"
    return Row("endpoint", title, FAIL, reason)


async def run(s: Settings) -> list[Row]:
    r = Runner(s)
    rows: list[Row] = []
    try:
        await _checks(r, rows)
    except Unreachable as err:
        return [Row("connect", "auth server reachable", FAIL, f"nginx: {err}")]
    except WrongEndpoint as err:
        return [err.row]
    except TooSlow:
        silent = not any(a.ex.raw for a in r.answers)
        why = (f"the server accepts connections but sent not a byte to {MAX_TIMEOUTS} requests "
               f"within auth_http_timeout ({s.timeout:g} s)" if silent else
               f"{MAX_TIMEOUTS} answers took longer than auth_http_timeout ({s.timeout:g} s)")
        rows.append(Row("aborted", "run stopped", FAIL,
                        f"{why}; the remaining checks were not run"))
    except asyncio.CancelledError:  # Ctrl-C: report what was checked
        rows.append(Row("interrupted", "run interrupted", WARN,
                        "interrupted: the remaining checks were not run"))
    if r.failures and s.user is not None and not any(row.id == "side-effects" for row in rows):
        rows.append(summary.side_effects_row(r.failures, s.user))  # a run cut short
    answers = r.answers
    rows.append(summary.latency_row(answers, s))
    if any(a.ex.response is not None or a.ex.full for a in answers):
        rows.append(summary.header_size_row(answers))
    if any(a.ex.response is not None for a in answers):
        rows.append(summary.http_status_row(answers))
    fmt = summary.reply_format_row(answers)
    if fmt.verdict != "pass" or any(a.ex.response is not None for a in answers):
        rows.append(fmt)
    return rows


def planned_failures(s: Settings) -> int:
    """How many failed logins for --user a whole run sends (for the announcement)."""
    if s.user is None:
        return 0
    per_protocol = sum(c.expect == "refused" and c.user == s.user
                       for p in s.protocols for c in protocol_cases(s, p))
    creds = sum(p.id.startswith("cred.") and p.user == s.user for p in probes(s))
    return per_protocol + creds * len(s.protocols) + s.attempts - 1


async def _checks(r: Runner, rows: list[Row]) -> None:
    s = r.s
    if s.user is None:
        for case in s.cases:
            rows.append((await r.row(case))[0])
        return
    # 2. what the right password (or another login) must pass
    wrong: list[Case] = []
    right: list[Answer] = []
    reference = None
    for proto in s.protocols:
        for case in protocol_cases(s, proto):
            if case.expect == "refused":
                wrong.append(case)
                continue
            row, a = await r.row(case)
            rows.append(row)
            if case.id == f"{proto}.plain.right":
                right.append(a)
                reference = reference or a
    routing = summary.routing_row(right)
    if routing is not None:
        rows.append(routing)
    if s.burst > 0 and reference is not None:
        rows.append(await _burst(r, reference))
    if reference is not None:  # Postern's auth_http client extensions (README: Beyond nginx)
        rows += await _extensions(r, reference)
    for case in s.cases:  # before any failure: a lockout by client address stays out
        rows.append((await r.row(case))[0])
    found = probes(s)
    anyone = False
    for probe in (p for p in found if p.id.startswith("login.")):
        answers = [await r.ask(c) for c in probe_cases(s, probe)]
        rows.append(summary.probe_row(probe, answers, anyone))
        anyone = anyone or (probe.id == "login.unknown" and
                            any(a.out.kind == "ok" for a in answers))
    # 3. what must be refused for the account, repeated failures last
    if "none" in s.methods and "smtp" in s.protocols:
        wrong.append(relay_case(s))
    # The first protocol's wrong password, then every adversarial credential on it, then the
    # rest: an account lockout that starts after a few failures hides as little as it can.
    first = s.protocols[0]
    state: dict[str, Answer] = {}
    await _wrong(r, rows, [c for c in wrong if c.id == f"{first}.plain.wrong"], state)
    cred = [p for p in found if p.id.startswith("cred.")]
    answers: dict[str, list[Answer]] = {p.id: [] for p in cred}
    for probe in cred:
        answers[probe.id] += [await r.ask(c) for c in probe_cases(s, probe) if c.protocol == first]
    await _wrong(r, rows, [c for c in wrong if c.id != f"{first}.plain.wrong"], state)
    for probe in cred:
        answers[probe.id] += [await r.ask(c) for c in probe_cases(s, probe) if c.protocol != first]
        rows.append(summary.probe_row(probe, answers[probe.id]))
    first_wrong = state.get("first")
    if first_wrong is not None:
        proto = first_wrong.case.protocol
        rows.append(summary.attempts_row(
            [first_wrong] + [await r.ask(c) for c in attempt_cases(s, proto)[1:]]))
    # 4. the right password again
    if reference is not None and reference.out.kind == "ok":
        after = await r.ask(reference.case)
        rows.append(summary.lockout_row(reference, after, r.failures))
    rows.append(summary.side_effects_row(r.failures, s.user))


async def _wrong(r: Runner, rows: list[Row], cases: list[Case], state: dict) -> None:
    """Cases that must be refused; the first refused wrong password says about Auth-Wait."""
    for case in cases:
        row, a = await r.row(case)
        rows.append(row)
        if case.id.endswith(".plain.wrong") and a.out.kind == "refused":
            first = state.setdefault("first", a)
            rows.append(summary.auth_wait_row(a, first))
            if case.protocol == "smtp":
                rows.append(summary.error_code_row(a))


async def _extensions(r: Runner, reference: Answer) -> list[Row]:
    s, found = r.s, []
    https = extensions.https_row(s, reference.ex.tls_version)
    if https is not None:
        found.append(https)
    if reference.out.kind == "ok":
        found.append(await extensions.keepalive_row(s, reference.sent.request))
    names = extensions.server_names_row(reference.ex.response)
    if names is not None:
        found.append(names)
    return found


def _waits(ex: Exchange) -> bool:
    return ex.response is not None and ex.response.wait_status


async def _burst(r: Runner, reference: Answer) -> Row:
    s, case = r.s, reference.case
    sents = [build(case, s) for _ in range(s.burst)]
    exchanges = await asyncio.gather(*(exchange(s.conf, x.request, s.timeout, s.tls_target)
                                       for x in sents))
    answers = [Answer(case, x, ex, outcome(case, ex, r.peer, s, _waits(ex)))
               for x, ex in zip(sents, exchanges, strict=True)]
    r.answers += answers
    return summary.burst_row(answers, reference.out)
