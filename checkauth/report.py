"""The report: a table for people, JSON for machines.

JSON schema (``--json``; ``"schema": 1``; new keys may be added, none removed or renamed)::

    {
      "schema": 1,
      "tool": "postern check-auth",
      "url": "http://127.0.0.1:9000/auth",      # as given
      "auth_server": "127.0.0.1:9000",          # as nginx names it in its log
      "settings": {"user": "alice" | null, "protocols": ["imap", ...],
                   "methods": ["plain", ...], "timeout": 60.0, "burst": 20,
                   "attempts": 25, "client_ip": "192.0.2.1"},
      "summary": {"pass": 30, "warn": 2, "fail": 1, "exit_status": 1,
                  "causes": [{"reason": "...", "checks": ["imap.plain.right", ...]}]},
                                                # the failures grouped by cause, as the
                                                # table's first lines say them
      "checks": [{
        "id": "imap.plain.wrong",                # stable; see the list below
        "title": "imap plain, wrong password",
        "check": "imap plain, wrong password",   # the title again, for reports/ (sources.py)
        "verdict": "pass" | "warn" | "fail",
        "reason": "refused: \"Invalid login or password\", Auth-Wait: 2",
        "client_sees": "after 2 s: a1 NO Invalid login or password\\r\\n, then ..." | null,
        "client": null | {
          "outcome": "ok" | "refused" | "wait" | "error",
          "nginx_writes": "a1 NO Invalid login or password\\r\\n" | null,  # null: the backend's
          "delay": 0,                  # seconds nginx waits before writing (Auth-Wait)
          "then": "nginx closes the connection" | "the session goes on" | ...,
          "nginx_log": "client login failed: \"...\"" | null
        },
        "exchanges": [{"request": "GET /auth HTTP/1.0\\r\\n...",  # as sent
                       "reply": "HTTP/1.0 200 OK\\r\\n...",     # as nginx read it (<= 1024 bytes)
                       "elapsed_ms": 1.8, "error": null | "auth http server ... timed out"}]
      }, ...]
    }

Byte strings (``request``, ``reply``, ``nginx_writes``) are decoded as ISO-8859-1, one
character per byte, so ``value.encode("latin-1")`` gives the exact bytes back (JSON shows
CR LF as ``\\r\\n``). Auth-Pass values and the values of ``--header`` lines are replaced by
``***`` in requests and replies. ``reason``, ``client_sees`` (the table's "client:" text,
bytes shown with \\r \\n \\xNN escapes), ``then`` and ``nginx_log`` are plain text.

Check ids, in the order they run: ``connect`` or ``endpoint`` (the URL is not an auth_http
server: a web page, TLS, a mail server; the run stops there); per protocol P the checks the
right password must pass: ``P.plain.right``, ``P.plain.retry`` (at Auth-Login-Attempt 3),
``P.cram-md5.right``, ``P.external.cert``,
``pop3.apop.right``, ``smtp.none``, ``P.xoauth2.right`` and ``P.oauthbearer.right`` (with
``--token``); ``routing`` (the backend per protocol); ``burst``;
Postern's auth_http client extensions, never a fail: ``ext.https`` (an https:// URL),
``ext.keepalive`` (HTTP/1.1 kept alive?), ``ext.server-names`` (host names in Auth-Server?); odd
logins with the right password: ``login.unknown``, ``login.space``, ``login.percent``,
``login.double-escape``, ``login.quotes``, ``login.utf-8``, ``login.control``,
``login.trailing-space``, ``login.nul``, ``login.empty``, ``login.long``,
``login.latin-1``, ``login.wildcard``, ``login.ldap-filter``, ``login.sql``, ``login.plus``;
``case.<slug of the case name>.<protocol>``; then what must be refused: ``P.plain.wrong``,
``P.auth-wait``, ``smtp.error-code``, ``P.cram-md5.wrong``, ``pop3.apop.wrong``,
``P.external.no-cert`` (always, whatever ``--methods`` says), ``smtp.none.relay``,
``P.xoauth2.wrong``, ``P.xoauth2.password`` (the password sent as a token), the same for
``oauthbearer`` (with ``--token``); wrong
credentials for the user: ``cred.empty-password``, ``cred.sql``, ``cred.sql-quote``,
``cred.sql-comment``, ``cred.utf-8``,
``cred.ldap``, ``cred.shell``, ``cred.long``, ``cred.prefix``, ``cred.nul``,
``cred.double-escape``, ``cred.case``, ``cred.spaces``, ``cred.plus``; ``P.attempts`` (the
first protocol only); ``lockout`` (the right password once more); ``side-effects`` (how many
failed logins the run sent); ``aborted`` or ``interrupted``; ``latency``, ``header-size``,
``http-status``, ``reply-format`` (the last three only when some answer was complete).
Ids that depend on the password or login (``cred.case``, ``cred.plus``, ``login.plus``)
appear only where they differ from the real ones.
"""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from collections.abc import Sequence

from postern.proxy.auth_http import escape

from .cases import Settings
from .judge import FAIL, PASS, WARN, Row
from .wire import peer_name, show

MASK = b"***"


def counts(rows: Sequence[Row]) -> dict[str, int]:
    return {v: sum(r.verdict == v for r in rows) for v in (PASS, WARN, FAIL)}


_SENT_AS = re.compile(r"\s*\((?:imap|pop3|smtp)(?:, (?:imap|pop3|smtp))*; sent as .*\)$")
_ADDR = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")
_PROTO = re.compile(r"\b(?:imap|pop3|smtp|IMAP|POP3|SMTP)\b")
_QUOTED = re.compile(r'"[^"]*"')
_PREFIX = re.compile(r"^(?:the server broke on this input: |\d+ of \d+ concurrent requests "
                     r"failed; first: |attempt \d+: )")


def causes(rows: Sequence[Row]) -> list[tuple[str, list[str]]]:
    """The failures grouped by cause: (the first reason, the check ids), first seen first.

    Many checks fail for one reason when a server is broken throughout (every success
    unusable, say); the reasons then differ only in protocol, address and quoted values.
    """
    groups: dict[str, tuple[str, list[str]]] = {}
    for r in rows:
        if r.verdict != FAIL:
            continue
        key = _SENT_AS.sub("", _PREFIX.sub("", r.reason))
        key = _QUOTED.sub('"', _PROTO.sub("P", _ADDR.sub("A", key)))
        groups.setdefault(key, (r.reason, []))[1].append(r.id)
    return list(groups.values())


def exit_status(rows: Sequence[Row]) -> int:
    return 1 if any(r.verdict == FAIL for r in rows) else 0


def mask(data: bytes, names: Sequence[str]) -> bytes:
    """Hide Auth-Pass and shared-secret header values, line by line."""
    secret = {b"auth-pass"} | {n.lower().encode() for n in names}
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        name, sep, value = line.partition(b":")
        if sep and name.lower() in secret and value.strip(b" \r"):
            lines[i] = name + b": " + MASK + (b"\r" if line.endswith(b"\r") else b"")
    return b"\n".join(lines)


def _text(data: bytes) -> str:
    return data.decode("latin-1")


def _hider(s: Settings):
    """Replace the password wherever a server echoed it (error texts, odd headers)."""
    pw = s.password or b""
    # The wrong password contains the password; the password alone is hidden too unless it
    # is a short word the report's own text may contain ("password", "secret").
    values = [s.bad_password] + ([pw] if len(pw) >= 10 or not pw.isalpha() else [])
    if not pw:
        values = []
    forms = {f for v in values for f in (_text(v), show(v), _text(escape(v))) if len(f) >= 3}

    def hide(value):
        if isinstance(value, str):
            for form in sorted(forms, key=len, reverse=True):
                value = value.replace(form, "***")
            return value
        if isinstance(value, dict):
            return {k: v if k == "id" else hide(v) for k, v in value.items()}
        if isinstance(value, list):
            return [hide(v) for v in value]
        return value
    return hide


def to_json(rows: Sequence[Row], s: Settings) -> str:
    secret = [n for n, _ in s.extra_headers]
    checks = []
    for r in rows:
        client = None
        if r.client is not None:
            o = r.client
            client = {"outcome": o.kind,
                      "nginx_writes": _text(o.client) if o.client is not None else None,
                      "delay": o.delay, "then": o.then, "nginx_log": o.log}
        checks.append({
            "id": r.id, "title": r.title, "check": r.title, "verdict": r.verdict,
            "reason": r.reason, "client_sees": r.client.sees() if r.client else None,
            "client": client,
            "exchanges": [{"request": _text(mask(sent.request, secret)),
                           "reply": _text(mask(ex.raw, secret)),
                           "elapsed_ms": round(ex.elapsed * 1000, 3), "error": ex.error}
                          for sent, ex in r.exchanges]})
    doc = {
        "schema": 1, "tool": "postern check-auth", "url": s.url,
        "auth_server": peer_name(s.conf),
        "settings": {"user": s.user.decode("utf-8", "replace") if s.user is not None else None,
                     "protocols": list(s.protocols), "methods": list(s.methods),
                     "timeout": s.timeout, "burst": s.burst, "attempts": s.attempts,
                     "client_ip": s.client_ip},
        "summary": {**counts(rows), "exit_status": exit_status(rows),
                    "causes": _hider(s)([{"reason": reason, "checks": ids}
                                         for reason, ids in causes(rows)])},
        "checks": _hider(s)(checks),
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def to_table(rows: Sequence[Row], s: Settings, width: int | None = None) -> str:
    width = width or max(80, min(shutil.get_terminal_size((110, 24)).columns, 140))
    title_w = min(42, max(len(r.title) for r in rows) + 2) if rows else 20
    indent = title_w + 8
    hide = _hider(s)
    wrap = textwrap.TextWrapper(width=width - indent, break_long_words=True,
                                break_on_hyphens=False)
    who = f'user "{show(s.user)}", ' if s.user is not None else ""
    out = [f"postern check-auth {s.url}",
           (f"  auth server {peer_name(s.conf)}, {who}{' '.join(s.protocols)}, "
           f"auth_http_timeout {s.timeout:g} s"), ""]
    grouped = causes(rows)
    if len(grouped) < sum(r.verdict == FAIL for r in rows):  # say the few causes first
        out.append(f"{sum(len(ids) for _, ids in grouped)} checks fail for "
                   f"{len(grouped)} cause{'s' if len(grouped) > 1 else ''}:")
        for reason, ids in grouped[:8]:
            first = textwrap.shorten(hide(reason), 2 * (width - 10), placeholder=" ...")
            lines = textwrap.wrap(first, width - 10)
            out.append(f"  {len(ids):>3} x {lines[0]}")
            out += [" " * 8 + line for line in lines[1:]]
        if len(grouped) > 8:
            out.append(f"  ... and {len(grouped) - 8} more")
        out.append("")
    out.append(f"{'CHECK':<{title_w}}{'VERDICT':<8}REASON / WHAT THE MAIL CLIENT SEES")
    for r in rows:
        label = {PASS: "pass", WARN: "WARN", FAIL: "FAIL"}[r.verdict]
        lines = wrap.wrap(hide(r.reason)) or [""]
        if r.client is not None:
            lines += wrap.wrap("client: " + hide(r.client.sees()))
        title = r.title if len(r.title) < title_w else r.title[:title_w - 2] + "~"
        out.append(f"{title:<{title_w}}{label:<8}{lines[0]}")
        out += [" " * indent + line for line in lines[1:]]
    c = counts(rows)
    out += ["", f"{len(rows)} checks: {c[PASS]} pass, {c[WARN]} warn, {c[FAIL]} fail"]
    return hide("\n".join(out) + "\n")
