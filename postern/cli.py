"""The `postern` command: nginx's command line for the proxy, and the toolkit's subcommands.

    postern [-c FILE] [-p PREFIX] [-e ERRLOG] [-g DIRECTIVES] [-t|-T] [-q] [-v|-V] [-s SIGNAL]
    postern lab | fakes | auth-mock | fake-imap | fake-pop3 | fake-smtp | check-auth ...

The subcommands are imported only when named, and the proxy never imports them.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {  # name: (module:function, one line for --help)
    "lab": ("postern.fakes.lab:main",
            "the embedded lab: Postern in front of the fakes and the mock auth server"),
    "fakes": ("postern.fakes.stack:main",
              "the fake upstreams and the mock auth server from one TOML script"),
    "auth-mock": ("postern.fakes.auth.cli:main", "the scriptable mock auth_http server"),
    "fake-imap": ("postern.fakes.imap:main", "a fake IMAP upstream"),
    "fake-pop3": ("postern.fakes.pop3:main", "a fake POP3 upstream"),
    "fake-smtp": ("postern.fakes.smtp:main", "a fake SMTP upstream (XCLIENT)"),
    "check-auth": ("postern.checkauth:main",
                   "validate a third-party auth_http server against nginx's rules"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:
        module, func = SUBCOMMANDS[argv[0]][0].split(":")
        return getattr(importlib.import_module(module), func)(argv[1:]) or 0
    from postern.proxy.cli import main as proxy_main
    return proxy_main(argv, {name: text for name, (_, text) in SUBCOMMANDS.items()})
