"""Record and replay: a recording's command shapes (what ``record_sessions`` writes), played
by loadtest/_replay.py with the lab's account, are proxied by every target alike."""

import json
import time

import pytest
from postern.loadtest import _replay

SESSIONS = {
    "imap": [{"t": 0, "verb": "CAPABILITY", "args": []},
             {"t": 0, "verb": "LOGIN", "args": [{"login": 5}, {"secret": 6}]},
             {"t": 0, "verb": "SELECT", "args": ["INBOX"]},
             {"t": 0, "verb": "UID FETCH", "args": ["1:*", "(FLAGS)"]},
             {"t": 0, "verb": "APPEND", "args": ["INBOX", "(\\Seen)", {"lit": 120}]},
             {"t": 0, "verb": "LOGOUT", "args": []}],
    "pop3": [{"t": 0, "verb": "CAPA", "args": []},
             {"t": 0, "verb": "USER", "args": [{"login": 5}]},
             {"t": 0, "verb": "PASS", "args": [{"secret": 6}]},
             {"t": 0, "verb": "UIDL", "args": []}, {"t": 0, "verb": "RETR", "args": ["1"]},
             {"t": 0, "verb": "QUIT", "args": []}],
    "smtp": [{"t": 0, "verb": "EHLO", "args": [{"a": 12}]},
             {"t": 0, "verb": "AUTH", "args": ["LOGIN"]}, {"t": 0, "sasl": 8},
             {"t": 0, "sasl": 8},
             {"t": 0, "verb": "MAIL", "args": [{"addr": 17, "pre": "FROM:"}]},
             {"t": 0, "verb": "RCPT", "args": [{"addr": 17, "pre": "TO:"}]},
             {"t": 0, "verb": "DATA", "args": []}, {"body": 500},
             {"t": 0, "verb": "QUIT", "args": []}],
}
EXPECTED = {
    "imap": [("CAPABILITY", "OK"), ("LOGIN", "OK"), ("SELECT", "OK"), ("UID FETCH", "OK"),
             ("APPEND", "OK"), ("LOGOUT", "OK")],
    "pop3": [("CAPA", "+OK"), ("USER", "+OK"), ("PASS", "+OK"), ("UIDL", "+OK"),
             ("RETR", "+OK"), ("QUIT", "+OK")],
    "smtp": [("EHLO", "250"), ("AUTH", "334"), ("AUTH (sasl)", "334"), ("AUTH (sasl)", "235"),
             ("MAIL", "250"), ("RCPT", "250"), ("DATA", "354"), ("DATA (body)", "250"),
             ("QUIT", "221")],
}


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_a_recorded_session_replays_through_the_proxy(lab, protocol):
    """A recorded session's commands, with the lab's alice for the login and made-up
    literals and bodies of the recorded sizes, are answered in order as the backend answers
    them (nginx: the relay after login is byte for byte)."""
    proxy = lab.proxy(protocol=protocol)
    session = {"protocol": protocol, "commands": SESSIONS[protocol]}
    answers = _replay.replay_session(session, proxy.host, proxy.port, "alice", "secret",
                                     timeout=5, time_scale=0)
    assert [(a.verb, a.status) for a in answers] == EXPECTED[protocol]
    if protocol == "smtp":
        (message,) = lab.smtp.wait_messages(1)
        assert message.content == _replay.message(500)


@pytest.mark.postern_only("record_sessions: nginx records nothing of a session")
def test_a_session_is_recorded_in_shapes_and_replays(lab, tmp_path):
    """record_sessions: an IMAP session with LOGIN and an APPEND is one line with
    the commands in order, the credentials and the message as lengths; played back, the
    proxy records the same commands again."""
    path = tmp_path / "sessions.jsonl"
    proxy = lab.proxy(mail=f"record_sessions {path};")
    with proxy.connect() as c:
        lab.login(c)
        c.send(b"a2 APPEND INBOX {21}\r\n")
        assert c.readline().startswith(b"+")
        c.send(b"Subject: hidden\r\n\r\nx\r\n\r\na3 LOGOUT\r\n")
        while not c.readline().startswith(b"a3 "):
            pass
    (record,) = _lines(path, 1)
    assert _replay.verbs(record) == ["LOGIN", "APPEND", "LOGOUT"]
    assert record["commands"][0]["args"] == [{"login": 5}, {"secret": 6}]
    assert record["commands"][1]["args"] == ["INBOX", {"lit": 21}]
    assert "secret" not in path.read_text().replace('"secret":', "") and \
        "hidden" not in path.read_text()
    _replay.replay_session(record, proxy.host, proxy.port, "alice", "secret", timeout=5,
                           time_scale=0)
    again = _lines(path, 2)[1]
    assert _replay.verbs(again) == _replay.verbs(record)


def _lines(path, count: int) -> list[dict]:
    """The recording's lines once there are ``count`` (a session is written as it closes,
    which the proxy sees after the client has gone)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return [json.loads(line) for line in lines]
        time.sleep(0.05)
    raise AssertionError(f"{path} has not {count} session(s)")
