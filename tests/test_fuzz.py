"""Property tests (hypothesis) for every parser and machine: whatever the input, only the
declared exceptions, bounded time per input (the profile's deadline) and bounded state.

`make test` runs the short "ci" profile. `make fuzz` (tests/fuzz.py) feeds each test's
`.hypothesis.fuzz_one_input` with 10^6 buffers per target; a failing buffer is kept in
results/fuzz/ and in .hypothesis/, so that `HYPOTHESIS_PROFILE=fuzz pytest tests/test_fuzz.py`
replays and shrinks it.
The strategies favour few, large draws: hypothesis spends most of an input's time per draw.
"""

from __future__ import annotations

import atexit
import base64
import os
import shutil
import tempfile
from dataclasses import replace
from itertools import pairwise

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from postern.proxy import auth_http, proxy_protocol, sasl, tls_headers
from postern.proxy.backend_login import LoginFailed
from postern.proxy.backend_secure import SecureBackendLogin
from postern.proxy.backend_tls import BackendTlsContext
from postern.proxy.client_identity import ClientIdentity
from postern.proxy.conf import ConfigError, load_config
from postern.proxy.conf.settings import BackendTlsSettings
from postern.proxy.dialogue import Authenticate, Close
from postern.proxy.imap.dialogue import ImapDialogue
from postern.proxy.pop3.backend_login import Pop3BackendLogin
from postern.proxy.pop3.dialogue import Pop3Dialogue
from postern.proxy.protocols import PROTOCOLS
from postern.proxy.smtp.dialogue import SmtpDialogue
from postern.scenarios.kit.wild_certs import WILD

from tests.dialogue_support import IMAP_CONF as IMAP
from tests.dialogue_support import POP3_CONF as POP3
from tests.dialogue_support import SMTP_CONF as SMTP
from tests.dialogue_support import until_authenticate

settings.register_profile("ci", max_examples=150, deadline=2000, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
# tests/fuzz.py loads this one: "ci"'s derandomize turns the example database off, and the
# database is where fuzz_one_input keeps a failing input for pytest to replay and shrink
settings.register_profile("fuzz", max_examples=1000, deadline=2000, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# -- inputs: protocol-shaped bytes mixed with noise -----------------------------------------

WORDS = [b"a1 ", b"LOGIN ", b"AUTHENTICATE ", b"AUTH ", b"PLAIN", b"LOGIN", b"CRAM-MD5",
         b"EXTERNAL", b"USER ", b"PASS ", b"APOP ", b"STLS", b"STARTTLS", b"CAPA", b"NOOP",
         b"LOGOUT", b"QUIT", b"EHLO x", b"HELO x", b"MAIL FROM:<a@b>", b"RCPT TO:<c@d>",
         b"RSET", b"{3}", b"{0}", b"\"q\\\"x\"", b"=", b"*", b"AHVzZXIAcGFzcw==", b"\r\n",
         b"\n", b"\r", b" ", b"\x00", b"\xff", b"+", b"-", b"XOAUTH2", b"OAUTHBEARER", b"AQ=="]
# Whole lines too, so that one draw reaches past the first command.
LINES = [b"a1 LOGIN user pass\r\n", b"a1 AUTHENTICATE PLAIN\r\n", b"a1 CAPABILITY\r\n",
         b"a1 STARTTLS\r\n", b"a1 ID (\"name\" \"x\")\r\n", b"USER user\r\n", b"PASS pass\r\n",
         b"APOP user 0123456789abcdef0123456789abcdef\r\n", b"AUTH PLAIN\r\n",
         b"AUTH LOGIN dXNlcg==\r\n", b"AUTH CRAM-MD5\r\n", b"AUTH EXTERNAL =\r\n",
         b"EHLO x\r\n", b"HELO x\r\n", b"XCLIENT ADDR=1.2.3.4\r\n", b"AHVzZXIAcGFzcw==\r\n",
         b"dXNlcg==\r\n", b"cGFzcw==\r\n", b"*\r\n", b"a1 LOGIN {4}\r\nuser {4}\r\npass\r\n",
         b"a1 AUTHENTICATE XOAUTH2 " + sasl.xoauth2_response(b"u", b"t") + b"\r\n",
         b"AUTH OAUTHBEARER " + sasl.oauthbearer_response(b"u", b"t") + b"\r\n",
         b"AUTH XOAUTH2\r\n", b"a1 AUTHENTICATE OAUTHBEARER\r\n",
         sasl.oauthbearer_response(b"u", b"t") + b"\r\n"]
chunk = st.one_of(st.sampled_from(WORDS), st.binary(max_size=40), st.sampled_from(LINES))


def _deliveries(parts: tuple[list[bytes], bytes]) -> list[bytes]:
    """Chunks joined into reads: each byte of `cuts` ends a read after that many chunks."""
    chunks, cuts = parts
    ends = sorted({c % (len(chunks) + 1) for c in cuts} | {0, len(chunks)})
    return [b"".join(chunks[a:b]) for a, b in pairwise(ends)] or [b""]


stream = st.tuples(st.lists(chunk, min_size=1, max_size=48), st.binary(max_size=12)).map(_deliveries)


def _drive(machine, chunks: list[bytes], limit: int, authenticate=None) -> None:
    """Feed the reads; after each, pull actions until the machine wants input, asks for auth
    or closes, and check the buffer bound. `authenticate`, if given, answers each Authenticate
    instead: it returns False to end the run, True to go on pulling actions."""
    for data in chunks:
        machine.receive_data(data)
        for _ in range(10_000):
            act = machine.next_action()
            if isinstance(act, Authenticate) and authenticate is not None:
                if not authenticate():
                    return
                continue
            if act is None or isinstance(act, (Authenticate, Close)):
                break
        else:
            raise AssertionError("a dialogue that never stops acting")
        assert len(machine.buffer.data) <= limit
        if machine.quit:
            return


@given(stream)
def test_imap_dialogue(chunks):
    _drive(ImapDialogue(IMAP), chunks, IMAP.imap_client_buffer)


@given(stream)
def test_pop3_dialogue(chunks):
    conf = replace(POP3, pop3_auth=frozenset({"plain", "apop", "cram-md5", "external"}))
    _drive(Pop3Dialogue(conf), chunks, 128)


@given(stream)
def test_smtp_dialogue(chunks):
    conf = replace(SMTP, smtp_auth=frozenset({"plain", "login", "cram-md5", "none"}))
    _drive(SmtpDialogue(conf), chunks, conf.smtp_client_buffer)


OAUTH = frozenset({"plain", "xoauth2", "oauthbearer"})


@given(st.sampled_from(["imap", "pop3", "smtp"]), stream, st.binary(max_size=8))
def test_oauth_dialogues(protocol, chunks, failures):
    """With the OAuth methods on, every Authenticate fails (RFC 7628's error challenge and
    the held-back line, with or without a close, as each byte of `failures` says)."""
    cls, conf = {"imap": (ImapDialogue, replace(IMAP, imap_auth=OAUTH)),
                 "pop3": (Pop3Dialogue, replace(POP3, pop3_auth=OAUTH)),
                 "smtp": (SmtpDialogue, replace(SMTP, smtp_auth=OAUTH))}[protocol]
    machine = cls(conf)
    verdicts = iter(failures)

    def fail() -> bool:
        verdict = next(verdicts, None)
        if verdict is None:
            return False
        line = machine.auth_failure(auth_http.AuthResponse(error=b"no"))
        machine.auth_failed(line or b"", close=bool(verdict & 1))
        return True

    _drive(machine, chunks, machine.buffer.size, fail)


REPLIES = [b"* OK ready\r\n", b"+OK go\r\n", b"s1 OK go\r\n", b"250 STARTTLS\r\n",
           b"+ OK\r\n", b"+ go\r\n", b"220 x\r\n", b"250-x\r\n",
           b"250 x\r\n", b"235 ok\r\n", b"334 \r\n", b"a1 OK x\r\n", b"a1 NO x\r\n",
           b"-ERR x\r\n", b"535 x\r\n", b"\r\n", b"\n", b"+ eyJ9\r\n", b"334 eyJ9\r\n",
           b"+OK x\r\n",
           # replies to proxy_client_identity's ID / XCLIENT
           b"+OK [XCLIENT] x\r\n", b"* ID NIL\r\n", b"I OK x\r\n", b"I BAD x\r\n"]
replies = st.lists(st.one_of(st.sampled_from(REPLIES), st.binary(max_size=40)), max_size=12)



IDENTITY = ClientIdentity("4242-7", "2001:db8::7", 50123, "127.0.0.1", 143)


@given(st.sampled_from(["imap", "pop3", "smtp"]), st.booleans(), replies)
def test_backend_logins(protocol, identity, chunks):
    cls, conf, line = {
        "imap": (ImapDialogue, IMAP, b"a1 LOGIN user pass\r\n"),
        "pop3": (Pop3Dialogue, POP3, b"USER user\r\nPASS pass\r\n"),
        "smtp": (SmtpDialogue, SMTP, b"EHLO x\r\nAUTH PLAIN AHVzZXIAcGFzcw==\r\n"),
    }[protocol]
    login = until_authenticate(cls(conf), line).backend_login(conf, "127.0.0.1",
                                                              IDENTITY if identity else None)
    login.start()
    for data in chunks:
        login.receive_data(data)


@given(st.sampled_from(["imap", "pop3", "smtp"]), st.sampled_from(["xoauth2", "oauthbearer"]),
       replies)
def test_oauth_backend_logins(protocol, mech, chunks):
    blob = sasl.OAUTH_RESPONSES[mech](b"user", b"tok")
    cls, conf, line = {
        "imap": (ImapDialogue, replace(IMAP, imap_auth=OAUTH),
                 b"a1 AUTHENTICATE %s %s\r\n" % (mech.encode(), blob)),
        "pop3": (Pop3Dialogue, replace(POP3, pop3_auth=OAUTH),
                 b"AUTH %s %s\r\n" % (mech.encode(), blob)),
        "smtp": (SmtpDialogue, replace(SMTP, smtp_auth=OAUTH, proxy_smtp_auth=True),
                 b"EHLO x\r\nAUTH %s %s\r\n" % (mech.encode(), blob)),
    }[protocol]
    login = until_authenticate(cls(conf), line).backend_login(conf, "127.0.0.1")
    assert login.mechanism == mech
    login.start()
    for data in chunks:
        login.receive_data(data)


@given(st.sampled_from(["imap", "pop3", "smtp"]), replies)
def test_backend_starttls_and_tls_login(protocol, chunks):
    """proxy_ssl starttls: the STARTTLS steps, then the handshake, fed whatever comes."""
    tls = BackendTlsContext(BackendTlsSettings(mode="starttls")).connection("127.0.0.1", 1)
    steps = PROTOCOLS[protocol].backend_starttls(replace(POP3, proxy_buffer=256))
    login = SecureBackendLogin(Pop3BackendLogin(b"u", b"p", 256, False), tls, steps)
    login.start()
    for data in chunks:
        if isinstance(login.receive_data(data), LoginFailed):
            break


@given(st.one_of(st.binary(max_size=300), st.builds(
    lambda a, b: a + b,
    st.sampled_from([b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", b"PROXY UNKNOWN\r\n",
                     b"PROXY TCP6 ::1 ::1 1 2\r\n",
                     b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c"]),
    st.binary(max_size=60))))
def test_proxy_protocol_reader(data):
    try:
        _info, used = proxy_protocol.read_header(data)
    except proxy_protocol.BrokenHeader:
        return
    assert 0 <= used <= len(data)


HEADERS = [b"HTTP/1.0 200 OK\r\n", b"Auth-Status: OK\r\n", b"Auth-Status: WAIT\r\n",
           b"Auth-Status: no\r\n", b"Auth-Server: 127.0.0.1\r\n", b"Auth-Server: ::1\r\n",
           b"Auth-Port: 143\r\n", b"Auth-Port: \xb2\r\n", b"Auth-Wait: 1\r\n",
           b"Auth-Wait: 99999999999999999999\r\n", b"Auth-User: u\r\n", b"Auth-Pass: p\r\n",
           b"Auth-Error-Code: 535 5.7.8\r\n", b"\r\n", b"\n", b"X: y\r\n"]


@given(st.lists(st.one_of(st.sampled_from(HEADERS), st.binary(max_size=30)), max_size=14))
def test_auth_http_reply_parser(parts):
    data = b"".join(parts)[:auth_http.RESPONSE_LIMIT]
    try:
        resp = auth_http.parse_response(data, "127.0.0.1:9")
        if resp is not None:
            assert 0 <= resp.wait <= auth_http.INT_MAX
            if resp.error is None and not resp.wait_status:
                _addr, port = resp.backend("127.0.0.1:9")
                assert 1 <= port <= 65535
    except auth_http.AuthServerError:
        pass


@given(st.binary(max_size=200), st.sampled_from([sasl.plain, sasl.login_username,
                                                 sasl.login_password, sasl.cram_md5,
                                                 sasl.external, sasl.xoauth2,
                                                 sasl.oauthbearer]))
def test_sasl_decoding(data, decoder):
    try:
        decoder(data)
    except sasl.SaslError:
        pass


OAUTH_PARTS = [b"n,", b"y,", b"p=x,", b"a=", b"u", b"=2C", b"=3D", b"=", b",", b"\x01",
               b"\x01\x01", b"user=", b"auth=", b"Bearer ", b"bearer ", b"tok", b"host=h",
               b"\x00", b" "]


@given(st.lists(st.one_of(st.sampled_from(OAUTH_PARTS), st.binary(max_size=6)), max_size=16),
       st.sampled_from([sasl.xoauth2, sasl.oauthbearer]))
def test_oauth_messages(parts, decoder):
    """Structured XOAUTH2 / OAUTHBEARER messages, so that decoding gets past base64."""
    try:
        _user, token = decoder(base64.b64encode(b"".join(parts)))
    except sasl.SaslError:
        return
    assert token and b"\x01" not in token


SEED_CONF = """events {}
mail {
    auth_http 127.0.0.1:9000/auth;
    server_name mx.test;
    timeout 5s;
    server {
        listen 127.0.0.1:11143;
        protocol imap;
        imap_auth plain login;
        imap_client_buffer 4k;
    }
}
"""


# One directory per process: creating and removing one per input cost more than the parse.
_CONF_DIR = tempfile.mkdtemp(prefix="postern-fuzz-")
atexit.register(shutil.rmtree, _CONF_DIR, True)
EDIT = st.tuples(st.integers(0, len(SEED_CONF)), st.integers(0, 8), st.one_of(
    st.binary(max_size=8), st.sampled_from(
        [b";", b"{", b"}", b"\"", b"'", b"\\", b"#", b"\x00", b"\xff", b"$", b" 0",
         b"listen 1;", b"ssl on;", b"user x;"])))


@given(st.lists(EDIT, max_size=4))
def test_config_lexer_and_handlers(edits):
    text = SEED_CONF.encode()
    for pos, cut, insert in edits:
        pos = min(pos, len(text))
        text = text[:pos] + insert + text[pos + cut:]
    path = os.path.join(_CONF_DIR, "nginx.conf")
    with open(path, "wb") as f:
        f.write(text)
    try:
        load_config(path, prefix=_CONF_DIR + "/")
    except ConfigError:
        pass


WILD_DER = [make()[0] for make in WILD.values()]


@given(st.sampled_from(WILD_DER), st.lists(st.tuples(st.integers(0, 2000), st.binary(max_size=4)),
                                           max_size=4))
def test_certificate_fields(der, edits):
    for pos, new in edits:
        assume(pos < len(der))
        der = der[:pos] + new + der[pos + len(new):]
    try:
        fields = tls_headers.certificate_fields(der)
        tls_headers.rfc2253(fields.subject)
        tls_headers.rfc2253(fields.issuer)
        tls_headers.serial_text(fields.serial)
    except (tls_headers.BadDer, tls_headers.UnprintableName):
        pass
