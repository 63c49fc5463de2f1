"""What the check-auth tests share: a correct mock auth server and ways to break it, and
running `postern check-auth` in-process with its JSON read back."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from postern.checkauth import main
from postern.fakes.auth import MockAuthServer, Reply, User

ROOT = Path(__file__).resolve().parents[1]
IMAP, POP3, SMTP = ("127.0.0.1", 1143), ("127.0.0.1", 1110), ("127.0.0.1", 1025)
BACKENDS = {"imap": IMAP, "pop3": POP3, "smtp": SMTP}
INTERNAL = "* BAD internal server error\r\n"


def correct_server(**kw) -> MockAuthServer:
    """The mock scripted to be right in every respect check-auth looks at."""
    srv = MockAuthServer({"alice": User("secret", backends=BACKENDS)}, backends=BACKENDS,
                         fail_wait=2, smtp_error_code="535 5.7.8", **kw)

    def decide(req):
        rcpt = req.header("Auth-SMTP-To") or ""
        if req.auth_method == "none" and "@" in rcpt and not rcpt.endswith("@example.com>"):
            return Reply.fail("Relaying denied", wait=2, error_code="554 5.7.1")
        if req.auth_method == "external" and req.header("Auth-SSL-Verify") != "SUCCESS":
            return Reply.fail(wait=2, error_code="535 5.7.8" if req.protocol == "smtp" else None)
        reply = srv.default_reply(req)
        if reply.status != "OK" and req.attempt > 10:
            reply.wait = None  # the docs: stop sending Auth-Wait after 10-20 attempts
        return reply

    srv.handler = decide
    return srv


def broken_server(tweak) -> MockAuthServer:
    """The correct server, except that ``tweak(request, right_reply)`` may change the reply
    (in place, or by returning another one)."""
    srv = correct_server()
    right = srv.handler

    def decide(req):
        reply = right(req)
        return tweak(req, reply) or reply

    srv.handler = decide
    return srv


def on_success(**changes):
    return lambda req, reply: replace(reply, **changes) if reply.status == "OK" else None


def on_failure(**changes):
    return lambda req, reply: replace(reply, **changes) if reply.status != "OK" else None


def always(**changes):
    return lambda req, reply: replace(reply, **changes)


def check(srv: MockAuthServer, capsys, *args: str, protocols: str = "imap",
          burst: str = "3") -> tuple[int, dict]:
    """Run check-auth with --json; returns (exit status, {check id: check})."""
    argv = [srv.url, "--user", "alice", "--password", "secret", "--protocol", protocols,
            "--burst", burst, "--json", *args]
    capsys.readouterr()
    status = main(argv)
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["exit_status"] == status
    return status, {c["id"]: c for c in doc["checks"]}


def failing(checks: dict) -> dict[str, str]:
    return {i: c["reason"] for i, c in checks.items() if c["verdict"] == "fail"}


def fails_with_internal_error(row: dict, *reasons: str) -> None:
    """`row` is a fail whose reason says each of `reasons`, and nginx would answer the client
    with its internal error."""
    assert row["verdict"] == "fail"
    for reason in reasons:
        assert reason in row["reason"]
    assert row["client"]["nginx_writes"] == INTERNAL


def verdicts(checks: dict) -> dict[str, str]:
    return {i: c["verdict"] for i, c in checks.items() if c["verdict"] != "pass"}


def right_password(req) -> bool:
    """The first right-password request (not the retry at attempt 3)."""
    return req.auth_method == "plain" and req.user == "alice" and req.password == "secret" \
        and req.attempt == 1




def check_url(url: str, capsys, *args: str) -> tuple[int, dict]:
    capsys.readouterr()
    status = main([url, "--user", "alice", "--password", "secret", "--json", *args])
    doc = json.loads(capsys.readouterr().out)
    return status, {c["id"]: c for c in doc["checks"]}


