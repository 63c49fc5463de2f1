"""FakeImapServer against stdlib imaplib and raw sockets, including every fault."""

from __future__ import annotations

import base64
import imaplib
import socket

import pytest
from postern.fakes.imap import FakeImapServer, Faults
from postern.fakes.imap_proto import CommandReader, ParseError, parse_seqset, tokenize
from postern.fakes.mailbox import MailStore
from postern.proxy import sasl

from tests.fake_support import (
    LOOPS,
    RawClient,
    answers_then_closes,
    cli_fake,
    exchange,
    in_running_loop,
    stall_and_stall_after,
)

GREETING = b"* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR AUTH=PLAIN IDLE] Fake IMAP4rev1 ready\r\n"


class Raw(RawClient):
    """The raw client, reading up to a tagged reply."""

    def until(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            line = self.line()
            assert line, f"EOF before {tag!r} reply; got {lines!r}"
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines



@pytest.fixture(**LOOPS)
def imap(request):
    with FakeImapServer(users={"alice": "secret", "bob": "pa ss"}, seed=7,
                        use_uvloop=request.param) as srv:
        yield srv


@pytest.fixture
def raw(imap):
    client = Raw(imap)
    yield client
    client.close()


def login(client: Raw) -> None:
    assert client.line() == GREETING
    client.send(b"a1 LOGIN alice secret\r\n")
    assert client.line() == b"a1 OK Logged in\r\n"


def test_imaplib_session(imap):
    inbox = imap.store.mailbox("alice", "INBOX")
    m = imaplib.IMAP4(imap.host, imap.port, timeout=5)
    assert m.welcome == GREETING.rstrip()
    assert "IDLE" in m.capabilities and "AUTH=PLAIN" in m.capabilities
    assert m.login("alice", "secret") == ("OK", [b"Logged in"])
    typ, boxes = m.list()
    assert typ == "OK" and boxes == [b'(\\HasNoChildren) "/" "INBOX"',
                                     b'(\\HasNoChildren) "/" "Sent"',
                                     b'(\\HasNoChildren) "/" "Archive"']
    assert m.list('""', "%box") == ("OK", [b'(\\HasNoChildren) "/" "INBOX"'])
    assert m.lsub()[1] == boxes
    assert m.status("INBOX", "(MESSAGES UIDNEXT UIDVALIDITY)") == ("OK", [
        f'"INBOX" (MESSAGES {len(inbox)} UIDNEXT {inbox.uidnext} '
        f'UIDVALIDITY {inbox.uidvalidity})'.encode()])
    assert m.select("INBOX") == ("OK", [str(len(inbox)).encode()])
    assert m.response("UIDVALIDITY")[1] == [str(inbox.uidvalidity).encode()]
    assert m.search(None, "ALL")[1] == [" ".join(str(i + 1) for i in range(len(inbox))).encode()]
    uids = " ".join(str(e.uid) for e in inbox.entries).encode()
    assert m.uid("SEARCH", "ALL")[1] == [uids]
    first = inbox.entries[0]
    typ, data = m.fetch("1", "(BODY.PEEK[])")
    assert typ == "OK" and data[0][1] == first.message.raw
    assert data[0][0] == b"1 (BODY[] {%d}" % first.message.size
    typ, data = m.fetch("1", "(UID FLAGS RFC822.SIZE INTERNALDATE)")
    assert data[0].startswith(b"1 (UID %d FLAGS (" % first.uid)
    assert b"RFC822.SIZE %d INTERNALDATE \"" % first.message.size in data[0]
    assert m.logout()[0] == "BYE"
    assert imap.commands[1].endswith(b' LOGIN alice "secret"')
    assert imap.commands[-1].endswith(b" LOGOUT")


def test_fetch_sections_and_sequence_sets(imap):
    inbox = imap.store.mailbox("alice", "INBOX")
    m = imaplib.IMAP4(imap.host, imap.port, timeout=5)
    m.login("alice", "secret")
    m.select("INBOX")
    typ, data = m.fetch("1,3:5", "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])")
    fetched = [d for d in data if isinstance(d, tuple)]
    assert [d[0].split()[0] for d in fetched] == [b"1", b"3", b"4", b"5"]
    header = fetched[0][1]
    assert header.startswith(b"From: ") and b"\r\nSubject: " in header and header.endswith(
        b"\r\n\r\n") and b"Date:" not in header
    msg = inbox.entries[1].message
    typ, data = m.fetch("2", "(RFC822.HEADER BODY.PEEK[TEXT] BODY.PEEK[]<5.10>)")
    assert [d[1] for d in data if isinstance(d, tuple)] == [
        msg.header, msg.raw[msg.header_size:], msg.raw[5:15]]
    assert data[0][0].startswith(b"2 (RFC822.HEADER {")
    assert b"BODY[]<5> {10}" in data[2][0]
    last_uid = inbox.entries[-1].uid
    typ, data = m.uid("FETCH", f"{last_uid}:*", "(FLAGS)")
    assert data == [b"%d (UID %d FLAGS (%s))" % (len(inbox), last_uid, " ".join(
        sorted(inbox.entries[-1].flags)).encode())]
    typ, data = m.fetch("1:*", "(UID)")
    assert typ == "OK" and len(data) == len(inbox)
    data = m.fetch("1", "(ENVELOPE BODYSTRUCTURE)")[1]
    flat = b"".join(b"".join(d) if isinstance(d, tuple) else d for d in data)
    assert flat.startswith(b"1 (ENVELOPE (\"") and b") BODYSTRUCTURE (" in flat
    assert b"\r\n" not in flat  # header values are unfolded
    with pytest.raises(imaplib.IMAP4.error):
        m.fetch("0:x", "(FLAGS)")
    with pytest.raises(imaplib.IMAP4.error):
        m.fetch("1", "(NOSUCHITEM)")
    m.logout()


def test_store_seen_and_search(imap):
    inbox = imap.store.mailbox("alice", "INBOX")
    unseen = [i + 1 for i, e in enumerate(inbox.entries) if "\\Seen" not in e.flags]
    assert unseen
    m = imaplib.IMAP4(imap.host, imap.port, timeout=5)
    m.login("alice", "secret")
    m.select("INBOX")
    assert m.search(None, "UNSEEN")[1] == [" ".join(map(str, unseen)).encode()]
    typ, data = m.store(str(unseen[0]), "+FLAGS", "(\\Seen)")
    assert typ == "OK" and b"\\Seen" in data[0]
    assert "\\Seen" in inbox.entries[unseen[0] - 1].flags
    assert m.search(None, "UNSEEN")[1] == [" ".join(map(str, unseen[1:])).encode()]
    m.store("1", "-FLAGS.SILENT", "(\\Seen)")
    assert "\\Seen" not in inbox.entries[0].flags
    data = m.fetch("1", "(BODY[HEADER])")[1]  # not PEEK: sets \Seen and says so
    assert "\\Seen" in inbox.entries[0].flags and data[1].endswith(b"\\Seen))")
    m.store("1", "-FLAGS.SILENT", "(\\Seen)")
    data = m.fetch("1", "(FLAGS RFC822.TEXT)")[1]
    assert data[0][0].startswith(b"1 (FLAGS (\\Seen) RFC822.TEXT {")
    subject = inbox.entries[2].message.header.split(b"Subject: ")[1].split(b"\r\n")[0]
    word = subject.split()[0].decode()
    assert "3" in m.search(None, "SUBJECT", f'"{word}"')[1][0].decode().split()
    m.close()
    m.logout()


def test_append_and_examine(imap):
    m = imaplib.IMAP4(imap.host, imap.port, timeout=5)
    m.login("bob", "pa ss")
    sent = imap.store.mailbox("bob", "Sent")
    before = len(sent)
    message = b"From: bob@example.test\r\nSubject: appended\r\n\r\nHello\r\n"
    assert m.append("Sent", "(\\Seen)", None, message)[0] == "OK"
    assert imap.commands[-1].endswith(b"{%d}\r\n" % len(message) + message)
    assert m.select("Sent", readonly=True) == ("OK", [str(before + 1).encode()])
    assert m.fetch(str(before + 1), "(RFC822)")[1][0][1] == message
    assert "\\Seen" in sent.entries[-1].flags
    assert m.store("1", "+FLAGS", "(\\Deleted)")[0] == "NO"  # read-only
    assert m.append("Nope", None, None, message)[0] == "NO"
    m.logout()


def test_literal_login_with_imaplib(imap):
    m = imaplib.IMAP4(imap.host, imap.port, timeout=5)
    m.literal = b"pa ss"
    assert m._simple_command("LOGIN", "bob")[0] == "OK"
    assert imap.commands[-1].endswith(b" LOGIN bob {5}\r\npa ss")
    m.logout()


def test_nginx_style_literal_login_exact_bytes(imap, raw):
    """docs/behaviour.md §11.3: TAG LOGIN {n}, continuation, login {m}, continuation, password."""
    assert raw.line() == GREETING
    ready = b"+ Ready for literal data\r\n"
    exchange(raw, [(b"a1 LOGIN {5}\r\n", ready), (b"alice {6}\r\n", ready),
                   (b"secret\r\n", b"a1 OK Logged in\r\n")])
    assert imap.commands == [b"a1 LOGIN {5}\r\nalice {6}\r\nsecret"]
    transcript = imap.connections[0].transcript
    assert transcript[0] == ("S", GREETING) and transcript[1] == ("C", b"a1 LOGIN {5}\r\n")


def test_non_synchronising_literal_and_sasl_ir(imap, raw):
    assert raw.line() == GREETING
    raw.send(b"a1 LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n")
    assert raw.line() == b"a1 OK Logged in\r\n"
    other = Raw(imap)
    assert other.line() == GREETING
    token = base64.b64encode(b"\0alice\0secret")
    other.send(b"b1 AUTHENTICATE PLAIN " + token + b"\r\n")
    assert other.line() == b"b1 OK Logged in\r\n"
    other.close()


def test_authenticate_plain_with_continuation(imap):
    m = imaplib.IMAP4(imap.host, imap.port, timeout=5)
    assert m.authenticate("PLAIN", lambda _: b"\0bob\0pa ss")[0] == "OK"
    m.logout()
    m = imaplib.IMAP4(imap.host, imap.port, timeout=5)
    with pytest.raises(imaplib.IMAP4.error):
        m.authenticate("PLAIN", lambda _: b"\0bob\0wrong")
    m.logout()


def test_wrong_password_unknown_command_and_state(imap, raw):
    assert raw.line() == GREETING
    raw.send(b"a1 LOGIN alice nope\r\n")
    assert raw.line() == b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    raw.send(b"a2 SELECT INBOX\r\na3 FROB\r\na4 NOOP\r\nbare\r\na5 LOGIN \"unterminated\r\n")
    assert raw.line() == b"a2 BAD SELECT not valid in this state\r\n"
    assert raw.line() == b"a3 BAD Unknown command FROB\r\n"
    assert raw.line() == b"a4 OK NOOP completed\r\n"
    assert raw.line() == b"bare BAD Missing command\r\n"
    assert raw.line() == b"a5 BAD unterminated quoted string\r\n"
    raw.send(b"a6 LOGOUT\r\n")
    assert raw.until(b"a6") == [b"* BYE Logging out\r\n", b"a6 OK LOGOUT completed\r\n"]
    assert raw.eof()


def test_idle_done_and_delivery(imap, raw):
    login(raw)
    raw.send(b"a2 SELECT INBOX\r\n")
    exists = len(imap.store.mailbox("alice", "INBOX"))
    assert b"* %d EXISTS\r\n" % exists in raw.until(b"a2")
    raw.send(b"a3 IDLE\r\n")
    assert raw.line() == b"+ idling\r\n"
    imap.deliver("alice", "INBOX", b"Subject: new\r\n\r\nhi\r\n")
    assert raw.line() == b"* %d EXISTS\r\n" % (exists + 1)
    raw.send(b"DONE\r\n")
    assert raw.line() == b"a3 OK IDLE terminated\r\n"
    assert imap.commands[-1] == b"DONE"


def test_large_message_streams_exactly():
    size = 8 * 1024 * 1024 + 3
    with FakeImapServer(users={"alice": "secret"}, large_message=size,
                        store=None, counts={"INBOX": 1}) as imap:
        msg = imap.store.mailbox("alice", "INBOX").entries[-1].message
        client = Raw(imap, timeout=30)
        login(client)
        client.send(b"a2 SELECT INBOX\r\na3 FETCH 2 (RFC822.SIZE BODY.PEEK[])\r\n")
        client.until(b"a2")
        assert client.line() == b"* 2 FETCH (RFC822.SIZE %d BODY[] {%d}\r\n" % (size, size)
        assert client.read(size) == msg.read()
        assert client.line() == b")\r\n"
        assert client.line() == b"a3 OK FETCH completed\r\n"
        client.send(b"a4 FETCH 2 (BODY.PEEK[]<1000.5000000>)\r\n")
        assert client.line() == b"* 2 FETCH (BODY[]<1000> {5000000}\r\n"
        assert client.read(5_000_000) == msg.read(1000, 5_001_000)
        assert client.until(b"a4")[-1] == b"a4 OK FETCH completed\r\n"
        client.close()
        assert any(b"octets of message data" in d for _, d in imap.connections[0].transcript)


def test_same_seed_same_content():
    fetched = []
    for _ in range(2):
        with FakeImapServer(users={"alice": "secret"}, seed=11) as imap:
            m = imaplib.IMAP4(imap.host, imap.port, timeout=5)
            m.login("alice", "secret")
            m.select("Archive")
            fetched.append(m.fetch("1:*", "(UID FLAGS BODY.PEEK[])")[1])
            m.logout()
    assert fetched[0] == fetched[1]


# -- faults -----------------------------------------------------------------------------------

def test_reject_login_with_text_and_at_runtime(imap):
    imap.faults.reject_login = "[UNAVAILABLE] Maintenance"
    m = imaplib.IMAP4(imap.host, imap.port, timeout=5)
    with pytest.raises(imaplib.IMAP4.error, match="Maintenance"):
        m.login("alice", "secret")
    imap.faults.reject_login = False
    assert m.login("alice", "secret")[0] == "OK"
    m.logout()


def test_bad_login_reply():
    with FakeImapServer(users={"alice": "secret"},
                        bad_login_reply=b"{tag} BAD [SERVERBUG] broken") as imap:
        client = Raw(imap)
        assert client.line() == GREETING
        client.send(b"x7 LOGIN alice secret\r\n")
        assert client.line() == b"x7 BAD [SERVERBUG] broken\r\n"
        client.send(b"x8 SELECT INBOX\r\n")  # a non-OK reply leaves it unauthenticated
        assert client.line() == b"x8 BAD SELECT not valid in this state\r\n"
        client.close()


def test_no_greeting_and_greeting_delay():
    with FakeImapServer(users={"alice": "secret"}, greeting=None) as imap:
        with pytest.raises((TimeoutError, socket.timeout)):
            imaplib.IMAP4(imap.host, imap.port, timeout=0.3)
        client = Raw(imap)
        client.send(b"a1 CAPABILITY\r\n")  # still answers commands
        assert client.line().startswith(b"* CAPABILITY IMAP4rev1")
        client.close()
    with FakeImapServer(users={"alice": "secret"}, greeting_delay=0.2) as imap:
        client = Raw(imap)
        assert client.silent(0.05)
        assert client.line() == GREETING
        client.close()


@pytest.mark.parametrize("greeting, closes", [(b"* PREAUTH [CAPABILITY IMAP4rev1] hi", False),
                                              (b"* BYE Too many connections\r\n", True)])
def test_custom_greetings(greeting, closes):
    with FakeImapServer(users={"alice": "secret"}, greeting=greeting) as imap:
        client = Raw(imap)
        assert client.line() == greeting.rstrip(b"\r\n") + b"\r\n"
        if closes:
            assert client.eof()
        else:
            client.send(b"a1 SELECT INBOX\r\n")  # PREAUTH: already authenticated
            assert client.until(b"a1")[-1] == b"a1 OK [READ-WRITE] SELECT completed\r\n"
        client.close()


@pytest.mark.parametrize("untagged", [[b"* CAPABILITY IMAP4rev1 IDLE"],
                                      [b"* CAPABILITY IMAP4rev1", b"* OK [ALERT] hello\r\n"]])
def test_untagged_lines_before_login_ok(untagged):
    with FakeImapServer(users={"alice": "secret"}, login_untagged=untagged) as imap:
        client = Raw(imap)
        assert client.line() == GREETING
        client.send(b"a1 LOGIN {5}\r\n")
        client.line()
        client.send(b"alice {6}\r\n")
        client.line()
        client.send(b"secret\r\n")
        expected = [u.rstrip(b"\r\n") + b"\r\n" for u in untagged] + [b"a1 OK Logged in\r\n"]
        assert client.until(b"a1") == expected
        client.close()


def test_no_continuation_for_literals():
    with FakeImapServer(users={"alice": "secret"}, no_continuation="[CANNOT] No literals") as imap:
        client = Raw(imap)
        assert client.line() == GREETING
        client.send(b"a1 LOGIN {5}\r\n")
        assert client.line() == b"a1 NO [CANNOT] No literals\r\n"
        client.send(b"a2 LOGIN alice secret\r\n")  # the stream is back in command mode
        assert client.line() == b"a2 OK Logged in\r\n"
        assert imap.commands[0] == b"a1 LOGIN {5}"
        client.close()
    with FakeImapServer(users={"alice": "secret"}, no_continuation=True) as imap:
        m = imaplib.IMAP4(imap.host, imap.port, timeout=5)
        m.literal = b"secret"
        assert m._simple_command("LOGIN", "alice") == ("NO", [b"Literals are not accepted here"])
        m.literal = None
        assert m.login("alice", "secret")[0] == "OK"
        m.logout()


def test_drop_after_login():
    with FakeImapServer(users={"alice": "secret"}, drop_after_login=True) as imap:
        client = Raw(imap)
        login(client)
        assert client.eof()
        client.close()


def test_drop_after_n_commands():
    with FakeImapServer(users={"alice": "secret"}, faults=Faults(drop_after=2)) as imap:
        answers_then_closes(Raw(imap), GREETING, [(b"a1 NOOP\r\n", b"a1 OK NOOP completed\r\n"),
                                                  (b"a2 NOOP\r\n", b"a2 OK NOOP completed\r\n")])


def test_stall_and_stall_after(imap):
    stall_and_stall_after(imap, Raw, login, b"a2 NOOP\r\n", login_commands=1)


def test_chatter_after_login():
    with FakeImapServer(users={"alice": "secret"}, chatter=0.05) as imap:
        client = Raw(imap)
        assert client.line() == GREETING
        client.send(b"a1 NOOP\r\n")
        assert client.line() == b"a1 OK NOOP completed\r\n"  # nothing before the login
        client.send(b"a2 LOGIN alice secret\r\n")
        assert client.line() == b"a2 OK Logged in\r\n"
        assert [client.line() for _ in range(3)] == [
            b"* OK still here 1\r\n", b"* OK still here 2\r\n", b"* OK still here 3\r\n"]
        client.close()


def test_unknown_fault_is_an_error():
    with pytest.raises(TypeError):
        FakeImapServer(users={}, reject_logins=True)


def test_async_start_stop_in_running_loop():
    srv = FakeImapServer(users={"alice": "secret"}, store=MailStore(seed=2, shared=True))
    assert in_running_loop(srv, b"a1 LOGIN alice secret\r\na2 LOGOUT\r\n", 2) == (
        GREETING, b"a1 OK Logged in\r\n* BYE Logging out\r\na2 OK LOGOUT completed\r\n")


def test_cli():
    with cli_fake("imap", "--user", "alice:secret", "--seed", "1") as run:
        m = imaplib.IMAP4("127.0.0.1", run.port, timeout=5)
        m.login("alice", "secret")
        assert m.select("INBOX")[0] == "OK"
        m.logout()


# -- parser units -----------------------------------------------------------------------------

def test_reader_and_tokenizer():
    reader = CommandReader()
    assert reader.feed(b"a1 LOGIN {5}\r\nal") [0].kind == "continue"
    [unit] = reader.feed(b"ice \"p\\\"w\"\r\n")
    assert unit.raw == b'a1 LOGIN {5}\r\nalice "p\\"w"'
    assert tokenize(unit.segments) == ["a1", "LOGIN", b"alice", 'p"w']
    assert tokenize([b'a FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (A B)]<0.9>)']) == [
        "a", "FETCH", "1:*", ["FLAGS", "BODY.PEEK[HEADER.FIELDS (A B)]<0.9>"]]
    with pytest.raises(ParseError):
        tokenize([b"a (b"])
    assert parse_seqset("1,3:5,7:*", 9) == [(1, 1), (3, 5), (7, 9)]
    assert parse_seqset("5:2", 9) == [(2, 5)]
    with pytest.raises(ParseError):
        parse_seqset("0", 9)


def test_reset_fault_drops_with_rst():
    """`reset`: the drop is a TCP RST, as a crashed upstream's would be."""
    import socket as _socket

    with FakeImapServer({"alice": "secret"}, drop_after=1, reset=True) as imap:
        s = _socket.create_connection(("127.0.0.1", imap.port), timeout=5)
        s.recv(200)
        s.sendall(b"a1 NOOP\r\n")
        with pytest.raises(ConnectionResetError):
            while s.recv(200):
                pass
        s.close()


def test_id_enable_namespace_for_client_profiles():
    """What the load profiles' desktop and phone clients send (RFC 2971, 5161, 2342)."""
    import imaplib

    from postern.fakes.imap import CLIENT_CAPABILITIES

    with FakeImapServer({"a": "b"}, capabilities=CLIENT_CAPABILITIES) as srv:
        m = imaplib.IMAP4(srv.host, srv.port)
        assert {"ID", "ENABLE", "NAMESPACE"} <= set(m.capabilities)
        assert m.xatom("ID", '("name" "Thunderbird" "version" "115")')[0] == "OK"
        assert m.untagged_responses.pop("ID")[0].startswith(b'("name" "postern-fake-imap"')
        m.login("a", "b")
        assert m._simple_command("ENABLE", "CONDSTORE") == ("OK", [b"ENABLE completed"])
        assert m._simple_command("NAMESPACE")[0] == "OK"
        assert m.untagged_responses["NAMESPACE"] == [b'(("" "/")) NIL NIL']
        m.logout()
        m = imaplib.IMAP4(srv.host, srv.port)
        with pytest.raises(imaplib.IMAP4.error, match="ID fields come in pairs"):
            m.xatom("ID", '("odd")')
        m.logout()


def test_id_fields_are_kept_and_reject_id(imap, raw):
    """The fields of a proxy's ID (escapes undone, NIL as None); reject_id answers NO."""
    assert raw.line() == GREETING
    raw.send(b'I ID ("x-originating-ip" "2001:db8::7" "x-session-ext-id" "a\\"b\\\\c" '
             b'"x-other" NIL)\r\n')
    assert raw.until(b"I") == [b'* ID ("name" "postern-fake-imap" "vendor" "postern")\r\n',
                               b"I OK ID completed\r\n"]
    assert imap.connections[0].client_id == {"x-originating-ip": "2001:db8::7",
                                             "x-session-ext-id": 'a"b\\c', "x-other": None}
    imap.faults.reject_id = True
    raw.send(b'J ID ("x" "y")\r\n')
    assert raw.until(b"J") == [b"J NO ID not accepted\r\n"]
    imap.faults.reject_id = "not from you"
    raw.send(b"K ID NIL\r\n")
    assert raw.until(b"K") == [b"K NO not from you\r\n"]
    assert imap.connections[0].client_id["x-other"] is None  # the refused IDs changed nothing


@pytest.mark.parametrize("mech", ["XOAUTH2", "OAUTHBEARER"])
def test_authenticate_oauth_takes_the_password_as_token(raw, mech):
    assert raw.line() == GREETING
    make = sasl.OAUTH_RESPONSES[mech.lower()]
    raw.send(b"a1 AUTHENTICATE %s %s\r\n" % (mech.encode(), make(b"alice", b"wrong")))
    assert raw.line() == b"+ " + sasl.OAUTH_ERROR + b"\r\n"
    raw.send(b"AQ==\r\n")
    assert raw.line() == b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    raw.send(b"a2 AUTHENTICATE %s\r\n" % mech.encode())
    assert raw.line() == b"+ \r\n"
    raw.send(make(b"alice", b"secret") + b"\r\n")
    assert raw.line() == b"a2 OK Logged in\r\n"
