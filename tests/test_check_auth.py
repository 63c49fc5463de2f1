"""`postern check-auth` against one auth server at a time: a correct mock passes every check,
and each kind of broken auth server is caught with the right message."""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import replace

import pytest
from postern.checkauth import main
from postern.fakes.auth import Reply
from postern.scenarios.kit.real.common import free_ports

from tests.check_auth_support import (
    IMAP,
    always,
    broken_server,
    check,
    correct_server,
    failing,
    fails_with_internal_error,
    on_failure,
    on_success,
    right_password,
    verdicts,
)

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


