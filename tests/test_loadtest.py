"""The locust users, run for real: `locust -f loadtest/` headless for a few seconds, in a
subprocess (locust monkey-patches everything it imports into), checked from its CSV."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from postern.fakes.imap import FakeImapServer
from postern.fakes.smtp import FakeSmtpServer
from postern.fakes.stack import Stack
from postern.loadtest._lab import fake_available
from postern.loadtest._target import Target, external_target, read_users
from postern.reports.render import Inputs, render_report

ROOT = Path(__file__).resolve().parent.parent
PHASES = {  # what the default profile mix sends (loadtest/profiles.toml)
    "imap": ["connect", "login", "auth plain", "capability", "enable", "namespace", "list",
             "status", "select", "uid fetch flags", "uid search", "search", "fetch headers",
             "fetch body", "idle", "append", "logout"],
    "pop3": ["connect", "capa", "login", "auth plain", "stat", "uidl", "retr", "quit"],
    "smtp": ["connect", "ehlo", "auth plain", "auth login", "mail rcpt pipelined", "data",
             "quit"],
}
USER_CLASS = {"imap": "ImapUser", "pop3": "Pop3User", "smtp": "SmtpUser"}


def locust(tmp_path: Path, *args: str, seconds: int = 6) -> tuple[subprocess.CompletedProcess,
                                                                     dict, list]:
    """Run a headless load; returns the process, {(type, name): row} and the failure rows."""
    prefix = tmp_path / "run"
    cmd = [sys.executable, "-m", "locust", "-f", "loadtest/", "--headless", "-t", f"{seconds}s",
           "--csv", str(prefix), "--csv-full-history", "--only-summary", "--pause", "0.05",
           "--timeout", "10", "-s", "5", "--time-scale", "0.01", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=seconds + 90, check=False)
    with open(f"{prefix}_stats.csv", newline="") as fh:
        stats = {(r["Type"], r["Name"]): r for r in csv.DictReader(fh)}
    with open(f"{prefix}_failures.csv", newline="") as fh:
        failures = list(csv.DictReader(fh))
    return done, stats, failures


@pytest.mark.timeout(180)
def test_every_phase_succeeds_through_the_embedded_lab(tmp_path):
    protocols = [p for p in PHASES if fake_available(p)]
    assert "imap" in protocols
    mix = tmp_path / "mix.toml"  # every profile, equally likely
    mix.write_text((ROOT / "loadtest" / "profiles.toml").read_text().replace(
        "weight = 5", "weight = 1").replace("weight = 3", "weight = 1").replace(
        "weight = 2", "weight = 1"))
    done, stats, failures = locust(
        tmp_path, "-u", "9", "-r", "9", "--imap-idle", "1", "--profiles", str(mix),
        "--lab-users", "9", "--lab-dir", str(tmp_path / "lab"), "--smtp-sizes", "small",
        *[USER_CLASS[p] for p in protocols], seconds=8)
    log = done.stderr[-4000:]
    assert done.returncode == 0, log
    assert failures == [], log
    for protocol in protocols:
        for phase in PHASES[protocol]:
            row = stats.get((protocol.upper(), f"{protocol} {phase}"))
            assert row is not None, f"no '{protocol} {phase}' requests\n{log}"
            assert int(row["Request Count"]) > 0 and int(row["Failure Count"]) == 0, row
    assert float(stats["IMAP", "imap fetch body"]["Average Content Size"]) > 500  # real mail
    target = (tmp_path / "run_target.json").read_text()
    assert '"via": "postern"' in target  # the lab put Postern in front
    clients = json.loads((tmp_path / "run_clients.json").read_text())
    profiles = set(clients["sessions"])
    assert {"imap thunderbird", "imap apple mail", "imap poller"} <= profiles, profiles
    for name, s in clients["sessions"].items():
        assert s["ok"] > 0 and s["failed"] == 0, (name, s["errors"])
    thunderbird = clients["sessions"]["imap thunderbird"]["order"]
    assert thunderbird[:1] == ["imap connect"] and thunderbird[-1] == "imap logout"
    assert thunderbird.index("imap status") < thunderbird.index("imap select") \
        < thunderbird.index("imap idle")
    connect = next(p for p in clients["phases"] if p["name"] == "imap connect")
    assert connect["percentiles"]["50"] < 50  # ms: imaplib2's start-up sleep is not billed


@pytest.mark.timeout(180)
def test_failures_are_reported_with_their_reason(tmp_path):
    """Refused login, nothing listening, a hostile greeting: each is a failure of the phase
    it happened in, with the server's words, and the session stops there."""
    users = tmp_path / "users.csv"
    users.write_text("login,password\nalice,secret\n")
    with FakeImapServer({"alice": "secret"}, reject_login=True, record=False) as imap, \
            FakeSmtpServer({"alice": "secret"}, greeting="554 5.3.2 not now",
                           record=False) as smtp:
        closed = _closed_port()
        done, stats, failures = locust(
            tmp_path, "-u", "3", "-r", "3", "--mail-host", "127.0.0.1",
            "--imap-port", str(imap.port), "--pop3-port", str(closed),
            "--smtp-port", str(smtp.port), "--users-file", str(users), "ImapUser", "Pop3User",
            "SmtpUser", seconds=10)
    assert done.returncode == 1, done.stderr[-3000:]  # locust: 1 when any request failed
    reasons = {(f["Name"], f["Error"]) for f in failures}
    login = {e for n, e in reasons if n in ("imap login", "imap auth plain")}
    assert login and all("[AUTHENTICATIONFAILED]" in e for e in login), reasons
    assert ("pop3 connect", "PhaseFailed('connection refused')") in reasons
    assert any(n == "smtp connect" and "554" in e and "not now" in e for n, e in reasons)
    assert int(stats["IMAP", "imap connect"]["Failure Count"]) == 0
    assert ("IMAP", "imap select") not in stats  # nothing after a failed login


@pytest.mark.timeout(180)
def test_mail_survives_the_trip_through_postern(tmp_path):
    """DeliveryUser through the lab's Postern: every message submitted is found, once and
    byte for byte, by IMAP and POP3; the headline says "messages lost: 0 of N"."""
    done, stats, failures = locust(
        tmp_path, "-u", "4", "-r", "4", "--lab-users", "3", "--lab-dir", str(tmp_path / "lab"),
        "--delivery-grace", "5", "DeliveryUser", seconds=6)
    log = done.stderr[-4000:]
    assert done.returncode == 0, log
    assert failures == [], log
    delivery = json.loads((tmp_path / "run_clients.json").read_text())["delivery"]
    n = delivery["submitted"]
    assert n > 0 and delivery == {"submitted": n, "delivered": n, "lost": 0, "duplicated": 0,
                                  "mismatched": 0, "flags mismatched": 0}, delivery
    assert int(stats["CHECK", "message delivered"]["Request Count"]) == n
    assert '"via": "postern"' in (tmp_path / "run_target.json").read_text()
    page = render_report(Inputs(locust=tmp_path / "run"), tmp_path / "report.html").read_text()
    assert f"messages lost</span><b>0 of {n}</b>" in page


@pytest.mark.timeout(180)
@pytest.mark.parametrize("processes", [(), ("--processes", "2")], ids=["local", "distributed"])
def test_lost_altered_and_duplicated_mail_is_counted(tmp_path, processes):
    """The same check against a fake SMTP upstream that answers 250 and then loses every
    3rd message, alters every 5th and delivers every 7th twice (behind Postern); with two
    worker processes each checks its own messages and the master sums the verdicts."""
    users = tmp_path / "users.csv"
    users.write_text("login,password\nalice,secret\nbob,secret2\n")
    with Stack("postern", users={"alice": "secret", "bob": "secret2"},
               workdir=tmp_path / "stack", record=False) as stack:
        stack.smtp.faults.lose_every = 3
        stack.smtp.faults.alter_every = 5
        stack.smtp.faults.duplicate_every = 7
        ports = {p: str(stack.addresses[p][1]) for p in ("imap", "pop3", "smtp")}
        done, stats, failures = locust(
            tmp_path, "-u", "2", "-r", "2", "--mail-host", "127.0.0.1",
            "--imap-port", ports["imap"], "--pop3-port", ports["pop3"], "--smtp-port",
            ports["smtp"], "--users-file", str(users), "--delivery-grace", "2", *processes,
            "DeliveryUser", seconds=5)
    assert done.returncode == 1, done.stderr[-3000:]
    delivery = json.loads((tmp_path / "run_clients.json").read_text())["delivery"]
    n = delivery["submitted"]
    assert n >= 7, delivery
    # the fake counts every message it accepts, also those a user stopped at the end had
    # sent but not yet noted (two users: at most two), and those sent after the sweep began
    assert abs(delivery["lost"] - n / 3) <= 2, delivery
    assert 1 <= delivery["mismatched"] <= n // 5 and 1 <= delivery["duplicated"], delivery
    assert delivery["flags mismatched"] == 0, delivery  # a duplicate has flags of its own
    reasons = {(f["Name"], f["Error"]) for f in failures}
    assert ("message lost", "PhaseFailed('not found by IMAP or POP3 within 2 s')") in reasons
    assert any(name == "message mismatched" for name, _ in reasons), reasons
    assert int(stats["CHECK", "message lost"]["Failure Count"]) == delivery["lost"]


RECORDING = [  # what record_sessions writes (proxy/recorder.py), one session per protocol
    {"v": 1, "protocol": "imap", "outcome": "proxied", "commands": [
        {"t": 0.01, "verb": "CAPABILITY", "args": []},
        {"t": 0.02, "verb": "LOGIN", "args": [{"login": 5}, {"secret": 6}]},
        {"t": 0.3, "verb": "SELECT", "args": ["INBOX"]},
        {"t": 0.1, "verb": "UID FETCH", "args": ["1:*", "(FLAGS)"]},
        {"t": 0.1, "verb": "APPEND", "args": ['"Sent"', "(\\Seen)", {"lit": 300}]},
        {"t": 0.1, "verb": "LOGOUT", "args": []}]},
    {"v": 1, "protocol": "pop3", "outcome": "proxied", "commands": [
        {"t": 0.01, "verb": "USER", "args": [{"login": 5}]},
        {"t": 0.01, "verb": "PASS", "args": [{"secret": 6}]},
        {"t": 0.2, "verb": "UIDL", "args": []}, {"t": 0.1, "verb": "RETR", "args": ["1"]},
        {"t": 0.1, "verb": "QUIT", "args": []}]},
    {"v": 1, "protocol": "smtp", "outcome": "proxied", "commands": [
        {"t": 0.01, "verb": "EHLO", "args": [{"a": 12}]},
        {"t": 0.01, "verb": "AUTH", "args": ["PLAIN", {"sasl": 24}]},
        {"t": 0.2, "verb": "MAIL", "args": [{"addr": 17, "pre": "FROM:"}]},
        {"t": 0.01, "verb": "RCPT", "args": [{"addr": 17, "pre": "TO:"}]},
        {"t": 0.01, "verb": "DATA", "args": []}, {"body": 2000},
        {"t": 0.1, "verb": "QUIT", "args": []}]},
]


@pytest.mark.timeout(180)
def test_replay_user_plays_a_recording_through_postern(tmp_path):
    """ReplayUser with --replay: every recorded command of every protocol is played, in
    the lab's accounts, with made-up credentials and bodies, and answered positively."""
    recording = tmp_path / "sessions.jsonl"
    recording.write_text("".join(json.dumps(s) + "\n" for s in RECORDING))
    done, stats, failures = locust(
        tmp_path, "-u", "3", "-r", "3", "--lab-users", "3", "--lab-dir", str(tmp_path / "lab"),
        "--replay", str(recording), "--time-scale", "0.1", "ReplayUser", seconds=5)
    log = done.stderr[-4000:]
    assert done.returncode == 0, log
    assert failures == [], log
    for session in RECORDING:
        kind = session["protocol"].upper()
        for command in session["commands"]:
            name = f"replay {command['verb'].lower()}" if "verb" in command else \
                "replay data (body)"
            assert int(stats.get((kind, name), {}).get("Request Count", 0)) > 0, (name, log)
    assert not [k for k in stats if "(" in k[1] and "(body)" not in k[1]]  # none refused


def _closed_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_target_round_trip_and_users_file(tmp_path):
    users = tmp_path / "u.csv"
    users.write_text("login,password\nalice,se,cret\n# comment\nbob,pw\n")
    assert read_users(users) == [("alice", "se,cret"), ("bob", "pw")]
    target = external_target("127.0.0.1", {"imap": 0, "pop3": -1, "smtp": 2525}, "implicit",
                             str(users))
    assert {p: e.port for p, e in target.endpoints.items()} == {"imap": 993, "smtp": 2525}
    again = Target.from_json(target.to_json())
    assert again == target and again.endpoint("pop3") is None
    with pytest.raises(ValueError, match="--users-file"):
        external_target("127.0.0.1", {}, "off", None)


def test_clients_record_merges_across_processes_and_keeps_session_order():
    from postern.loadtest._clients import Recorder, merge_order

    order = []
    merge_order(order, ["connect", "capa", "login", "stat"])
    merge_order(order, ["connect", "capa", "auth plain", "stat", "quit"])
    assert order == ["connect", "capa", "auth plain", "login", "stat", "quit"]
    worker, master = Recorder(), Recorder()
    for ms in (0.25, 0.5, 0.75):
        worker.phase("IMAP", "imap select", ms / 1000)
    worker.session("imap poller", "imap", 0.02, None, ["imap connect", "imap select"])
    worker.session("imap poller", "imap", 0.03, "imap select: NO", ["imap connect"])
    master.merge(json.loads(json.dumps(worker.take())))  # as it travels to the master
    assert worker.phases == {} and worker.sessions == {}
    worker.phase("IMAP", "imap select", 0.001)
    master.merge(worker.take())
    master.started, master.stopped = 100.0, 110.0
    summary = master.summary()
    select = summary["phases"][0]
    assert select["count"] == 4 and 0.24 < select["percentiles"]["0"] < 0.26  # µs resolution
    assert 0.99 < select["percentiles"]["100"] < 1.01
    poller = summary["sessions"]["imap poller"]
    assert (poller["ok"], poller["failed"], poller["errors"]) == (1, 1, {"imap select: NO": 1})
    assert poller["order"] == ["imap connect", "imap select"] and summary["seconds"] == 10


def test_profile_mix_file(tmp_path):
    from postern.loadtest import _profiles

    mix = _profiles.load()
    assert [p.kind for p in mix["imap"]] == ["thunderbird", "apple_mail", "poller"]
    assert mix["pop3"][0].label == "pop3 leave on server"
    dealer = _profiles.Dealer(mix["imap"])  # weights 5:3:2
    dealt = [dealer.next().kind for _ in range(10)]
    assert dealt.count("thunderbird") == 5 and dealt.count("poller") == 2
    assert dealt[:3] == ["thunderbird", "apple_mail", "poller"]  # a few users cover the mix
    import random
    rng = random.Random(1)
    holds = sorted(mix["imap"][0].hold.draw(rng) for _ in range(1000))
    assert 100 < holds[500] < 140 and holds[990] > 3 * holds[500]  # a long tail
    bad = tmp_path / "bad.toml"
    bad.write_text('[imap.x]\nkind = "outlook"\n')
    with pytest.raises(ValueError, match="kind 'outlook'"):
        _profiles.load(bad)
    bad.write_text('[imap.thunderbird]\npause = { dist = "uniform", low = 5 }\n')
    with pytest.raises(ValueError, match="uniform needs high"):
        _profiles.load(bad)


def test_imaplib2_enable_keeps_its_lock():
    """Why imap_user.py releases imaplib2's state-change lock after ENABLE: without it the
    next command is never sent (imaplib2 3.6)."""
    import threading

    import imaplib2
    from postern.fakes.imap import CLIENT_CAPABILITIES

    with FakeImapServer({"a": "b"}, capabilities=CLIENT_CAPABILITIES, record=True) as srv:
        for release in (False, True):
            m = imaplib2.IMAP4(srv.host, srv.port, timeout=5)
            try:
                m.login("a", "b")
                assert m.enable("CONDSTORE")[0] == "OK"
                if release:
                    m._release_state_change()
                answer = []
                t = threading.Thread(target=lambda a=answer, c=m: a.append(c.namespace()),
                                     daemon=True)
                t.start()
                t.join(1.5)
                assert bool(answer) == release, answer
            finally:
                m.sock.close()
    assert sum(c.endswith(b"NAMESPACE") for c in srv.commands) == 1
