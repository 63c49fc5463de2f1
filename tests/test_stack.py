"""fakes/stack.py's Stack: the fakes, the mock auth server and a target in one line."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import ssl

import pytest
from postern.fakes.auth import Reply
from postern.fakes.stack import Stack
from postern.scenarios.kit.real.common import free_port
from postern.scenarios.kit.targets import target_class

USERS = {"alice": "secret", "bob": "hunter2"}


def _targets() -> list:
    reason = target_class("nginx").unavailable_reason()
    return ["postern", pytest.param("nginx", marks=pytest.mark.skipif(
        reason is not None, reason=reason or ""))]


@pytest.mark.parametrize("target", _targets())
def test_one_line_stack_with_starttls_through_the_target(target):
    with Stack(target, users=USERS, tls="starttls") as stack:
        host, port = stack.addresses["imap"]
        assert port == stack.proxy_ports["imap"] != stack.imap.port
        ctx = ssl.create_default_context(cafile=str(stack.tls.ca))
        with imaplib.IMAP4(host, port) as m:
            m.starttls(ctx)
            assert m.login("alice", "secret")[0] == "OK"
        with smtplib.SMTP(*stack.addresses["smtp"], timeout=5) as s:
            s.starttls(context=ctx)
            s.login("bob", "hunter2")
            s.sendmail("bob@example.test", ["alice@example.test"], b"Subject: hi\r\n\r\nhi\r\n")
        assert stack.auth.wait_requests(2)[0].header("Auth-Protocol") == "imap"
        assert any(c.startswith(b"XCLIENT") for c in stack.smtp.commands)
        # one store: the POP3 maildrop is the IMAP INBOX, SMTP mail for alice lands there
        pop = poplib.POP3(*stack.backends["pop3"], timeout=5)
        pop.user("alice")
        pop.pass_("secret")
        count = pop.stat()[0]
        pop.quit()
        assert count == len(stack.store.mailbox("alice", "INBOX"))
        assert stack.store.mailbox("alice", "INBOX").entries[-1].message.read(0, 11) == \
            b"Subject: hi"


def test_no_target_the_clients_meet_the_fakes_and_reset_between_tests(tmp_path):
    with Stack(users=USERS, one_store=False, workdir=tmp_path) as stack:
        assert stack.proxy is None and stack.addresses == stack.backends
        stack.imap.faults.reject_login = True
        stack.auth.push(Reply.fail("scripted"))
        stack.auth.users["carol"] = stack.auth.users["alice"]
        with imaplib.IMAP4(*stack.addresses["imap"]) as m, pytest.raises(imaplib.IMAP4.error):
            m.login("alice", "secret")
        assert stack.imap.commands
        stack.reset()
        assert not stack.imap.faults.reject_login and stack.imap.commands == []
        assert not stack.auth.script and "carol" not in stack.auth.users
        with imaplib.IMAP4(*stack.addresses["imap"]) as m:
            assert m.login("alice", "secret")[0] == "OK"
        assert stack.store is not stack.imap.store  # each fake its own store


def test_a_scenario_starts_its_own_target_text_in_front_of_the_same_fakes(tmp_path):
    with Stack(users=USERS) as stack:
        assert stack.proxy_ports == {}  # target "none"
        listen = free_port()
        text = (f"server_name mx.test;\nauth_http 127.0.0.1:{stack.auth.port}/auth;\n"
                f"server {{\n    listen 127.0.0.1:{listen};\n    protocol pop3;\n}}\n")
        instance = stack.start_target(text, tmp_path / "p", name="postern")
        assert instance in stack.targets
        pop = poplib.POP3("127.0.0.1", listen, timeout=5)
        pop.user("bob")
        assert pop.pass_("hunter2").startswith(b"+OK")
        pop.quit()
        assert stack.pop3.wait_commands(2)[:2] == [b"USER bob", b"PASS hunter2"]
    assert stack.targets == []
