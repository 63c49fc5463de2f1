"""nginx.conf tokenizer: a faithful port of ngx_conf_read_token().

Why not crossplane's lexer: nginx's error messages depend on details it does not keep
(the line of the terminating ";" or "{", a quote glued to the next character, "}"
inside a word, backslash escapes, the 4096-byte token limit). Those decide the exact
text and line of a ConfigError, so the state machine is ported as is.

The text is handled as latin-1 so that one character is one byte, as in nginx; each
word is turned back into a UTF-8 str (surrogateescape) when it is emitted.
"""

from __future__ import annotations

from .errors import COMMAND_LINE, ConfigError

OK, BLOCK_START, BLOCK_DONE, FILE_DONE = "ok", "block_start", "block_done", "file_done"

_BUFFER = 4096  # NGX_CONF_BUFFER: no word may span a whole read buffer
_SPACE = " \t\r\n"
_UNESCAPE = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}


def to_text(raw: str) -> str:
    """latin-1 working text -> the str the rest of the program sees."""
    return raw.encode("latin-1").decode("utf-8", "surrogateescape")


def from_text(text: str) -> str:
    """A str (file contents or -g argument) -> latin-1 working text."""
    return text.encode("utf-8", "surrogateescape").decode("latin-1")


def _unescape(raw: str) -> str:
    if "\\" not in raw:
        return to_text(raw)
    out = []
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == "\\" and i + 1 < n and raw[i + 1] in _UNESCAPE:
            out.append(_UNESCAPE[raw[i + 1]])
            i += 2
            continue
        out.append(c)
        i += 1
    return to_text("".join(out))


class Reader:
    """Reads one file (or the -g string) statement by statement."""

    def __init__(self, data: bytes | str, name: str):
        if isinstance(data, bytes):
            self.text = data.decode("latin-1")
        else:
            self.text = from_text(data)
        self.name = name  # absolute file name, or COMMAND_LINE
        self.pos = 0
        self.line = 1

    def error(self, message: str, line: int | None = None) -> ConfigError:
        return ConfigError(message, self.name, self.line if line is None else line)

    def read(self) -> tuple[str, list[str]]:
        """Next statement: (OK | BLOCK_START | BLOCK_DONE | FILE_DONE, words)."""
        text, n = self.text, len(self.text)
        pos = self.pos
        words: list[str] = []
        sharp_comment = quoted = s_quoted = d_quoted = need_space = variable = False
        last_space = True
        start = pos
        start_line = self.line
        try:
            while True:
                if pos >= n:
                    if words or not last_space:
                        if self.name == COMMAND_LINE:
                            raise self.error('unexpected end of parameter, expecting ";"')
                        raise self.error('unexpected end of file, expecting ";" or "}"')
                    return FILE_DONE, words
                if pos - start >= _BUFFER:
                    if d_quoted or s_quoted:
                        quote = '"' if d_quoted else "'"
                        raise self.error(
                            "too long parameter, probably missing terminating "
                            f'"{quote}" character', start_line)
                    raise self.error(
                        f'too long parameter "{to_text(text[start:start + 10])}..." started',
                        start_line)

                ch = text[pos]
                pos += 1

                if ch == "\n":
                    self.line += 1
                    sharp_comment = False
                if sharp_comment:
                    continue
                if quoted:
                    quoted = False
                    continue

                if need_space:
                    if ch in _SPACE:
                        last_space, need_space = True, False
                        continue
                    if ch == ";":
                        return OK, words
                    if ch == "{":
                        return BLOCK_START, words
                    if ch == ")":
                        last_space, need_space = True, False
                    else:
                        raise self.error(f'unexpected "{to_text(ch)}"')

                if last_space:
                    start = pos - 1
                    start_line = self.line
                    if ch in _SPACE:
                        continue
                    if ch in ";{":
                        if not words:
                            raise self.error(f'unexpected "{ch}"')
                        return (BLOCK_START if ch == "{" else OK), words
                    if ch == "}":
                        if words:
                            raise self.error('unexpected "}"')
                        return BLOCK_DONE, words
                    if ch == "#":
                        sharp_comment = True
                        continue
                    last_space = False
                    if ch == "\\":
                        quoted = True
                    elif ch == '"':
                        start += 1
                        d_quoted = True
                    elif ch == "'":
                        start += 1
                        s_quoted = True
                    elif ch == "$":
                        variable = True
                    continue

                if ch == "{" and variable:
                    continue
                variable = False
                if ch == "\\":
                    quoted = True
                    continue
                if ch == "$":
                    variable = True
                    continue
                found = False
                if d_quoted:
                    if ch == '"':
                        d_quoted, need_space, found = False, True, True
                elif s_quoted:
                    if ch == "'":
                        s_quoted, need_space, found = False, True, True
                elif ch in _SPACE or ch in ";{":
                    last_space = found = True
                if found:
                    words.append(_unescape(text[start:pos - 1]))
                    if ch == ";":
                        return OK, words
                    if ch == "{":
                        return BLOCK_START, words
        finally:
            self.pos = pos
