"""What the TLS scenarios share: a throwaway PKI written at test time, directive text pointing
at it, and TLS clients.

Every key and certificate is made by trustme/cryptography into a temporary directory when
the run starts (nothing is committed); both targets read the same files. Under
`--target external` the PKI is the one `--external-plan` made (its directory is named in
external.toml), so the declared blocks name the very files the scenarios trust. The PKI:

* server certificates: an ECDSA one and an RSA one (different CAs), an encrypted copy of the
  RSA key with a password file whose first line is wrong;
* client certificates under `client_ca`: a plain one, one whose subject needs RFC 2253
  escaping, one under an intermediate CA, one revoked by `crl.pem`; one from an unknown CA
  and a self-signed one;
* DH parameters (ffdhe2048) for `ssl_dhparam`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from postern.fakes.pki import Authority, dhparam, self_signed_client, write
from postern.scenarios.kit.client import Client, is_unclean_eof, tls_client_context

GREETINGS = {"imap": b"* OK IMAP4 ready\r\n", "pop3": b"+OK POP3 ready\r\n",
             "smtp": b"220 mx.test ESMTP ready\r\n"}
CERT_ERROR = {"imap": b"* BYE SSL certificate error\r\n",
              "pop3": b"-ERR SSL certificate error\r\n",
              "smtp": b"421 4.7.1 SSL certificate error\r\n"}
NO_CERT = {"imap": b"* BYE No required SSL certificate\r\n",
           "pop3": b"-ERR No required SSL certificate\r\n",
           "smtp": b"421 4.7.1 No required SSL certificate\r\n"}
PASSWORD = "s3cret pass"


@dataclass
class Pki:
    dir: Path
    ca_file: str  # trusts both server CAs
    ecdsa_cert: str
    ecdsa_key: str
    rsa_cert: str
    rsa_key: str
    rsa_key_encrypted: str
    password_file: str
    client_ca: str
    other_ca: str
    crl: str
    dhparam: str | None
    clients: dict  # name -> (cert chain file, key file)

    def server(self, kind: str = "ecdsa", protocols: str | None = "TLSv1.2 TLSv1.3") -> str:
        """ssl_certificate/ssl_certificate_key directives for one server certificate, and
        ssl_protocols: nginx 1.22's default lacks TLSv1.3 (the default since 1.23.4, which
        Postern has), so scenarios not about the default name the versions."""
        cert, key = (self.ecdsa_cert, self.ecdsa_key) if kind == "ecdsa" else \
            (self.rsa_cert, self.rsa_key)
        text = f"ssl_certificate {cert};\nssl_certificate_key {key};\n"
        return text + (f"ssl_protocols {protocols};\n" if protocols else "")

    def der(self, path: str) -> bytes:
        pem = Path(path).read_bytes()
        return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)

    def client_cert(self, name: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate(Path(self.clients[name][0]).read_bytes())




def make_pki(d: Path, days: int = 30) -> Pki:
    """The PKI in directory d; the client certificates and the CRL last `days`."""
    trustme = pytest.importorskip("trustme")
    d.chmod(0o755)
    ecdsa_ca = trustme.CA()
    rsa_ca = trustme.CA(key_type=trustme.KeyType.RSA)
    ecdsa = ecdsa_ca.issue_cert("mx.test", "localhost", "127.0.0.1")
    rsa = rsa_ca.issue_cert("mx.test", "localhost", "127.0.0.1", key_type=trustme.KeyType.RSA)
    rsa_key = serialization.load_pem_private_key(rsa.private_key_pem.bytes(), None)
    encrypted = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(PASSWORD.encode()))

    client_ca = trustme.CA(organization_name="Postern Test Clients")
    other_ca = trustme.CA(organization_name="Somebody Else")
    middle = client_ca.create_child_ca()
    clients = {}

    def leaf(name: str, cert_pem: bytes, key_pem: bytes) -> None:
        clients[name] = (write(d / f"client-{name}.pem", cert_pem),
                         write(d / f"client-{name}.key", key_pem))

    plain = client_ca.issue_cert("client.example", common_name="client.example",
                                 organization_name="Example Org",
                                 organization_unit_name="Mail Users")
    leaf("plain", plain.cert_chain_pems[0].bytes(), plain.private_key_pem.bytes())
    deep = middle.issue_cert("deep.example", common_name="deep.example")
    leaf("deep", b"".join(p.bytes() for p in deep.cert_chain_pems), deep.private_key_pem.bytes())
    revoked = client_ca.issue_cert("revoked.example", common_name="revoked.example")
    leaf("revoked", revoked.cert_chain_pems[0].bytes(), revoked.private_key_pem.bytes())
    stranger = other_ca.issue_cert("stranger.example", common_name="stranger.example")
    leaf("stranger", stranger.cert_chain_pems[0].bytes(), stranger.private_key_pem.bytes())
    odd_subject = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Müller, Söhne + Co"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, " Mail;\"IT\" <dept> "),
        x509.NameAttribute(NameOID.COMMON_NAME, "#odd=name\\x"),
        x509.NameAttribute(NameOID.EMAIL_ADDRESS, "odd@example.com"),
    ])
    leaf("odd", *Authority(ca=client_ca).issue_with_subject(odd_subject, days))
    self_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "self.example")])
    leaf("self", *self_signed_client(self_subject, days))

    revoked_serial = x509.load_pem_x509_certificate(
        revoked.cert_chain_pems[0].bytes()).serial_number
    return Pki(
        dir=d,
        ca_file=write(d / "server-cas.pem", ecdsa_ca.cert_pem.bytes() + rsa_ca.cert_pem.bytes()),
        ecdsa_cert=write(d / "server-ecdsa.pem", ecdsa.cert_chain_pems[0].bytes()),
        ecdsa_key=write(d / "server-ecdsa.key", ecdsa.private_key_pem.bytes()),
        rsa_cert=write(d / "server-rsa.pem", rsa.cert_chain_pems[0].bytes()),
        rsa_key=write(d / "server-rsa.key", rsa.private_key_pem.bytes()),
        rsa_key_encrypted=write(d / "server-rsa-encrypted.key", encrypted),
        password_file=write(d / "passwords", f"wrong one\n{PASSWORD}\n".encode()),
        client_ca=write(d / "client-ca.pem", client_ca.cert_pem.bytes()),
        other_ca=write(d / "other-ca.pem", other_ca.cert_pem.bytes()),
        crl=write(d / "crl.pem", Authority(ca=client_ca).crl([revoked_serial], days)),
        dhparam=dhparam(d / "dhparam.pem"),
        clients=clients,
    )


PKI_INDEX = "pki.json"


def save_pki(pki: Pki) -> Pki:
    fields = dataclasses.asdict(pki) | {"dir": str(pki.dir)}
    (pki.dir / PKI_INDEX).write_text(json.dumps(fields, indent=1) + "\n")
    return pki


def load_pki(d: Path) -> Pki:
    fields = json.loads((d / PKI_INDEX).read_text())
    fields["clients"] = {name: tuple(files) for name, files in fields["clients"].items()}
    return Pki(**(fields | {"dir": Path(fields["dir"])}))


def external_pki(d: Path, plan: bool) -> Pki:
    """The external target's PKI: made once by the plan (every module asks), read back by
    a run."""
    if (d / PKI_INDEX).is_file():
        return load_pki(d)
    if not plan:
        pytest.fail(f"external target: {d} holds no {PKI_INDEX}; write the plan again "
                    "(--external-plan)", pytrace=False)
    d.mkdir(parents=True, exist_ok=True)
    from postern.scenarios.kit.external_plan import PKI_DAYS
    return save_pki(make_pki(d, days=PKI_DAYS))


def throwaway_certificate(tmp_path_factory, name: str) -> tuple[Path, Path]:
    """A certificate for mx.test (trustme) and its key in a world-readable directory both
    targets read; under the external target the plan's, kept next to its PKI, so a declared
    block names the same files."""
    trustme = pytest.importorskip("trustme")
    from postern.scenarios.kit import external

    state = external.STATE
    if state is not None and state.pki is not None:
        d = state.pki / name
        if (d / "key.pem").is_file():
            return d / "cert.pem", d / "key.pem"
        if not state.plan:
            pytest.fail(f"external target: {d} holds no certificate; write the plan again "
                        "(--external-plan)", pytrace=False)
        d.mkdir(parents=True, exist_ok=True)
    else:
        d = tmp_path_factory.mktemp(name)
    cert = trustme.CA().issue_cert("mx.test")
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    d.chmod(0o755)
    return d / "cert.pem", d / "key.pem"


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    from postern.scenarios.kit import external

    state = external.STATE
    if state is not None and state.pki is not None:
        return external_pki(state.pki, state.plan)
    return make_pki(tmp_path_factory.mktemp("pki"))


# -- clients --------------------------------------------------------------------------------

def client_context(pki: Pki | None = None, *, alpn: list[str] | None = None,
                   cert: str | None = None, version: ssl.TLSVersion | None = None,
                   ciphers: str | None = None) -> ssl.SSLContext:
    """A client context; verifies the server against the PKI when one is given."""
    ctx = tls_client_context(None if pki is None else pki.ca_file)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if cert:
        ctx.load_cert_chain(*pki.clients[cert])
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


def tls_connect(proxy, ctx: ssl.SSLContext | None = None, timeout: float = 5.0,
                session: ssl.SSLSession | None = None) -> Client:
    """A connection to a `listen ... ssl` port, handshake done."""
    return start_tls(proxy.connect(timeout=timeout), ctx, session)


def start_tls(c: Client, ctx: ssl.SSLContext | None = None,
              session: ssl.SSLSession | None = None) -> Client:
    """The client side of a handshake on an open connection (implicit TLS, or after the
    STARTTLS/STLS reply). An EOF without close_notify raises an error on read, so a
    scenario notices a server that does not end TLS properly."""
    ctx = ctx or client_context()
    c.sock = ctx.wrap_socket(c.sock, server_hostname="mx.test", session=session,
                             suppress_ragged_eofs=False)
    c.transcript.append(("C", b"<TLS handshake>"))
    return c


def ends_with_close_notify(c: Client, timeout: float = 5.0) -> bool:
    """Reads to the end (nothing more may come): True if the server ended TLS with
    close_notify, False if the connection just ended."""
    try:
        rest = c.read_all(timeout)
    except ssl.SSLError as err:
        if is_unclean_eof(err):
            return False
        raise
    assert rest == b"", f"unexpected {rest!r}\n{c.dump()}"
    return True


def handshake_fails(proxy, ctx: ssl.SSLContext) -> str:
    """The client's error when the handshake fails (AssertionError if it succeeds)."""
    sock = socket.create_connection((proxy.host, proxy.port), timeout=5)
    try:
        with ctx.wrap_socket(sock, server_hostname="mx.test") as tls:
            tls.recv(1)
    except (ssl.SSLError, ConnectionResetError) as err:
        return str(err)
    finally:
        sock.close()
    raise AssertionError("the handshake succeeded")


TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


def implicit_tls_proxy(lab, server: str, protocol: str = "imap"):
    """A proxy whose listener speaks TLS from the first byte (`listen ... ssl`)."""
    return lab.proxy(server=server, protocol=protocol, listen_params="ssl")


def s_client(proxy, *args: str) -> str:
    """What `openssl s_client -connect <proxy> <args>` prints (stdout and stderr) with no
    input; skips the scenario where the openssl command is missing."""
    binary = shutil.which("openssl")
    if binary is None:
        pytest.skip("the openssl command is not installed")
    done = subprocess.run([binary, "s_client", "-connect", f"{proxy.host}:{proxy.port}", *args],
                          input="", capture_output=True, text=True, timeout=30, check=False)
    return done.stdout + done.stderr
