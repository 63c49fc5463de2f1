"""The configuration error, worded and located the way nginx reports it."""

from __future__ import annotations

COMMAND_LINE = "command line"  # pseudo file name of the -g directives


def where(file: str | None, line: int | None) -> str:
    """The location suffix nginx appends to a message ("" when it has none)."""
    if file == COMMAND_LINE:
        return " in command line"
    if file is None:
        return ""
    if line is None:
        return f" in {file}"
    return f" in {file}:{line}"


class ConfigError(Exception):
    """A configuration problem; str() is nginx's text after the "[emerg] " prefix.

    `file` is the absolute path of the file being read (or "command line" for -g
    directives, or None when nginx prints no location), `line` its 1-based line.
    """

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        super().__init__(message, file, line)
        self.message = message
        self.file = file
        self.line = line
        self.warnings: tuple[str, ...] = ()  # "[warn]" messages produced before the error

    def __str__(self) -> str:
        return self.message + where(self.file, self.line)
