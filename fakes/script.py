r"""Script files for the fakes: one TOML file describes the mock auth server and, for
``postern fakes``, the IMAP, POP3 and SMTP upstreams behind it.

``postern auth-mock --script FILE`` reads ``[auth]``, ``[users]`` and ``[[queue]]``;
``postern fakes --script FILE`` reads everything. Every section is optional. Unknown keys and
wrong types are errors that name the key path (``users.alice.replies[2].wait``; list items
are counted from 1)::

    [auth]                            # the mock auth_http server
    listen = "127.0.0.1:9000"         # auth-mock default 127.0.0.1:9000; fakes: 127.0.0.1:0
    uri = "/auth"                     # path in the printed auth_http URL
    fail_message = "Invalid login or password"   # Auth-Status text of a default refusal
    fail_wait = 0                     # Auth-Wait on default refusals (0: none)
    fail_wait_attempts = 0            # none past this Auth-Login-Attempt (0: no limit)
    smtp_error_code = "535 5.7.8"     # Auth-Error-Code on default SMTP refusals
    always_send_pass = false          # Auth-Pass on every success (else apop/cram-md5/external)
    requests_log = "auth.jsonl"       # one JSON line per request, Auth-Pass masked (cwd-relative)
    keepalive = false                 # keep HTTP/1.1 connections open (Content-Length replies)
    backends = { imap = "127.0.0.1:1143", smtp = "127.0.0.1:1025" }  # for every user; SMTP's
                                      # also answers Auth-Method none. fakes: the fakes' own
    [auth.faults]                     # misdeliver every answer (a reply's own options win)
    delay = 0.0                       # seconds before answering
    trickle = 0.05                    # seconds between single bytes
    drop = false                      # close without answering
    close_early = 20                  # send only N bytes (true: half), then close
    stall = false                     # read the request, never answer
    oversize = 1100                   # pad the header block to N bytes (true: 1100)
    every = 1                         # only every Nth request (counted from 1)
    close_after = 0                   # keepalive: close each connection after N replies
    protocols = ["imap"]              # only requests of these protocols

    [users.alice]                     # a login the mock knows (and, for fakes, the upstreams)
    password = "secret"               # checked per Auth-Method (plain, apop, cram-md5)
    backends = { imap = "127.0.0.1:1143", pop3 = "127.0.0.1:1110" }
    backend_user = "alice@example.test"   # Auth-User rewrite on success (upstream login)
    backend_password = "other"            # Auth-Pass on success (upstream password)
    tokens = ["tok-alice"]            # bearer tokens for Auth-Method xoauth2 / oauthbearer
    replies = [ { status = "WAIT", wait = 1 }, { status = "OK" } ]   # in arrival order,
                                      # then the default decision
    [users.alice.by_attempt]          # by Auth-Login-Attempt; wins over replies
    3 = { status = "Too many attempts" }

    [[queue]]                         # answers the next requests, whoever they are for
    drop = true                       # (first in the file, first used; before any user's)

A reply (in ``replies``, ``by_attempt`` or ``queue``) takes these keys; what is not given is
left out of the answer::

    status = "OK"                     # "OK", "WAIT" or the error text (Auth-Status)
    backend = "127.0.0.1:1143"        # Auth-Server and Auth-Port in one; or:
    server = "127.0.0.1"              # Auth-Server (any text: malformed values welcome)
    port = 1143                       # Auth-Port (integer or text)
                                      # status "OK" with neither: the user's backend
    wait = 2                          # Auth-Wait (integer or text)
    error_code = "535 5.7.8"          # Auth-Error-Code (SMTP)
    user = "alice@example.test"       # Auth-User rewrite
    password = "secret"               # Auth-Pass
    headers = ["X-Note: hi"]          # extra header lines, or a table { X-Note = "hi" }
    http_status = "HTTP/1.0 403 Forbidden"   # the status line; false leaves it out
    body = ""                         # bytes after the header block
    eol = "\r\n"                      # line ending ("\n" for bare LF)
    raw = "HTTP/1.0 200 OK\r\n..."    # send exactly this instead (raw_hex: hex bytes)
    default = false                   # true: the default decision, with these keys on top
    times = 1                         # in a list: this reply N times in a row
    # and delay, trickle, drop, close_early, stall, oversize: delivery, as in [auth.faults]

Only for ``postern fakes``::

    [content]                         # Faker mail, shared by IMAP and POP3 (POP3 is INBOX)
    seed = 1
    counts = { INBOX = 12, Sent = 4, Archive = 8 }
    large_message = "5M"              # add one message of this size to every INBOX
    shared = false                    # one generated set for every user (fast, many users)

    [imap]                            # also [pop3] and [smtp]
    enabled = true
    listen = "127.0.0.1:0"            # port 0: a free one
    users = { bob = "other" }         # upstream-only logins (added to [users])
    capabilities = ["IMAP4rev1", "AUTH=PLAIN"]   # imap and pop3
    # hostname = "upstream.test"      # pop3 and smtp
    # auth_required = false           # smtp; also helo_required, data_size_limit
    # mail_dir = "mail"               # smtp: keep every accepted message there as NNNNN.eml
                                      # (index.jsonl); mail for a user also goes to its INBOX
    [imap.faults]                     # the fake's Faults fields (see fakes/imap.py, pop3.py,
    greeting_delay = 2.0              # smtp.py); false means None (greeting = false: none),
    login_untagged = ["* OK [ALERT] hi"]   # text is sent as UTF-8 bytes

    [nginx]                           # the printed mail {} snippet
    server_name = "fakes.postern.test"
    listen = { imap = "127.0.0.1:8143", pop3 = "127.0.0.1:8110", smtp = "127.0.0.1:8025" }
    directives = ["proxy_timeout 1m;"]    # more mail-level lines
    imap_directives = ["imap_auth plain login;"]   # also pop3_ and smtp_directives

Upstream users are the ``[users]`` logins (``backend_user``, else the login) with their
``backend_password`` (else ``password``), plus each section's ``users``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from postern.fakes import imap as imap_fake
from postern.fakes import pop3 as pop3_fake
from postern.fakes import smtp as smtp_fake
from postern.fakes._runner import byte_size
from postern.fakes.auth import DEFAULT_FAIL, Backend, Faults, MockAuthServer, Reply, User
from postern.fakes.mailbox import DEFAULT_COUNTS

PROTOCOLS = ("imap", "pop3", "smtp")
LEG_FAULTS: dict[str, type] = {"imap": imap_fake.Faults, "pop3": pop3_fake.Faults,
                               "smtp": smtp_fake.Faults}
NGINX_LISTEN = {"imap": "127.0.0.1:8143", "pop3": "127.0.0.1:8110", "smtp": "127.0.0.1:8025"}

# Key -> type, in the notation of the dataclasses' annotations (see _convert).
_DELIVERY_KEYS = {"delay": "float", "trickle": "float", "drop": "bool",
                  "close_early": "int | bool", "stall": "bool", "oversize": "int | bool"}
_REPLY_KEYS = {"status": "str", "backend": "str", "server": "str", "port": "int | str",
               "wait": "int | str", "error_code": "str", "user": "str", "password": "str",
               "headers": "list[str] | dict[str, str]", "http_status": "str | None",
               "body": "str", "eol": "str", "raw": "str", "raw_hex": "str", "default": "bool",
               "times": "int", **_DELIVERY_KEYS}
_AUTH_KEYS = {"listen": "str", "uri": "str", "fail_message": "str", "fail_wait": "int",
              "fail_wait_attempts": "int",
              "smtp_error_code": "str", "always_send_pass": "bool", "requests_log": "str",
              "keepalive": "bool", "backends": "dict[str, str]", "faults": "dict"}
_USER_KEYS = {"password": "str", "backends": "dict[str, str]", "backend_user": "str",
              "backend_password": "str", "replies": "list[dict]", "by_attempt": "dict",
              "tokens": "list[str]"}
_CONTENT_KEYS = {"seed": "int", "counts": "dict[str, int]", "large_message": "int | str",
                 "shared": "bool"}
_LEG_KEYS = {"enabled": "bool", "listen": "str", "users": "dict[str, str]", "faults": "dict"}
_LEG_OPTIONS = {"imap": {"capabilities": "list[str]"},
                "pop3": {"capabilities": "list[str]", "hostname": "str"},
                "smtp": {"hostname": "str", "auth_required": "bool", "helo_required": "bool",
                         "data_size_limit": "int", "mail_dir": "str"}}
_NGINX_KEYS = {"server_name": "str", "listen": "dict[str, str]", "directives": "list[str]",
               **{f"{p}_directives": "list[str]" for p in PROTOCOLS}}
_TOP = {"auth": "dict", "users": "dict", "queue": "list[dict]", "content": "dict",
        **{p: "dict" for p in PROTOCOLS}, "nginx": "dict"}


class ScriptError(ValueError):
    """A mistake in a script; the message names the file and the key path."""


@dataclass
class AuthSettings:
    listen: Backend | None = None  # None: the command's default
    uri: str = "/auth"
    fail_message: str = DEFAULT_FAIL
    fail_wait: int = 0
    fail_wait_attempts: int = 0
    smtp_error_code: str | None = None
    always_send_pass: bool = False
    requests_log: str | None = None
    keepalive: bool = False
    backends: dict[str, Backend] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)


@dataclass
class ContentSettings:
    seed: int = 1
    counts: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_COUNTS))
    large_message: int | None = None
    shared: bool = False


@dataclass
class LegSettings:
    """One fake upstream: where it listens, extra logins, Faults fields, constructor options."""

    protocol: str
    enabled: bool = True
    listen: Backend = ("127.0.0.1", 0)
    users: dict[str, str] = field(default_factory=dict)
    faults: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class NginxSettings:
    server_name: str = "fakes.postern.test"
    listen: dict[str, str] = field(default_factory=lambda: dict(NGINX_LISTEN))
    directives: list[str] = field(default_factory=list)
    server_directives: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Script:
    source: str = "<script>"
    auth: AuthSettings = field(default_factory=AuthSettings)
    users: dict[str, User] = field(default_factory=dict)
    queue: list[Reply] = field(default_factory=list)
    content: ContentSettings = field(default_factory=ContentSettings)
    legs: dict[str, LegSettings] = field(
        default_factory=lambda: {p: LegSettings(p) for p in PROTOCOLS})
    nginx: NginxSettings = field(default_factory=NginxSettings)

    def upstream_users(self, protocol: str) -> dict[str, str]:
        """Logins the fake upstream of ``protocol`` accepts."""
        users = {u.backend_user or login: u.backend_password or u.password
                 for login, u in self.users.items()}
        users.update(self.legs[protocol].users)
        return users


# -- loading ------------------------------------------------------------------------------------

def load_script(path: str | Path) -> Script:
    """Read and check a script file; every mistake raises ScriptError naming the key path."""
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as err:
        raise ScriptError(f"{path}: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ScriptError(f"{path}: {err}") from None
    return parse_script(doc, str(path))


def parse_script(doc: Mapping[str, Any], source: str = "<script>") -> Script:
    """Check a parsed TOML document (a dict) and turn it into a Script."""
    try:
        return _parse(doc, source)
    except _KeyError as err:
        raise ScriptError(f"{source}: {err}") from None


class _KeyError(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)


def _parse(doc: Mapping[str, Any], source: str) -> Script:
    top = _table(doc, "", _TOP)
    script = Script(source)
    if "auth" in top:
        script.auth = _auth(top["auth"])
    for login, entry in top.get("users", {}).items():
        script.users[login] = _user(entry, f"users.{_key(login)}")
    script.queue = _reply_list(top.get("queue", []), "queue")
    if "content" in top:
        script.content = _content(top["content"])
    for proto in PROTOCOLS:
        if proto in top:
            script.legs[proto] = _leg(proto, top[proto])
    if "nginx" in top:
        script.nginx = _nginx(top["nginx"])
    return script


def _key(name: str) -> str:
    """A key as TOML writes it in a dotted path."""
    bare = name and all(c.isalnum() or c in "-_" for c in name)
    return name if bare else '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _table(value: Any, path: str, keys: Mapping[str, str]) -> dict[str, Any]:
    """Check a table's keys and convert each value to its declared type."""
    if not isinstance(value, dict):
        raise _KeyError(path, f"expected a table, got {_kind(value)}")
    out = {}
    for name, item in value.items():
        where = f"{path}.{_key(name)}" if path else _key(name)
        if name not in keys:
            hint = difflib.get_close_matches(name, list(keys), n=1)
            known = f"did you mean {hint[0]!r}?" if hint else "known: " + ", ".join(keys)
            raise _KeyError(where, f"unknown key ({known})")
        out[name] = _convert(item, keys[name], where)
    return out


def _split(type_text: str) -> list[str]:
    """Top-level alternatives of an annotation: "list[str] | dict[str, str]" -> two."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(type_text):
        depth += c == "["
        depth -= c == "]"
        if c == "|" and depth == 0:
            parts.append(type_text[start:i].strip())
            start = i + 1
    parts.append(type_text[start:].strip())
    return parts


_WORDS = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
          "bytes": "a string", "None": "false (none)", "dict": "a table"}


def _describe(type_text: str) -> str:
    words = []
    for alt in _split(type_text):
        inner = alt.partition("[")[2][:-1]
        if alt.startswith("list["):
            words.append(f"a list of {_plural(inner)}")
        elif alt.startswith("dict["):
            words.append(f"a table of {_plural(_split(inner.partition(',')[2])[0])}")
        else:
            words.append(_WORDS.get(alt, alt))
    return " or ".join(dict.fromkeys(words))


def _plural(type_text: str) -> str:
    return {"str": "strings", "bytes": "strings", "int": "integers", "dict": "tables",
            "float": "numbers"}.get(type_text, _describe(type_text))


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _convert(value: Any, type_text: str, path: str) -> Any:
    """Convert a TOML value to one of the annotation's alternatives, or fail with its path."""
    alts = _split(type_text)
    for alt in alts:
        if alt == "bool" and isinstance(value, bool):
            return value
        if alt == "None" and value is False and "bool" not in alts:
            return None
        if alt == "int" and isinstance(value, int) and not isinstance(value, bool):
            return value
        if alt == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if alt == "str" and isinstance(value, str):
            return value
        if alt == "bytes" and isinstance(value, str):
            return value.encode()
        if alt.startswith("list") and isinstance(value, list):
            inner = alt[5:-1] if alt != "list" else "Any"
            return [_convert(v, inner, f"{path}[{i}]") if inner != "Any" else v
                    for i, v in enumerate(value, 1)]
        if alt.startswith("dict") and isinstance(value, dict):
            if alt == "dict":
                return value
            inner = _split(alt[5:-1].partition(",")[2])[0]
            return {k: _convert(v, inner, f"{path}.{_key(k)}") for k, v in value.items()}
    raise _KeyError(path, f"expected {_describe(type_text)}, got {_kind(value)}")


def _address(text: str, path: str) -> Backend:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise _KeyError(path, f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _backends(value: dict[str, str], path: str) -> dict[str, Backend]:
    out = {}
    for proto, addr in value.items():
        if proto not in PROTOCOLS:
            raise _KeyError(f"{path}.{_key(proto)}", "unknown protocol (imap, pop3 or smtp)")
        out[proto] = _address(addr, f"{path}.{proto}")
    return out


def _at_least(value: float, low: float, path: str, strict: bool = False) -> None:
    if value < low or (strict and value == low):
        raise _KeyError(path, f"must be {'above' if strict else 'at least'} {low}, not {value}")


def _auth(value: Any) -> AuthSettings:
    t = _table(value, "auth", _AUTH_KEYS)
    s = AuthSettings()
    for name in ("uri", "fail_message", "fail_wait", "fail_wait_attempts", "smtp_error_code",
                 "always_send_pass", "requests_log", "keepalive"):
        if name in t:
            setattr(s, name, t[name])
    if "fail_wait" in t:
        _at_least(s.fail_wait, 0, "auth.fail_wait")
    if "fail_wait_attempts" in t:
        _at_least(s.fail_wait_attempts, 0, "auth.fail_wait_attempts")
    if "listen" in t:
        s.listen = _address(t["listen"], "auth.listen")
    s.backends = _backends(t.get("backends", {}), "auth.backends")
    if "faults" in t:
        keys = {f.name: str(f.type) for f in dataclasses.fields(Faults)}
        faults = Faults(**_table(t["faults"], "auth.faults", keys))
        _delivery_ranges(vars(faults), "auth.faults")
        _at_least(faults.every, 1, "auth.faults.every")
        s.faults = faults
    return s


def _delivery_ranges(t: Mapping[str, Any], path: str) -> None:
    if t.get("delay") is not None:
        _at_least(t["delay"], 0, f"{path}.delay")
    if t.get("trickle") is not None:
        _at_least(t["trickle"], 0, f"{path}.trickle", strict=True)
    for name in ("close_early", "oversize"):
        if isinstance(t.get(name), int) and not isinstance(t[name], bool):
            _at_least(t[name], 0, f"{path}.{name}")


def _user(value: Any, path: str) -> User:
    t = _table(value, path, _USER_KEYS)
    if "password" not in t:
        raise _KeyError(path, "'password' is required")
    by_attempt = {}
    for key, entry in _convert(t.get("by_attempt", {}), "dict", f"{path}.by_attempt").items():
        where = f"{path}.by_attempt.{_key(key)}"
        if not key.isdigit() or int(key) < 1:
            raise _KeyError(where, "by_attempt keys are attempt numbers (1, 2, ...)")
        replies = _reply(entry, where)
        if len(replies) != 1:
            raise _KeyError(f"{where}.times", "only replies in a list repeat")
        by_attempt[int(key)] = replies[0]
    return User(t["password"], backends=_backends(t.get("backends", {}), f"{path}.backends"),
                replies=_reply_list(t.get("replies", []), f"{path}.replies"),
                by_attempt=by_attempt, backend_user=t.get("backend_user"),
                backend_password=t.get("backend_password"), tokens=list(t.get("tokens", [])))


def _reply_list(entries: list[Any], path: str) -> list[Reply]:
    out: list[Reply] = []
    for i, entry in enumerate(entries, 1):
        out += _reply(entry, f"{path}[{i}]")
    return out


def _reply(value: Any, path: str) -> list[Reply]:
    """One reply table (repeated ``times``)."""
    t = _table(value, path, _REPLY_KEYS)
    _delivery_ranges(t, path)
    kw: dict[str, Any] = {k: t[k] for k in ("status", "server", "port", "wait", "error_code",
                                            "user", "password", *_DELIVERY_KEYS) if k in t}
    if "backend" in t:
        if "server" in t or "port" in t:
            raise _KeyError(f"{path}.backend", "give backend or server/port, not both")
        kw["server"], kw["port"] = _address(t["backend"], f"{path}.backend")
    headers = t.get("headers", [])
    kw["headers"] = [f"{k}: {v}" for k, v in headers.items()] if isinstance(headers, dict) \
        else headers
    if "http_status" in t:
        kw["http_status"] = t["http_status"] or None
    if "body" in t:
        kw["body"] = t["body"].encode()
    if "eol" in t:
        kw["eol"] = t["eol"]
    if "raw" in t and "raw_hex" in t:
        raise _KeyError(f"{path}.raw_hex", "give raw or raw_hex, not both")
    if "raw" in t:
        kw["raw"] = t["raw"].encode()
    if "raw_hex" in t:
        try:
            kw["raw"] = bytes.fromhex(t["raw_hex"])
        except ValueError:
            raise _KeyError(f"{path}.raw_hex", "not hexadecimal bytes") from None
    kw["decide"] = t.get("default", False)
    kw["fill_backend"] = (kw.get("status") == "OK" and "server" not in kw and "port" not in kw)
    times = t.get("times", 1)
    _at_least(times, 1, f"{path}.times")
    return [Reply(**kw) for _ in range(times)]


def _content(value: Any) -> ContentSettings:
    t = _table(value, "content", _CONTENT_KEYS)
    c = ContentSettings()
    c.seed = t.get("seed", c.seed)
    c.shared = t.get("shared", c.shared)
    if "counts" in t:
        for name, n in t["counts"].items():
            _at_least(n, 0, f"content.counts.{_key(name)}")
        c.counts = t["counts"]
    size = t.get("large_message")
    if isinstance(size, str):
        try:
            size = byte_size(size)
        except (ValueError, KeyError, IndexError):
            raise _KeyError("content.large_message",
                            f"expected a size such as 5M or 200000, got {size!r}") from None
    if size is not None:
        _at_least(size, 1, "content.large_message")
    c.large_message = size
    return c


def _leg(proto: str, value: Any) -> LegSettings:
    keys = {**_LEG_KEYS, **_LEG_OPTIONS[proto]}
    t = _table(value, proto, keys)
    leg = LegSettings(proto, enabled=t.get("enabled", True), users=t.get("users", {}))
    if "listen" in t:
        leg.listen = _address(t["listen"], f"{proto}.listen")
    leg.options = {k: v for k, v in t.items() if k in _LEG_OPTIONS[proto]}
    if "faults" in t:
        fields = {f.name: str(f.type) for f in dataclasses.fields(LEG_FAULTS[proto])}
        faults = _table(t["faults"], f"{proto}.faults", fields)
        for name, v in faults.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                _at_least(v, 0, f"{proto}.faults.{name}")
        if proto == "smtp":  # verbs are matched in upper case
            if "replies" in faults:
                faults["replies"] = {k.upper(): v for k, v in faults["replies"].items()}
            if faults.get("drop_at"):
                faults["drop_at"] = faults["drop_at"].upper()
        leg.faults = faults
    return leg


def _nginx(value: Any) -> NginxSettings:
    t = _table(value, "nginx", _NGINX_KEYS)
    n = NginxSettings(server_name=t.get("server_name", NginxSettings.server_name),
                      directives=t.get("directives", []))
    for proto, addr in t.get("listen", {}).items():
        if proto not in PROTOCOLS:
            raise _KeyError(f"nginx.listen.{_key(proto)}", "unknown protocol (imap, pop3 or smtp)")
        if addr:  # "" leaves the server block out
            _address(addr, f"nginx.listen.{proto}")
        n.listen[proto] = addr
    n.server_directives = {p: t[f"{p}_directives"] for p in PROTOCOLS
                           if f"{p}_directives" in t}
    return n


# -- using a script ------------------------------------------------------------------------------

def build_auth(script: Script, *, backends: Mapping[str, Backend] | None = None,
               listen: Backend | None = None, requests_log: str | Path | None = None,
               **kw: Any) -> MockAuthServer:
    """A MockAuthServer as the script says. ``backends`` (e.g. the fakes' addresses) fill in
    protocols the script's ``auth.backends`` leaves out; ``listen``/``requests_log`` override
    the script; other keywords go to MockAuthServer. Users and replies are copies: the script
    can start any number of servers."""
    a = script.auth
    host, port = listen or a.listen or ("127.0.0.1", 9000)
    return MockAuthServer(
        copy.deepcopy(script.users), host=host, port=port, uri_path=a.uri,
        backends={**(backends or {}), **a.backends}, fail_wait=a.fail_wait,
        fail_wait_attempts=a.fail_wait_attempts,
        fail_message=a.fail_message, smtp_error_code=a.smtp_error_code,
        always_send_pass=a.always_send_pass, keepalive=a.keepalive,
        script=copy.deepcopy(script.queue),
        faults=copy.deepcopy(a.faults), requests_log=requests_log or a.requests_log, **kw)


def auth_http_line(url: str) -> str:
    """The nginx directive that points a mail proxy at this URL."""
    return f"auth_http {url};"


def describe_faults(faults: Any) -> str:
    """The fields of a Faults (any of the fakes') that differ from their defaults."""
    blank = type(faults)()
    out = []
    for f in dataclasses.fields(faults):
        value = getattr(faults, f.name)
        if value == getattr(blank, f.name):
            continue
        if value is True:
            out.append(f.name)
        elif isinstance(value, list):
            out.append(f"{f.name}=[{len(value)} item{'s' * (len(value) != 1)}]")
        else:
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            text = repr(text) if isinstance(text, str) else str(text)
            out.append(f"{f.name}={text if len(text) <= 40 else text[:37] + '...'}")
    return ", ".join(out)
