"""``record_sessions PATH;``: one JSON line per session with the shape of what the client said.

Off by default (nginx has nothing like it). The driver makes one call per client read before
login (``client``; clients send one command per read, so that is one call per command), one
per relayed chunk after it (``relay_up`` / ``relay_down``), and one at close. Each command
becomes its verb and the shapes of its arguments, never their text where it could be
personal:

- credentials are never written: the login of LOGIN/USER is ``{"login": n}``, passwords
  ``{"secret": n}``, SASL initial responses and continuation lines ``{"sasl": n}``; the
  session's login (when the dialogue revealed it) is an HMAC with a key each process draws
  at random and never writes, so that sessions of one user group together within a file and
  nothing can be looked up;
- a token is kept as it is only when it is a number, a sequence set or an upper-case
  protocol keyword (``FETCH``, ``1:*``, ``(FLAGS``, ``BODY.PEEK[HEADER]``); others become
  ``{"q": n}`` (quoted string; special-use folder names such as Sent are kept), ``{"a": n}`` (atom), ``{"addr": n, "pre": "FROM:"}`` (an
  address), ``{"lit": n}`` (an IMAP literal);
- message bodies (APPEND literals, SMTP DATA) are their sizes only.

After login the relay carries bytes without looking at them. Looking costs Python per byte
only where a protocol needs it; here it is one ``bytes.split`` of a chunk of at most
``RELAY_PARSE_LIMIT`` bytes (clients write a command per chunk), with literals and DATA
bodies skipped by counting; of a larger chunk only the first line is read (a command with
its literal in the same write), the rest counted. Each command records ``t``, the
seconds since the previous command arrived (the server's reply time included), which is
what a replay (loadtest/replay_user.py) sleeps.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import time

FORMAT = 1
RELAY_PARSE_LIMIT = 4096
MAX_COMMANDS = 2000  # a session that talks for days is cut here (the counts go on)

_IMAP_VERBS = ("CAPABILITY NOOP LOGOUT STARTTLS AUTHENTICATE LOGIN SELECT EXAMINE CREATE "
               "DELETE RENAME SUBSCRIBE UNSUBSCRIBE LIST LSUB XLIST STATUS APPEND CHECK CLOSE "
               "EXPUNGE SEARCH FETCH STORE COPY MOVE UID IDLE ENABLE NAMESPACE ID UNSELECT "
               "GETQUOTA GETQUOTAROOT GETACL MYRIGHTS COMPRESS NOTIFY GETMETADATA SETMETADATA "
               "ESEARCH SORT THREAD")
_POP3_VERBS = "USER PASS APOP AUTH CAPA STLS STAT LIST RETR TOP UIDL DELE RSET NOOP QUIT LAST"
_SMTP_VERBS = "HELO EHLO LHLO AUTH STARTTLS MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY EXPN HELP"
VERBS = {p: frozenset(v.split(" ")) for p, v in
         (("imap", _IMAP_VERBS), ("pop3", _POP3_VERBS), ("smtp", _SMTP_VERBS))}
# verbs whose arguments are credentials (the mechanism name of AUTH/AUTHENTICATE excepted)
CREDENTIALS = {"LOGIN": ("login", "secret"), "USER": ("login",), "PASS": ("secret",),
               "APOP": ("login", "secret")}
SASL_VERBS = frozenset({"AUTHENTICATE", "AUTH"})
# upper case and IMAP's punctuation (FETCH items, sequence sets, SIZE=n), or a flag
_SAFE = re.compile(r"[+\-]?[A-Z0-9.:*,()\[\]<>=\-]+|\(*\\[A-Za-z]+\)*")
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|\x00L\d+\x00|[^\s"]+')
_LITERAL_END = re.compile(rb"\{(\d+)\+?\}\r?\n?$")
# special-use folder names say nothing about anyone, and a replay needs them to exist
_FOLDERS = frozenset({"INBOX", "SENT", "SENT ITEMS", "SENT MESSAGES", "DRAFTS", "TRASH",
                      "DELETED ITEMS", "JUNK", "SPAM", "ARCHIVE"})
_ADDRESS = re.compile(r"([A-Za-z]+:)?<[^>]*>(.*)")


class Recorder:
    """One file, opened once per process; each finished session is one line, written with
    a single O_APPEND write so that the workers' lines do not interleave."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.key = os.urandom(16)
        self._fd: int | None = None

    def start(self, protocol: str, now: float) -> SessionRecord:
        return SessionRecord(self, protocol, now)

    def user(self, login: bytes) -> str:
        return hmac.new(self.key, login, hashlib.sha256).hexdigest()[:12]

    def write(self, record: dict) -> None:
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            os.write(self._fd, line)
        except OSError:
            pass  # a full disk must not end sessions; the operator sees the file stop


_recorders: dict[str, Recorder] = {}


def start(conf, protocol: str, now: float) -> SessionRecord | None:
    """The session's record, or None when its server{} does not record."""
    path = getattr(conf, "record_sessions", None)
    if not path:
        return None
    recorder = _recorders.get(path)
    if recorder is None:  # made in the worker, so each worker draws its own key
        recorder = _recorders[path] = Recorder(path)
    return recorder.start(protocol, now)


class SessionRecord:
    """What one session said, in shapes (see the module docstring)."""

    def __init__(self, recorder: Recorder, protocol: str, now: float) -> None:
        self.recorder, self.protocol = recorder, protocol
        self.verbs = VERBS[protocol]
        self.started = self.last = now
        self.wall = time.time()
        self.commands: list[dict] = []
        self.user: str | None = None
        self.buffer = b""
        self.literal = 0        # bytes of an IMAP literal still to skip
        self.in_data = False    # SMTP: between DATA and the lone dot
        self.data_size = 0
        self.sasl = 0           # SASL continuation lines expected (0: none)
        self.mechanism = ""
        self.up = [0, 0]        # relayed client bytes, chunks
        self.down = [0, 0]
        self.unparsed = 0       # relayed chunks too large to look at
        self.opaque = False     # after COMPRESS the relayed bytes are not lines any more

    # -- the driver's calls ---------------------------------------------------------------
    def client(self, data: bytes, now: float) -> None:
        """Client bytes in the dialogue (before login)."""
        self._feed(data, now)

    def relay_up(self, data: bytes, now: float) -> None:
        self.up[0] += len(data)
        self.up[1] += 1
        if self.opaque:
            return
        if len(data) > RELAY_PARSE_LIMIT and not self.literal and not self.in_data:
            # a command line with a literal after it (LITERAL+, an APPEND in one write): the
            # line is read, the literal counted; anything else in a large chunk only counted
            end = data.find(b"\n", 0, 1024)
            self.buffer = b""
            if end >= 0:
                self._feed(data[:end + 1], now)
            if end >= 0 and (self.literal or self.in_data):
                self._feed(data[end + 1:], now)
            else:
                self.unparsed += 1
            return
        self._feed(data, now)

    def relay_down(self, size: int) -> None:
        self.down[0] += size
        self.down[1] += 1

    def close(self, outcome: str, now: float) -> None:
        self.recorder.write({
            "v": FORMAT, "protocol": self.protocol, "at": round(self.wall, 3),
            "duration": round(now - self.started, 4), "outcome": outcome, "user": self.user,
            "commands": self.commands,
            "relay": {"up_bytes": self.up[0], "up_chunks": self.up[1],
                      "down_bytes": self.down[0], "down_chunks": self.down[1],
                      "unparsed_chunks": self.unparsed},
        })

    # -- lines ----------------------------------------------------------------------------
    def _feed(self, data: bytes, now: float) -> None:
        pos = 0
        while pos < len(data):
            if self.literal:
                take = min(self.literal, len(data) - pos)
                self.literal -= take
                pos += take
                continue
            if self.in_data:
                pos = self._data(data, pos)
                continue
            end = data.find(b"\n", pos)
            if end < 0:
                self.buffer += data[pos:]
                if len(self.buffer) > RELAY_PARSE_LIMIT:  # no line: drop it, count it
                    self.buffer = b""
                    self.unparsed += 1
                return
            line, pos = self.buffer + data[pos:end + 1], end + 1
            self.buffer = b""
            literal = _LITERAL_END.search(line) if self.protocol == "imap" else None
            if literal:
                size = int(literal.group(1))
                self.literal = size
                # the command goes on after the literal: keep what came so far
                self.buffer = line[:literal.start()] + b"\x00L%d\x00" % size
                continue
            self._command(line.rstrip(b"\r\n"), now)

    def _data(self, data: bytes, pos: int) -> int:
        """SMTP DATA: count the body up to the lone dot, look at nothing else."""
        end = data.find(b"\r\n.\r\n", pos)
        if end < 0:
            self.data_size += len(data) - pos
            return len(data)
        self.data_size += end + 2 - pos
        self._append({"body": self.data_size})
        self.in_data, self.data_size = False, 0
        return end + 5

    def _command(self, line: bytes, now: float) -> None:
        t, self.last = round(now - self.last, 4), now
        if self.sasl and b" " not in line:  # a command has a space (IMAP: after its tag)
            self.sasl -= 1
            self._sasl_user(line, first=self.sasl == 1)
            self._append({"t": t, "sasl": len(line)})
            return
        self.sasl = 0
        words = _TOKENS.findall(line)
        if self.protocol == "imap":
            if len(words) == 1 and words[0].upper() == b"DONE":
                self._append({"t": t, "verb": "DONE"})
                return
            words = words[1:]  # the tag: the replay makes its own
        verb = words[0].decode("latin-1").upper() if words else ""
        args = words[1:]
        if verb == "UID" and args:
            verb, args = f"UID {args[0].decode('latin-1').upper()}", args[1:]
        if verb.split(" ")[0] not in self.verbs:
            self._append({"t": t, "other": len(line)})  # not a command: its length only
            return
        entry: dict = {"t": t, "verb": verb}
        if verb in CREDENTIALS:
            entry["args"] = [{kind: _length(word)}
                             for kind, word in zip(CREDENTIALS[verb], args, strict=False)]
            if args and CREDENTIALS[verb][0] == "login":
                self.user = self.recorder.user(_unquote(args[0]))
        elif verb in SASL_VERBS:
            mechanism = self.mechanism = args[0].decode("latin-1").upper() if args else ""
            entry["args"] = [mechanism] + [{"sasl": len(a)} for a in args[1:]]
            if len(args) > 1:
                self._sasl_user(args[1], first=True)
            # continuation lines to come: LOGIN asks twice, the others once; an initial
            # response answers the first question
            self.sasl = (2 if mechanism == "LOGIN" else 1) - (1 if len(args) > 1 else 0)
        else:
            entry["args"] = [_shape(word) for word in args]
        self._append(entry)
        if verb == "DATA" and self.protocol == "smtp":
            self.in_data = True
        elif verb == "COMPRESS":
            self.opaque = True

    def _sasl_user(self, blob: bytes, first: bool) -> None:
        """The login in a PLAIN answer (authzid NUL authcid NUL password) or in LOGIN's first
        answer, for the session's HMAC; nothing of it is kept."""
        if self.mechanism not in ("PLAIN", "LOGIN") or (self.mechanism == "LOGIN" and not first):
            return
        try:
            text = base64.b64decode(blob, validate=True)
        except ValueError:
            return
        if self.mechanism == "PLAIN":
            parts = text.split(b"\0")
            text = parts[1] if len(parts) == 3 else b""
        if text:
            self.user = self.recorder.user(text)

    def _append(self, entry: dict) -> None:
        if len(self.commands) < MAX_COMMANDS:
            self.commands.append(entry)


def _unquote(word: bytes) -> bytes:
    if len(word) >= 2 and word[:1] == word[-1:] == b'"':
        return word[1:-1].replace(b'\\"', b'"').replace(b"\\\\", b"\\")
    return word


def _length(word: bytes) -> int:
    if word.startswith(b"\x00L"):
        return int(word[2:-1])
    return len(_unquote(word))


def _shape(word: bytes) -> str | dict:
    if word.startswith(b"\x00L"):
        return {"lit": int(word[2:-1])}
    text = word.decode("latin-1")
    if _unquote(word).decode("latin-1").upper() in _FOLDERS:
        return text
    if word[:1] == b'"':
        return {"q": len(_unquote(word))}
    if _SAFE.fullmatch(text):
        return text
    address = _ADDRESS.fullmatch(text)
    if address:  # SMTP's FROM:<a@b.example>
        pre = (address.group(1) or "").upper()
        return {"addr": len(text) - len(pre) - len(address.group(2)) - 2, "pre": pre}
    return {"a": len(word)}
