"""`postern check-auth`: a correct mock passes, each kind of broken auth server is caught
with the right message, and an nginx `http {}` auth location is judged honestly."""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import replace
from pathlib import Path

import pytest
from postern.checkauth import auth_http_conf, main
from postern.checkauth.cases import (
    Case,
    CaseFileError,
    Settings,
    build,
    cram_md5_digest,
    load_cases,
)
from postern.checkauth.report import mask
from postern.checkauth.wire import explain_invalid, header_block_size
from postern.fakes.auth import MockAuthServer, Reply, User
from postern.proxy.auth_http import escape
from postern.scenarios.kit.real.common import LOOPBACK, free_ports, require
from postern.scenarios.kit.real.nginx import NginxInstance

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


# -- a correct server ----------------------------------------------------------------------------

def test_correct_server_passes_every_check_for_every_protocol(capsys):
    with correct_server() as srv:
        status, checks = check(srv, capsys, protocols="imap,pop3,smtp", burst="20")
    assert verdicts(checks) == {}
    assert status == 0
    expected = {"imap.plain.right", "imap.plain.wrong", "imap.auth-wait", "imap.attempts",
                "imap.cram-md5.right", "imap.cram-md5.wrong", "imap.external.no-cert",
                "pop3.apop.right", "pop3.apop.wrong", "smtp.error-code", "smtp.none",
                "login.space", "login.percent", "login.double-escape", "login.quotes",
                "login.utf-8", "login.control", "login.trailing-space", "burst", "latency",
                "header-size", "http-status", "reply-format"}
    assert expected <= checks.keys()
    wrong = checks["imap.plain.wrong"]["client"]
    assert wrong == {"outcome": "refused", "nginx_writes": "a1 NO Invalid login or password\r\n",
                     "delay": 2, "then": "the session goes on",
                     "nginx_log": 'client login failed: "Invalid login or password"'}
    assert checks["pop3.plain.wrong"]["client"]["nginx_writes"] == \
        "-ERR Invalid login or password\r\n"
    assert checks["smtp.plain.wrong"]["client"]["nginx_writes"] == \
        "535 5.7.8 Invalid login or password\r\n"
    assert checks["smtp.plain.right"]["client"]["nginx_writes"] == "235 2.0.0 OK\r\n"
    attempts = checks["imap.attempts"]
    assert "attempts 1-10 (2 s x10), none from attempt 11" in attempts["reason"]
    assert attempts["client"]["then"] == "nginx closes the connection"
    assert len(attempts["exchanges"]) == 25
    assert "sent as Auth-User: %2561lice" in checks["login.double-escape"]["reason"]


def test_requests_are_nginx_requests_and_digests_are_real(capsys):
    with correct_server() as srv:
        check(srv, capsys, protocols="imap,pop3,smtp", burst="0")
        requests = list(srv.requests)
    first = requests[0]
    assert first.raw == (
        b"GET /auth HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: alice\r\n"
        b"Auth-Pass: secret\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\n"
        b"Client-IP: 192.0.2.1\r\n\r\n")
    attempts = [int(r.header("Auth-Login-Attempt")) for r in requests
                if r.protocol == "imap" and r.password == "secret-wrong" and r.user == "alice"]
    assert attempts == list(range(1, 26))
    cram = next(r for r in requests if r.auth_method == "cram-md5" and r.attempt == 1)
    names = [n for n, _ in cram.headers]
    assert names[:7] == ["Host", "Auth-Method", "Auth-User", "Auth-Pass", "Auth-Salt",
                         "Auth-Protocol", "Auth-Login-Attempt"]
    none = next(r for r in requests if r.auth_method == "none")
    assert [n for n, _ in none.headers][-4:] == ["Client-Host", "Auth-SMTP-Helo",
                                                 "Auth-SMTP-From", "Auth-SMTP-To"]
    assert none.header("Auth-SMTP-To") == "RCPT TO:<alice>"
    control = next(r for r in requests if r.user.startswith("alice\x00"))
    assert control.header("Auth-User") == "alice%00%09%0D%0AAuth-Status:%20OK"


def test_table_output_and_exit_status(capsys):
    with correct_server() as srv:
        status = main([srv.url, "--user", "alice", "--password", "secret", "--protocol",
                       "pop3", "--burst", "2"])
    out = capsys.readouterr().out
    assert status == 0
    assert out.startswith(f"postern check-auth {srv.url}\n")
    assert "pop3 plain, wrong password" in out
    assert "client: after 2 s: -ERR Invalid login or password\\r\\n, then the session goes on" \
        in " ".join(out.split())
    assert out.rstrip().endswith("0 warn, 0 fail")


# -- broken servers, each caught with the right message --------------------------------------------

def test_host_name_in_auth_server(capsys):
    with broken_server(on_success(server="localhost")) as srv:
        status, checks = check(srv, capsys)
    assert status == 1
    row = checks["imap.plain.right"]
    fails_with_internal_error(row, 'sent invalid server address:"localhost"',
                              "nginx does not resolve host names")
    assert row["client"]["then"] == "nginx closes the connection"


def test_auth_server_in_brackets(capsys):
    with broken_server(on_success(server="[::1]")) as srv:
        _, checks = check(srv, capsys)
    assert "without brackets" in checks["imap.plain.right"]["reason"]


def test_port_zero(capsys):
    with broken_server(on_success(port=0)) as srv:
        _, checks = check(srv, capsys)
    reason = checks["imap.plain.right"]["reason"]
    assert 'sent invalid server port:"0"' in reason and "1 to 65535" in reason


def test_missing_auth_pass_for_cram_md5(capsys):
    def no_pass(req, reply):
        if req.auth_method == "cram-md5":
            reply.password = None

    with broken_server(no_pass) as srv:
        status, checks = check(srv, capsys, "--methods", "plain,cram-md5")
    assert status == 1
    assert set(failing(checks)) == {"imap.cram-md5.right"}
    assert "did not send password" in checks["imap.cram-md5.right"]["reason"]
    assert "must carry Auth-Pass" in checks["imap.cram-md5.right"]["reason"]


def test_digest_echoed_as_auth_pass(capsys):
    def echo(req, reply):
        if req.auth_method == "cram-md5" and reply.status == "OK":
            reply.password = req.password

    with broken_server(echo) as srv:
        status, checks = check(srv, capsys)
    row = checks["imap.cram-md5.right"]
    assert status == 1
    assert row["verdict"] == "fail" and "Auth-Pass is the client's digest" in row["reason"]


def test_header_block_over_1024_bytes(capsys):
    with broken_server(always(oversize=1100)) as srv:
        _, checks = check(srv, capsys)
    assert "the header block is 1100 bytes; nginx reads at most 1024" in \
        checks["imap.plain.right"]["reason"]
    assert checks["header-size"]["verdict"] == "fail"
    assert "1100 bytes" in checks["header-size"]["reason"]


def test_header_near_the_limit_warns(capsys):
    with broken_server(always(oversize=1000)) as srv:
        status, checks = check(srv, capsys)
    assert status == 0
    assert checks["header-size"]["verdict"] == "warn"


def test_underscore_in_header_name(capsys):
    raw = b"HTTP/1.0 200 OK\r\nAuth_Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 143\r\n\r\n"
    with broken_server(lambda req, reply: Reply.verbatim(raw)) as srv:
        _, checks = check(srv, capsys)
    reason = checks["imap.plain.right"]["reason"]
    assert "sent invalid header in response" in reason
    assert "header name Auth_Status contains '_'" in reason
    assert checks["reply-format"]["verdict"] == "fail"


def test_no_auth_wait_on_failure(capsys):
    with broken_server(on_failure(wait=None)) as srv:
        status, checks = check(srv, capsys)
    assert status == 0
    assert checks["imap.auth-wait"]["verdict"] == "warn"
    assert "no Auth-Wait on failure: nginx sends the error line and closes" in \
        checks["imap.auth-wait"]["reason"]
    assert checks["imap.plain.wrong"]["client"]["then"] == "nginx closes the connection"
    assert checks["imap.attempts"]["verdict"] == "pass"


def test_non_numeric_auth_wait(capsys):
    """nginx ignores a non-numeric Auth-Wait: the same effect (and verdict) as none at all."""
    with broken_server(on_failure(wait="2s")) as srv:
        status, checks = check(srv, capsys)
    assert status == 0
    assert verdicts(checks) == {"imap.auth-wait": "warn"}
    assert 'Auth-Wait "2s" is not a whole number of seconds' in checks["imap.auth-wait"]["reason"]
    assert checks["imap.plain.wrong"]["client"]["delay"] == 0


def test_wrong_password_accepted(capsys):
    with broken_server(lambda req, reply: Reply.ok(*IMAP) if req.auth_method == "plain"
                       else None) as srv:
        status, checks = check(srv, capsys)
    assert status == 1
    assert checks["imap.plain.wrong"]["reason"].startswith("accepted a wrong password")
    assert checks["imap.plain.wrong"]["client"]["then"].startswith("the backend's reply to a1")


def test_wrong_password_accepted_at_a_later_attempt(capsys):
    with broken_server(lambda req, reply: Reply.ok(*IMAP) if req.attempt == 7 else None) as srv:
        status, checks = check(srv, capsys)
    assert status == 1
    assert checks["imap.attempts"]["reason"] == "accepted a wrong password at attempt 7"


@pytest.mark.parametrize("method, check_id, reason", [
    ("cram-md5", "imap.cram-md5.wrong", "accepted a wrong digest"),
    ("external", "imap.external.no-cert",
     "accepted EXTERNAL with no verified client certificate"),
], ids=["wrong-cram-md5-digest", "external-without-certificate"])
def test_accepting_what_must_be_refused_fails(capsys, method, check_id, reason):
    def accept(req, reply):
        if req.auth_method == method and req.user == "alice":
            return Reply.ok(*IMAP, password="secret")
        return None

    with broken_server(accept) as srv:
        status, checks = check(srv, capsys)
    assert status == 1
    assert set(failing(checks)) == {check_id}
    assert checks[check_id]["reason"].startswith(reason)


def test_bad_smtp_error_code(capsys):
    with broken_server(on_failure(error_code="5.7.8")) as srv:
        status, checks = check(srv, capsys, protocols="smtp")
    assert status == 1
    assert set(failing(checks)) == {"smtp.error-code"}
    row = checks["smtp.error-code"]
    assert 'Auth-Error-Code "5.7.8" does not start with an SMTP failure' in row["reason"]
    assert row["client"]["nginx_writes"] == "5.7.8 Invalid login or password\r\n"


def test_smtp_error_code_class_mismatch_warns(capsys):
    with broken_server(on_failure(error_code="535 4.7.8")) as srv:
        status, checks = check(srv, capsys, protocols="smtp")
    assert status == 0
    assert checks["smtp.error-code"]["verdict"] == "warn"


def test_auth_wait_never_stops(capsys):
    with broken_server(on_failure(wait=2)) as srv:
        status, checks = check(srv, capsys)
    assert status == 1
    assert set(failing(checks)) == {"imap.attempts"}
    row = checks["imap.attempts"]
    assert "Auth-Wait still sent at attempt 25 (2 s x25)" in row["reason"]
    assert "stop sending Auth-Wait after 10-20 attempts" in row["reason"]


def test_auth_wait_stopping_late_warns(capsys):
    def late(req, reply):
        if reply.status != "OK" and req.attempt <= 22:
            reply.wait = 1

    with broken_server(late) as srv:
        status, checks = check(srv, capsys)
    assert status == 0
    assert checks["imap.attempts"]["verdict"] == "warn"
    assert "none from attempt 23" in checks["imap.attempts"]["reason"]


def right_password(req) -> bool:
    """The first right-password request (not the retry at attempt 3)."""
    return req.auth_method == "plain" and req.user == "alice" and req.password == "secret" \
        and req.attempt == 1


def test_slow_reply_past_the_timeout(capsys):
    def slow(req, reply):
        return replace(reply, delay=3) if right_password(req) else None

    with broken_server(slow) as srv:
        status, checks = check(srv, capsys, "--timeout", "1s", burst="0")
    assert status == 1
    assert set(failing(checks)) == {"imap.plain.right", "latency"}
    fails_with_internal_error(checks["imap.plain.right"], "timed out", "auth_http_timeout (1 s)")
    assert "took longer than auth_http_timeout 1 s" in checks["latency"]["reason"]
    assert 1 <= checks["imap.plain.right"]["exchanges"][0]["elapsed_ms"] / 1000 < 2.5


def test_slow_reply_within_the_timeout_warns(capsys):
    def slow(req, reply):
        return replace(reply, delay=0.15) if req.attempt == 3 else None

    with broken_server(slow) as srv:
        status, checks = check(srv, capsys, "--timeout", "1s", burst="0")
    assert status == 0
    assert checks["latency"]["verdict"] == "warn"
    assert "over 10% of auth_http_timeout 1 s" in checks["latency"]["reason"]


def test_too_many_timeouts_stop_the_run(capsys):
    with broken_server(always(delay=0.5)) as srv:
        status, checks = check(srv, capsys, "--timeout", "100ms", burst="0")
    assert status == 1
    assert "remaining checks were not run" in checks["aborted"]["reason"]


def test_dropped_connection(capsys):
    with broken_server(lambda req, reply: Reply.hang_up() if right_password(req)
                       else None) as srv:
        _, checks = check(srv, capsys)
    assert set(failing(checks)) == {"imap.plain.right", "burst"}
    assert checks["imap.plain.right"]["reason"] == (
        "nginx gives up without a log line (the server closed the connection without "
        "answering)")
    assert checks["imap.plain.right"]["client"]["nginx_log"] == ""


def test_truncated_reply(capsys):
    with broken_server(always(close_early=30)) as srv:
        _, checks = check(srv, capsys)
    assert "closed the connection after 30 bytes" in checks["imap.plain.right"]["reason"]


def test_bare_cr_line_ends(capsys):
    with broken_server(always(eol="\r")) as srv:
        _, checks = check(srv, capsys)
    reason = checks["imap.plain.right"]["reason"]
    assert "sent invalid response" in reason and "ends with a bare CR" in reason
    assert checks["reply-format"]["verdict"] == "fail"


def test_bare_lf_line_ends_are_fine(capsys):
    with broken_server(always(eol="\n")) as srv:
        status, checks = check(srv, capsys)
    assert status == 0, failing(checks)
    assert "bare LF line ends: nginx accepts them" in checks["reply-format"]["reason"]


def test_login_decoded_twice(capsys):
    def unquote_twice(req, reply):
        login = urllib.parse.unquote(req.user)  # req.user is already decoded once
        if login == "alice" and req.password == "secret" and req.auth_method == "plain":
            return Reply.ok(*IMAP)
        return None

    with broken_server(unquote_twice) as srv:
        status, checks = check(srv, capsys)
    assert status == 1
    assert set(failing(checks)) == {"login.double-escape"}
    assert 'accepted the login "%61lice" with the right password: the server decodes %XX ' \
        'twice' in \
        checks["login.double-escape"]["reason"]


def test_login_not_decoded(tmp_path, capsys):
    """A server comparing Auth-User/Auth-Pass undecoded refuses a password with a space."""
    def raw_compare(req, reply):
        if req.header("Auth-User") == "bob":
            ok = req.header("Auth-Pass") == "s p%ce"
            return Reply.ok(*IMAP) if ok else Reply.fail(wait=2)
        return None

    path = tmp_path / "bob.toml"
    path.write_text('[[case]]\nname = "bob"\nuser = "bob"\npassword = "s p%ce"\n')
    with broken_server(raw_compare) as srv:
        status, checks = check(srv, capsys, "--cases", str(path))
    assert status == 1
    assert set(failing(checks)) == {"case.bob.imap"}
    assert "does the server decode them?" in checks["case.bob.imap"]["reason"]


def test_trailing_space_accepted_without_rewrite(capsys):
    def strip(req, reply):
        return Reply.ok(*IMAP) if req.user.strip() == "alice" and req.password == "secret" \
            else None

    with broken_server(strip) as srv:
        status, checks = check(srv, capsys)
    assert status == 0
    row = checks["login.trailing-space"]
    assert row["verdict"] == "warn" and "sent no Auth-User" in row["reason"]


def test_server_error_on_utf8_login(capsys):
    def crash(req, reply):
        req.user.encode("ascii")  # UnicodeEncodeError: the mock answers a bare HTTP 500

    with broken_server(crash) as srv:
        status, checks = check(srv, capsys)
    assert status == 1
    assert set(failing(checks)) == {"login.utf-8", "login.latin-1"}
    row = checks["login.utf-8"]
    assert "the server broke on this input" in row["reason"]
    assert "no Auth-Status header" in row["reason"]
    assert checks["http-status"]["verdict"] == "warn"
    assert "HTTP 500 without Auth-Status" in checks["http-status"]["reason"]


def test_http_403_without_auth_status(capsys):
    def forbidden(req, reply):
        return Reply(http_status="HTTP/1.0 403 Forbidden") if reply.status != "OK" else None

    with broken_server(forbidden) as srv:
        _, checks = check(srv, capsys)
    fails_with_internal_error(checks["imap.plain.wrong"], "did not send server or port",
                              "the HTTP status code is ignored")
    assert checks["http-status"]["verdict"] == "warn"


def test_http_403_with_auth_status_is_fine(capsys):
    with broken_server(on_failure(http_status="HTTP/1.0 403 Forbidden")) as srv:
        status, checks = check(srv, capsys)
    assert status == 0 and checks["http-status"]["verdict"] == "pass"
    assert "nginx ignores the code" in checks["http-status"]["reason"]


def test_http_500_with_a_success_warns(capsys):
    with broken_server(on_success(http_status="HTTP/1.0 500 Oops")) as srv:
        status, checks = check(srv, capsys)
    assert status == 0
    assert checks["http-status"]["verdict"] == "warn"
    assert "HTTP 500 with a success" in checks["http-status"]["reason"]


def test_lowercase_ok(capsys):
    with broken_server(on_success(status="ok")) as srv:
        _, checks = check(srv, capsys)
    row = checks["imap.plain.right"]
    assert row["verdict"] == "fail"
    assert "nginx compares OK and WAIT case-sensitively" in row["reason"]
    assert row["client"]["nginx_writes"] == "a1 NO ok\r\n"


def test_misspelt_header_name(capsys):
    def typo(req, reply):
        if reply.status == "OK":
            return Reply(status="OK", port=1143, password=reply.password,
                         headers=["Auth-Sever: 127.0.0.1"])
        return None

    with broken_server(typo) as srv:
        _, checks = check(srv, capsys)
    assert "did not send server or port" in checks["imap.plain.right"]["reason"]
    assert 'nginx ignores "Auth-Sever" (meant "Auth-Server"?)' in \
        checks["reply-format"]["reason"]


def test_empty_auth_status(capsys):
    with broken_server(on_failure(status="")) as srv:
        _, checks = check(srv, capsys, protocols="imap,smtp")
    imap = checks["imap.plain.wrong"]
    assert imap["verdict"] == "warn" and "empty Auth-Status" in imap["reason"]
    assert imap["client"]["nginx_writes"] == "a1 NO \r\n"
    smtp = checks["smtp.plain.wrong"]
    assert smtp["verdict"] == "fail" and "did not send server or port" in smtp["reason"]
    assert "for SMTP nginx does not take an empty Auth-Status as a failure" in smtp["reason"]
    assert smtp["client"]["nginx_writes"] == "451 4.3.2 Internal server error\r\n"


def test_expected_backend(capsys):
    with correct_server() as srv:
        status, checks = check(srv, capsys, "--expect-backend", "imap=127.0.0.1:143")
    assert status == 1
    assert set(failing(checks)) == {"imap.plain.right", "imap.plain.retry",
                                    "imap.cram-md5.right"}
    assert "expected backend 127.0.0.1:143" in checks["imap.plain.right"]["reason"]


def test_smtp_success_without_password(capsys):
    def no_pass(req, reply):
        reply.password = None

    with broken_server(no_pass) as srv:
        status, checks = check(srv, capsys, protocols="smtp")
        assert status == 0
        assert "fine for SMTP unless proxy_smtp_auth is on" in \
            checks["smtp.cram-md5.right"]["reason"]
        status, checks = check(srv, capsys, "--proxy-smtp-auth", protocols="smtp")
    assert status == 1
    row = checks["smtp.cram-md5.right"]
    assert row["reason"].startswith("nginx: no password available")
    assert row["client"]["nginx_writes"] == "451 4.3.2 Internal server error\r\n"


def test_wait_status_is_followed(capsys):
    with correct_server() as srv:
        srv.push(Reply.retry(wait=0), Reply.ok(*IMAP, wait=1), Reply.ok(*IMAP))
        _, checks = check(srv, capsys)
        requests = list(srv.requests)
    # WAIT with a zero delay sticks until an answer carries a delay (docs/behaviour.md §10.4): three
    # requests, the same each time, before nginx takes the success.
    assert checks["imap.plain.right"]["verdict"] == "pass"
    assert len(checks["imap.plain.right"]["exchanges"]) == 3
    assert requests[0].raw == requests[1].raw == requests[2].raw
    assert requests[3].attempt == 3  # the retry, after the WAIT was followed


def test_unreachable_server(capsys):
    port = free_ports(1)[0]
    status = main([f"http://127.0.0.1:{port}/auth", "--user", "a", "--password", "b",
                   "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert status == 1
    assert [c["id"] for c in doc["checks"]] == ["connect"]
    assert "Connection refused" in doc["checks"][0]["reason"]


# -- case files, options, pieces -------------------------------------------------------------------

def test_example_case_file_against_a_matching_server(capsys):
    users = {"alice": User("secret", backends=BACKENDS),
             "bob": User("s p%ce", backends=BACKENDS), "carol": User("carol-password")}
    srv = MockAuthServer(users, backends=BACKENDS, fail_wait=2, smtp_error_code="535 5.7.8")
    srv.users["carol"].replies = [Reply.fail("Account suspended", wait=2)]
    cases = ROOT / "examples" / "check-auth" / "cases.toml"
    with srv:
        status = main([srv.url, "--cases", str(cases), "--json", "--protocol", "imap,pop3,smtp"])
    doc = json.loads(capsys.readouterr().out)
    checks = {c["id"]: c for c in doc["checks"]}
    assert status == 0, failing(checks)
    assert {i for i in checks if i.startswith("case.")} == {
        "case.bob-password-with-a-space-and-a-percent-sign.imap",
        "case.bob-password-with-a-space-and-a-percent-sign.pop3",
        "case.bob-wrong-password.smtp", "case.relay-for-a-local-recipient.smtp",
        "case.suspended-account.imap"}
    bob = srv.requests[0]
    assert bob.header("Auth-User") == "bob" and bob.header("Auth-Pass") == "s%20p%25ce"


def test_case_file_expectations_fail_when_unmet(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text('[[case]]\nname = "x"\nprotocol = "smtp"\nuser = "alice"\n'
                    'password = "bad"\nexpect = "refused"\nerror_code = "550 5.7.1"\nwait = 3\n')
    with correct_server() as srv:
        status = main([srv.url, "--cases", str(path), "--json"])
    doc = json.loads(capsys.readouterr().out)
    row = next(c for c in doc["checks"] if c["id"] == "case.x.smtp")
    assert status == 1
    assert 'expected Auth-Error-Code "550 5.7.1"' in row["reason"]
    assert "expected Auth-Wait 3" in row["reason"]


@pytest.mark.parametrize("text, message", [
    ('[[case]]\nname = "x"\nexpct = "ok"\n', "case 1: unknown key 'expct'"),
    ('[[case]]\nname = "x"\nmethod = "apop"\nprotocol = "imap"\n', "never sends method 'apop'"),
    ('[[case]]\nname = "x"\nexpect = "maybe"\n', "expect 'maybe' is not one of"),
    ('[[case]]\nname = "x"\n[[case]]\nname = "x"\n', "case 2: another case is named 'x'"),
    ("[case]\n", "cases go in [[case]] tables"),
    ('[[case]]\nuser = "x"\n', "case 1: 'name' is required"),
    ("cases = 1\n", "unknown table or key 'cases'"),
    ("[[case]\n", "c.toml:"),
])
def test_case_file_errors(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(CaseFileError) as err:
        load_cases(str(path), ("imap", "pop3", "smtp"))
    assert message in str(err.value)


def test_usage_errors(capsys):
    for argv in (["http://127.0.0.1:1/auth"],
                 ["https://127.0.0.1/auth", "--user", "a", "--password", "b"],
                 ["http://127.0.0.1:1/", "--user", "a", "--password", "b", "--protocol", "nntp"],
                 ["http://127.0.0.1:1/", "--user", "a", "--password", "b", "--timeout", "5x"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "plain HTTP only" in capsys.readouterr().err


def test_client_certificate_headers(tmp_path, capsys):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("alice@example.com")
    pem = tmp_path / "alice.pem"
    pem.write_bytes(cert.cert_chain_pems[0].bytes())
    with correct_server() as srv:
        status, checks = check(srv, capsys, "--client-cert", str(pem), "--pass-client-cert")
        requests = list(srv.requests)
    assert status == 0, failing(checks)
    assert checks["imap.external.cert"]["verdict"] == "pass"
    names = [n for n, _ in requests[0].headers]
    assert names[-9:] == ["Auth-SSL", "Auth-SSL-Protocol", "Auth-SSL-Cipher", "Auth-SSL-Verify",
                          "Auth-SSL-Subject", "Auth-SSL-Issuer", "Auth-SSL-Serial",
                          "Auth-SSL-Fingerprint", "Auth-SSL-Cert"]
    assert requests[0].header("Auth-SSL-Cert").startswith("-----BEGIN%20CERTIFICATE-----%0A")
    no_cert = next(r for r in requests if r.auth_method == "external"
                   and r.header("Auth-SSL-Verify") != "SUCCESS")
    assert no_cert.header("Auth-SSL-Verify") == "NONE"
    assert no_cert.header("Auth-SSL-Subject") is None


def test_shared_secret_header_and_proxy_protocol_are_sent_and_masked(capsys):
    with correct_server() as srv:
        _, checks = check(srv, capsys, "--header", "X-Auth-Key: s3cr3t", "--proxy-protocol",
                          "203.0.113.7:50123,198.51.100.2:143", burst="0")
        first = srv.requests[0]
    assert [(n, v) for n, v in first.headers][-5:] == [
        ("Proxy-Protocol-Addr", "203.0.113.7"), ("Proxy-Protocol-Port", "50123"),
        ("Proxy-Protocol-Server-Addr", "198.51.100.2"), ("Proxy-Protocol-Server-Port", "143"),
        ("X-Auth-Key", "s3cr3t")]
    shown = checks["imap.plain.right"]["exchanges"][0]["request"]
    assert "X-Auth-Key: ***\r\n" in shown and "Auth-Pass: ***\r\n" in shown
    text = json.dumps(checks)
    assert "s3cr3t" not in text and "secret" not in text


def test_json_feeds_the_html_report(tmp_path, capsys):
    from postern.reports.sources import load_check_auth

    with correct_server() as srv:
        main([srv.url, "--user", "alice", "--password", "secret", "--protocol", "pop3",
              "--burst", "2", "--json"])
    path = tmp_path / "check-auth.json"
    path.write_text(capsys.readouterr().out)
    rows = load_check_auth(path).rows
    wrong = next(r for r in rows if r["check"] == "pop3 plain, wrong password")
    assert {k: wrong[k] for k in ("check", "verdict", "reason", "client_sees")} == {"check": "pop3 plain, wrong password", "verdict": "pass",
                       "reason": 'refused: "Invalid login or password", Auth-Wait: 2',
                       "client_sees": "after 2 s: -ERR Invalid login or password\\r\\n, "
                                      "then the session goes on"}


def test_mask_hides_passwords_in_replies():
    assert mask(b"Auth-Status: OK\r\nauth-pass: hunter2\r\nAuth-Pass:\r\n", []) == \
        b"Auth-Status: OK\r\nauth-pass: ***\r\nAuth-Pass:\r\n"


def test_unix_socket_url_and_host_header():
    conf = auth_http_conf("unix:/run/auth.sock:/check")
    assert (conf.unix_path, conf.uri, conf.host_header) == ("/run/auth.sock", "/check",
                                                            "localhost")
    conf = auth_http_conf("http://127.0.0.1")
    assert (conf.addr, conf.port, conf.uri, conf.host_header) == ("127.0.0.1", 80, "/",
                                                                  "127.0.0.1")


def test_cram_md5_request_carries_a_real_hmac():
    s = Settings(conf=auth_http_conf("127.0.0.1:9/auth"), url="x", server_name="mx.test")
    case = Case(id="c", title="c", protocol="imap", method="cram-md5", user=b"al ice",
                password=b"secret")
    sent = build(case, s)
    lines = sent.request.split(b"\r\n")
    salt = next(line for line in lines if line.startswith(b"Auth-Salt: "))[11:]
    assert salt.startswith(b"<") and salt.endswith(b"@mx.test>")
    assert sent.auth_pass == cram_md5_digest(salt, b"secret")
    assert lines[3:5] == [b"Auth-User: " + escape(b"al ice"), b"Auth-Pass: " + sent.auth_pass]


@pytest.mark.parametrize("data, expected", [
    (b"HTTP/1.0 200 OK\rAuth-Status: OK\r\n\r\n", "line 1 (HTTP/1.0 200 OK) ends with a bare CR"),
    (b"Auth-Status OK\r\n\r\n", "header name Auth-Status OK contains a space"),
    (b"HTTP/1.0 200 OK\r\n-X: y\r\n\r\n", "contains a leading '-'"),
    (b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\n\r\n", None),
])
def test_explain_invalid(data, expected):
    found = explain_invalid(data)
    assert found == expected if expected is None else expected in found


def test_header_block_size():
    assert header_block_size(b"HTTP/1.0 200 OK\r\nA: b\r\n\r\nbody") == 25
    assert header_block_size(b"A: b\n\n") == 6
    assert header_block_size(b"HTTP/1.0 200 OK\r\nA: b\r\n") is None


# -- an auth endpoint served by real nginx ---------------------------------------------------------

NGINX_AUTH = """
    access_log off;
    map "$http_auth_method:$http_auth_user:$http_auth_pass" $auth_status {{
        "plain:alice:secret"  OK;
        "plain:bob:s p%ce"    OK;
        default               "Invalid login or password";
    }}
    server {{
        listen {host}:{port};
        location = /auth {{
            add_header Auth-Status $auth_status;
            add_header Auth-Server {host};
            add_header Auth-Port 1143;
            add_header Auth-Wait 1;
            return 200;
        }}
    }}
"""


def test_nginx_http_block_auth_endpoint(tmp_path, capsys):
    """The usual nginx location: right for plain, honest about the rest."""
    require(NginxInstance.unavailable_reason())
    port = free_ports(1)[0]
    http = NGINX_AUTH.format(host=LOOPBACK, port=port)
    cases = ROOT / "examples" / "check-auth" / "cases.toml"
    with NginxInstance("", tmp_path / "nginx", http_block=http) as nginx:
        status, checks = check_url(f"http://{LOOPBACK}:{port}/auth", capsys,
                                   "--protocol", "imap,pop3,smtp", "--cases", str(cases))
    assert "[emerg]" not in nginx.error_log_text()
    assert status == 1
    # a fixed Auth-Wait never stops: the attempt cut-off is what it lacks (one series)
    assert checks["imap.attempts"]["verdict"] == "fail"
    assert "Auth-Wait still sent at attempt 25 (1 s x25)" in checks["imap.attempts"]["reason"]
    assert "pop3.attempts" not in checks
    for proto in ("imap", "pop3", "smtp"):
        assert checks[f"{proto}.plain.right"]["verdict"] == "pass"
        assert checks[f"{proto}.plain.wrong"]["verdict"] == "pass"
        assert checks[f"{proto}.auth-wait"]["verdict"] == "pass"
        # CRAM-MD5 needs the plaintext password; the map cannot check an HMAC
        assert checks[f"{proto}.cram-md5.right"]["verdict"] == "warn"
    assert checks["pop3.apop.right"]["verdict"] == "warn"
    assert checks["smtp.error-code"]["reason"] == "no Auth-Error-Code: nginx uses 535 5.7.0"
    assert checks["http-status"]["verdict"] == "pass"
    for variant in ("space", "percent", "double-escape", "quotes", "utf-8", "control",
                    "trailing-space"):
        assert checks[f"login.{variant}"]["verdict"] == "pass"
    # $http_auth_pass is the escaped value: a password with a space never matches the map
    bob = checks["case.bob-password-with-a-space-and-a-percent-sign.imap"]
    assert bob["verdict"] == "fail" and "does the server decode them?" in bob["reason"]
    assert checks["burst"]["verdict"] == "pass" and checks["latency"]["verdict"] == "pass"
    reply = checks["imap.plain.right"]["exchanges"][0]["reply"]
    assert reply.startswith("HTTP/1.1 200 OK\r\nServer: nginx")


def check_url(url: str, capsys, *args: str) -> tuple[int, dict]:
    capsys.readouterr()
    status = main([url, "--user", "alice", "--password", "secret", "--json", *args])
    doc = json.loads(capsys.readouterr().out)
    return status, {c["id"]: c for c in doc["checks"]}


# -- the run as a whole: order, side effects, wrong endpoints, interruptions ---------------------

def test_usage_error_comes_first(capsys):
    with pytest.raises(SystemExit):
        main(["http://127.0.0.1:1/", "--user", "a"])
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "postern check-auth: error: --user and --password go together"
    assert len(err) <= 3


@pytest.mark.parametrize("wait", [None, "0", "1.5"])
def test_no_positive_auth_wait_is_one_verdict(wait, capsys):
    """Missing, 0 and non-numeric: nginx closes the connection alike, so one verdict."""
    with broken_server(on_failure(wait=wait)) as srv:
        status, checks = check(srv, capsys)
    row = checks["imap.auth-wait"]
    assert status == 0 and row["verdict"] == "warn"
    assert "nginx sends the error line and closes the connection" in row["reason"]
    if wait == "0":
        assert row["reason"].startswith("Auth-Wait: 0 on failure")


def test_reply_code_without_enhanced_status_is_valid(capsys):
    with broken_server(on_failure(error_code="535")) as srv:
        status, checks = check(srv, capsys, protocols="smtp")
    row = checks["smtp.error-code"]
    assert status == 0 and row["verdict"] == "pass"
    assert "a valid SMTP reply code without an enhanced status" in row["reason"]


def test_external_without_certificate_is_checked_whatever_methods_say(capsys):
    def external_ok(req, reply):
        return Reply.ok(*IMAP) if req.auth_method == "external" else None

    with broken_server(external_ok) as srv:
        status, checks = check(srv, capsys, "--methods", "plain")
    assert status == 1 and "imap.external.no-cert" in failing(checks)


def test_right_password_checks_come_before_any_failure(capsys):
    with correct_server() as srv:
        check(srv, capsys, protocols="imap,pop3,smtp", burst="2")
        requests = list(srv.requests)
    first_failure = next(i for i, r in enumerate(requests)
                         if r.user == "alice" and r.auth_method == "plain"
                         and r.password != "secret")
    right = [i for i, r in enumerate(requests[:-1]) if r.user == "alice"
             and r.auth_method == "plain" and r.password == "secret"]
    assert max(right) < first_failure
    assert requests[-1].password == "secret"  # the lockout probe, last


def test_lockout_is_recognised_not_failed(capsys):
    failures = {}

    def lockout(req, reply):
        if failures.get(req.user, 0) >= 10:
            return Reply.fail("Account locked")
        if reply.status != "OK":
            failures[req.user] = failures.get(req.user, 0) + 1
        return None

    with broken_server(lockout) as srv:
        status, checks = check(srv, capsys, protocols="imap,pop3,smtp")
    assert status == 0 and failing(checks) == {}
    assert "the server locks the account" in checks["lockout"]["reason"]
    assert "not judged" in checks["smtp.auth-wait"]["reason"]
    assert verdicts(checks) == {}
    assert "failed logins were sent" in checks["side-effects"]["reason"]


def test_adversarial_credentials_are_refused_or_fail(capsys):
    def empty_ok(req, reply):
        plain = req.auth_method == "plain"
        return Reply.ok(*IMAP) if plain and req.user == "alice" and req.password == "" else None

    with broken_server(empty_ok) as srv:
        status, checks = check(srv, capsys)
        sent = [r.password for r in srv.requests if r.user == "alice"]
    assert status == 1
    assert set(failing(checks)) == {"cred.empty-password"}
    assert "anonymous bind" in checks["cred.empty-password"]["reason"]
    assert {"", "SECRET", "' OR '1'='1", "*", "secret\x00postern"} <= set(sent)
    assert "secret" not in json.dumps(checks["cred.empty-password"])


def test_auth_pass_escaped_is_a_fail(tmp_path, capsys):
    """The Auth-Pass a success carries is compared with the password the tool knows."""
    def echo_escaped(req, reply):
        if reply.status == "OK" and req.auth_method == "plain":
            return replace(reply, password=escape(req.password.encode()).decode())
        return None

    srv = MockAuthServer({"alice": User("se cret", backends=BACKENDS)}, backends=BACKENDS)
    right = srv.handler or srv.default_reply
    srv.handler = lambda req: echo_escaped(req, right(req)) or right(req)
    with srv:
        capsys.readouterr()
        main([srv.url, "--user", "alice", "--password", "se cret", "--protocol", "imap",
              "--burst", "0", "--json"])
        checks = {c["id"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    row = checks["imap.plain.right"]
    assert row["verdict"] == "fail" and "still %XX-escaped" in row["reason"]


def test_ip_and_port_in_auth_server_is_named_as_such(capsys):
    with broken_server(on_success(server="127.0.0.1:1143")) as srv:
        _, checks = check(srv, capsys)
    assert "carries a port" in checks["imap.plain.right"]["reason"]


def test_silent_server_counts_agree(capsys):
    from auth_zoo.serve import Raw, Serving

    with Serving(lambda req: Raw(hang=True)) as srv:
        status, checks = check_url(srv.url, capsys, "--timeout", "200ms")
    assert status == 1
    assert "sent not a byte to 3 requests" in checks["aborted"]["reason"]
    assert "3 of 3 answers" in checks["latency"]["reason"]
    assert "header-size" not in checks and "http-status" not in checks


@pytest.mark.parametrize("reply, text", [
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html>", "not an auth_http server"),
    (b"\x15\x03\x03\x00\x02\x02\x50", "this speaks TLS"),
    (b"220 mx.example ESMTP\r\n", "not an auth_http server"),
])
def test_wrong_endpoint_is_said_once(reply, text, capsys):
    from auth_zoo.serve import Serving

    with Serving(lambda req: reply) as srv:
        status, checks = check_url(srv.url, capsys)
    assert status == 1 and list(checks) == ["endpoint"]
    assert text in checks["endpoint"]["reason"]


def test_ctrl_c_prints_a_partial_report(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from auth_zoo.directory import correct
    from auth_zoo.serve import Raw, Serving

    # SIGINT may be ignored where the test runs in the background; the child restores it
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from checkauth import main; sys.exit(main(sys.argv[1:]))")
    seen = []

    def slow(req):
        seen.append(req)
        return Raw(correct(req), delay=0.2)

    with Serving(slow) as srv:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, srv.url, "--user", "alice", "--password",
             "Open sesame+1%"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while len(seen) < 3 and time.monotonic() < deadline:  # the run is under way
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert b"Traceback" not in err
    assert b"run interrupted" in out and b"imap plain, right password" in out


def test_password_echoed_in_the_error_text_fails_and_is_hidden(capsys):
    def echo(req, reply):
        if reply.status != "OK" and req.auth_method == "plain":
            return replace(reply, status=f"Wrong password {req.password}")
        return None

    with broken_server(echo) as srv:
        status, checks = check(srv, capsys)
    assert status == 1
    assert "carries the password" in checks["imap.plain.wrong"]["reason"]
    assert "secret-wrong" not in json.dumps(checks)


def test_failures_with_one_cause_are_said_once_first(capsys):
    from auth_zoo.serve import Serving

    raw = b"HTTP/1.0 200 OK\r\nX-Auth-Status: OK\r\nX-Auth-Server: 127.0.0.1\r\n\r\n"
    with Serving(lambda req: raw) as srv:
        capsys.readouterr()
        main([srv.url, "--user", "alice", "--password", "secret", "--burst", "2"])
        lines = capsys.readouterr().out.splitlines()
        status, doc = main([srv.url, "--user", "alice", "--password", "secret", "--json"]), \
            json.loads(capsys.readouterr().out)
    assert lines[3].endswith("checks fail for 1 cause:")
    assert '"X-Auth-Status" is not Auth-' in lines[4] + lines[5]
    assert status == 1 and len(doc["summary"]["causes"]) == 1
    assert len(doc["summary"]["causes"][0]["checks"]) == doc["summary"]["fail"]


def test_html_report_lists_the_causes(tmp_path, capsys):
    from auth_zoo.serve import Serving
    from postern.reports.render import checks_section
    from postern.reports.sources import load_check_auth

    raw = b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: localhost\r\nAuth-Port: 143\r\n\r\n"
    with Serving(lambda req: raw) as srv:
        capsys.readouterr()
        main([srv.url, "--user", "alice", "--password", "secret", "--json", "--burst", "2"])
    path = tmp_path / "check-auth.json"
    path.write_text(capsys.readouterr().out)
    section = checks_section(path, load_check_auth(path))
    assert "causes" not in section["about"]
    assert len(section["causes"]) >= 1
    assert "does not resolve host names" in section["causes"][0]["reason"]


def test_same_backend_for_every_protocol_warns(capsys):
    with broken_server(on_success(server="127.0.0.1", port="1143")) as srv:
        status, checks = check(srv, capsys, protocols="imap,pop3,smtp")
    assert status == 0 and checks["routing"]["verdict"] == "warn"
    assert "IMAP, POP3 and SMTP all get the same backend" in checks["routing"]["reason"]


def test_backend_on_another_protocols_port_fails(capsys):
    with broken_server(on_success(server="127.0.0.1", port="110")) as srv:
        status, checks = check(srv, capsys, protocols="imap")
    assert status == 1 and set(failing(checks)) == {"routing"}
    assert "imap is sent to port 110, the pop3 port" in checks["routing"]["reason"]
