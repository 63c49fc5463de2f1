"""FakePop3Server against stdlib poplib and raw sockets, including every fault."""

from __future__ import annotations

import base64
import hashlib
import poplib
import socket

import pytest
from postern.fakes.mailbox import MailStore, StoredMessage
from postern.fakes.pop3 import FakePop3Server, Faults, dot_stuffed, top_chunks
from postern.proxy import sasl

from tests.fake_support import (
    LOOPS,
    RawClient,
    answers_then_closes,
    cli_fake,
    in_running_loop,
    stall_and_stall_after,
)


class Raw(RawClient):
    """The raw client, reading multi-line replies."""

    def multiline(self) -> list[bytes]:
        lines = []
        while (line := self.line()) != b".\r\n":
            assert line, f"EOF inside a multi-line reply; got {lines!r}"
            lines.append(line)
        return lines



@pytest.fixture(**LOOPS)
def pop(request):
    with FakePop3Server(users={"alice": "secret", "bob": "p w "}, seed=7,
                        use_uvloop=request.param) as srv:
        yield srv


@pytest.fixture
def raw(pop):
    client = Raw(pop)
    yield client
    client.close()


def login(client: Raw, user: bytes = b"alice", password: bytes = b"secret") -> bytes:
    assert client.line().startswith(b"+OK Fake POP3 ready <")
    client.send(b"USER " + user + b"\r\n")
    assert client.line() == b"+OK\r\n"
    client.send(b"PASS " + password + b"\r\n")
    reply = client.line()
    assert reply.startswith(b"+OK Logged in ("), reply
    return reply


def lines_of(raw: bytes) -> list[bytes]:
    """What poplib returns for a message: lines without CRLF, dots unstuffed."""
    return raw.removesuffix(b"\r\n").split(b"\r\n")


def test_poplib_session(pop):
    inbox = pop.store.mailbox("alice", "INBOX")
    sizes = [e.message.size for e in inbox.entries]
    m = poplib.POP3(pop.host, pop.port, timeout=5)
    assert m.getwelcome().startswith(b"+OK Fake POP3 ready <")
    assert m.capa() == {"TOP": [], "USER": [], "UIDL": [], "RESP-CODES": [], "PIPELINING": [],
                        "SASL": ["PLAIN"]}
    assert m.user("alice") == b"+OK"
    assert m.pass_("secret") == b"+OK Logged in (%d messages)" % len(sizes)
    assert m.stat() == (len(sizes), sum(sizes))
    resp, listing, _ = m.list()
    assert resp == b"+OK %d messages (%d octets)" % (len(sizes), sum(sizes))
    assert listing == [b"%d %d" % (n, s) for n, s in enumerate(sizes, 1)]
    assert m.list(2) == b"+OK 2 %d" % sizes[1]
    uids = [f"{inbox.uidvalidity}.{e.uid}".encode() for e in inbox.entries]
    assert m.uidl()[1] == [b"%d %s" % (n, u) for n, u in enumerate(uids, 1)]
    assert m.uidl(3) == b"+OK 3 " + uids[2]
    first = inbox.entries[0].message
    resp, lines, _ = m.retr(1)
    assert resp == b"+OK %d octets" % first.size and lines == lines_of(first.read())
    resp, lines, _ = m.top(1, 0)
    assert lines == lines_of(first.header)
    resp, lines, _ = m.top(1, 2)
    assert lines == lines_of(first.read())[:len(lines_of(first.header)) + 2]
    assert m.noop() == b"+OK"
    assert m.quit() == b"+OK Logging out"
    assert pop.commands == [b"CAPA", b"USER alice", b"PASS secret", b"STAT", b"LIST", b"LIST 2",
                            b"UIDL", b"UIDL 3", b"RETR 1", b"TOP 1 0", b"TOP 1 2", b"NOOP",
                            b"QUIT"]


def test_user_and_pass_take_the_rest_of_the_line(raw, pop):
    login(raw, b"bob", b"p w ")
    assert pop.commands[-2:] == [b"USER bob", b"PASS p w "]
    # shared content: per-user generation needs a login usable as an address local part
    with FakePop3Server(users={"us er": " p"}, shared_content=True) as spaced:
        client = Raw(spaced)
        login(client, b"us er", b" p")
        client.close()


def test_wrong_password_and_wrong_state(raw):
    assert raw.line().startswith(b"+OK")
    raw.send(b"STAT\r\nPASS secret\r\nUSER alice\r\nPASS nope\r\nPASS secret\r\nFOO\r\n")
    assert [raw.line() for _ in range(6)] == [
        b"-ERR STAT not valid in this state\r\n", b"-ERR No user name given (USER first)\r\n",
        b"+OK\r\n", b"-ERR [AUTH] Authentication failed.\r\n",
        b"-ERR No user name given (USER first)\r\n", b"-ERR Unknown command: FOO\r\n"]
    raw.send(b"USER alice\r\nPASS secret\r\nUSER alice\r\n")
    assert raw.line() == b"+OK\r\n" and raw.line().startswith(b"+OK Logged in")
    assert raw.line() == b"-ERR USER not valid in this state\r\n"


def test_pipelined_commands_answer_in_order(raw, pop):
    assert raw.line().startswith(b"+OK")
    raw.send(b"USER alice\r\nPASS secret\r\nSTAT\nLIST 1\r\nQUIT\r\n")
    replies = [raw.line() for _ in range(5)]
    assert replies[0] == b"+OK\r\n" and replies[2].startswith(b"+OK 12 ")
    assert replies[3].startswith(b"+OK 1 ") and replies[4] == b"+OK Logging out\r\n"
    assert raw.eof()
    assert pop.commands[2] == b"STAT"  # bare LF accepted, line end not recorded


def test_apop(pop):
    m = poplib.POP3(pop.host, pop.port, timeout=5)
    assert m.apop("alice", "secret").startswith(b"+OK Logged in")
    m.quit()
    m = poplib.POP3(pop.host, pop.port, timeout=5)
    with pytest.raises(poplib.error_proto, match="Authentication failed"):
        m.apop("alice", "wrong")
    stamp = m.getwelcome().split()[-1]
    assert pop.commands[-1] == b"APOP alice " + hashlib.md5(stamp + b"wrong").hexdigest().encode()
    m.quit()


def test_auth_plain(raw):
    assert raw.line().startswith(b"+OK")
    raw.send(b"AUTH\r\n")
    assert raw.line() == b"+OK\r\n" and raw.multiline() == [b"PLAIN\r\n"]
    raw.send(b"AUTH PLAIN\r\n")
    assert raw.line() == b"+ \r\n"
    raw.send(b"*\r\n")
    assert raw.line() == b"-ERR Authentication cancelled\r\n"
    raw.send(b"AUTH CRAM-MD5\r\nAUTH PLAIN !!\r\nAUTH PLAIN =\r\n")
    assert [raw.line() for _ in range(3)] == [b"-ERR Unsupported authentication mechanism\r\n",
                                              b"-ERR Invalid SASL PLAIN response\r\n",
                                              b"-ERR Invalid SASL PLAIN response\r\n"]
    raw.send(b"AUTH PLAIN\r\n" + base64.b64encode(b"\0alice\0secret") + b"\r\n")
    assert raw.line() == b"+ \r\n" and raw.line().startswith(b"+OK Logged in")


def test_auth_plain_initial_response_with_poplib(pop):
    m = poplib.POP3(pop.host, pop.port, timeout=5)
    blob = base64.b64encode(b"alice\0alice\0secret").decode()
    assert m._shortcmd(f"AUTH PLAIN {blob}").startswith(b"+OK Logged in")
    assert m.stat()[0] == 12
    m.quit()


def test_dele_rset_quit_update_the_store(pop):
    inbox = pop.store.mailbox("alice", "INBOX")
    count, first, second = len(inbox), inbox.entries[0], inbox.entries[1]
    m = poplib.POP3(pop.host, pop.port, timeout=5)
    m.user("alice")
    m.pass_("secret")
    assert m.dele(1) == b"+OK Message 1 deleted"
    with pytest.raises(poplib.error_proto, match="Message is deleted"):
        m.retr(1)
    assert m.stat()[0] == count - 1 and m.list()[1][0].startswith(b"2 ")
    assert m.rset().startswith(b"+OK %d messages" % count)
    m.dele(2)
    with pytest.raises(poplib.error_proto, match="No such message"):
        m.dele(99)
    with pytest.raises(poplib.error_proto, match="Invalid message number"):
        m._shortcmd("DELE x")
    assert m.quit() == b"+OK Logging out (1 messages deleted)"
    assert len(inbox) == count - 1 and inbox.entries[0] is first and second not in inbox.entries


def test_retr_is_dot_stuffed_and_large_messages_stream():
    body = b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\nmid.dle\r\n.\r\nend"
    with FakePop3Server(users={"alice": "secret"}, large_message=300_000) as pop:
        pop.deliver("alice", body)
        m = poplib.POP3(pop.host, pop.port, timeout=5)
        m.user("alice")
        m.pass_("secret")
        count = m.stat()[0]
        _, lines, _ = m.retr(count)
        assert lines == [b"Subject: dots", b"", b".leading dot", b"..two", b"mid.dle", b".",
                         b"end"]
        raw = Raw(pop)
        login(raw)
        raw.send(b"RETR %d\r\n" % count)
        assert raw.line() == b"+OK %d octets\r\n" % len(body)
        assert b"".join(raw.multiline()) == body.replace(b"\r\n.", b"\r\n..") + b"\r\n"
        raw.close()
        resp, lines, _ = m.retr(count - 1)  # the 300 000-byte message, in chunks
        assert resp == b"+OK 300000 octets" and sum(len(x) + 2 for x in lines) == 300_000
        m.quit()


def test_dot_stuffing_across_chunk_boundaries():
    chunks = [b"a\r", b"\n.b\r\n", b".c\r\n", b"d"]
    assert b"".join(dot_stuffed(chunks)) == b"a\r\n..b\r\n..c\r\nd\r\n"
    assert b"".join(dot_stuffed([b".", b".x\r\n"])) == b"...x\r\n"
    assert b"".join(dot_stuffed([])) == b""


def test_top_counts_lines_across_chunks():
    msg = StoredMessage(b"H: 1\r\n\r\n" + b"".join(b"line%d\r\n" % i for i in range(5)))
    original = msg.chunks
    msg.chunks = lambda start=0, end=None: original(start, end, chunk_size=5)  # type: ignore
    assert b"".join(map(bytes, top_chunks(msg, 0))) == b"H: 1\r\n\r\n"
    assert b"".join(map(bytes, top_chunks(msg, 2))) == b"H: 1\r\n\r\nline0\r\nline1\r\n"
    assert b"".join(map(bytes, top_chunks(msg, 50))) == msg.read()


# -- faults -----------------------------------------------------------------------------------

def test_no_greeting_and_greeting_delay():
    with FakePop3Server(users={"alice": "secret"}, greeting=None) as pop:
        with pytest.raises((TimeoutError, socket.timeout)):
            poplib.POP3(pop.host, pop.port, timeout=0.3)
        client = Raw(pop)
        client.send(b"CAPA\r\n")  # still answers commands
        assert client.line() == b"+OK Capability list follows\r\n"
        client.close()
    with FakePop3Server(users={"alice": "secret"}, greeting_delay=0.2) as pop:
        client = Raw(pop)
        assert client.silent(0.05)
        assert client.line().startswith(b"+OK Fake POP3 ready")
        client.close()


def test_custom_greetings():
    with FakePop3Server(users={"alice": "secret"}, greeting=b"-ERR busy, come back later") as pop:
        client = Raw(pop)
        assert client.line() == b"-ERR busy, come back later\r\n" and client.eof()
        client.close()
    with FakePop3Server(users={"alice": "secret"}, greeting="+OK plain banner") as pop:
        client = Raw(pop)
        assert client.line() == b"+OK plain banner\r\n"
        client.send(b"APOP alice 0123\r\nUSER alice\r\nPASS secret\r\n")
        assert client.line() == b"-ERR APOP not available (no timestamp in the greeting)\r\n"
        assert client.line() == b"+OK\r\n" and client.line().startswith(b"+OK Logged in")
        client.close()


def test_reject_user_and_pass_with_text():
    with FakePop3Server(users={"alice": "secret"}, reject_user="[SYS/TEMP] try later") as pop:
        m = poplib.POP3(pop.host, pop.port, timeout=5)
        with pytest.raises(poplib.error_proto, match=r"-ERR \[SYS/TEMP\] try later"):
            m.user("alice")
        pop.faults.reject_user = True
        with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] User rejected"):
            m.user("alice")
        pop.faults.reject_user = False
        pop.faults.reject_pass = "backend says no"
        m.user("alice")
        with pytest.raises(poplib.error_proto, match="^b'-ERR backend says no'$"):
            m.pass_("secret")
        with pytest.raises(poplib.error_proto, match="backend says no"):
            m.apop("alice", "secret")
        pop.faults.reject_pass = False
        m.user("alice")
        assert m.pass_("secret").startswith(b"+OK")
        m.quit()


def test_drop_after_login(raw, pop):
    pop.faults.drop_after_login = True
    login(raw)
    assert raw.eof()


def test_drop_after_n_commands():
    with FakePop3Server(users={"alice": "secret"}, faults=Faults(drop_after=2)) as pop:
        answers_then_closes(Raw(pop), b"+OK", [(b"NOOP\r\n", b"+OK\r\n")] * 2)


def test_stall_and_stall_after(pop):
    stall_and_stall_after(pop, Raw, login, b"STAT\r\n", login_commands=2)


def test_unknown_fault_is_an_error():
    with pytest.raises(TypeError):
        FakePop3Server(users={}, reject_login=True)


def test_record_false_keeps_nothing():
    with FakePop3Server(users={"alice": "secret"}, record=False) as pop:
        m = poplib.POP3(pop.host, pop.port, timeout=5)
        m.user("alice")
        m.pass_("secret")
        m.quit()
        assert pop.commands == [] and pop.connections == []


def test_transcript_records_both_directions(raw, pop):
    login(raw)
    raw.send(b"QUIT\r\n")
    assert raw.line() == b"+OK Logging out\r\n" and raw.eof()
    transcript = pop.connections[0].transcript
    assert transcript[0][0] == "S" and transcript[1] == ("C", b"USER alice\r\n")
    assert transcript[-1] == ("S", b"+OK Logging out\r\n")


def test_store_shared_with_another_fake():
    store = MailStore(seed=3)
    with FakePop3Server(users={"alice": "secret"}, store=store) as pop:
        m = poplib.POP3(pop.host, pop.port, timeout=5)
        m.user("alice")
        m.pass_("secret")
        assert m.stat()[0] == len(store.mailbox("alice", "INBOX"))
        m.quit()


def test_async_start_stop_in_running_loop():
    srv = FakePop3Server(users={"alice": "secret"}, store=MailStore(seed=2, shared=True))
    greeting, reply = in_running_loop(srv, b"USER alice\r\nPASS secret\r\nQUIT\r\n", 3)
    assert greeting.startswith(b"+OK Fake POP3 ready <")
    assert reply == b"+OK\r\n+OK Logged in (12 messages)\r\n+OK Logging out\r\n"


def test_cli():
    with cli_fake("pop3", "--user", "alice:secret", "--seed", "1") as run:
        m = poplib.POP3("127.0.0.1", run.port, timeout=5)
        m.user("alice")
        m.pass_("secret")
        assert m.stat()[0] == 12
        m.quit()


def test_xclient_as_dovecot_offers_it_to_a_trusted_proxy():
    with FakePop3Server(users={"alice": "secret"}) as pop:
        client = Raw(pop)
        assert client.line().startswith(b"+OK Fake POP3 ready <")  # no sign by default
        client.send(b"XCLIENT ADDR=192.0.2.7\r\n")
        assert client.line() == b"-ERR Unknown command: XCLIENT\r\n"
        client.close()
        pop.faults.offer_xclient = True
        client = Raw(pop)
        assert client.line().startswith(b"+OK [XCLIENT] Fake POP3 ready <")
        client.send(b"XCLIENT ADDR=2001:db8::7 PORT=5 session=a\"b\r\nXCLIENT ADDR\r\n")
        assert client.line() == b"+OK Updated\r\n"
        assert client.line() == b"-ERR Invalid parameters\r\n"
        assert pop.connections[1].xclient == {"ADDR": "2001:db8::7", "PORT": "5",
                                              "SESSION": 'a"b'}
        pop.faults.reject_xclient = "not from you"
        client.send(b"XCLIENT ADDR=192.0.2.8\r\nUSER alice\r\nPASS secret\r\n")
        assert client.line() == b"-ERR not from you\r\n"
        assert client.line() == b"+OK\r\n" and client.line().startswith(b"+OK Logged in")
        client.send(b"XCLIENT ADDR=192.0.2.8\r\n")  # AUTHORIZATION state only
        assert client.line() == b"-ERR XCLIENT not valid in this state\r\n"
        assert pop.connections[1].xclient["ADDR"] == "2001:db8::7"
        client.close()


@pytest.mark.parametrize("mech", ["XOAUTH2", "OAUTHBEARER"])
def test_auth_oauth_takes_the_password_as_token(raw, mech):
    assert raw.line().startswith(b"+OK")
    make = sasl.OAUTH_RESPONSES[mech.lower()]
    raw.send(b"AUTH %s %s\r\n" % (mech.encode(), make(b"alice", b"wrong")))
    assert raw.line() == b"+ " + sasl.OAUTH_ERROR + b"\r\n"
    raw.send(b"\r\n")
    assert raw.line() == b"-ERR [AUTH] Authentication failed.\r\n"
    raw.send(b"AUTH %s\r\n" % mech.encode())
    assert raw.line() == b"+ \r\n"
    raw.send(make(b"alice", b"secret") + b"\r\n")
    assert raw.line().startswith(b"+OK Logged in")
