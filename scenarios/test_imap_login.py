"""IMAP LOGIN before authentication: atoms, quoted strings, literals and their quirks, with the
exact auth request and what the upstream receives (docs/behaviour.md §7.2, §7.4, §10.1; RFC 3501 §6.2.3,
§4.3 strings, RFC 7888 LITERAL+).
"""

from __future__ import annotations

import pytest
from postern.fakes.auth import Reply
from postern.scenarios.kit.imap_support import (
    INVALID,
    LOGGED_IN,
    auth_request,
    backend_login,
    greeted,
)


def ok_as_alice(lab) -> None:
    """Script a success that rewrites the upstream credentials to alice/secret, so odd client
    credentials can still complete a login on the fake upstream (docs/behaviour.md §10.3 Auth-User/Pass)."""
    lab.auth.push(Reply.ok("127.0.0.1", lab.imap.port, user="alice", password="secret"))


def test_login_with_atoms(lab):
    """RFC 3501 §6.2.3 LOGIN: the proxy asks auth_http with method plain, then logs in to the
    upstream with the client's tag and synchronising literals, relaying its tagged OK."""
    with greeted(lab) as c:
        c.send(b"a1 login alice secret\r\n").expect(b"a1 " + LOGGED_IN)
        c.send(b"a2 NOOP\r\n").expect(b"a2 OK NOOP completed\r\n")
    assert [r.raw for r in lab.auth.requests] == [auth_request()]
    assert lab.imap.commands == [backend_login(b"a1", b"alice", b"secret"), b"a2 NOOP"]


def test_login_quoted_strings_with_escapes(lab):
    """RFC 3501 §4.3 quoted strings: `\\"` and `\\\\` unescape, spaces stay; the auth request
    then %-escapes space and `%` only (docs/behaviour.md §10.2, captured exchange of §18)."""
    ok_as_alice(lab)
    with greeted(lab) as c:
        c.send(b'a1 LOGIN "us er%\\"x" "p\\\\w"\r\n').expect(b"a1 " + LOGGED_IN)
    assert [r.raw for r in lab.auth.requests] == [
        auth_request(user=b'us%20er%25"x', password=b"p\\w")]
    assert lab.imap.commands == [backend_login(b"a1", b"alice", b"secret")]


def test_login_unescaping_is_per_quoted_argument(lab):
    """nginx (1.22 and mainline alike): a backslash escape is undone only inside the quoted
    string that holds it, when that argument ends; an atom's backslash is data, whatever the
    other arguments of the line hold (RFC 3501 §4.3, §9)."""
    ok_as_alice(lab)
    ok_as_alice(lab)
    with greeted(lab) as c:
        c.send(b'a1 LOGIN al\\ice "s\\e\\c\\r\\e\\t"\r\n').expect(b"a1 " + LOGGED_IN)
    with greeted(lab) as c:
        c.send(b'b1 LOGIN "al\\ice" se\\cret\r\n').expect(b"b1 " + LOGGED_IN)
    assert [r.raw for r in lab.auth.requests] == [
        auth_request(user=b"al\\ice"), auth_request(password=b"se\\cret")]


def test_login_quoted_adjacent_and_empty_strings(lab):
    """nginx: a closing quote ends the argument, so `"alice""secret"` is two arguments; `""`
    is an empty argument (RFC 3501 §4.3)."""
    with greeted(lab) as c:
        c.send(b'a1 LOGIN "alice""secret"\r\n').expect(b"a1 " + LOGGED_IN)
    assert [r.raw for r in lab.auth.requests] == [auth_request()]


def test_login_empty_password_is_accepted(lab):
    """nginx: LOGIN needs a non-empty user but the password may be empty; it goes to auth_http
    as `Auth-Pass: ` and a failure without Auth-Wait closes after the tagged NO (docs/behaviour.md §10.4)."""
    with greeted(lab) as c:
        c.send(b'a1 LOGIN alice ""\r\n')
        c.expect(b"a1 NO Invalid login or password\r\n").expect_closed()
    assert [r.raw for r in lab.auth.requests] == [auth_request(password=b"")]
    assert lab.imap.commands == []


def test_login_empty_user_is_rejected(lab):
    """nginx: LOGIN with an empty user name is a tagged BAD and nothing is asked of the auth
    server; the session goes on."""
    with greeted(lab) as c:
        c.send(b'a1 LOGIN "" secret\r\n').expect(b"a1 " + INVALID)
        c.send(b'a2 LOGIN "" ""\r\n').expect(b"a2 " + INVALID)
        c.send(b"a3 NOOP\r\n").expect(b"a3 OK completed\r\n")
    assert lab.auth.requests == []


def test_login_argument_count(lab):
    """RFC 3501 §6.2.3 LOGIN takes exactly two arguments: one or three are a tagged BAD
    (handler level), no auth request is made."""
    with greeted(lab) as c:
        c.send(b"a1 LOGIN alice\r\n").expect(b"a1 " + INVALID)
        c.send(b"a2 LOGIN\r\n").expect(b"a2 " + INVALID)
        c.send(b"a3 LOGIN alice secret extra\r\n").expect(b"a3 " + INVALID)
        c.send(b"a4 LOGIN alice secret\r\n").expect(b"a4 " + LOGGED_IN)
    assert [r.raw for r in lab.auth.requests] == [auth_request()]


def test_login_synchronising_literals(lab):
    """RFC 3501 §4.3 / §7.5 synchronising literals: each `{n}` line gets the untagged `+ OK`
    continuation, then exactly n raw bytes (spaces included) are the argument."""
    ok_as_alice(lab)
    with greeted(lab) as c:
        c.send(b"a2 LOGIN {5}\r\n").expect(b"+ OK\r\n")
        c.send(b"us er {3}\r\n").expect(b"+ OK\r\n")
        c.send(b"p w\r\n").expect(b"a2 " + LOGGED_IN)
    assert [r.raw for r in lab.auth.requests] == [auth_request(user=b"us%20er",
                                                               password=b"p%20w")]
    assert lab.imap.commands == [backend_login(b"a2", b"alice", b"secret")]


def test_literal_bytes_are_never_unescaped(lab):
    """RFC 3501 §4.3: a literal is raw octets — quotes, backslashes and `%` in it are data,
    also when a quoted argument before it on the line had an escape (nginx 1.21.0)."""
    ok_as_alice(lab)
    with greeted(lab) as c:
        c.send(b'a1 LOGIN "al\\ice" {4}\r\n').expect(b"+ OK\r\n")
        c.send(b'"\\%x\r\n').expect(b"a1 " + LOGGED_IN)
    assert [r.raw for r in lab.auth.requests] == [auth_request(password=b'"\\%25x')]
    assert lab.imap.commands == [backend_login(b"a1", b"alice", b"secret")]


def test_login_non_synchronising_literals(lab):
    """RFC 7888 LITERAL+: `{n+}` gets no continuation, the bytes follow at once; a whole login
    in one packet is answered only by the upstream's tagged OK."""
    with greeted(lab) as c:
        c.send(b"a LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n").expect(b"a " + LOGGED_IN)
    with greeted(lab) as c:  # a literal split across packets waits for its bytes
        c.send(b"b LOGIN {5+}\r\nali")
        c.expect_silence(0.2)
        c.send(b"ce {6+}\r\nsecret\r\n").expect(b"b " + LOGGED_IN)
    assert [r.raw for r in lab.auth.requests] == [auth_request(), auth_request()]
    assert lab.imap.commands == [backend_login(b"a", b"alice", b"secret"),
                                 backend_login(b"b", b"alice", b"secret")]


def test_literal_line_end_variants(lab):
    """nginx: after `}` any number of CRs then LF (a bare LF too) end the announcement; any
    other byte makes the line invalid."""
    with greeted(lab) as c:
        c.send(b"a1 LOGIN {5}\r\r\n").expect(b"+ OK\r\n")
        c.send(b"alice {6}\n").expect(b"+ OK\r\n")
        c.send(b"secret\r\n").expect(b"a1 " + LOGGED_IN)
    with greeted(lab) as c:
        c.send(b"b1 LOGIN {5} \r\n").expect(b"b1 " + INVALID)
        c.send(b"b2 LOGIN {5x}\r\n").expect(b"b2 " + INVALID)
        c.send(b"b3 NOOP\r\n").expect(b"b3 OK completed\r\n")
    assert [r.raw for r in lab.auth.requests] == [auth_request()]


def test_zero_length_literal_takes_one_byte(lab):
    """nginx QUIRK (docs/behaviour.md §7.2): `{0}` behaves like `{1}` — after `+ OK` one byte is consumed
    as the argument, so `{0}` then `X` makes the password `X`."""
    with greeted(lab) as c:
        c.send(b"a1 NOOP {0}\r\n").expect(b"+ OK\r\n")
        c.send(b"X\r\n").expect(b"a1 OK completed\r\n")
        c.send(b"a2 LOGIN alice {0}\r\n").expect(b"+ OK\r\n")
        c.send(b"X\r\n").expect(b"a2 NO Invalid login or password\r\n").expect_closed()
    assert [r.raw for r in lab.auth.requests] == [auth_request(password=b"X")]


@pytest.mark.nginx_min("1.29.6", "after a literal only SP, CR or LF may follow; before, the "
                       "next byte was swallowed")
def test_literal_followed_by_a_non_space(lab):
    """nginx (1.29.6) / RFC 3501 §9 grammar: after a literal's bytes the next byte must be SP,
    CR or LF; `alice_secret` after `{5}` is a tagged BAD and no auth request is made."""
    with greeted(lab) as c:
        c.send(b"a1 LOGIN {5}\r\n").expect(b"+ OK\r\n")
        c.send(b"alice_secret\r\n").expect(b"a1 " + INVALID)
        c.send(b"a2 NOOP\r\n").expect(b"a2 OK completed\r\n")
    assert lab.auth.requests == []


def test_unterminated_quote_leaks_into_next_command(lab):
    """nginx QUIRK (docs/behaviour.md §7.2): an unterminated quoted string is ended by the line end, and
    the inside-quotes flag survives into the next command until a `"` is seen — so a
    following `LOGIN alice secret` is one argument (BAD) until a quote resets it. An
    unterminated last argument is simply accepted."""
    with greeted(lab) as c:
        c.send(b'z LOGIN "alice" "secret\r\n').expect(b"z " + LOGGED_IN)
    with greeted(lab) as c:
        c.send(b'a LOGIN "alice\r\n').expect(b"a " + INVALID)
        c.send(b"b LOGIN alice secret\r\n").expect(b"b " + INVALID)
        c.send(b"c NOOP\r\n").expect(b"c OK completed\r\n")
        c.send(b"d LOGIN alice secret\r\n").expect(b"d " + INVALID)
        c.send(b'e LOGIN "alice" secret\r\n').expect(b"e " + LOGGED_IN)
    assert [r.raw for r in lab.auth.requests] == [auth_request(), auth_request()]
    assert lab.imap.commands == [backend_login(b"z", b"alice", b"secret"),
                                 backend_login(b"e", b"alice", b"secret")]
