"""RFC reply syntax, line by line: is what a server said well-formed IMAP, POP3 or SMTP?

Scenarios assert nginx's exact bytes; this module asks a different question, so that a
target that is byte-different from nginx but RFC-correct can be told apart from a broken one:

- IMAP: RFC 3501 §9 (response, greeting, response-tagged, response-data, continue-req,
  resp-text, tag), literals in server data (§4.3) skipped by their announced length;
- POP3: RFC 1939 §3 (status indicator, 512-octet first line, multi-line responses with
  dot-stuffing), RFC 2449 §5-§6 (CAPA lines), RFC 5034 §4 (`+ ` SASL continuation);
- SMTP: RFC 5321 §4.2 (Reply-line: code, `-`/SP, textstring, one code per multi-line reply),
  §4.5.3.1.5 (512-octet reply lines), the Greeting and ehlo-ok-rsp forms, RFC 4954 §4 (`334`
  continuation) and RFC 3463 / RFC 2034 §4 enhanced status codes when a reply text starts
  with one.

It is sans-IO: `check(protocol, events)` takes one connection's transcript — (who, bytes)
pairs in arrival order, "C" for what the client sent, "S" for what it received — and returns
the violations. POP3 and SMTP replies are paired with the client's commands (in order, as
pipelining keeps it) to know which replies are multi-line and which are EHLO/HELO replies.

Some violations are nginx's own and deliberate in a drop-in (KNOWN_DEVIATIONS): they are
returned with `known` set, so a runner can report them without failing a target for
matching nginx.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

TLS_MARKER = b"<TLS handshake>"  # what Client.starttls() puts in the transcript
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


@dataclass(frozen=True)
class Violation:
    protocol: str
    number: int          # 1-based index of the server line (or reply) in the connection
    line: bytes          # the offending line, without its CRLF
    rule: str            # e.g. "RFC 3501 §9 resp-cond-bye"
    problem: str
    known: str | None = None   # a named nginx deviation (or configuration): reported only

    def __str__(self) -> str:
        text = f"S line {self.number}: {self.line[:200]!r}: {self.problem} [{self.rule}]"
        return text + (f" (known: {self.known})" if self.known else "")

    def as_dict(self) -> dict:
        return {"number": self.number, "line": self.line.decode("latin-1"), "rule": self.rule,
                "problem": self.problem, "known": self.known}


# (protocol, the whole line, the rule it breaks) -> why it is expected from nginx
KNOWN_DEVIATIONS: list[tuple[str, re.Pattern[bytes], str, str]] = [
    ("imap", re.compile(rb"\* BYE"), "resp-cond-bye",
     "nginx: LOGOUT answers a bare `* BYE` without resp-text"),
    ("imap", re.compile(rb"BAD invalid command"), "response-tagged",
     ("nginx QUIRK: untagged `BAD invalid command` after a bad AUTHENTICATE LOGIN user name "
     "(docs/behaviour.md §7.6)")),
    ("imap", re.compile(rb" (OK|NO|BAD) .*"), "tag",
     ("nginx QUIRK: a command line starting with a space has the empty tag, echoed in the "
     "reply (docs/behaviour.md §7.2)")),
    ("imap", re.compile(rb".+BAD invalid command"), "RFC 3501",
     ("nginx QUIRK: a stale tag after a waited auth failure, taken from the rewound command "
     "buffer (docs/behaviour.md §7.3)")),
    ("imap", re.compile(rb"\S+ NO "), "resp-text",
     "nginx: the auth server's Auth-Status text is passed on as is, here empty (docs/behaviour.md §10.4)"),
    ("imap", re.compile(rb"\* CAPABILITY.*", re.DOTALL), "capability-data",
     "configuration: imap_capabilities does not list IMAP4rev1"),
    ("smtp", re.compile(rb"503 5\.5\.0 Improper use of SMTP command pipelining"), "Greeting",
     ("nginx smtp_greeting_delay: a client talking early gets 503 instead of a greeting "
     "(docs/behaviour.md §9.2)")),
]


def known_deviation(protocol: str, line: bytes, rule: str) -> str | None:
    for proto, pattern, rule_part, why in KNOWN_DEVIATIONS:
        if proto == protocol and rule_part in rule and pattern.fullmatch(line):
            return why
    return None


def check(protocol: str, events: Iterable[tuple[str, bytes]], eof: bool = True) -> list[Violation]:
    """The violations in one connection. `eof`: the transcript is complete (an unterminated
    last line is then a violation; a cut transcript just stops)."""
    checker = {"imap": ImapChecker, "pop3": Pop3Checker, "smtp": SmtpChecker}[protocol]()
    for who, data in events:
        if who == "C":
            checker.client(data)
        elif who == "S":
            checker.server(data)
    checker.finish(eof)
    return checker.violations


# -- shared machinery -----------------------------------------------------------------------

class _Checker:
    protocol = ""
    crlf_rule = ""

    def __init__(self) -> None:
        self.violations: list[Violation] = []
        self.buffer = b""
        self.count = 0
        self.requests: deque[bytes] = deque()
        self._client_buffer = b""
        self._client_started = False

    def flag(self, line: bytes, rule: str, problem: str) -> None:
        self.violations.append(Violation(self.protocol, self.count, line, rule, problem,
                                         known_deviation(self.protocol, line, rule)))

    # client side: complete lines become requests, in order
    def client(self, data: bytes) -> None:
        if data == TLS_MARKER:
            # RFC 3207 §4.2 / RFC 2595 §3.1: whatever was pipelined after STARTTLS is
            # discarded by the server, so it gets no reply to pair with
            self.requests.clear()
            self._client_buffer = b""
            return
        if not self._client_started:
            self._client_started = True
            data = _strip_proxy_header(data)
        self._client_buffer += data
        while b"\n" in self._client_buffer:
            line, _, self._client_buffer = self._client_buffer.partition(b"\n")
            self.requests.append(line.rstrip(b"\r"))

    def next_request(self) -> bytes | None:
        return self.requests.popleft() if self.requests else None

    # server side: CRLF lines
    def server(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, _, self.buffer = self.buffer.partition(b"\n")
            self.count += 1
            if line.endswith(b"\r"):
                line = line[:-1]
            else:
                self.flag(line, self.crlf_rule, "line ends with a bare LF, not CRLF")
            self.line(line)

    def line(self, line: bytes) -> None:
        raise NotImplementedError

    def finish(self, eof: bool) -> None:
        if eof and self.buffer:
            self.count += 1
            self.flag(self.buffer, self.crlf_rule, "the connection ended inside a line (no CRLF)")


def _strip_proxy_header(data: bytes) -> bytes:
    """A PROXY protocol header opening the client stream is no command."""
    if data.startswith(b"PROXY ") and b"\r\n" in data:
        return data.split(b"\r\n", 1)[1]
    if data.startswith(PROXY_V2_SIGNATURE) and len(data) >= 16:
        return data[16 + int.from_bytes(data[14:16], "big"):]
    return data


def _is_base64(data: bytes) -> bool:
    if len(data) % 4:
        return False
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# -- IMAP (RFC 3501 §9) ---------------------------------------------------------------------

_CTL = set(range(0x20)) | {0x7F}
_ATOM_SPECIALS = set(b'(){ %*"\\]') | _CTL
_LITERAL_AT_END = re.compile(rb"\{(\d+)\+?\}$")
_NUMBER = re.compile(rb"[0-9]+")
_COND = {b"OK", b"NO", b"BAD"}


def _is_atom(token: bytes) -> bool:
    return bool(token) and all(b <= 0x7F and b not in _ATOM_SPECIALS for b in token)


def _is_tag(token: bytes) -> bool:
    """tag = 1*<any ASTRING-CHAR except "+">; ASTRING-CHAR = ATOM-CHAR / "]"."""
    return bool(token) and all(b <= 0x7F and b != 0x2B and (b not in _ATOM_SPECIALS or b == 0x5D)
                               for b in token)


class ImapChecker(_Checker):
    protocol = "imap"
    crlf_rule = "RFC 3501 §2.2 (lines end CRLF)"

    def __init__(self) -> None:
        super().__init__()
        self.literal_left = 0
        self.pending = b""   # a response so far, its literals replaced by "{N}"
        self.greeted = False

    def server(self, data: bytes) -> None:
        # literals in server data (RFC 3501 §4.3): N raw bytes, then the response goes on
        self.buffer += data
        while True:
            if self.literal_left:
                taken = min(self.literal_left, len(self.buffer))
                self.literal_left -= taken
                self.buffer = self.buffer[taken:]
                if self.literal_left:
                    return
            part, found, rest = self.buffer.partition(b"\n")
            if not found:
                return
            self.buffer = rest
            bare = not part.endswith(b"\r")
            part = part.removesuffix(b"\r")
            self.pending += part
            literal = _LITERAL_AT_END.search(part)
            if literal:
                self.literal_left = int(literal.group(1))
                continue
            self.count += 1
            line, self.pending = self.pending, b""
            if bare:
                self.flag(line, self.crlf_rule, "line ends with a bare LF, not CRLF")
            self.line(line)

    def finish(self, eof: bool) -> None:
        if eof and (self.buffer or self.pending or self.literal_left):
            self.count += 1
            self.flag(self.pending + self.buffer, self.crlf_rule,
                      "the connection ended inside a response")

    def line(self, line: bytes) -> None:
        first = not self.greeted
        self.greeted = True
        if first:
            self.greeting(line)
        elif line.startswith(b"+"):
            self.continuation(line)
        elif line.startswith(b"* ") or line == b"*":
            self.untagged(line)
        else:
            self.tagged(line)

    def greeting(self, line: bytes) -> None:
        rule = "RFC 3501 §9 greeting"
        word, _, _ = line[2:].partition(b" ")
        if not line.startswith(b"* ") or word.upper() not in (b"OK", b"PREAUTH", b"BYE"):
            self.flag(line, rule, 'the greeting must be "* OK", "* PREAUTH" or "* BYE"')
            return
        self.untagged(line)

    def continuation(self, line: bytes) -> None:
        rule = "RFC 3501 §9 continue-req"
        if not line.startswith(b"+ "):
            self.flag(line, rule, 'continue-req is "+" SP (resp-text / base64)')
            return
        rest = line[2:]
        if rest == b"" or _is_base64(rest):
            return
        self.resp_text(line, rest, rule)

    def untagged(self, line: bytes) -> None:
        rest = line[2:]
        word, sep, arg = rest.partition(b" ")
        upper = word.upper()
        if upper in _COND or upper in (b"BYE", b"PREAUTH"):
            name = "resp-cond-bye" if upper == b"BYE" else "resp-cond-state"
            if not sep:
                self.flag(line, f"RFC 3501 §9 {name}", f'"{upper.decode()}" must be followed by'
                          " SP resp-text")
                return
            self.resp_text(line, arg, f"RFC 3501 §9 {name}")
        elif upper == b"CAPABILITY":
            caps = arg.split(b" ") if sep else []
            bad = [c for c in caps if not _is_atom(c)]
            if bad or (sep and not arg):
                self.flag(line, "RFC 3501 §9 capability", f"capability is no atom: {bad!r}")
            elif not any(c.upper() in (b"IMAP4REV1", b"IMAP4REV2") for c in caps):
                self.flag(line, "RFC 3501 §9 capability-data",
                          'capability-data must list "IMAP4rev1" (RFC 9051: "IMAP4rev2")')
        elif _NUMBER.fullmatch(word):
            kind, _, data = arg.partition(b" ")
            if not _is_atom(kind):
                self.flag(line, "RFC 3501 §9 message-data / mailbox-data",
                          "a number must be followed by SP and a keyword")
            elif data:
                self.lexical(line, data, "RFC 3501 §9 msg-att")
        elif _is_atom(word):
            if arg:
                self.lexical(line, arg, "RFC 3501 §9 response-data")
        else:
            self.flag(line, "RFC 3501 §9 response-data",
                      "untagged data must start with a keyword or a number")

    def tagged(self, line: bytes) -> None:
        tag, _sep, rest = line.partition(b" ")
        if not _is_tag(tag):
            self.flag(line, "RFC 3501 §9 tag", "a tagged response needs a tag of 1*ASTRING-CHAR "
                      'other than "+"')
            return
        status, sep2, text = rest.partition(b" ")
        if status.upper() not in _COND:
            self.flag(line, "RFC 3501 §9 response-tagged",
                      'the tag must be followed by SP and "OK", "NO" or "BAD"')
        elif not sep2:
            self.flag(line, "RFC 3501 §9 resp-cond-state", "the status needs SP resp-text")
        else:
            self.resp_text(line, text, "RFC 3501 §9 resp-text")

    def resp_text(self, line: bytes, text: bytes, rule: str) -> None:
        """resp-text = ["[" resp-text-code "]" SP] text; text = 1*TEXT-CHAR."""
        if text.startswith(b"["):
            end = text.find(b"]")
            if end < 0:
                self.flag(line, rule + " resp-text-code", '"[" without a closing "]"')
                return
            atom = text[1:end].partition(b" ")[0]
            if not _is_atom(atom):
                self.flag(line, rule + " resp-text-code", "the code must start with an atom")
                return
            text = text[end + 1:]
            if text and not text.startswith(b" "):
                self.flag(line, rule, '"]" must be followed by SP text')
                return
            text = text[1:]
            if not text:
                return  # "* OK [ALERT]" with nothing after: RFC 9051 makes text optional here
        if not text:
            self.flag(line, "RFC 3501 §9 resp-text", "text = 1*TEXT-CHAR: the text is empty")
        elif b"\r" in text or b"\x00" in text:
            self.flag(line, "RFC 3501 §9 TEXT-CHAR", "CR or NUL inside the text")
        elif not _is_utf8(text):
            self.flag(line, "RFC 3501 §9 TEXT-CHAR", "8-bit bytes that are not even UTF-8")

    def lexical(self, line: bytes, data: bytes, rule: str) -> None:
        """Parentheses balance and quoted strings close (literals are already cut out)."""
        depth, i = 0, 0
        while i < len(data):
            b = data[i]
            if b == 0x22:  # quoted = DQUOTE *QUOTED-CHAR DQUOTE
                i += 1
                while i < len(data) and data[i] != 0x22:
                    i += 2 if data[i] == 0x5C else 1
                if i >= len(data):
                    self.flag(line, rule, "an unterminated quoted string")
                    return
            elif b == 0x28:
                depth += 1
            elif b == 0x29:
                depth -= 1
                if depth < 0:
                    self.flag(line, rule, 'a ")" without "("')
                    return
            elif b in (0x0D, 0x00):
                self.flag(line, rule, "CR or NUL outside a literal")
                return
            i += 1
        if depth:
            self.flag(line, rule, 'a "(" without ")"')


# -- POP3 (RFC 1939, RFC 2449, RFC 5034) ---------------------------------------------------

_POP3_MULTILINE = {b"CAPA", b"RETR", b"TOP"}
_POP3_MULTILINE_WITHOUT_ARGS = {b"LIST", b"UIDL", b"AUTH"}  # AUTH alone: the mechanism list
_MSG_ID = re.compile(rb"<[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+>")


class Pop3Checker(_Checker):
    protocol = "pop3"
    crlf_rule = "RFC 1939 §3 (lines end CRLF)"

    def __init__(self) -> None:
        super().__init__()
        self.greeted = False
        self.multiline: bytes | None = None   # the verb whose multi-line body is coming

    def line(self, line: bytes) -> None:
        if self.multiline is not None:
            self.body_line(line)
        elif not self.greeted:
            self.greeted = True
            self.status(line, "RFC 1939 §4 greeting")
            stamp = re.search(rb"<[^>]*>", line)
            if stamp and not _MSG_ID.fullmatch(stamp.group(0)):
                self.flag(line, "RFC 1939 §7 APOP timestamp",
                          "the timestamp must be a msg-id <local@domain>")
        elif line.startswith(b"+ ") or line == b"+":
            self.next_request()
            rest = line[2:]
            if line == b"+" or not (rest == b"" or _is_base64(rest)):
                self.flag(line, "RFC 5034 §4 continue-req", '"+" SP [base64]')
        else:
            request = self.next_request()
            ok = self.status(line, "RFC 1939 §3 status indicator")
            if ok and request is not None:
                verb, _, args = request.strip(b" ").partition(b" ")
                verb = verb.upper()
                if verb in _POP3_MULTILINE or (verb in _POP3_MULTILINE_WITHOUT_ARGS
                                               and not args.strip()):
                    self.multiline = verb

    def status(self, line: bytes, rule: str) -> bool:
        """single-line = status [SP text] CRLF (RFC 2449 §8), at most 512 octets with CRLF."""
        if len(line) + 2 > 512:
            self.flag(line, "RFC 1939 §3 / RFC 2449 §4", "a response line over 512 octets")
        match = re.fullmatch(rb"(\+OK|-ERR)( [^\r\n\x00]*)?", line)
        if not match:
            self.flag(line, rule, 'a response starts "+OK" or "-ERR", then SP text or CRLF')
            return False
        return match.group(1) == b"+OK"

    def body_line(self, line: bytes) -> None:
        if line == b".":
            self.multiline = None
            return
        if line.startswith(b".") and not line.startswith(b".."):
            self.flag(line, "RFC 1939 §3 byte-stuffing",
                      'a body line starting with "." must be dot-stuffed')
            return
        if self.multiline == b"CAPA":
            if len(line) + 2 > 512:
                self.flag(line, "RFC 2449 §5 capability", "a capability line over 512 octets")
            elif not re.fullmatch(rb"[\x21-\x2d\x2f-\x7f]+( [\x21-\x7f]+)*", line):
                self.flag(line, "RFC 2449 §5 capability", "capa-tag *(SP param)")


# -- SMTP (RFC 5321 §4.2, RFC 4954, RFC 3463) ----------------------------------------------

_REPLY_LINE = re.compile(rb"([2-5][0-5][0-9])([ -]?)(.*)", re.DOTALL)
_ENHANCED = re.compile(rb"(\d+)\.(\d+)\.(\d+)(?= |$)")
_DOMAIN = re.compile(rb"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                     rb"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?")
_ADDRESS_LITERAL = re.compile(rb"\[[^\[\]\\\s]+\]")
_EHLO_LINE = re.compile(rb"[A-Za-z0-9][A-Za-z0-9-]*(?: [\x21-\x7e]+)*")
_TEXTSTRING = re.compile(rb"[\t\x20-\x7e]+")


class SmtpChecker(_Checker):
    protocol = "smtp"
    crlf_rule = "RFC 5321 §2.3.8 (lines end CRLF)"

    def __init__(self) -> None:
        super().__init__()
        self.reply: list[bytes] = []
        self.replies = 0
        self.in_data = False

    def next_request(self) -> bytes | None:
        if self.in_data:  # the message went as one unit, up to its "." line
            self.in_data = False
            while self.requests and self.requests.popleft() != b".":
                pass
        return super().next_request()

    def line(self, line: bytes) -> None:
        self.reply.append(line)
        match = _REPLY_LINE.fullmatch(line)
        if not match or match.group(2) != b"-":
            self.whole_reply(self.reply)
            self.reply = []

    def whole_reply(self, lines: list[bytes]) -> None:
        first = not self.replies
        self.replies += 1
        request = None if first else self.next_request()
        verb = (request or b"").strip(b" ").partition(b" ")[0].upper()
        codes = set()
        for line in lines:
            if len(line) + 2 > 512:
                self.flag(line, "RFC 5321 §4.5.3.1.5", "a reply line over 512 octets")
            match = _REPLY_LINE.fullmatch(line)
            if not match:
                self.flag(line, "RFC 5321 §4.2 Reply-code",
                          "a reply line starts with a 3-digit code (2-5, 0-5, 0-9)")
                return
            code, sep, text = match.groups()
            codes.add(code)
            if sep == b"" and text:
                self.flag(line, "RFC 5321 §4.2 Reply-line", "the code must be followed by SP, "
                          '"-" or CRLF')
            elif code == b"334":
                if sep != b" " or not (text == b"" or _is_base64(text)):
                    self.flag(line, "RFC 4954 §4 continue-req", '"334" SP [base64]')
            elif sep == b" " and not text:
                self.flag(line, "RFC 5321 §4.2 textstring", "SP must be followed by text "
                          "(textstring = 1*(%d09 / %d32-126))")
            elif text and not _TEXTSTRING.fullmatch(text):
                self.flag(line, "RFC 5321 §4.2 textstring", "text outside %d09 / %d32-126")
            else:
                self.enhanced(line, code, text)
        if len(codes) > 1:
            self.flag(lines[-1], "RFC 5321 §4.2.1", "a multi-line reply changes its code")
        code, text = lines[0][:3], lines[0][4:]
        if first:
            self.greeting(lines, code, text)
        elif code == b"354" and verb == b"DATA":
            self.in_data = True
        elif code == b"250" and verb in (b"EHLO", b"HELO"):
            self.helo_reply(lines, text)

    def enhanced(self, line: bytes, code: bytes, text: bytes) -> None:
        """RFC 3463 §2: class "." subject "." detail, class 2/4/5 matching the reply code's
        first digit (RFC 2034 §4); subject and detail 1-3 digits."""
        match = _ENHANCED.match(text)
        if not match:
            return
        klass, subject, detail = match.groups()
        if klass not in (b"2", b"4", b"5") or len(subject) > 3 or len(detail) > 3:
            self.flag(line, "RFC 3463 §2 status-code", "class 2/4/5, subject and detail of "
                      "1-3 digits")
        elif klass != code[:1]:
            self.flag(line, "RFC 2034 §4 / RFC 3463 §2",
                      "the enhanced code's class differs from the reply code's")

    def greeting(self, lines: list[bytes], code: bytes, text: bytes) -> None:
        if code not in (b"220", b"554", b"421"):
            self.flag(lines[0], "RFC 5321 §4.2 Greeting / §3.1",
                      "the first reply must be 220 (or 554, or 421 closing)")
        elif code == b"220":
            host = text.partition(b" ")[0]
            if not (_DOMAIN.fullmatch(host) or _ADDRESS_LITERAL.fullmatch(host)):
                self.flag(lines[0], "RFC 5321 §4.2 Greeting",
                          '"220" SP (Domain / address-literal) [SP textstring]')

    def helo_reply(self, lines: list[bytes], text: bytes) -> None:
        host = text.partition(b" ")[0]
        if not (_DOMAIN.fullmatch(host) or _ADDRESS_LITERAL.fullmatch(host)):
            self.flag(lines[0], "RFC 5321 §4.1.1.1 ehlo-ok-rsp",
                      '"250" SP Domain [SP ehlo-greet]')
        for line in lines[1:]:
            if not _EHLO_LINE.fullmatch(line[4:]):
                self.flag(line, "RFC 5321 §4.1.1.1 ehlo-line",
                          "ehlo-keyword *( SP ehlo-param )")
