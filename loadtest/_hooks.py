"""Locust wiring shared by the mail users: options, the embedded lab's lifecycle, the target.

``install()`` registers the listeners once, however many locustfiles call it. Only the
master (or the single local process) resolves the target: at ``init`` it starts the lab
subprocess (so the lab's start-up is not taken out of --run-time), or reads the
external-target options, and stores the result as JSON in a hidden option, which locust
copies to every worker with each spawn message. Each ``test_start`` checks the options
again (a web UI may change them between tests). Workers never start anything; they need
only reach the target's address. The lab stops at ``quit``, after the users have stopped.
"""

from __future__ import annotations

import atexit
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import gevent
from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner
from postern.loadtest import _clients as clients
from postern.loadtest import _delivery
from postern.loadtest._target import PROTOCOLS, TLS_MODES, Target, external_target

from postern import import_root

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("postern.loadtest")
_installed = False
_lab: subprocess.Popen | None = None
_environment: Environment | None = None
LAB_START_TIMEOUT = 60.0


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    events.init_command_line_parser.add_listener(_add_options)
    events.init.add_listener(_on_init)
    events.test_start.add_listener(_on_test_start)
    events.report_to_master.add_listener(_on_report_to_master)
    events.worker_report.add_listener(_on_worker_report)
    events.test_stop.add_listener(lambda environment, **_: write_clients(environment))
    # `quit` comes after the users stopped (`quitting` may come before, on SIGTERM)
    events.quit.add_listener(_on_quit)


def _on_quit(**_) -> None:
    if _environment is not None:  # workers' last reports have arrived by now
        write_clients(_environment, final=True)
    stop_lab()


def _add_options(parser) -> None:
    g = parser.add_argument_group("mail target", "where the IMAP/POP3/SMTP users connect; "
                                  "without --mail-host an embedded lab is started")
    g.add_argument("--mail-host", default="", env_var="LOCUST_MAIL_HOST",
                   help="external target host (a real nginx, a deployment); default: the lab")
    for protocol in PROTOCOLS:
        g.add_argument(f"--{protocol}-port", type=int, default=0,
                       env_var=f"LOCUST_{protocol.upper()}_PORT",
                       help=f"{protocol.upper()} port of the external target (0: the standard "
                       "port for --tls; -1: the target has none)")
    g.add_argument("--users-file", default="", env_var="LOCUST_USERS_FILE",
                   help="CSV of login,password (external target; read by the master)")
    g.add_argument("--tls", choices=TLS_MODES, default="off", env_var="LOCUST_TLS",
                   help="STARTTLS before login, or implicit TLS (the lab offers both)")
    g.add_argument("--tls-ca", default="", env_var="LOCUST_TLS_CA",
                   help="verify server certificates against this CA file (default: no "
                   "verification, except the lab's own CA)")
    g.add_argument("--timeout", type=float, default=30.0, env_var="LOCUST_MAIL_TIMEOUT",
                   help="socket timeout of every client (seconds)")
    g.add_argument("--profiles", default="", env_var="LOCUST_PROFILES",
                   help="TOML mix of client profiles and their times (default: "
                   "loadtest/profiles.toml)")
    g.add_argument("--time-scale", type=float, default=1.0, env_var="LOCUST_TIME_SCALE",
                   help="multiply every pause, think time and IDLE hold of the profiles")
    g.add_argument("--pause", default="", env_var="LOCUST_PAUSE",
                   help="seconds between two sessions of one user, MIN-MAX or one number, "
                   "instead of the profiles' distributions")
    g.add_argument("--imap-idle", type=float, default=-1.0, env_var="LOCUST_IMAP_IDLE",
                   help="seconds every IDLE is held, instead of the profiles' distribution "
                   "(0: never idle)")
    g.add_argument("--pop3-expunge", action="store_true", env_var="LOCUST_POP3_EXPUNGE",
                   help="let DELE take effect (default: RSET before QUIT, so a run never "
                   "empties the maildrops)")
    g.add_argument("--smtp-sizes", choices=("mixed", "small"), default="mixed",
                   env_var="LOCUST_SMTP_SIZES",
                   help="message size mix: mixed (text to 1 MB attachments) or small (text)")
    g.add_argument("--delivery-grace", type=float, default=10.0,
                   env_var="LOCUST_DELIVERY_GRACE",
                   help="DeliveryUser: seconds after the run to keep looking for submitted "
                   "messages before they count as lost")
    g.add_argument("--replay", default="", env_var="LOCUST_REPLAY",
                   help="ReplayUser: a record_sessions recording (JSON lines) to play; "
                   "--time-scale scales its think times")
    g.add_argument("--clients-file", default="", env_var="LOCUST_CLIENTS_FILE",
                   help="where the clients' own histograms go (default: CSV_PREFIX"
                   "_clients.json with --csv; the HTML report reads it)")
    g.add_argument("--seed", type=int, default=1, env_var="LOCUST_SEED",
                   help="Faker seed (each worker adds its index)")
    lab = parser.add_argument_group("embedded lab", "used when --mail-host is not given")
    lab.add_argument("--lab-proxy", choices=("postern", "nginx", "none"), default="postern",
                     env_var="LOCUST_LAB_PROXY",
                     help="proxy in front of the fakes: Postern, Debian's nginx, or none")
    lab.add_argument("--lab-users", type=int, default=50, env_var="LOCUST_LAB_USERS",
                     help="accounts the lab knows (load0000/secret-0000, ...)")
    lab.add_argument("--lab-workers", type=int, default=1, env_var="LOCUST_LAB_WORKERS",
                     help="worker_processes of the lab's proxy")
    lab.add_argument("--lab-dir", default="", env_var="LOCUST_LAB_DIR",
                     help="lab config, logs, certificates (default: lab/loadtest)")
    # Set by the master, shipped to workers; not for humans.
    parser.add_argument("--mail-target-json", default="", help=_suppress(),
                        include_in_web_ui=False)


def _suppress():
    import configargparse
    return configargparse.SUPPRESS


def _on_init(environment: Environment, runner, **_) -> None:
    """Drop users that cannot run here (no fake for the lab, every task filtered out by
    tags), then set up the target."""
    global _environment
    _environment = environment
    if isinstance(runner, WorkerRunner):
        return  # the master decides which classes are dispatched
    opts = environment.parsed_options
    keep = []
    for cls in environment.user_classes:
        reason = _unavailable(cls, opts)
        if reason:
            log.warning("%s is not run: %s", cls.__name__, reason)
            if environment.available_user_classes:
                environment.available_user_classes.pop(cls.__name__, None)
        else:
            keep.append(cls)
    if not keep:
        log.error("no mail user can run (see the warnings above)")
        sys.exit(1)
    environment.user_classes[:] = keep
    try:
        from postern.loadtest._profiles import DEFAULT_FILE, load
        load(opts.profiles or DEFAULT_FILE)
    except (OSError, ValueError) as exc:
        log.error("cannot read the profile mix: %s", exc)
        sys.exit(1)
    if not resolve_target(environment):
        sys.exit(1)


def _unavailable(cls, opts) -> str | None:
    protocol = getattr(cls, "protocol", None)
    if protocol is None or opts is None:
        return None
    needs = getattr(cls, "needs_option", None)
    if needs and not getattr(opts, needs, ""):
        return f"it needs --{needs}"
    if not opts.mail_host:
        from postern.loadtest._lab import fake_available
        if not fake_available(protocol):
            return f"the embedded lab has no {protocol.upper()} fake (fakes/{protocol}.py)"
    elif getattr(opts, f"{protocol}_port") < 0:
        return f"--{protocol}-port -1"
    tags = set(opts.tags or []) or None
    exclude = set(opts.exclude_tags or [])
    task_tags = [getattr(t, "locust_tag_set", set()) for t in cls.tasks]
    if not any((tags is None or t & tags) and not t & exclude for t in task_tags):
        return "every task is excluded by --tags/--exclude-tags"
    return None


def _on_test_start(environment: Environment, **_) -> None:
    clients.recorder.__init__()  # a new test in the web UI starts a new record
    clients.recorder.started = time.time()
    if isinstance(environment.runner, WorkerRunner):
        return
    if not resolve_target(environment):
        # Users without a target would only pile up failures: stop the run.
        environment.process_exit_code = 1
        gevent.spawn_later(0.1, environment.runner.quit)


# Options that decide the target: a web UI run may change them between two tests.
TARGET_OPTIONS = ("mail_host", "imap_port", "pop3_port", "smtp_port", "users_file", "tls",
                  "tls_ca", "lab_proxy", "lab_users", "lab_workers", "lab_dir", "seed")
_resolved: tuple[tuple, Target] | None = None


def resolve_target(environment: Environment) -> bool:
    """Set the target for this run (master or local process only). Done at init, so that
    starting the lab does not eat into --run-time, and again at each test start in case
    the options changed; the lab is reused while its options stay the same."""
    global _resolved
    opts = environment.parsed_options
    key = tuple(str(getattr(opts, name, "")) for name in TARGET_OPTIONS)
    if _resolved is None or _resolved[0] != key or not (opts.mail_host or lab_running()):
        stop_lab()
        try:
            if opts.mail_host:
                target = external_target(opts.mail_host, {p: getattr(opts, f"{p}_port")
                                                           for p in PROTOCOLS},
                                         opts.tls, opts.users_file, opts.tls_ca or None)
            else:
                target = start_lab(opts)
        except (OSError, ValueError, RuntimeError, TimeoutError) as exc:
            log.error("cannot run the mail load: %s", exc)
            _resolved = None
            return False
        if opts.tls_ca:
            target.tls_ca = opts.tls_ca
        _resolved = (key, target)
        log.info("mail target:\n%s", target.describe())
    target = _resolved[1]
    opts.mail_target_json = target.to_json()
    environment.host = host_label(target)
    if opts.csv_prefix:  # the report shows what was measured
        path = Path(f"{opts.csv_prefix}_target.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"lab_proxy": None if opts.mail_host else opts.lab_proxy,
                                    **json.loads(target.to_json()),
                                    "users": len(target.users)}, indent=1))
    return True


def _on_report_to_master(client_id, data: dict) -> None:
    clients.recorder.delivery.update(_delivery.current.take())
    data["mail_clients"] = clients.recorder.take()


def _on_worker_report(client_id, data: dict) -> None:
    if "mail_clients" in data:
        clients.recorder.merge(data["mail_clients"])


def clients_path(opts) -> Path | None:
    if getattr(opts, "clients_file", ""):
        return Path(opts.clients_file)
    return Path(f"{opts.csv_prefix}_clients.json") if getattr(opts, "csv_prefix", None) \
        else None


def write_clients(environment: Environment, final: bool = False) -> None:
    """The master's (or single process's) merged record, next to locust's CSV files."""
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return
    path = clients_path(environment.parsed_options)
    if path is None or clients.recorder.started is None:
        return
    if clients.recorder.stopped is None or not final:
        clients.recorder.stopped = time.time()
    clients.recorder.delivery.update(_delivery.current.take())
    clients.recorder.write(path)


def host_label(target: Target) -> str:
    """The target as locust shows it ("Target Host" in its UI and HTML report)."""
    return " ".join(f"{p}://{e.host}:{e.port}" for p, e in target.endpoints.items())


def lab_running() -> bool:
    return _lab is not None and _lab.poll() is None


def start_lab(opts) -> Target:
    """Start the lab subprocess and wait until it listens."""
    global _lab
    cmd = [sys.executable, "-m", "postern.loadtest._lab", "--proxy", opts.lab_proxy, "--tls", opts.tls,
           "--users", str(opts.lab_users), "--workers", str(opts.lab_workers),
           "--seed", str(opts.seed)]
    if opts.lab_dir:
        cmd += ["--dir", opts.lab_dir]
    log.info("starting the embedded lab: %s", " ".join(cmd[1:]))
    _lab = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=_lab_env())
    atexit.register(stop_lab)
    try:
        with gevent.Timeout(LAB_START_TIMEOUT, TimeoutError("the lab did not start in time")):
            line = _lab.stdout.readline()
    except TimeoutError:
        stop_lab()
        raise
    answer = json.loads(line) if line.strip() else {"error": "the lab exited without a word"}
    if "error" in answer:
        stop_lab()
        raise RuntimeError(f"embedded lab failed: {answer['error']}")
    log.info("lab directory (configs, proxy error log): %s", answer["dir"])
    return Target.from_json(json.dumps(answer["target"]))


def _lab_env() -> dict[str, str]:
    import os
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [import_root(), env.get("PYTHONPATH")]))
    env.pop("LOCUST_SKIP_MONKEY_PATCH", None)
    return env


def stop_lab() -> None:
    global _lab
    proc, _lab = _lab, None
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def target_of(environment: Environment) -> Target | None:
    text = getattr(environment.parsed_options, "mail_target_json", "")
    return Target.from_json(text) if text else None
