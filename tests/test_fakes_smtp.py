"""FakeSmtpServer against stdlib smtplib and raw sockets, including XCLIENT and every fault."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import smtplib
import subprocess
import sys
import time

import pytest
from postern.fakes.smtp import XCLIENT_EHLO, FakeSmtpServer, Faults, xtext_decode
from postern.proxy import sasl

from tests.fake_support import LOOPS, ROOT, RawClient, cli_fake

GREETING = b"220 upstream.test ESMTP FakeSMTP\r\n"
MESSAGE = "Subject: hi\r\n\r\nbody\r\n"


class Raw(RawClient):
    """The raw client, reading (multi-line) replies."""

    def reply(self) -> list[bytes]:
        """One (possibly multi-line) reply."""
        lines = [self.line()]
        while lines[-1][3:4] == b"-":
            lines.append(self.line())
        return lines

    def cmd(self, line: bytes) -> list[bytes]:
        self.send(line + b"\r\n")
        return self.reply()



@pytest.fixture(**LOOPS)
def smtp(request):
    with FakeSmtpServer(users={"alice": "secret", "bob": "pa ss"},
                        use_uvloop=request.param) as srv:
        yield srv


def test_send_and_store(smtp):
    with smtplib.SMTP(smtp.host, smtp.port, timeout=5) as c:
        c.ehlo("client.example")
        assert c.sendmail("a@b.test", ["c@d.test", "e@f.test"], MESSAGE) == {}
    msg = smtp.wait_messages(1)[0]
    assert (msg.mail_from, msg.rcpt_tos, msg.content, msg.login, msg.helo, msg.xclient) == \
        ("a@b.test", ["c@d.test", "e@f.test"], MESSAGE.encode(), None, "client.example", {})
    lines = smtp.command_lines
    assert lines[0] == b"ehlo client.example"
    assert lines[-2:] == [b"data", b"QUIT"]  # the message body is not a command
    assert all(not line.startswith(b"Subject") for line in lines)


def test_exact_greeting_and_ehlo(smtp):
    raw = Raw(smtp)
    assert raw.line() == GREETING
    assert raw.cmd(b"EHLO me") == [b"250-upstream.test\r\n", b"250-SIZE 33554432\r\n",
                                   b"250-8BITMIME\r\n", b"250-AUTH LOGIN PLAIN\r\n",
                                   b"250-" + XCLIENT_EHLO.encode() + b"\r\n", b"250 HELP\r\n"]
    assert raw.cmd(b"HELO me") == [b"250 upstream.test\r\n"]
    assert raw.cmd(b"QUIT") == [b"221 Bye\r\n"]
    raw.close()
    assert smtp.commands == [b"EHLO me\r\n", b"HELO me\r\n", b"QUIT\r\n"]
    assert smtp.connections[0].transcript[:2] == [("S", GREETING), ("C", b"EHLO me\r\n")]


def test_auth_plain_and_login(smtp):
    with smtplib.SMTP(smtp.host, smtp.port, timeout=5) as c:
        c.ehlo()
        c.login("alice", "secret")
        c.sendmail("a@b.test", ["c@d.test"], MESSAGE)
    assert smtp.wait_messages(1)[0].login == "alice"
    plain = base64.b64encode(b"\0alice\0secret")
    assert b"AUTH PLAIN " + plain + b"\r\n" in smtp.commands
    raw = Raw(smtp)
    raw.line()
    raw.cmd(b"EHLO x")
    assert raw.cmd(b"AUTH LOGIN") == [b"334 VXNlcm5hbWU6\r\n"]
    assert raw.cmd(base64.b64encode(b"bob")) == [b"334 UGFzc3dvcmQ6\r\n"]
    assert raw.cmd(base64.b64encode(b"pa ss")) == [b"235 2.7.0 Authentication successful\r\n"]
    raw.close()
    assert smtp.auth_attempts == [("PLAIN", "alice", True), ("LOGIN", "bob", True)]
    assert base64.b64encode(b"pa ss") + b"\r\n" in smtp.commands  # SASL lines recorded too


def test_bad_credentials(smtp):
    with smtplib.SMTP(smtp.host, smtp.port, timeout=5) as c:
        c.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            c.login("alice", "wrong")
        assert err.value.smtp_code == 535
    assert smtp.auth_attempts[0] == ("PLAIN", "alice", False)


def test_auth_required():
    with FakeSmtpServer({"alice": "secret"}, auth_required=True) as smtp:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=5) as c:
            c.ehlo()
            with pytest.raises(smtplib.SMTPSenderRefused) as err:
                c.sendmail("a@b.test", ["c@d.test"], MESSAGE)
            assert err.value.smtp_code == 530
            assert c.docmd("RSET")[0] == 250
            assert c.docmd("XCLIENT", "ADDR=192.0.2.7 LOGIN=alice")[0] == 220
            c.ehlo("x")
            assert c.sendmail("a@b.test", ["c@d.test"], MESSAGE) == {}
        assert smtp.wait_messages(1)[0].login == "alice"


def test_xclient_success_greets_again_and_resets(smtp):
    raw = Raw(smtp)
    raw.line()
    raw.cmd(b"EHLO mx.test")
    line = b"XCLIENT ADDR=IPV6:2001:db8::1 LOGIN=us+20er+2B+3D NAME=[UNAVAILABLE]"
    assert raw.cmd(line) == [b"220 upstream.test ESMTP FakeSMTP\r\n"]
    assert raw.cmd(b"HELO client.example") == [b"250 upstream.test\r\n"]
    assert raw.cmd(b"MAIL FROM:<a@b.test>") == [b"250 OK\r\n"]
    assert raw.cmd(b"RCPT TO:<c@d.test>") == [b"250 OK\r\n"]
    assert raw.cmd(b"DATA") == [b"354 End data with <CR><LF>.<CR><LF>\r\n"]
    raw.send(MESSAGE.encode() + b".\r\n")
    assert raw.reply()[0].startswith(b"250 2.0.0 Ok: queued as FAKE")
    raw.close()
    assert line + b"\r\n" in smtp.commands
    assert smtp.xclients == [{"ADDR": "IPV6:2001:db8::1", "LOGIN": "us er+=",
                              "NAME": "[UNAVAILABLE]"}]
    msg = smtp.wait_messages(1)[0]
    assert (msg.login, msg.helo, msg.xclient["NAME"]) == ("us er+=", "client.example",
                                                          "[UNAVAILABLE]")


def test_xclient_then_mail_without_helo(smtp):
    # nginx's `smtp_auth none` path without a client HELO: EHLO, XCLIENT, MAIL, RCPT
    raw = Raw(smtp)
    raw.line()
    raw.cmd(b"EHLO mx.test")
    assert raw.cmd(b"XCLIENT ADDR=127.0.0.1 NAME=host.example")[0].startswith(b"220 ")
    assert raw.cmd(b"MAIL FROM:<a@b>") == [b"250 OK\r\n"]
    assert raw.cmd(b"XCLIENT ADDR=127.0.0.1") == \
        [b"503 5.5.1 Error: MAIL transaction in progress\r\n"]
    raw.close()


@pytest.mark.parametrize("args,reply", [
    (b"", b"501 5.5.4 Syntax: XCLIENT attribute=value...\r\n"),
    (b" ADDR", b"501 5.5.4 Error: attribute=value expected\r\n"),
    (b" ADDR=", b"501 5.5.4 Error: attribute=value expected\r\n"),
    (b" FOO=bar", b"501 5.5.4 Bad XCLIENT attribute name: FOO\r\n"),
    (b" ADDR=not-an-ip", b"501 5.5.4 Bad ADDR syntax: not-an-ip\r\n"),
    (b" NAME=bad..name", b"501 5.5.4 Bad NAME syntax: bad..name\r\n"),
    (b" NAME=192.0.2.1", b"501 5.5.4 Bad NAME syntax: 192.0.2.1\r\n"),
    (b" PORT=99999", b"501 5.5.4 Bad PORT syntax: 99999\r\n"),
    (b" PROTO=HTTP", b"501 5.5.4 Bad PROTO syntax: HTTP\r\n"),
    (b" LOGIN=" + b"x" * 256, b"501 5.5.4 Error: attribute value too long\r\n"),
    (b" NAME=[TEMPUNAVAIL] ADDR=[UNAVAILABLE] PROTO=esmtp HELO=x PORT=25",
     b"220 upstream.test ESMTP FakeSMTP\r\n"),
])
def test_xclient_postfix_replies(smtp, args, reply):
    raw = Raw(smtp)
    raw.line()
    assert raw.cmd(b"XCLIENT" + args) == [reply]
    raw.close()


def test_xclient_unauthorized_and_disabled():
    with FakeSmtpServer(xclient_authorized=False) as smtp:
        raw = Raw(smtp)
        raw.line()
        assert raw.cmd(b"XCLIENT ADDR=127.0.0.1") == \
            [b"550 5.7.0 Error: insufficient authorization\r\n"]
        smtp.faults.xclient = False
        assert XCLIENT_EHLO.encode() not in b"".join(raw.cmd(b"EHLO x"))
        assert raw.cmd(b"XCLIENT ADDR=127.0.0.1") == \
            [b'500 Error: command "XCLIENT" not recognized\r\n']
        raw.close()


def test_xtext_decode():
    assert xtext_decode("us+20er+2B+3D") == "us er+="
    assert xtext_decode("+41+4") == "A+4"
    assert xtext_decode("plain") == "plain"


@pytest.mark.parametrize("fault,value,code", [
    ("reject_mail", True, 550), ("reject_mail", "451 4.3.0 try later", 451),
])
def test_reject_mail(fault, value, code):
    with FakeSmtpServer(**{fault: value}) as smtp:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=5) as c:
            c.ehlo()
            with pytest.raises(smtplib.SMTPSenderRefused) as err:
                c.sendmail("a@b.test", ["c@d.test"], MESSAGE)
            assert err.value.smtp_code == code
        assert smtp.messages == []


def test_reject_rcpt():
    with FakeSmtpServer(reject_rcpt=True) as smtp:
        raw = Raw(smtp)
        raw.line()
        raw.cmd(b"HELO x")
        raw.cmd(b"MAIL FROM:<a@b>")
        assert raw.cmd(b"RCPT TO:<c@d>") == \
            [b"550 5.1.1 Recipient address rejected: User unknown\r\n"]
        smtp.faults.reject_rcpt = "450 4.2.0 greylisted"
        assert raw.cmd(b"RCPT TO:<c@d>") == [b"450 4.2.0 greylisted\r\n"]
        smtp.faults.reject_rcpt = False
        assert raw.cmd(b"RCPT TO:<c@d>") == [b"250 OK\r\n"]
        raw.close()


@pytest.mark.parametrize("verb,reply", [("EHLO", "554 5.7.1 no EHLO for you"),
                                        ("XCLIENT", "451 4.3.0 later"),
                                        ("AUTH", "454 4.7.0 temporary"),
                                        ("HELO", "250-multi\r\n250 line")])
def test_reply_at_a_chosen_step(verb, reply):
    with FakeSmtpServer(replies={verb: reply}) as smtp:
        raw = Raw(smtp)
        raw.line()
        got = raw.cmd(verb.encode() + b" x")
        assert b"".join(got) == reply.encode() + b"\r\n"
        assert raw.cmd(b"NOOP") == [b"250 OK\r\n"]  # the session goes on
        raw.close()


def test_421_closes_the_connection():
    with FakeSmtpServer(replies={"MAIL": "421 4.3.2 shutting down"}) as smtp:
        raw = Raw(smtp)
        raw.line()
        raw.cmd(b"HELO x")
        assert raw.cmd(b"MAIL FROM:<a@b>") == [b"421 4.3.2 shutting down\r\n"]
        assert raw.eof()
        raw.close()


def test_message_reply():
    with FakeSmtpServer(replies={"MESSAGE": "552 5.3.4 too big"}) as smtp:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=5) as c:
            with pytest.raises(smtplib.SMTPDataError) as err:
                c.sendmail("a@b.test", ["c@d.test"], MESSAGE)
            assert err.value.smtp_code == 552
        assert smtp.messages == []


def test_drop_after_data():
    with FakeSmtpServer(drop_after_data=True) as smtp:
        c = smtplib.SMTP(smtp.host, smtp.port, timeout=5)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            c.sendmail("a@b.test", ["c@d.test"], MESSAGE)
        assert smtp.messages == []
        assert smtp.command_lines[-1] == b"data"


def test_drop_at_a_verb():
    with FakeSmtpServer(drop_at="RCPT") as smtp:
        raw = Raw(smtp)
        raw.line()
        raw.cmd(b"HELO x")
        raw.cmd(b"MAIL FROM:<a@b>")
        raw.send(b"RCPT TO:<c@d>\r\n")
        assert raw.eof()
        raw.close()
        assert smtp.command_lines[-1] == b"RCPT TO:<c@d>"


def test_greeting_faults():
    with FakeSmtpServer(greeting="554 5.3.2 not now") as smtp:
        raw = Raw(smtp)
        assert raw.line() == b"554 5.3.2 not now\r\n"
        raw.close()
    with FakeSmtpServer(greeting="421 4.3.2 go away") as smtp:
        raw = Raw(smtp)
        assert raw.line() == b"421 4.3.2 go away\r\n"
        assert raw.eof()
        raw.close()
    with FakeSmtpServer(greeting_delay=0.5) as smtp:
        start = time.monotonic()
        raw = Raw(smtp)
        assert raw.line() == GREETING
        assert 0.4 < time.monotonic() - start < 5
        raw.close()
    with FakeSmtpServer(greeting=None) as smtp:
        raw = Raw(smtp, timeout=0.5)
        with pytest.raises(TimeoutError):
            raw.line()
        raw.close()


def test_faults_object_and_unknown_fault():
    faults = Faults(reject_mail=True)
    with FakeSmtpServer(faults=faults) as smtp:
        assert smtp.faults is faults
    with pytest.raises(TypeError):
        FakeSmtpServer(no_such_fault=True)


def test_record_off_keeps_nothing():
    with FakeSmtpServer(record=False) as smtp:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=5) as c:
            c.sendmail("a@b.test", ["c@d.test"], MESSAGE)
        assert smtp.commands == [] and smtp.connections == []
        assert len(smtp.messages) == 1  # accepted mail is kept: it is the result, not a log


def test_inside_a_running_loop():
    async def scenario():
        srv = FakeSmtpServer(use_uvloop=False)
        await srv.start()
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        greeting = await reader.readline()
        writer.write(b"XCLIENT ADDR=127.0.0.1 NAME=[UNAVAILABLE]\r\n")
        reply = await reader.readline()
        await srv.async_wait_commands(1)
        writer.close()
        await srv.stop()
        return greeting, reply, srv.commands

    greeting, reply, commands = asyncio.run(scenario())
    assert greeting == GREETING and reply == GREETING
    assert commands == [b"XCLIENT ADDR=127.0.0.1 NAME=[UNAVAILABLE]\r\n"]


def test_stop_with_clients_still_connected():
    smtp = FakeSmtpServer().start_in_thread()
    raw = Raw(smtp)
    raw.line()
    smtp.stop_in_thread()
    assert raw.eof()
    raw.close()


def test_cli():
    with (cli_fake("smtp", "--user", "alice:secret", "--reject-rcpt",
                   "550 5.1.1 nobody here") as run,
          smtplib.SMTP("127.0.0.1", run.port, timeout=5) as c):
        c.ehlo()
        c.login("alice", "secret")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            c.sendmail("a@b.test", ["c@d.test"], MESSAGE)
    assert base64.b64encode(b"\0alice\0secret") not in run.output


def test_cli_rejects_a_bad_reply_option():
    done = subprocess.run([sys.executable, "-m", "postern.fakes.smtp", "--reply", "nonsense"], cwd=ROOT,
                          capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=30, check=False)
    assert done.returncode == 2 and b"VERB=REPLY" in done.stderr


def test_long_xclient_line_is_accepted(smtp):
    raw = Raw(smtp)
    raw.line()
    login = b"+41" * 80  # xtext: 240 bytes on the wire
    assert raw.cmd(b"XCLIENT ADDR=127.0.0.1 LOGIN=" + login + b" NAME=a.example") == [GREETING]
    raw.close()
    assert smtp.xclients[0]["LOGIN"] == "A" * 80


def test_stall_at_a_verb_keeps_the_connection_silent():
    """`stall_at`: the upstream stops answering at that verb but keeps the socket open."""
    import socket as _socket

    with FakeSmtpServer({"alice": "secret"}, stall_at="MAIL") as smtp:
        s = _socket.create_connection(("127.0.0.1", smtp.port), timeout=1)
        f = s.makefile("rwb", buffering=0)
        assert f.readline().startswith(b"220")
        f.write(b"EHLO x\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        f.write(b"MAIL FROM:<a@b>\r\n")
        with pytest.raises(TimeoutError):
            f.readline()
        s.close()


def test_mail_dir_and_delivery_to_known_users(tmp_path):
    delivered = []
    with FakeSmtpServer({"alice": "secret", "bob@example.test": "x"}, mail_dir=tmp_path / "m",
                        deliver=lambda user, raw: delivered.append((user, raw))) as srv:
        with smtplib.SMTP(srv.host, srv.port) as client:
            client.sendmail("z@example.test", ["alice@lab.test", "bob@example.test",
                                               "carol@example.test"], b"Subject: a\r\n\r\n.x\r\n")
            client.sendmail("z@example.test", ["stranger@example.test"], b"Subject: b\r\n\r\nb\r\n")
        srv.wait_messages(2)
    first = b"Subject: a\r\n\r\n.x\r\n"
    assert delivered == [("alice", first), ("bob@example.test", first)]
    assert (tmp_path / "m" / "00001.eml").read_bytes() == first
    assert (tmp_path / "m" / "00002.eml").read_bytes() == b"Subject: b\r\n\r\nb\r\n"
    index = [json.loads(line) for line in (tmp_path / "m" / "index.jsonl").read_text().splitlines()]
    assert [e["delivered_to"] for e in index] == [["alice", "bob@example.test"], []]
    assert index[1] == {"file": "00002.eml", "mail_from": "z@example.test",
                        "rcpt_to": ["stranger@example.test"], "delivered_to": [], "login": None,
                        "size": 17}
    # a restart goes on numbering after what the directory holds
    with FakeSmtpServer({}, mail_dir=tmp_path / "m") as srv:
        with smtplib.SMTP(srv.host, srv.port) as client:
            client.sendmail("z@example.test", ["y@example.test"], b"Subject: c\r\n\r\nc\r\n")
        srv.wait_messages(1)
    assert (tmp_path / "m" / "00003.eml").exists()


@pytest.mark.parametrize("mech", ["XOAUTH2", "OAUTHBEARER"])
def test_oauth_mechanisms_when_switched_on(smtp, mech):
    make = sasl.OAUTH_RESPONSES[mech.lower()]
    with smtplib.SMTP(smtp.host, smtp.port, timeout=5) as c:
        assert "XOAUTH2" not in c.ehlo("x")[1].decode()
    smtp.faults.oauth = True
    with smtplib.SMTP(smtp.host, smtp.port, timeout=5) as c:
        assert "AUTH LOGIN OAUTHBEARER PLAIN XOAUTH2" in c.ehlo("x")[1].decode()
        code, text = c.docmd("AUTH", f"{mech} {make(b'alice', b'wrong').decode()}")
        assert (code, text) == (334, sasl.OAUTH_ERROR)
        assert c.docmd("AQ==")[0] == 535
        assert c.docmd("AUTH", mech) == (334, b"")
        assert c.docmd(make(b"alice", b"secret").decode())[0] == 235


@pytest.mark.parametrize("fault, expected", [
    ("lose_every", [b"Subject: 1\r\n\r\nbody 1\r\n", b"Subject: 3\r\n\r\nbody 3\r\n"]),
    ("alter_every", [b"Subject: 1\r\n\r\nbody 1\r\n", b"Subject: 2\r\n\r\nXody 2\r\n",
                     b"Subject: 3\r\n\r\nbody 3\r\n"]),
    ("duplicate_every", [b"Subject: 1\r\n\r\nbody 1\r\n", b"Subject: 2\r\n\r\nbody 2\r\n",
                         b"Subject: 2\r\n\r\nbody 2\r\n", b"Subject: 3\r\n\r\nbody 3\r\n"]),
])
def test_delivery_faults_answer_250_and_then_misdeliver(fault, expected):
    """Every 2nd message is lost, altered or delivered twice; the client sees 250 each time."""
    delivered = []
    with FakeSmtpServer({"alice": "secret"}, deliver=lambda user, raw: delivered.append(raw),
                        **{fault: 2}) as srv:
        with smtplib.SMTP(srv.host, srv.port) as client:
            for n in (1, 2, 3):
                assert client.sendmail("z@example.test", ["alice@example.test"],
                                       f"Subject: {n}\r\n\r\nbody {n}\r\n".encode()) == {}
        srv.wait_messages(3)
    assert delivered == expected
