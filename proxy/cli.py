"""`postern`: nginx's command line for the proxy, plus the toolkit's subcommands.

    postern [-c FILE] [-p PREFIX] [-e ERRLOG] [-g DIRECTIVES] [-t|-T] [-q] [-v|-V] [-s SIGNAL]
The toolkit's subcommands (postern lab, check-auth, ...) are dispatched by postern.cli, so
the product imports nothing of the toolkit. nginx's one-letter options keep nginx's output; `--help` and `--version` are accepted too,
as people type them.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Mapping

from postern.proxy import __version__

DEFAULT_CONF = "conf/postern.conf"
SIGNALS = {"stop": signal.SIGTERM, "quit": signal.SIGQUIT, "reopen": signal.SIGUSR1,
           "reload": signal.SIGHUP}
def _parser(subcommands: Mapping[str, str]) -> argparse.ArgumentParser:
    usage = "postern [-?hvVtTq] [-s signal] [-p prefix] [-e filename] [-c filename] " \
            "[-g directives]"
    epilog = None
    if subcommands:  # named by the `postern` command, which reaches the toolkit
        usage += "\n       postern {" + ",".join(subcommands) + "} ..."
        epilog = "subcommands (postern SUBCOMMAND --help for each):\n" + "".join(
            f"  {name:<12} {text}\n" for name, text in subcommands.items())
    p = argparse.ArgumentParser(prog="postern", add_help=False, usage=usage, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-?", "-h", "--help", action="help", help="this help")
    p.add_argument("-v", "--version", action="store_true", dest="v",
                   help="show version and exit")
    p.add_argument("-V", action="store_true", help="show version and configure options then exit")
    p.add_argument("-t", action="store_true", help="test configuration and exit")
    p.add_argument("-T", action="store_true", help="test configuration, dump it and exit")
    p.add_argument("-q", action="store_true",
                   help="suppress non-error messages during configuration testing")
    p.add_argument("-s", choices=sorted(SIGNALS), metavar="signal",
                   help="send signal to a master process: stop, quit, reopen, reload")
    p.add_argument("-p", metavar="prefix", help="set prefix path (default: current directory)")
    p.add_argument("-e", metavar="filename", help="set error log file (default: stderr)")
    p.add_argument("-c", metavar="filename", help=f"set configuration file (default: {DEFAULT_CONF})")
    p.add_argument("-g", metavar="directives", help="set global directives out of "
                   "configuration file")
    return p


def _emerg(message: str) -> int:
    # the bytes of the configuration as they were (nginx prints non-UTF-8 bytes raw)
    sys.stderr.flush()
    sys.stderr.buffer.write(f"postern: [emerg] {message}\n".encode("utf-8", "surrogateescape"))
    sys.stderr.buffer.flush()
    return 1


def main(argv: list[str] | None = None, subcommands: Mapping[str, str] | None = None) -> int:
    """The proxy's command line; `subcommands` (name: one line) only feed --help."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(subcommands or {}).parse_args(argv)
    if args.v or args.V:
        print(f"postern version: postern/{__version__}", file=sys.stderr)
        if args.V:
            print(f"python {sys.version.split()[0]}; mail modules: imap pop3 smtp ssl realip",
                  file=sys.stderr)
        if not (args.t or args.T):
            return 0

    from postern.proxy.conf import ConfigError, dump_config, load_config

    prefix = os.path.abspath(args.p or os.getcwd())
    prefix = prefix.rstrip("/") + "/"
    conf_file = args.c or DEFAULT_CONF
    if not os.path.isabs(conf_file):
        conf_file = os.path.join(prefix, conf_file)

    def load():
        return load_config(conf_file, prefix=prefix, directives=args.g)

    try:
        settings = load()
    except ConfigError as err:
        for warning in getattr(err, "warnings", ()):
            print(f"postern: [warn] {warning}", file=sys.stderr)
        _emerg(str(err))
        if args.t or args.T:
            print(f"postern: configuration file {conf_file} test failed", file=sys.stderr)
        return 1
    except OSError as err:
        return _emerg(f'open() "{conf_file}" failed ({err.errno}: {err.strerror})')

    for warning in settings.warnings:
        print(f"postern: [warn] {warning}", file=sys.stderr)
    nothing = (f'no mail servers in {conf_file}: nothing to proxy (a "mail" block with a '
               '"server" is needed)')
    if not settings.servers and (args.t or args.T):
        print(f"postern: [warn] {nothing}", file=sys.stderr)

    if args.t or args.T:
        if not args.q:
            print(f"postern: the configuration file {conf_file} syntax is ok", file=sys.stderr)
            print(f"postern: configuration file {conf_file} test is successful",
                  file=sys.stderr)
        if args.T:
            sys.stdout.write(dump_config(conf_file, prefix=prefix))
        return 0

    if args.s:
        return _send_signal(settings, args.s)
    if not settings.servers:  # nginx would idle; a mail proxy with no listener is a mistake
        return _emerg(nothing)

    return _serve(settings, load, args.e)


def _send_signal(settings, name: str) -> int:
    if not settings.pid:
        return _emerg('"pid" is off, cannot send a signal')
    try:
        with open(settings.pid) as fh:
            pid = int(fh.read().strip())
    except (OSError, ValueError) as err:
        return _emerg(f'open() "{settings.pid}" failed ({getattr(err, "errno", 0)}: '
                      f'{getattr(err, "strerror", err)})')
    try:
        os.kill(pid, SIGNALS[name])
    except ProcessLookupError:
        return _emerg(f"kill({pid}, {SIGNALS[name]}) failed (3: No such process)")
    return 0


def make_logs(settings, errlog: str | None = None):
    """The main error log and each server's own, as ErrorLog objects."""
    from postern.proxy.conf.settings import LogTarget
    from postern.proxy.log import ErrorLog

    targets = settings.error_logs
    if not targets:
        targets = (LogTarget("file", "error", errlog),) if errlog else (LogTarget("stderr"),)
    main_log = ErrorLog(targets)
    server_logs = {id(s): ErrorLog(s.error_logs) for s in settings.servers if s.error_logs}
    return main_log, server_logs


def _serve(settings, load, errlog: str | None) -> int:
    from postern.proxy.master import BindError, Master, daemonize

    log, _ = make_logs(settings, errlog)
    master = Master(settings, log, load, lambda s: make_logs(s, errlog))
    from postern.proxy.tls import TlsSetupError

    try:
        master.bind()
    except (TlsSetupError, BindError) as err:
        return _emerg(str(err))
    except OSError as err:
        return _emerg(f"cannot listen: {err}")
    if settings.daemon:
        targets = settings.error_logs + tuple(t for s in settings.servers for t in s.error_logs)
        daemonize(keep_stderr=not settings.error_logs or any(t.kind == "stderr" for t in targets))
    try:
        master.write_pid()
    except OSError as err:
        master.close_listeners()
        return _emerg(f'open() "{settings.pid}" failed ({err.errno}: {err.strerror})')
    return master.run()


if __name__ == "__main__":
    sys.exit(main())
