"""check-auth and the OAuth methods (Postern's xoauth2 and oauthbearer): the right token, a
wrong one and the password in a token's place, judged as Postern reads the answers."""

from __future__ import annotations

import pytest
from postern.checkauth import main
from postern.fakes.auth import Reply

from tests.check_auth_support import IMAP, broken_server, check, correct_server, failing

OAUTH = ("--token", "tok-a", "--methods", "plain,xoauth2,oauthbearer")


def _with_token(srv):
    srv.users["alice"].tokens.append("tok-a")
    return srv


def test_a_correct_server_passes_every_oauth_check(capsys):
    with _with_token(correct_server()) as srv:
        status, checks = check(srv, capsys, *OAUTH, protocols="imap,smtp")
        sent = [(r.auth_method, r.password) for r in srv.requests
                if r.auth_method in ("xoauth2", "oauthbearer")]
    assert status == 0, failing(checks)
    for proto in ("imap", "smtp"):
        for mech in ("xoauth2", "oauthbearer"):
            for kind in ("right", "wrong", "password"):
                assert checks[f"{proto}.{mech}.{kind}"]["verdict"] == "pass"
    assert ("xoauth2", "tok-a") in sent and ("oauthbearer", "postern-invalid-token") in sent
    assert ("oauthbearer", "secret") in sent


def test_refusal_shows_the_error_challenge_first(capsys):
    with _with_token(correct_server()) as srv:
        _, checks = check(srv, capsys, *OAUTH, protocols="smtp")
    text = str(checks["smtp.xoauth2.wrong"])
    assert "334 eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NoZW1lcyI6ImJlYXJlciJ9" in text
    assert "535 5.7.8" in text


def test_password_taken_as_token_and_any_token_fail(capsys):
    def password_too(req, reply):
        if req.auth_method in ("xoauth2", "oauthbearer") and req.password == "secret":
            return Reply.ok(*IMAP)
        return None

    with _with_token(broken_server(password_too)) as srv:
        status, checks = check(srv, capsys, *OAUTH)
    assert status == 1
    assert "does not tell tokens from passwords" in failing(checks)["imap.xoauth2.password"]

    def any_token(req, reply):
        return Reply.ok(*IMAP) if req.auth_method == "oauthbearer" else None

    with _with_token(broken_server(any_token)) as srv:
        status, checks = check(srv, capsys, *OAUTH)
    assert "accepted a wrong token" in failing(checks)["imap.oauthbearer.wrong"]


def test_refused_right_token_fails_only_when_listed(capsys):
    with correct_server() as srv:  # alice has no token: every token is refused
        status, checks = check(srv, capsys, *OAUTH)
        assert status == 1
        assert 'refused the right token' in failing(checks)["imap.xoauth2.right"]
        status, checks = check(srv, capsys, "--token", "tok-a")
    assert status == 0 and checks["imap.xoauth2.right"]["verdict"] == "warn"


def test_without_a_token_there_are_no_oauth_checks(capsys):
    with correct_server() as srv:
        status, checks = check(srv, capsys)
    assert status == 0 and not any("oauth" in i for i in checks)


@pytest.mark.parametrize("argv", [
    ["--methods", "plain,xoauth2"],              # no token
    ["--token", "secret"],                       # the password
    ["--token", "x", "--bad-token", "x"],
])
def test_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["http://127.0.0.1:1/auth", "--user", "alice", "--password", "secret", *argv])
    assert exc.value.code == 2
    assert "token" in capsys.readouterr().err
