"""The scenario runner's own machinery: the RFC grammar checker, the docstring references,
the differential normalisation and comparison, the external-target declarations and the
results summary. Plain bytes in, no sockets."""

from __future__ import annotations

import ast
import base64
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
from postern.scenarios.kit import external, grammar
from postern.scenarios.kit.differential import Side, compare, normalise_line, pair_key
from postern.scenarios.kit.references import MISSING, references
from postern.scenarios.kit.results import Record, summarise


def violations(protocol, *events, eof=True):
    return grammar.check(protocol, events, eof)


def failing(found):
    return [v for v in found if v.known is None]


# -- IMAP ----------------------------------------------------------------------------------

def test_imap_nginx_dialogue_is_well_formed():
    found = violations(
        "imap",
        ("S", b"* OK IMAP4 ready\r\n"), ("C", b"a1 CAPABILITY\r\n"),
        ("S", b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN\r\na1 OK completed\r\n"),
        ("C", b"a2 LOGIN {5}\r\n"), ("S", b"+ OK\r\n"), ("C", b"alice {6}\r\n"),
        ("S", b"+ OK\r\n"), ("C", b"secret\r\n"), ("S", b"a2 OK [CAPABILITY IMAP4rev1] Hi\r\n"),
        ("C", b"a3 AUTHENTICATE PLAIN\r\n"), ("S", b"+ \r\n+ VXNlcm5hbWU6\r\n"),
        ("S", b"* BAD internal server error\r\n"))
    assert found == []


def test_imap_literals_in_server_data_are_skipped_by_length():
    body = b"line one\r\n) not a paren\r\n* BYE not a response\r\n"
    found = violations(
        "imap", ("S", b"* OK ready\r\n"),
        ("S", b"* 1 FETCH (UID 7 BODY[] {%d}\r\n" % len(body) + body[:10]),
        ("S", body[10:] + b" FLAGS (\\Seen))\r\na3 OK [READ-WRITE] done\r\n"))
    assert found == []


@pytest.mark.parametrize(("line", "rule"), [
    (b"a1 YES done", "response-tagged"),
    (b"a+1 OK done", "tag"),
    (b"a1 OK", "resp-cond-state"),
    (b"* OK [ALERT no close", "resp-text-code"),
    (b"+OK go", "continue-req"),
    (b"* (weird)", "response-data"),
    (b"* 3 FETCH (UID 1", "msg-att"),
])
def test_imap_malformed_lines_name_their_rule(line, rule):
    found = violations("imap", ("S", b"* OK hi\r\n" + line + b"\r\n"))
    assert len(found) == 1 and rule in found[0].rule and found[0].line == line, found
    assert found[0].known is None and found[0].number == 2


def test_imap_nginx_quirks_are_known_deviations():
    found = violations("imap", ("S", (b"* OK IMAP4 ready\r\n* BYE\r\na1 OK completed\r\n"
                                     b"BAD invalid command\r\n OK completed\r\na2 NO \r\n"
                                     b"+baBAD invalid command\r\n")))
    assert len(found) == 5 and failing(found) == [], found
    assert "bare `* BYE`" in found[0].known


def test_imap_line_ends_and_truncation():
    found = violations("imap", ("S", b"* OK hi\na1 OK done\r\na2 OK cut"))
    assert [v.problem for v in found] == ["line ends with a bare LF, not CRLF",
                                          "the connection ended inside a response"]
    assert violations("imap", ("S", b"* OK hi\r\na2 OK cut"), eof=False) == []


def test_imap_greeting_must_be_ok_preauth_or_bye():
    assert "greeting" in violations("imap", ("S", b"a1 OK hi\r\n"))[0].rule
    assert violations("imap", ("S", b"* PREAUTH welcome\r\n")) == []


def test_imap_capability_without_imap4rev1_is_configuration():
    found = violations("imap", ("S", b"* OK hi\r\n* CAPABILITY QUOTA IDLE\r\n"))
    assert len(found) == 1 and found[0].known.startswith("configuration")


# -- POP3 ----------------------------------------------------------------------------------

def test_pop3_multiline_replies_follow_their_commands():
    found = violations(
        "pop3", ("S", b"+OK POP3 ready <123.456@mx.test>\r\n"),
        ("C", b"CAPA\r\nAUTH\r\nUSER a\r\nNOOP\r\n"),
        ("S", b"+OK Capability list follows\r\nTOP\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n"),
        ("S", b"+OK methods supported:\r\nPLAIN\r\n.\r\n+OK\r\n+OK\r\n"),
        ("C", b"AUTH PLAIN\r\n"), ("S", b"+ \r\n"), ("C", b"AGEAYg==\r\n"), ("S", b"-ERR \r\n"),
        ("C", b"RETR 1\r\n"), ("S", b"+OK\r\n..dot\r\nbody\r\n.\r\n"))
    assert found == []


def test_pop3_violations():
    found = violations(
        "pop3", ("S", b"+OK hi <nonsense>\r\n"), ("C", b"RETR 1\r\nNOOP\r\n"),
        ("S", b"+OK\r\n.unstuffed\r\n.\r\nOK fine\r\n"))
    assert [v.rule for v in found] == ["RFC 1939 §7 APOP timestamp",
                                       "RFC 1939 §3 byte-stuffing",
                                       "RFC 1939 §3 status indicator"]


def test_pop3_stls_drops_the_pipelined_commands():
    """What was pipelined after STLS gets no reply (the server discarded it)."""
    found = violations("pop3", ("S", b"+OK hi\r\n"), ("C", b"STLS\r\nCAPA\r\n"),
                       ("S", b"+OK\r\n"), ("C", grammar.TLS_MARKER), ("C", b"NOOP\r\n"),
                       ("S", b"+OK\r\n"))
    assert found == []


# -- SMTP ----------------------------------------------------------------------------------

def test_smtp_nginx_dialogue_is_well_formed():
    found = violations(
        "smtp", ("S", b"220 mx.test ESMTP ready\r\n"), ("C", b"EHLO x\r\n"),
        ("S", b"250-mx.test\r\n250-SIZE 100\r\n250 AUTH PLAIN LOGIN\r\n"),
        ("C", b"AUTH LOGIN\r\n"), ("S", b"334 VXNlcm5hbWU6\r\n"), ("C", b"eA==\r\n"),
        ("S", b"334 UGFzc3dvcmQ6\r\n"), ("C", b"eA==\r\n"), ("S", b"235 2.0.0 OK\r\n"),
        ("C", b"DATA\r\n"), ("S", b"354 go\r\n"), ("C", b"Subject: x\r\n\r\n.\r\nQUIT\r\n"),
        ("S", b"250 OK\r\n221 2.0.0 Bye\r\n"))
    assert found == []


@pytest.mark.parametrize(("command", "lines", "rule"), [
    (b"EHLO x", b"250-mx.test\r\n251 AUTH PLAIN\r\n", "RFC 5321 §4.2.1"),
    (b"NOOP", b"250 \r\n", "textstring"),
    (b"NOOP", b"451 5.3.2 mismatch\r\n", "RFC 2034 §4"),
    (b"NOOP", b"550 6.1.1 bad class\r\n", "RFC 3463 §2"),
    (b"NOOP", b"650 out of range\r\n", "Reply-code"),
    (b"EHLO x", b"250-mx.test\r\n250 -bad keyword\r\n", "ehlo-line"),
    (b"HELO x", b"250 -mx.test\r\n", "ehlo-ok-rsp"),
])
def test_smtp_violations(command, lines, rule):
    found = violations("smtp", ("S", b"220 mx.test ready\r\n"), ("C", command + b"\r\n"),
                       ("S", lines))
    assert len(found) == 1 and rule in found[0].rule, found


def test_smtp_greeting_delay_rejection_is_known():
    found = violations("smtp", ("S", b"503 5.5.0 Improper use of SMTP command pipelining\r\n"))
    assert len(found) == 1 and "smtp_greeting_delay" in found[0].known


# -- references ----------------------------------------------------------------------------

def test_references_read_rfcs_spec_sections_and_named_behaviours():
    refs = references("RFC 3501 §6.2.3 LOGIN, §6.3.1 SELECT through the proxy (nginx logs "
                      "in with literals, §11.3); CVE-2014-3556")
    assert refs.rfcs == ["RFC 3501 §6.2.3", "RFC 3501 §6.3.1"]
    assert refs.nginx == ["docs/behaviour.md §11.3"] and refs.cves == ["CVE-2014-3556"]
    assert refs.groups == ["RFC 3501", "CVE-2014-3556", "nginx docs/behaviour.md §11"]
    assert references("nginx imap_auth login: only AUTH=LOGIN").nginx == ["nginx imap_auth login"]
    assert references("ssl_crl: a revoked certificate").nginx == ["nginx ssl_crl"]
    assert not references("Postfix XCLIENT: the upstream takes ADDR")
    assert not references(None)


def test_every_scenario_names_what_it_checks():
    """The same rule the runner enforces at setup, over every scenario file at once."""
    missing = []
    for path in sorted((Path(__file__).parent.parent / "scenarios").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and \
                    node.name.startswith("test") and not references(ast.get_docstring(node)):
                missing.append(f"{path.name}::{node.name}")
    assert missing == [], MISSING + ":\n" + "\n".join(missing)


# -- differential --------------------------------------------------------------------------

def test_normalisation_of_salts_challenges_digests_and_ports():
    salt = b"<1896.697170952@mx.test>"
    assert normalise_line("S", b"+OK POP3 ready " + salt + b"\r\n", set()) == \
        b"+OK POP3 ready <R.T@host>\r\n"
    assert normalise_line("S", b"334 " + base64.b64encode(salt) + b"\r\n", set()) == \
        b"334 <CRAM-MD5 challenge>\r\n"
    response = base64.b64encode(b"alice " + b"0123456789abcdef" * 2)
    assert normalise_line("C", response + b"\r\n", set()) == \
        b"<CRAM-MD5 response of alice>\r\n"
    assert normalise_line("C", b"APOP bob " + b"ab" * 16 + b"\r\n", set()) == \
        b"APOP bob <digest>\r\n"
    assert normalise_line("S", b"x 127.0.0.1:40123 40123\r\n", {40123}) == \
        b"x 127.0.0.1:<port> <port>\r\n"


def side(target, *connections, closed=True, lenient=False, outcome="passed"):
    return Side(target, outcome, [list(c) for c in connections], [closed] * len(connections),
                [lenient] * len(connections), set())


def test_compare_ignores_read_boundaries_and_one_to_one_volatile_values():
    a = side("postern", [("S", b"* OK hi\r\n"), ("C", b"a SELECT box-eea3611f\r\n"),
                         ("S", b"* OK [UIDVALIDITY 1705709163] x\r\n"), ("S", b"a OK\r\n")])
    b = side("nginx", [("S", b"* OK hi\r\n"), ("C", b"a SELECT box-fdb64ba5\r\n"),
                       ("S", b"* OK [UIDVALIDITY 1704092698] x\r\na OK\r\n")])
    assert compare(a, b) is None


def test_compare_shows_a_unified_diff_of_transcript_lines():
    a = side("postern", [("S", b"* OK hi\r\n"), ("C", b"a NOOP\r\n"), ("S", b"a OK done\r\n")])
    b = side("nginx", [("S", b"* OK hi\r\n"), ("C", b"a NOOP\r\n"), ("S", b"a NO done\r\n")])
    diff = compare(a, b)
    assert diff.startswith("transcripts differ: postern passed, nginx passed")
    assert "-S: b'a OK done\\r\\n'" in diff and "+S: b'a NO done\\r\\n'" in diff


def test_compare_lenient_close_accepts_a_lost_tail_only():
    a = side("postern", [("S", b"* OK hi\r\n"), ("C", b"x\r\n"), ("S", b"* BAD x\r\n")],
             lenient=True)
    b = side("nginx", [("S", b"* OK hi\r\n"), ("C", b"x\r\n")], lenient=True)
    assert compare(a, b) is None
    c = side("nginx", [("S", b"* OK hi\r\n"), ("C", b"x\r\n"), ("S", b"* NO x\r\n")],
             lenient=True)
    assert compare(a, c) is not None


def test_pair_key_takes_the_target_out():
    assert pair_key("f.py::test_x[imap-postern]", "postern") == "f.py::test_x[imap]"
    assert pair_key("f.py::test_x[nginx]", "nginx") == "f.py::test_x"


# -- external ------------------------------------------------------------------------------

def test_declared_blocks_match_scenario_directives():
    declared = external.parse_server_option("smtp+ssl+proxy_protocol=127.0.0.1:2525:"
                                            "smtp_auth  none ;  xclient off;")
    assert (declared.protocol, declared.port, declared.listen_params) == \
        ("smtp", 2525, "ssl proxy_protocol")
    assert declared.key == external.scenario_key(
        "smtp", "smtp_auth none;\nxclient off;", "", "ssl proxy_protocol")
    assert external.normalise("ssl_certificate /a/cert.pem;  # mine\nssl_protocols  TLSv1.2;") \
        == ("ssl_certificate /a/cert.pem", "ssl_protocols TLSv1.2")
    with pytest.raises(pytest.UsageError):
        external.parse_server_option("ftp=127.0.0.1:21")


def test_plan_writes_one_config_the_runner_reads_back(tmp_path):
    from postern.scenarios.kit import external_plan

    (tmp_path / "mail-2").mkdir()  # an earlier plan's output goes
    (tmp_path / "mail-2" / "nginx.conf").write_text("stale")
    (tmp_path / "keep.txt").write_text("not the plan's")
    external_plan.clear(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    state = external.External(dict(external.DEFAULT_PORTS), workdir=tmp_path, basetemp="/tmp/pt",
                              nginx_version=(1, 22, 1))
    for server, mail, nodeid in [("", "", "a::test_1[external]"),
                                 ("imap_auth login;", "", "a::test_2[external]"),
                                 ("imap_capabilities IMAP4rev1;",
                                  "imap_capabilities X; max_errors 2;", "a::test_3[external]"),
                                 ("auth_http 127.0.0.1:45555/auth;", "", "a::test_4[external]"),
                                 ("ssl_client_certificate /tmp/pt/ca.pem;", "", "a::t5")]:
        key = external.scenario_key("imap", server, mail, "")
        state.requested[key] = {"server": server, "mail": mail, "nodeids": [nodeid]}
    printed = "\n".join(external_plan.write_plan(state))
    assert "start your proxy:  nginx -p " + f"{tmp_path}/ -c nginx.conf" in printed
    assert "names a port, which changes every run" in printed
    assert "temporary directory" in printed
    data = tomllib.loads((tmp_path / "external.toml").read_text())
    assert data["nginx_version"] == "1.22.1" and "pki" not in data
    declared = external._servers_from(data)
    assert {d.key for d in declared} == set(list(state.requested)[:3])
    conf = (tmp_path / "nginx.conf").read_text()
    assert conf.count("server {") == 3 and conf.count("mail {") == 1 and "daemon on;" in conf
    # the mail level folded into the server that asked for it, its own directive winning
    assert "max_errors 2;\n        imap_capabilities IMAP4rev1;" in conf
    assert "imap_capabilities X" not in conf
    assert not (tmp_path / "mail-2").exists() and (tmp_path / "keep.txt").exists()


def test_plan_records_blocks_the_declared_nginx_refuses(tmp_path):
    from postern.scenarios.kit import external_plan
    from postern.scenarios.kit.real.nginx import NginxInstance, nginx_version

    if NginxInstance.unavailable_reason():
        pytest.skip(NginxInstance.unavailable_reason())
    state = external.External(dict(external.DEFAULT_PORTS), workdir=tmp_path,
                              nginx_version=nginx_version())
    for server in ("imap_auth login;", "no_such_directive on;"):
        key = external.scenario_key("imap", server, "", "")
        state.requested[key] = {"server": server, "mail": "", "nodeids": ["a::t"]}
    printed = "\n".join(external_plan.write_plan(state))
    assert "refused by nginx -t ([emerg] unknown directive \"no_such_directive\")" in printed
    assert NginxInstance.test_config((tmp_path / "nginx.conf").read_text(), tmp_path)[0] == 0
    data = tomllib.loads((tmp_path / "external.toml").read_text())
    assert [s["directives"] for s in data["server"]] == ["imap_auth login;"]
    assert data["not_declared"][0]["reason"].startswith("nginx -t: [emerg] unknown directive")


# -- results -------------------------------------------------------------------------------

def report(when, outcome, **extra):
    return SimpleNamespace(when=when, outcome=outcome, passed=outcome == "passed",
                           failed=outcome == "failed", skipped=outcome == "skipped",
                           duration=0.5, longrepr=None, longreprtext="boom", **extra)


def test_records_fold_phases_and_summarise_by_protocol_and_reference():
    refs = references("RFC 3501 §6.1.1 and docs/behaviour.md §7.5")
    ok = Record.new("t[postern]", "t", "postern", "imap", refs, "title")
    for when in ("setup", "call", "teardown"):
        ok.add_report(report(when, "passed"))
    bad = Record.new("u[nginx]", "u", "nginx", "imap", refs, "title")
    bad.add_report(report("setup", "passed"))
    bad.add_report(report("call", "failed"))
    xf = Record.new("v[nginx]", "v", "nginx", "smtp", references("RFC 5321"), "")
    xf.add_report(report("call", "skipped", wasxfail="needs nginx 1.29"))
    assert (ok.outcome, ok.duration, bad.outcome, bad.message, xf.outcome) == \
        ("passed", 1.5, "failed", "boom", "xfailed")
    summary = summarise([ok, bad, xf])
    assert summary["by_protocol"] == {"imap": {"passed": 1, "failed": 1},
                                      "smtp": {"xfailed": 1}}
    assert summary["by_reference"]["RFC 3501"] == {"passed": 1, "failed": 1}
    assert summary["by_reference"]["nginx docs/behaviour.md §7"] == {"passed": 1, "failed": 1}


def test_reports_read_scenarios_json(tmp_path):
    from postern.reports.sources import load_scenarios
    from postern.scenarios.kit.results import write

    refs = references("RFC 3501 §6.1.1; docs/behaviour.md §7.5")
    rec = Record.new("scenarios/test_imap_x.py::test_y[imap-nginx]",
                     "scenarios/test_imap_x.py::test_y", "nginx", "imap", refs, "t")
    rec.add_report(report("call", "failed"))
    rec.checks["grammar"] = "failed"
    run = load_scenarios(write(tmp_path / "scenarios.json", [rec], {"targets": ["nginx"]}))
    case = run.cases[0]
    assert (case.module, case.test, case.target, case.outcome, case.grammar) == \
        ("scenarios.test_imap_x", "test_y[imap]", "nginx", "failed", "failed")
    assert case.references == ["RFC 3501 §6.1.1", "docs/behaviour.md §7.5"]
    assert run.summary["by_reference"]["RFC 3501"] == {"failed": 1}
    assert load_scenarios(tmp_path / "missing.json") is None


def test_scenario_tls_clients_see_an_eof_without_close_notify():
    """Whatever the Python build's defaults (Debian's 3.11.2 sets OP_IGNORE_UNEXPECTED_EOF),
    a scenario's TLS client reports a connection cut without close_notify as an unclean EOF,
    which is how scenarios tell a timeout from a clean TLS close."""
    import socket
    import ssl
    import threading

    import trustme
    from postern.scenarios.kit.client import is_unclean_eof, tls_client_context
    from postern.scenarios.kit.tls_support import client_context

    flag = getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    for ctx in (tls_client_context(), client_context()):
        assert not ctx.options & flag

    ca = trustme.CA()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = listener.accept()
        tls = server_ctx.wrap_socket(conn, server_side=True)
        tls.sendall(b"hello")
        tls.close()  # without unwrap(): the TCP connection ends with no close_notify

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with socket.create_connection(listener.getsockname(), timeout=5) as raw, \
            tls_client_context().wrap_socket(raw, suppress_ragged_eofs=False) as tls:
        assert tls.recv(5) == b"hello"
        with pytest.raises(ssl.SSLError) as raised:
            while tls.recv(100):
                pass
        assert is_unclean_eof(raised.value), raised.value
    thread.join(5)
    listener.close()
