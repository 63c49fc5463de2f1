"""What the configuration tests share: certificate files for TLS directives, Debian's
nginx with its mail module as the oracle of `nginx -t`, and the error a file loader raises."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                  else None)
MODULE = "/usr/lib/nginx/modules/ngx_mail_module.so"


def require_nginx() -> None:
    """Skip the calling module without nginx and its mail module (fail under CI)."""
    if not NGINX or not os.path.exists(MODULE):
        reason = "nginx with ngx_mail_module.so is not installed"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason, allow_module_level=True)


def write_certificate(directory: Path, host: str, cert: str, key: str, ca: str):
    """A fresh trustme CA and one certificate for `host`, written as PEM files under these
    names; returns the trustme module (so callers can make more)."""
    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    issued = authority.issue_cert(host)
    issued.cert_chain_pems[0].write_to_path(str(directory / cert))
    issued.private_key_pem.write_to_path(str(directory / key))
    authority.cert_pem.write_to_path(str(directory / ca))
    return trustme


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """cert.pem, key.pem, ca.pem, a key of another certificate, garbage and a 40-byte
    ticket key, for `nginx -t` and load_config() alike."""
    d = tmp_path_factory.mktemp("tls")
    trustme = write_certificate(d, "localhost", "cert.pem", "key.pem", "ca.pem")
    trustme.CA().issue_cert("other").private_key_pem.write_to_path(str(d / "otherkey.pem"))
    (d / "garbage.pem").write_text("garbage\n")
    (d / "tk40").write_bytes(b"k" * 40)
    return d


def outcome(lines: list[str]) -> tuple[str | None, list[str]]:
    """`nginx -t`'s stderr as (the [emerg] text or None, the [warn] texts)."""
    emerg = [ln[len("nginx: [emerg] "):] for ln in lines if ln.startswith("nginx: [emerg] ")]
    warns = [ln[len("nginx: [warn] "):] for ln in lines if ln.startswith("nginx: [warn] ")]
    return (emerg[0] if emerg else None), warns


def load_error(path: Path, text: str, load, error: type[Exception]) -> str:
    """The message of the `error` that `load(path)` raises for a file holding `text`."""
    path.write_text(text)
    with pytest.raises(error) as err:
        load(path)
    return str(err.value)
