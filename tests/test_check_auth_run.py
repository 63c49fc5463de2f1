"""`postern check-auth` as a whole run: case files and options, an nginx `http {}` auth
location judged honestly, the order of its checks, their side effects, wrong endpoints and
interruptions."""

from __future__ import annotations

import json
from dataclasses import replace

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

from tests.check_auth_support import (
    BACKENDS,
    IMAP,
    ROOT,
    broken_server,
    check,
    check_url,
    correct_server,
    failing,
    on_failure,
    on_success,
    verdicts,
)
from tests.conf_support import load_error

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
    assert message in load_error(tmp_path / "c.toml", text,
                                 lambda path: load_cases(str(path), ("imap", "pop3", "smtp")),
                                 CaseFileError)


def test_usage_errors(capsys):
    for argv in (["http://127.0.0.1:1/auth"],
                 ["http://127.0.0.1/auth", "--user", "a", "--password", "b", "--cafile", "x"],
                 ["https://127.0.0.1/auth", "--user", "a", "--password", "b", "--tls-cert", "x"],
                 ["http://127.0.0.1:1/", "--user", "a", "--password", "b", "--protocol", "nntp"],
                 ["http://127.0.0.1:1/", "--user", "a", "--password", "b", "--timeout", "5x"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "are for https:// URLs" in err and "--tls-cert and --tls-key go together" in err


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
