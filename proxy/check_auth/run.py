"""The order of the checks: per protocol, then odd logins, case files, the burst, summaries.

Cases are asked one at a time (so latencies are the server's, not the queue's), except the
burst. A WAIT answer is followed as nginx follows it, a few rounds at most.
"""

from __future__ import annotations

import asyncio

from . import summary
from .cases import Case, Settings, attempt_cases, build, login_cases, login_variants, protocol_cases
from .judge import FAIL, Row, is_failure, judge_case, outcome
from .summary import Answer
from .wire import Exchange, exchange, peer_name

MAX_TIMEOUTS = 3  # past this many, the server is too slow to finish the run in useful time
FOLLOW_ROUNDS = 3
FOLLOW_LONGEST = 5  # seconds of Auth-Wait we are willing to sleep when following WAIT


class Unreachable(Exception):
    pass


class TooSlow(Exception):
    pass


class Runner:
    def __init__(self, s: Settings) -> None:
        self.s = s
        self.peer = peer_name(s.conf)
        self.answers: list[Answer] = []  # every exchange, for the summaries
        self.timeouts = 0

    async def ask(self, case: Case) -> Answer:
        """One case, following WAIT the way nginx does (spec §10.4, proxy.session)."""
        s, sent = self.s, build(case, self.s)
        waiting, earlier = False, []
        for round_ in range(FOLLOW_ROUNDS + 1):
            ex = await exchange(s.conf, sent.request, s.timeout)
            self._count(ex)
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
        if ex.timed_out:
            self.timeouts += 1
            if self.timeouts >= MAX_TIMEOUTS:
                raise TooSlow

    async def row(self, case: Case) -> tuple[Row, Answer]:
        a = await self.ask(case)
        verdict, reason = judge_case(case, a.out, a.sent)
        exchanges = [(a.sent, ex) for ex in [*a.earlier, a.ex]]
        return Row(case.id, case.title, verdict, reason, a.out, exchanges), a


async def run(s: Settings) -> list[Row]:
    r = Runner(s)
    rows: list[Row] = []
    try:
        await _checks(r, rows)
    except Unreachable as err:
        return [Row("connect", "auth server reachable", FAIL, f"nginx: {err}")]
    except TooSlow:
        rows.append(Row("aborted", "run stopped", FAIL,
                        f"{MAX_TIMEOUTS} answers took longer than auth_http_timeout "
                        f"({s.timeout:g} s); the remaining checks were not run"))
    answers = r.answers
    rows += [summary.latency_row(answers, s), summary.header_size_row(answers),
             summary.http_status_row(answers), summary.reply_format_row(answers)]
    return rows


async def _checks(r: Runner, rows: list[Row]) -> None:
    s = r.s
    reference = None
    if s.user is not None:
        for proto in s.protocols:
            for case in protocol_cases(s, proto):
                row, a = await r.row(case)
                rows.append(row)
                if case.id == f"{proto}.plain.right" and reference is None:
                    reference = a
                if case.id == f"{proto}.plain.wrong" and a.out.kind == "refused":
                    rows.append(summary.auth_wait_row(a))
                    if proto == "smtp":
                        rows.append(summary.error_code_row(a))
                    rows.append(summary.attempts_row(
                        [a] + [await r.ask(c) for c in attempt_cases(s, proto)[1:]]))
        for variant, title, login in login_variants(s.user):
            answers = [await r.ask(c) for c in login_cases(s, variant, login)]
            rows.append(summary.login_row(variant, title, answers))
    for case in s.cases:
        rows.append((await r.row(case))[0])
    if s.burst > 0 and reference is not None:
        rows.append(await _burst(r, reference))


async def _burst(r: Runner, reference: Answer) -> Row:
    s, case = r.s, reference.case
    sents = [build(case, s) for _ in range(s.burst)]
    exchanges = await asyncio.gather(*(exchange(s.conf, x.request, s.timeout) for x in sents))
    answers = [Answer(case, x, ex, outcome(case, ex, r.peer, s)) for x, ex in
               zip(sents, exchanges, strict=True)]
    r.answers += answers
    return summary.burst_row(answers, reference.out)
