"""What nginx does with an answer, what the mail client sees, and whether that is right.

outcome() follows nginx's decision after the reply (docs/behaviour.md §10.4, the same steps as
proxy.session): a failure status, a WAIT, or a success that AuthResponse.backend() and the
password rule must still accept. Everything nginx turns into "internal error" becomes the
protocol's internal-error line and a close. judge_case() then compares that with what a
correct auth server would have answered for the case.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

from postern.proxy.auth_http import AuthResponse, AuthServerError, escape
from postern.proxy.protocols import PROTOCOLS
from postern.proxy.sasl import OAUTH_ERROR
from postern.proxy.smtp.dialogue import OAUTH_ERROR_CODE

from .cases import OAUTH, Case, Sent, Settings
from .wire import Exchange, explain_invalid, header_fields, show

IMAP_TAG = b"a1 "
SMTP_AUTH_OK = b"235 2.0.0 OK\r\n"
NEEDS_AUTH_PASS = ("apop", "cram-md5", "external")  # nginx has no plaintext password then

PASS, WARN, FAIL = "pass", "warn", "fail"
CLOSE = "nginx closes the connection"
_RANK = {PASS: 0, WARN: 1, FAIL: 2}


def worst(*verdicts: str) -> str:
    return max(verdicts, key=_RANK.__getitem__, default=PASS)


@dataclass
class Outcome:
    """nginx's reading of one answer (after following WAIT the way nginx does)."""

    kind: str  # ok | refused | wait | error
    client: bytes | None  # what nginx itself writes to the client; None: the backend speaks
    then: str  # what happens next, in words
    log: str | None = None  # nginx's log line (kind "error": "" if none), or login-failed
    response: AuthResponse | None = None
    backend: tuple[str, int] | None = None
    hint: str = ""  # why, when kind is "error"
    delay: int = 0  # seconds nginx waits before writing ``client`` (Auth-Wait on failure)

    def nginx_says(self) -> str:
        """For an error: nginx's log line (or that there is none) and why."""
        said = f"nginx: {self.log}" if self.log else "nginx gives up without a log line"
        return f"{said} ({self.hint})" if self.hint else said

    def sees(self) -> str:
        if self.client is None:
            return self.then
        after = f"after {self.delay} s: " if self.delay else ""
        return f"{after}{show(self.client)}, then {self.then}"


@dataclass
class Row:
    """One line of the report."""

    id: str
    title: str
    verdict: str
    reason: str
    client: Outcome | None = None
    exchanges: list[tuple[Sent, Exchange]] = field(default_factory=list)


def failure_line(protocol: str, resp: AuthResponse, method: str = "plain") -> bytes | None:
    """The line nginx writes for a failed Auth-Status, from the protocol's declaration; None
    where the protocol does not take the status as a failure (SMTP's empty one, §10.4).
    An OAuth failure (Postern's) is RFC 7628's error challenge, then, after the client's
    dummy response, the line (SMTP's code then defaults to 535 5.7.8)."""
    if resp.error is None:
        return None
    code = resp.error_code
    if method in OAUTH and protocol == "smtp" and code is None:
        code = OAUTH_ERROR_CODE
    line = PROTOCOLS[protocol].failure_line(resp.error, code, IMAP_TAG)
    if line is not None and method in OAUTH:
        prefix = b"334 " if protocol == "smtp" else b"+ "
        return prefix + OAUTH_ERROR + b"\r\n" + line
    return line


def is_failure(protocol: str, resp: AuthResponse) -> bool:
    return failure_line(protocol, resp) is not None


def outcome(case: Case, ex: Exchange, peer: str, s: Settings, waiting: bool = False) -> Outcome:
    """nginx's decision for the last exchange of a case (``waiting``: a WAIT is pending)."""
    proto = case.protocol
    if ex.error is not None:
        return _error(proto, ex.error, diagnose(ex, s))
    resp = ex.response
    assert resp is not None
    line = failure_line(proto, resp, case.method)
    if line is not None:
        log = f'client login failed: "{resp.error.decode("latin-1")}"'
        if resp.wait == 0:
            return Outcome("refused", line, CLOSE, log, resp)
        return Outcome("refused", line, "the session goes on", log, resp, delay=resp.wait)
    if waiting:
        return Outcome("wait", None, f"nginx repeats the request after {resp.wait} s",
                       response=resp)
    try:
        backend = resp.backend(peer)
    except AuthServerError as err:
        hint = _backend_hint(resp, ex, str(err))
        if proto == "smtp" and resp.error == b"":
            hint = ("for SMTP nginx does not take an empty Auth-Status as a failure (it does "
                    "for IMAP and POP3), so it looked for a backend")
        return _error(proto, str(err), hint, resp)
    if resp.password is None and case.method in NEEDS_AUTH_PASS and \
            PROTOCOLS[proto].password_required:
        return _error(proto, f"auth http server {peer} did not send password",
                      f"with {case.method} nginx has no plaintext password; "
                      "the reply must carry Auth-Pass", resp)
    login = resp.user if resp.user is not None else case.user
    where = f"{backend[0]}:{backend[1]}"
    if proto == "smtp" and case.method == "none":
        return Outcome("ok", None, f"the backend's reply to RCPT (nginx sends MAIL and RCPT "
                       f"to {where})", response=resp, backend=backend)
    if proto == "smtp":
        if s.proxy_smtp_auth and resp.password is None and case.method in NEEDS_AUTH_PASS:
            return _error(proto, "no password available",
                          "proxy_smtp_auth needs Auth-Pass for this method", resp)
        return Outcome("ok", SMTP_AUTH_OK, f"relay to {where} (login \"{show(login)}\")",
                       response=resp, backend=backend)
    command = "a1 LOGIN" if proto == "imap" else "PASS"
    if case.method in OAUTH:
        command = ("a1 AUTHENTICATE " if proto == "imap" else "AUTH ") + case.method.upper()
    return Outcome("ok", None, f"the backend's reply to {command} (nginx logs in to {where} "
                   f"as \"{show(login)}\")", response=resp, backend=backend)


def _error(proto: str, log: str, hint: str, resp: AuthResponse | None = None) -> Outcome:
    return Outcome("error", PROTOCOLS[proto].internal_error, CLOSE, log, resp, hint=hint)


def diagnose(ex: Exchange, s: Settings) -> str:
    """Why the exchange itself failed, in terms of what the server did."""
    got = len(ex.raw)
    if ex.connect_failed:
        return "nginx cannot reach the auth server"
    if ex.timed_out:
        return (f"no complete header block within auth_http_timeout ({s.timeout:g} s); "
                f"{got} bytes had arrived")
    if ex.full:
        size = ex.header_size
        total = f"{size} bytes" if size else f"more than {got + len(ex.overflow)} bytes"
        return f"the header block is {total}; nginx reads at most 1024 bytes"
    if ex.eof:
        return ("the server closed the connection without answering" if not got else
                f"the server closed the connection after {got} bytes, before the empty line "
                "that ends the header block")
    return explain_invalid(ex.raw) or "the reply is not what nginx can parse"


def _backend_hint(resp: AuthResponse, ex: Exchange, log: str) -> str:
    if "did not send server or port" in log:
        names = [n for n, _ in header_fields(ex.raw)]
        if not any(n.lower() == b"auth-status" for n in names):
            near = next((n for n in names if n.lower().endswith(b"auth-status")), None)
            named = (f'"{show(near)}" is not Auth-Status (nginx reads exactly Auth-Status, '
                     "Auth-Server, Auth-Port); " if near else "")
            return (f"{named}no Auth-Status header: nginx takes a reply without one as a "
                    "success (the HTTP status code is ignored), and a success needs "
                    "Auth-Server and Auth-Port")
        return "a success needs both Auth-Server and Auth-Port"
    if "invalid server port" in log:
        return "Auth-Port must be a decimal number from 1 to 65535"
    server = resp.server.decode("latin-1")
    host, sep, port = server.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return (f'Auth-Server "{server}" carries a port: nginx wants the bare IP address in '
                "Auth-Server and the port in Auth-Port")
    if server.startswith("["):
        return "Auth-Server must be a bare IP address, without brackets"
    return "Auth-Server must be an IP address: nginx does not resolve host names"


# -- one case ------------------------------------------------------------------------------------

def judge_case(case: Case, out: Outcome, sent: Sent) -> tuple[str, str]:
    """(verdict, reason) for one case whose last answer nginx read as ``out``."""
    if out.kind == "error":
        return FAIL, out.nginx_says()
    if out.kind == "wait":
        why = "still Auth-Status: WAIT after following it; nginx keeps asking"
        if case.expect == "ok" and case.strict:
            return FAIL, why + " and the client never gets in"
        return WARN, why
    if case.expect == "ok":
        return _judge_ok(case, out, sent)
    if case.expect == "refused":
        return _judge_refused(case, out, sent)
    if case.expect == "wait":
        return FAIL, f"expected Auth-Status: WAIT, got {_describe(out)}"
    return _check_expectations(case, out, PASS, _describe(out))


def _describe(out: Outcome) -> str:
    resp = out.response
    if out.kind == "refused" and resp is not None:
        wait = f", Auth-Wait: {resp.wait}" if resp.wait else ""
        return f'refused: "{show(resp.error or b"")}"{wait}'
    if out.kind == "ok" and out.backend:
        who = f' as "{show(resp.user)}"' if resp is not None and resp.user is not None else ""
        return f"accepted: backend {out.backend[0]}:{out.backend[1]}{who}"
    return out.kind


def _judge_ok(case: Case, out: Outcome, sent: Sent) -> tuple[str, str]:
    resp = out.response
    assert resp is not None
    if out.kind == "refused":
        text = show(resp.error or b"")
        noun = {"plain": "password", "external": "certificate", "xoauth2": "token",
                "oauthbearer": "token"}.get(case.method, "digest")
        why = (f'refused: "{text}", but the case expects a success' if case.role == "file"
               else f'refused the right {noun}: "{text}"')
        if resp.error.upper() in (b"OK", b"WAIT"):
            return FAIL, why + " (nginx compares OK and WAIT case-sensitively)"
        if case.attempt > 1 and case.role == "right":
            return FAIL, (f'refused the right password at Auth-Login-Attempt {case.attempt}: '
                          f'"{text}": a client that mistyped in this session cannot log in')
        escaped = [v for v in (case.user, case.password) if any(b <= 0x20 or b == 0x25
                                                                 for b in v)]
        if escaped and case.method == "plain":
            why += ("; nginx %XX-escapes spaces, controls and '%' in Auth-User/Auth-Pass: "
                    "does the server decode them?")
        if not case.strict:
            return WARN, why + f" (fine if {case.method} is not enabled in nginx's " \
                               f"{case.protocol}_auth)"
        return FAIL, why
    verdict, notes = PASS, [_describe(out)]
    if case.method in OAUTH and resp.password is not None:
        if resp.password == b"":
            verdict = FAIL
            notes.append("Auth-Pass is empty: the backend gets an empty token")
        elif resp.password != case.password:
            notes.append("Auth-Pass is another token: the backend gets it instead of the "
                         "client's")
    elif resp.password is not None and case.method != "external":
        verdict, note = auth_pass_check(case, resp.password, sent)
        if note:
            notes.append(note)
    elif resp.password is None and case.method in NEEDS_AUTH_PASS:
        notes.append("no Auth-Pass: fine for SMTP unless proxy_smtp_auth is on")
    if resp.user == b"":
        verdict = FAIL
        notes.append("Auth-User is empty: nginx logs in to the backend with an empty login")
    if case.backend and out.backend != case.backend:
        verdict = FAIL
        notes.append(f"expected backend {case.backend[0]}:{case.backend[1]}")
    return _check_expectations(case, out, verdict, "; ".join(notes))


def auth_pass_check(case: Case, returned: bytes, sent: Sent) -> tuple[str, str]:
    """Compare the Auth-Pass of a success with the password the client really has.

    nginx logs in to the backend with Auth-Pass as sent, byte for byte (it decodes nothing),
    so any mangled form of the password breaks every backend login. The value itself is
    never shown: it is a password.
    """
    pw = case.password
    if returned == pw:
        return PASS, ""
    why = None
    if case.method in ("apop", "cram-md5") and returned == sent.auth_pass:
        why = ("Auth-Pass is the client's digest, not the password: the backend login fails "
               "(nginx logs in with Auth-Pass as is)")
    elif returned == escape(pw):
        why = ("Auth-Pass is the password still %XX-escaped as nginx sent it: nginx decodes "
               "nothing, so the backend gets the escaped form and the login fails")
    else:
        mangled = {urllib.parse.unquote_to_bytes(pw): "decoded once more",
                   pw.replace(b"+", b" "): "with '+' turned into spaces",
                   pw.lower(): "in lower case", pw.upper(): "in upper case",
                   pw.strip(): "trimmed"}
        if returned in mangled:
            why = f"Auth-Pass is the password {mangled[returned]}: the backend login fails"
        elif returned and pw.startswith(returned):
            why = "Auth-Pass is the password cut short: the backend login fails"
        elif returned == b"":
            why = "Auth-Pass is empty: the backend login fails"
    if why:
        return FAIL, why
    return WARN, ("Auth-Pass differs from the password the client gave: fine only if the "
                  "backend expects another password (a master password)")


def _judge_refused(case: Case, out: Outcome, sent: Sent) -> tuple[str, str]:
    resp = out.response
    assert resp is not None
    if out.kind == "ok":
        noun = {"plain": "password", "xoauth2": "token", "oauthbearer": "token"}
        what = {"wrong": f"accepted a wrong {noun.get(case.method, 'digest')}",
                "password-as-token": ("accepted the password as a bearer token: the server "
                                      "does not tell tokens from passwords"),
                "attempt": f"accepted a wrong password at attempt {case.attempt}",
                "no-cert": ("accepted EXTERNAL with no verified client certificate: nginx "
                            "accepts AUTHENTICATE EXTERNAL with an initial response even where "
                            "external is not enabled, so anyone could log in as anyone")}
        return FAIL, what.get(case.role, "accepted") + f" ({_describe(out)})"
    if not resp.error:
        return WARN, "refused with an empty Auth-Status: the client sees no reason"
    if case.role in ("wrong", "attempt", "password-as-token") and \
            case.method in ("plain", *OAUTH) and case.password in resp.error:
        return FAIL, ("the error text carries the password or token the client sent: nginx "
                      "writes it to the client and to its error log")
    return _check_expectations(case, out, PASS, _describe(out))


def _check_expectations(case: Case, out: Outcome, verdict: str, reason: str) -> tuple[str, str]:
    """The optional expectations of a case file entry."""
    resp = out.response
    if resp is None or case.role != "file":
        return verdict, reason
    wrong = []
    if case.expect == "ok" and out.kind != "ok":
        wrong.append("expected a success")
    if case.expect == "refused" and out.kind != "refused":
        wrong.append("expected a refusal")
    if case.login is not None and resp.user != case.login:
        wrong.append(f'expected Auth-User "{show(case.login)}"')
    if case.error is not None and resp.error != case.error:
        wrong.append(f'expected Auth-Status "{show(case.error)}"')
    if case.error_code is not None and resp.error_code != case.error_code:
        wrong.append(f'expected Auth-Error-Code "{show(case.error_code)}"')
    if case.wait is not None and out.kind == "refused" and resp.wait != case.wait:
        wrong.append(f"expected Auth-Wait {case.wait}")
    if wrong:
        return FAIL, f"{reason}; " + "; ".join(wrong)
    return verdict, reason
