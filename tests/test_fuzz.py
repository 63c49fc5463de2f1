"""Property tests (hypothesis) for every parser and machine: whatever the input, only the
declared exceptions, bounded time per input (the profile's deadline) and bounded state.

`make test` runs the short "ci" profile; `make fuzz` runs the "fuzz" profile with
FUZZ_EXAMPLES inputs per target (10^6 by default), printing a progress line. A failure is
stored in .hypothesis/ and replayed first by the next run; hypothesis also prints the
@reproduce_failure line that replays it anywhere.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import replace

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from postern.proxy import auth_http, proxy_protocol, sasl, tls_headers
from postern.proxy.conf import ConfigError, load_config
from postern.proxy.dialogue import Authenticate, Close
from postern.proxy.imap.dialogue import ImapDialogue
from postern.proxy.pop3.dialogue import Pop3Dialogue
from postern.proxy.smtp.dialogue import SmtpDialogue
from postern.scenarios.kit.wild_certs import WILD

from tests.dialogue_support import IMAP_CONF as IMAP
from tests.dialogue_support import POP3_CONF as POP3
from tests.dialogue_support import SMTP_CONF as SMTP
from tests.dialogue_support import until_authenticate

settings.register_profile("ci", max_examples=150, deadline=2000, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "1000000")),
                          deadline=2000, suppress_health_check=list(HealthCheck),
                          print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_counts: dict[str, int] = {}


def _tick(name: str) -> None:
    """The progress line of a long run (every 10,000 inputs per target)."""
    if settings().max_examples < 10_000:
        return
    n = _counts[name] = _counts.get(name, 0) + 1
    if n % 10_000 == 0:
        print(f"fuzz {name}: {n} inputs", file=sys.stderr, flush=True)


# -- inputs: protocol-shaped bytes mixed with noise -----------------------------------------

WORDS = [b"a1 ", b"LOGIN ", b"AUTHENTICATE ", b"AUTH ", b"PLAIN", b"LOGIN", b"CRAM-MD5",
         b"EXTERNAL", b"USER ", b"PASS ", b"APOP ", b"STLS", b"STARTTLS", b"CAPA", b"NOOP",
         b"LOGOUT", b"QUIT", b"EHLO x", b"HELO x", b"MAIL FROM:<a@b>", b"RCPT TO:<c@d>",
         b"RSET", b"{3}", b"{0}", b"\"q\\\"x\"", b"=", b"*", b"AHVzZXIAcGFzcw==", b"\r\n",
         b"\n", b"\r", b" ", b"\x00", b"\xff", b"+", b"-"]
chunk = st.one_of(st.sampled_from(WORDS), st.binary(max_size=40))
stream = st.lists(st.lists(chunk, max_size=8).map(b"".join), min_size=1, max_size=12)


def _drive(machine, chunks: list[bytes], limit: int) -> None:
    for data in chunks:
        machine.receive_data(data)
        for _ in range(10_000):
            act = machine.next_action()
            if act is None or isinstance(act, (Authenticate, Close)):
                break
        else:
            raise AssertionError("a dialogue that never stops acting")
        assert len(machine.buffer.data) <= limit
        if machine.quit:
            return


@given(stream)
def test_imap_dialogue(chunks):
    _tick("imap_dialogue")
    _drive(ImapDialogue(IMAP), chunks, IMAP.imap_client_buffer)


@given(stream)
def test_pop3_dialogue(chunks):
    _tick("pop3_dialogue")
    conf = replace(POP3, pop3_auth=frozenset({"plain", "apop", "cram-md5", "external"}))
    _drive(Pop3Dialogue(conf), chunks, 128)


@given(stream)
def test_smtp_dialogue(chunks):
    _tick("smtp_dialogue")
    conf = replace(SMTP, smtp_auth=frozenset({"plain", "login", "cram-md5", "none"}))
    _drive(SmtpDialogue(conf), chunks, conf.smtp_client_buffer)


REPLIES = [b"* OK ready\r\n", b"+ OK\r\n", b"+ go\r\n", b"220 x\r\n", b"250-x\r\n",
           b"250 x\r\n", b"235 ok\r\n", b"334 \r\n", b"a1 OK x\r\n", b"a1 NO x\r\n",
           b"-ERR x\r\n", b"535 x\r\n", b"\r\n", b"\n"]
replies = st.lists(st.one_of(st.sampled_from(REPLIES), st.binary(max_size=40)), max_size=12)



@given(st.sampled_from(["imap", "pop3", "smtp"]), replies)
def test_backend_logins(protocol, chunks):
    _tick("backend_logins")
    cls, conf, line = {
        "imap": (ImapDialogue, IMAP, b"a1 LOGIN user pass\r\n"),
        "pop3": (Pop3Dialogue, POP3, b"USER user\r\nPASS pass\r\n"),
        "smtp": (SmtpDialogue, SMTP, b"EHLO x\r\nAUTH PLAIN AHVzZXIAcGFzcw==\r\n"),
    }[protocol]
    login = until_authenticate(cls(conf), line).backend_login(conf, "127.0.0.1")
    login.start()
    for data in chunks:
        login.receive_data(data)


@given(st.one_of(st.binary(max_size=300), st.builds(
    lambda a, b: a + b,
    st.sampled_from([b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", b"PROXY UNKNOWN\r\n",
                     b"PROXY TCP6 ::1 ::1 1 2\r\n",
                     b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c"]),
    st.binary(max_size=60))))
def test_proxy_protocol_reader(data):
    _tick("proxy_protocol")
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
    _tick("auth_http")
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
                                                 sasl.external]))
def test_sasl_decoding(data, decoder):
    _tick("sasl")
    try:
        decoder(data)
    except sasl.SaslError:
        pass


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


@given(st.data())
def test_config_lexer_and_handlers(data):
    _tick("config")
    text = SEED_CONF.encode()
    for _ in range(data.draw(st.integers(0, 4))):
        pos = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 8))
        insert = data.draw(st.one_of(st.binary(max_size=8), st.sampled_from(
            [b";", b"{", b"}", b"\"", b"'", b"\\", b"#", b"\x00", b"\xff", b"$", b" 0",
             b"listen 1;", b"ssl on;", b"user x;"])))
        text = text[:pos] + insert + text[pos + cut:]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "nginx.conf")
        with open(path, "wb") as f:
            f.write(text)
        try:
            load_config(path, prefix=d + "/")
        except ConfigError:
            pass


WILD_DER = [make()[0] for make in WILD.values()]


@given(st.sampled_from(WILD_DER), st.lists(st.tuples(st.integers(0, 2000), st.binary(max_size=4)),
                                           max_size=4))
def test_certificate_fields(der, edits):
    _tick("certificate")
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
