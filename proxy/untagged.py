"""What the POP3 and SMTP machines share: nginx gives their parsers the same six states
(ngx_mail_pop3_parse_command, ngx_mail_smtp_parse_command), ends a command and skips an
invalid line the same way in both, and their auth-state handlers end alike. The one parser
here is both nginx functions: they differ only in the verbs they know, how many arguments a
line may have and POP3's USER/PASS keeping their spaces, which each protocol declares. Each
protocol keeps its own _dispatch()."""

from __future__ import annotations

from postern.proxy.dialogue import AGAIN, PARSE_INVALID, PARSED, R_DONE, R_INVALID, Dialogue, Send

# parser states, numbered as in both nginx parsers
S_START, S_COMMAND, S_INVALID, S_SPACES_BEFORE_ARGUMENT, S_ARGUMENT, S_ALMOST_DONE = range(6)

LETTERS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
CR, LF, SP = 0x0D, 0x0A, 0x20
# where the end of a word (the verb or an argument) leads; an LF ends the line instead
AFTER_WORD = {SP: S_SPACES_BEFORE_ARGUMENT, CR: S_ALMOST_DONE}


class UntaggedDialogue(Dialogue):
    """A dialogue of one verb per line and no tags; after AUTH the next line is read as one
    bare SASL argument."""

    invalid_reply: bytes
    commands: frozenset[bytes]  # the verbs the parser accepts
    max_args: int  # a line with more arguments is invalid
    spaced_commands: tuple[bytes, ...] = ()  # verbs whose one argument keeps its spaces
    command: bytes
    state: int
    _arg_start: int

    def _dispatch(self) -> tuple[int, bytes]:
        """The protocol's auth-state switch: returns (rc, reply)."""
        raise NotImplementedError

    def _handle(self, rc: int) -> None:
        if rc == PARSED:
            hrc, out = self._dispatch()
        else:
            hrc = R_INVALID
        if hrc == R_DONE:
            self._start_auth()
            return
        if hrc == R_INVALID:
            self.mail_state = "start"
            self.state = S_START
            out = self.invalid_reply
        self.args = []
        buf = self.buffer
        buf.rewind_if_consumed()
        if self.state != S_START:
            self._arg_start = buf.pos  # an AUTH exchange: the next line is SASL data
        self._actions.append(Send(out))
        self._after_reply()

    def _parse(self) -> int:
        """Resume ngx_mail_pop3_parse_command / ngx_mail_smtp_parse_command at buffer.pos."""
        buf = self.buffer
        data = buf.data
        last = len(data)
        p = buf.pos
        state = self.state
        while p < last:
            ch = data[p]
            if state == S_START:
                self._cmd_start = p
                state = S_COMMAND
            if state == S_COMMAND:
                if ch == SP or ch == CR or ch == LF:
                    verb = bytes(data[self._cmd_start:p]).upper()
                    if verb not in self.commands:
                        return self._invalid(p)
                    self.command = verb
                    if ch == LF:
                        return self._done(p)
                    state = AFTER_WORD[ch]
                elif ch not in LETTERS:
                    return self._invalid(p)
            elif state == S_SPACES_BEFORE_ARGUMENT:
                if ch == SP:
                    pass
                elif ch == CR:
                    state = S_ALMOST_DONE
                elif ch == LF:
                    return self._done(p)
                elif len(self.args) >= self.max_args:
                    return self._invalid(p)
                else:
                    self._arg_start = p
                    state = S_ARGUMENT
            elif state == S_ARGUMENT:
                if ch == SP and self.command in self.spaced_commands:
                    pass
                elif ch == SP or ch == CR or ch == LF:
                    self.args.append(bytes(data[self._arg_start:p]))
                    self._arg_end = p
                    if ch == LF:
                        return self._done(p)
                    state = AFTER_WORD[ch]
            elif state == S_ALMOST_DONE:
                if ch != LF:
                    return self._invalid(p)
                return self._done(p)
            else:  # S_INVALID
                return self._invalid(p)
            p += 1
        buf.pos = p
        self.state = state
        return AGAIN

    def _read_sasl_line(self) -> None:
        self.command = b"AUTH"
        self.state = S_ARGUMENT
        self._arg_start = self.buffer.pos

    def _done(self, p: int) -> int:
        self.buffer.pos = p + 1
        # inside AUTH the next line is read as a bare argument (no verb)
        self.state = S_ARGUMENT if self.command == b"AUTH" else S_START
        return PARSED

    def _invalid(self, p: int) -> int:
        """Skip the rest of the line (nginx's sw_invalid; it may arrive later)."""
        self.state = S_INVALID
        buf = self.buffer
        lf = buf.data.find(b"\n", p)
        if lf < 0:
            buf.pos = len(buf.data)
            return AGAIN
        self.state = S_START
        buf.pos = lf + 1
        return PARSE_INVALID
