"""ssl_conf_command as carried out on pyOpenSSL's context (proxy/tls_conf.py): the option
mask, and the clear refusal of what the bindings cannot do."""

from __future__ import annotations

import pytest
from OpenSSL import SSL
from postern.proxy.tls_conf import (
    OP_CIPHER_SERVER_PREFERENCE,
    OP_NO_TICKET,
    OP_PRIORITIZE_CHACHA,
    ConfCommandError,
    ConfCommands,
    takes_path,
)


def commands(options: int = 0, **kwargs) -> ConfCommands:
    return ConfCommands(SSL.Context(SSL.TLS_SERVER_METHOD), options, **kwargs)


def test_options_set_and_clear_in_order():
    run = commands(OP_NO_TICKET | OP_CIPHER_SERVER_PREFERENCE)
    run.run("Options", "-SessionTicket")  # an inverted name: "-" sets SSL_OP_NO_TICKET
    assert run.options & OP_NO_TICKET
    run.run("options", " sessionticket , PrioritizeChaCha,-ServerPreference")
    mask = run.finish()
    assert not mask & OP_NO_TICKET
    assert mask & OP_PRIORITIZE_CHACHA
    assert not mask & OP_CIPHER_SERVER_PREFERENCE


def test_bad_option_leaves_the_mask():
    run = commands()
    before = run.options
    with pytest.raises(ConfCommandError, match=r'SSL_CONF_cmd\("Options", "NoTicket,Bugs"\) '
                                               r"failed \(SSL: error:0A000180:SSL routines::"
                                               r"bad value:cmd=Options, value=NoTicket,Bugs\)"):
        run.run("Options", "NoTicket,Bugs")
    assert run.options == before


@pytest.mark.parametrize("name,value", [
    ("NumTickets", "0"), ("NumTickets", "x"), ("RecordPadding", "64"),
    ("Options", "-MiddleboxCompat"), ("ClientSignatureAlgorithms", "RSA+SHA256"),
    ("VerifyMode", "Require"), ("Options", "StrictCertCheck")])
def test_what_the_bindings_cannot_do_is_refused(name, value):
    with pytest.raises(ConfCommandError, match=f'ssl_conf_command "{name}" is not supported'):
        commands().run(name, value)


@pytest.mark.parametrize("name,value", [("NumTickets", "2"), ("RecordPadding", "1"),
                                        ("RecordPadding", "0"), ("Options", "Compression"),
                                        ("ECDHParameters", "automatic")])
def test_values_that_ask_for_the_default_are_accepted(name, value):
    commands().run(name, value)


def test_verify_store_beside_client_certificate_is_refused(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ConfCommandError, match="SSL_CTX_set1_verify_cert_store"):
        commands(verify="on", client_ca=True).run("VerifyCAFile", str(ca))


def test_unknown_command():
    with pytest.raises(ConfCommandError) as err:
        commands().run("NoSuch", "1")
    assert str(err.value) == ('SSL_CONF_cmd("NoSuch", "1") failed (SSL: error:0A000182:SSL '
                              "routines::unknown cmd name:cmd=NoSuch)")


def test_file_commands_take_paths():
    assert takes_path("certificate") and takes_path("VerifyCAPath")
    assert not takes_path("Options") and not takes_path("ChainCAStore")
