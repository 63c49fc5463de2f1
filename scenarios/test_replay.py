"""Record and replay: a recording's command shapes (what ``record_sessions`` writes), played
by loadtest/_replay.py with the lab's account, are proxied by every target alike."""

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
