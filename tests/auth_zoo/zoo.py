"""The servers. Each is the correct decision (directory.correct) with one realistic bug."""

from __future__ import annotations

import fnmatch
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from .directory import (
    BACKENDS,
    PASSWORD,
    USER,
    USERS,
    correct,
    credentials_ok,
    fail,
    head,
    ok,
)
from .serve import Raw, Request


@dataclass(frozen=True)
class ZooServer:
    name: str
    handler: Callable[[Request], bytes | Raw]
    broken: bool
    story: str
    timeout: str | None = None  # --timeout for check-auth, where the bug is slowness


BROKEN: list[ZooServer] = []
CORRECT: list[ZooServer] = []


def broken(fn=None, *, timeout: str | None = None):
    def add(f):
        BROKEN.append(ZooServer(f.__name__, f, True, (f.__doc__ or "").strip(), timeout))
        return f
    return add(fn) if fn else add


def right(fn=None, *, timeout: str | None = None):
    def add(f):
        CORRECT.append(ZooServer(f.__name__, f, False, (f.__doc__ or "").strip(), timeout))
        return f
    return add(fn) if fn else add


def plain_check(req: Request, compare: Callable[[str, str], bool],
                user: str | None = None) -> bytes:
    """The correct server, except that plain passwords are compared with ``compare``."""
    if req.method != "plain":
        return correct(req)
    known = USERS.get(req.user if user is None else user)
    return ok(req) if known is not None and compare(known, req.password) else fail(req)


# -- credential handling -------------------------------------------------------------------------

@broken
def empty_password_is_anonymous_bind(req):
    """Checks the password with an LDAP simple bind; an empty password makes it an anonymous
    bind, which the directory allows, so any known user logs in without a password."""
    return plain_check(req, lambda known, given: given == "" or given == known)


@broken
def password_compared_case_insensitively(req):
    """Stores passwords in a case-insensitive SQL column (utf8_general_ci collation)."""
    return plain_check(req, lambda known, given: known.lower() == given.lower())


@broken
def percent_escapes_not_decoded(req):
    """Compares the Auth-Pass header as it arrives: nginx's %20 for a space never matches."""
    return plain_check(req, lambda known, given: known == req.h("Auth-Pass"))


@broken
def decoded_twice(req):
    """A framework already decodes the header; the handler unquotes it again."""
    user = urllib.parse.unquote(req.user)
    return plain_check(req, lambda known, given: known == urllib.parse.unquote(given), user)


@broken
def plus_decoded_as_space(req):
    """Decodes Auth-Pass with the form decoder (unquote_plus): '+' becomes a space."""
    given = urllib.parse.unquote_plus(req.h("Auth-Pass"))
    return plain_check(req, lambda known, _: known == given)


@broken
def sql_injection_in_password(req):
    """Builds "SELECT 1 FROM users WHERE name='%s' AND pass='%s'" by string formatting."""
    injected = re.search(r"'\s*or\s*'?(\w+)'?\s*=\s*'?\1", req.password, re.IGNORECASE)
    return ok(req) if req.method == "plain" and injected else correct(req)


@broken
def sql_comment_in_login(req):
    """The same string-built query: a login ending in "' --" comments the password test out."""
    name, sep, _ = req.user.partition("' --")
    if sep and name in USERS and req.method == "plain":
        return ok(req)
    return correct(req)


@broken
def ldap_wildcard_in_login(req):
    """Searches (uid=<login>) without escaping, then binds as the first entry found."""
    matches = sorted(u for u in USERS if fnmatch.fnmatchcase(u, req.user))
    if req.method == "plain" and matches and "*" in req.user:
        return plain_check(req, lambda known, given: known == given, matches[0])
    return correct(req)


@broken
def ldap_filter_in_password(req):
    """Authenticates by searching (&(uid=<login>)(userPassword=<password>)) unescaped."""
    return plain_check(req, lambda known, given: fnmatch.fnmatchcase(known, given))


@broken
def password_prefix_compare(req):
    """strncmp(stored, given, strlen(given)): compares only as many bytes as were sent."""
    return plain_check(req, lambda known, given: given != "" and known.startswith(given))


@broken
def password_cut_at_eight(req):
    """Old crypt(3) DES hashes: only the first 8 characters of a password count."""
    return plain_check(req, lambda known, given: known[:8] == given[:8])


@broken
def password_cut_at_nul(req):
    """A C helper gets the decoded password as a C string: a NUL ends it."""
    return plain_check(req, lambda known, given: known == given.split("\0")[0])


@broken
def login_cut_at_nul(req):
    """The login goes through a C library call: a NUL ends it."""
    user = req.user.split("\0")[0]
    return plain_check(req, lambda known, given: known == given, user)


@broken
def login_first_word(req):
    """Splits the login on whitespace (a shell-style helper) and uses the first word."""
    user = (req.user.split() or [""])[0]
    return plain_check(req, lambda known, given: known == given, user)


@broken
def password_trimmed(req):
    """Strips whitespace from the password before comparing (copied from a form handler)."""
    return plain_check(req, lambda known, given: known == given.strip())


@broken
def unknown_user_passes(req):
    """`if user and user.password != password: fail` -- an unknown user is never refused."""
    if req.method == "plain" and req.user not in USERS:
        return ok(req)
    return correct(req)


@broken
def empty_login_binds_anonymously(req):
    """An empty login becomes an empty bind DN: an anonymous bind, which succeeds."""
    return ok(req) if req.method == "plain" and req.user == "" else correct(req)


@broken
def shell_checkpassword(req):
    """Runs os.system(f"checkpw '{user}' '{password}'"); a quote in the password lets the
    shell run anything, and the command's last status decides."""
    if req.method == "plain" and "';" in req.password:
        return ok(req)
    return correct(req)


@broken
def crash_on_long_login(req):
    """Copies the login into a 256-byte buffer; a longer one kills the worker mid-reply."""
    if len(req.h("Auth-User")) > 255:
        return Raw(b"HTTP/1.0 200 OK\r\nAuth-Sta")
    return correct(req)


@broken
def crash_on_long_password(req):
    """A fixed-size password buffer too: the worker dies without a byte."""
    return Raw(b"") if len(req.h("Auth-Pass")) > 255 else correct(req)


@broken
def crash_on_non_ascii_login(req):
    """Encodes the login as ASCII for a legacy directory: UTF-8 logins raise, HTTP 500."""
    req.user.encode("ascii")
    return correct(req)


@broken
def crash_on_quote(req):
    """Pastes the login into a JSON document for a REST directory; a quote breaks it."""
    if '"' in req.user or "'" in req.user:
        raise ValueError("bad JSON")
    return correct(req)


@broken
def success_cache_by_user(req):
    """Caches successful logins by user name for speed and skips the password next time."""
    cache = success_cache_by_user.__dict__.setdefault("seen", set())
    if req.method == "plain" and req.user in cache:
        return ok(req)
    reply = correct(req)
    if b"Auth-Status: OK" in reply:
        cache.add(req.user)
    return reply


@broken
def smtp_trusts_any_password(req):
    """SMTP submission was meant to be IP-restricted, so its path checks no password."""
    known = req.user in USERS
    return ok(req) if req.protocol == "smtp" and req.method == "plain" and known else correct(req)


# -- protocol ------------------------------------------------------------------------------------

def rename(reply: bytes, old: bytes, new: bytes) -> bytes:
    return reply.replace(old, new)


@broken
def x_prefixed_header_names(req):
    """Emits X-Auth-Status and friends, as custom headers "should" be named."""
    return rename(correct(req), b"\r\nAuth-", b"\r\nX-Auth-")


@broken
def underscore_header_names(req):
    """A CGI script prints Auth_Status (it read HTTP_AUTH_STATUS from an environment)."""
    return rename(correct(req), b"\r\nAuth-", b"\r\nAuth_")


@broken
def no_auth_port(req):
    """Assumes nginx knows the standard port and sends only Auth-Server."""
    return re.sub(rb"Auth-Port: \d+\r\n", b"", correct(req))


@broken
def host_name_in_auth_server(req):
    """Names the backend by host name, as in its own config; nginx resolves nothing."""
    return rename(correct(req), b"Auth-Server: 127.0.0.1", b"Auth-Server: localhost")


@broken
def ip_and_port_in_auth_server(req):
    """Sends Auth-Server: 127.0.0.1:143, the backend as written in its inventory."""
    host, port = BACKENDS.get(req.protocol, ("", 0))
    return rename(correct(req), b"Auth-Server: 127.0.0.1", f"Auth-Server: {host}:{port}".encode())


@broken
def service_name_in_auth_port(req):
    """Auth-Port: imap -- a service name from /etc/services, not a number."""
    return re.sub(rb"Auth-Port: \d+", f"Auth-Port: {req.protocol}".encode(), correct(req))


@broken
def lowercase_ok(req):
    """Writes "Auth-Status: ok"; nginx compares OK case-sensitively."""
    return rename(correct(req), b"Auth-Status: OK", b"Auth-Status: ok")


@broken
def headers_in_the_body(req):
    """A web framework puts the Auth-* lines in the response body."""
    body = correct(req).split(b"\r\n", 1)[1]
    return head("Content-Type: text/plain", f"Content-Length: {len(body)}") + body


@broken
def header_block_over_1024_bytes(req):
    """A session middleware adds a big Set-Cookie and a CSP header to every reply."""
    reply = correct(req)
    return reply[:-2] + b"Set-Cookie: session=" + b"x" * 700 + b"\r\n" + \
        b"Content-Security-Policy: default-src 'self'; " + b"y" * 300 + b"\r\n\r\n"


@broken
def bare_cr_line_ends(req):
    """Joins header lines with "\\r" (a Mac-era template)."""
    return correct(req).replace(b"\r\n", b"\r")


@broken
def auth_wait_never_stops(req):
    """Always sends Auth-Wait: 3: nginx keeps a session alive through endless retries."""
    reply = correct(req)
    if b"Auth-Status: OK" in reply or b"Auth-Wait" in reply:
        return reply
    return reply[:-2] + b"Auth-Wait: 3\r\n\r\n"


@broken
def enhanced_code_only(req):
    """Sends Auth-Error-Code: 5.7.8 -- the enhanced status without the reply code."""
    return rename(correct(req), b"Auth-Error-Code: 535 5.7.8", b"Auth-Error-Code: 5.7.8")


@broken
def error_page_says_ok(req):
    """Unknown users raise; the error page template shares the success headers."""
    if req.method == "plain" and req.user not in USERS:
        return ok(req).replace(b"HTTP/1.0 200 OK", b"HTTP/1.0 500 Internal Server Error")
    return correct(req)


@broken
def empty_failure_status(req):
    """Failures send an empty Auth-Status (the text lives in a log); nginx's SMTP reads that
    as no failure at all."""
    return re.sub(rb"Auth-Status: (?!OK)[^\r]*", b"Auth-Status: ", correct(req))


@broken
def default_status_header(req):
    """A middleware writes a default "Auth-Status: Invalid login" first, and handlers add
    their own; nginx does not let a later OK undo an earlier failure."""
    reply = correct(req)
    return reply.replace(b"\r\n", b"\r\nAuth-Status: Invalid login\r\n", 1)


@broken
def plain_web_page(req):
    """The URL points at the web site's front page, not the auth endpoint."""
    return head("Content-Type: text/html") + b"<!doctype html><title>Welcome</title>"


@broken
def tls_only(req):
    """The auth service listens with TLS only; nginx's auth_http is plain HTTP."""
    return Raw(b"\x15\x03\x01\x00\x02\x02\x46")


# -- methods, routing, side channels -------------------------------------------------------------

@broken
def auth_pass_returned_escaped(req):
    """Returns Auth-Pass as received for every login, still %XX-escaped."""
    reply = correct(req)
    if b"Auth-Status: OK" in reply and req.method == "plain":
        return reply[:-2] + f"Auth-Pass: {req.h('Auth-Pass')}\r\n\r\n".encode()
    return reply


@broken
def auth_pass_is_the_digest(req):
    """Passes Auth-Pass through: for APOP and CRAM-MD5 that is the client's digest."""
    if req.method in ("apop", "cram-md5") and credentials_ok(req):
        return ok(req, f"Auth-Pass: {req.password}")
    return correct(req)


@broken
def apop_digest_not_checked(req):
    """Cannot check APOP (it stores hashes), so it accepts any digest for a known user."""
    if req.method == "apop" and req.user in USERS:
        return ok(req, f"Auth-Pass: {USERS[req.user]}")
    return correct(req)


@broken
def cram_md5_digest_not_checked(req):
    """The same for CRAM-MD5."""
    if req.method == "cram-md5" and req.user in USERS:
        return ok(req, f"Auth-Pass: {USERS[req.user]}")
    return correct(req)


@broken
def no_auth_pass_for_cram_md5(req):
    """Checks the CRAM-MD5 digest but does not send the plaintext password back."""
    if req.method == "cram-md5" and credentials_ok(req):
        return ok(req)
    return correct(req)


@broken
def external_without_certificate(req):
    """Treats EXTERNAL as "the proxy vouches for the login" without looking at the cert."""
    if req.method == "external" and req.user in USERS:
        return ok(req)
    return correct(req)


@broken
def open_relay(req):
    """With smtp_auth none, answers OK to every MAIL/RCPT: anyone relays anywhere."""
    return ok(req) if req.method == "none" else correct(req)


@broken
def same_backend_for_every_protocol(req):
    """One backend line copied into the POP3 and SMTP branches."""
    reply = correct(req)
    return re.sub(rb"Auth-Port: \d+", b"Auth-Port: 143", reply)


@broken
def pop3_sent_to_the_imap_port(req):
    """The POP3 branch was copied from IMAP and kept its port."""
    reply = correct(req)
    return re.sub(rb"Auth-Port: 110", b"Auth-Port: 143", reply)


@broken(timeout="1s")
def slow_on_unknown_users(req):
    """An unknown user makes the LDAP search walk the whole tree: over a second."""
    if req.user not in USERS:
        return Raw(correct(req), delay=1.5)
    return correct(req)


@broken
def attempt_counter_inverted(req):
    """Meant to refuse after 3 attempts, but the test is inverted: from attempt 4 on, any
    password of a known user is accepted."""
    if req.attempt > 3 and req.user in USERS and req.method == "plain":
        return ok(req)
    return correct(req)


@broken
def backend_on_the_tls_port(req):
    """IMAP is routed to the backend's port 993: nginx speaks plain IMAP to backends."""
    return re.sub(rb"Auth-Port: 143", b"Auth-Port: 993", correct(req))


@broken
def empty_auth_user(req):
    """Meant to rewrite the login to the mailbox name; the lookup returns nothing."""
    reply = correct(req)
    return reply[:-2] + b"Auth-User: \r\n\r\n" if b"Auth-Status: OK" in reply else reply


@broken
def error_text_echoes_the_password(req):
    """A "helpful" error message: Invalid password '<password>' for <user>."""
    reply = correct(req)
    if b"Invalid login" in reply and req.method == "plain":
        text = f"Invalid password '{req.password}' for {req.user}".encode()
        return reply.replace(b"Invalid login or password", text)
    return reply


@broken
def wait_forever_when_busy(req):
    """A connection-pool guard answers WAIT whenever the pool is "busy" -- always, here."""
    return head("Auth-Status: WAIT", "Auth-Wait: 1") if req.attempt == 1 and \
        req.method == "plain" and req.user == USER and req.password == PASSWORD else correct(req)


@broken(timeout="200ms")
def slow_directory(req):
    """Every lookup takes 60% of auth_http_timeout: the first busy hour breaks it."""
    return Raw(correct(req), delay=0.12)


@broken
def smtp_error_code_is_a_success(req):
    """Copies the Auth-Error-Code from the success branch: 235 2.7.0 on a failure."""
    return rename(correct(req), b"Auth-Error-Code: 535 5.7.8", b"Auth-Error-Code: 235 2.7.0")


@broken
def sql_injection_double_quotes(req):
    """Builds the query with double quotes (MySQL's ANSI_QUOTES off): x" OR "1"="1 gets in."""
    injected = re.search(r'"\s*or\s*"(\w*)"\s*=\s*"\1', req.password, re.IGNORECASE)
    return ok(req) if req.method == "plain" and injected else correct(req)


@broken
def crash_on_invalid_utf8_password(req):
    """Decodes Auth-Pass as strict UTF-8; nginx passes bytes, so one bad byte is a 500."""
    req.password.encode("utf-8")  # a lone surrogate from a byte that is not UTF-8: raises
    req.user.encode("utf-8")
    return correct(req)


@broken
def backend_is_the_listen_address(req):
    """Auth-Server copied from the backend's "listen 0.0.0.0:143" line."""
    return rename(correct(req), b"Auth-Server: 127.0.0.1", b"Auth-Server: 0.0.0.0")


@broken
def lockout_hides_nothing(req):
    """Locks an account after 5 failures, but compares passwords case-insensitively."""
    failures = lockout_hides_nothing.__dict__.setdefault("failures", {})
    if failures.get(req.user, 0) >= 5:
        return fail(req, "Account locked", wait=None)
    reply = plain_check(req, lambda known, given: known.lower() == given.lower())
    if b"Auth-Status: OK" not in reply and req.user in USERS:
        failures[req.user] = failures.get(req.user, 0) + 1
    return reply


@broken
def attempt_limit_off_by_one(req):
    """Meant to refuse from attempt 20 on; compares with the wrong constant and refuses any
    retry, so one typo locks the client out of the session."""
    return fail(req, "Too many attempts") if req.attempt > 1 else correct(req)


# -- correct servers -----------------------------------------------------------------------------

@right
def reference(req):
    """Correct in every respect check-auth looks at."""
    return correct(req)


@right
def locks_after_ten_failures(req):
    """Locks an account after 10 failed logins (a defensible policy); the right password
    is refused while it is locked."""
    failures = locks_after_ten_failures.__dict__.setdefault("failures", {})
    if req.user in USERS and failures.get(req.user, 0) >= 10:
        return fail(req, "Account locked", wait=None)
    reply = correct(req)
    if b"Auth-Status: OK" not in reply and req.user in USERS:
        failures[req.user] = failures.get(req.user, 0) + 1
    return reply


@right
def http11_keep_alive(req):
    """Answers HTTP/1.1 with keep-alive and leaves the connection open."""
    reply = correct(req).replace(b"HTTP/1.0 200 OK", b"HTTP/1.1 200 OK\r\nConnection: keep-alive")
    return Raw(reply[:-2] + b"Content-Length: 0\r\n\r\n", keep_open=True)


@right
def tiny_segments(req):
    """Writes its reply three bytes at a time."""
    return Raw(correct(req), segment=3, gap=0.0005)


@right
def no_status_line(req):
    """Writes only the header lines: nginx reads headers from the first byte."""
    return correct(req).split(b"\r\n", 1)[1]


@right
def lf_line_ends(req):
    """Ends lines with a bare LF, which nginx accepts."""
    return correct(req).replace(b"\r\n", b"\n")


@right
def no_auth_wait(req):
    """Never sends Auth-Wait: every failure closes the client's connection (documented)."""
    return re.sub(rb"Auth-Wait: \d+\r\n", b"", correct(req))


@right
def plain_only(req):
    """Supports plain logins only; APOP, CRAM-MD5 and smtp_auth none are refused."""
    if req.method != "plain":
        return fail(req, "Method not supported")
    return correct(req)


@right
def master_password(req):
    """Logs in to the backend as a Dovecot master user with the master password."""
    reply = re.sub(rb"Auth-Pass: [^\r]*\r\n", b"", correct(req))
    if b"Auth-Status: OK" in reply and req.method != "none":
        reply = reply[:-2] + f"Auth-User: {req.user}*proxy\r\nAuth-Pass: m4ster\r\n\r\n".encode()
    return reply


__all__ = ["BROKEN", "CORRECT", "PASSWORD", "USER", "ZooServer"]
