"""What the POP3 and SMTP machines share: nginx gives their parsers the same six states
(ngx_mail_pop3_parse_command, ngx_mail_smtp_parse_command), ends a command and skips an
invalid line the same way in both, and their auth-state handlers end alike. Each protocol
keeps its own _parse() and _dispatch()."""

from __future__ import annotations

from postern.proxy.dialogue import AGAIN, PARSE_INVALID, PARSED, R_DONE, R_INVALID, Dialogue, Send

# parser states, numbered as in both nginx parsers
S_START, S_COMMAND, S_INVALID, S_SPACES_BEFORE_ARGUMENT, S_ARGUMENT, S_ALMOST_DONE = range(6)


class UntaggedDialogue(Dialogue):
    """A dialogue of one verb per line and no tags; after AUTH the next line is read as one
    bare SASL argument."""

    invalid_reply: bytes
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
