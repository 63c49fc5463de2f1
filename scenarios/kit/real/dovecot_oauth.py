"""Dovecot that also checks bearer tokens: XOAUTH2 and OAUTHBEARER against its oauth2 passdb,
which asks a token introspection endpoint (RFC 7662; fakes.introspect provides one).

    with Introspection({"tok-carol": "carol"}) as idp, \\
            DovecotOAuthInstance({"carol": "pw"}, tmp_path, idp.url) as dovecot:
        ...  # carol logs in with PLAIN and "pw", or with XOAUTH2/OAUTHBEARER and "tok-carol"

The passwd-file passdb comes first as in DovecotInstance; the oauth2 one serves only the
two OAuth mechanisms (passdb `mechanisms`), in introspection `post` mode, and requires the
endpoint's `active: true` and its `username` to be the login.
"""

from __future__ import annotations

import os

from postern.scenarios.kit.real.dovecot import DovecotInstance

MECHANISMS = "xoauth2 oauthbearer"


class DovecotOAuthInstance(DovecotInstance):
    def __init__(self, users: dict[str, str], workdir: str | os.PathLike[str],
                 introspection_url: str, **kw) -> None:
        kw.setdefault("auth_mechanisms", f"plain login {MECHANISMS}")
        super().__init__(users, workdir, **kw)
        self.introspection_url = introspection_url

    def _prepare(self) -> None:
        super()._prepare()
        assert self.root is not None
        conf = self.root / "dovecot-oauth2.conf.ext"
        conf.write_text(f"""\
introspection_mode = post
introspection_url = {self.introspection_url}
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
""")
        conf.chmod(0o644)

    def config_text(self) -> str:
        return super().config_text() + f"""
passdb {{
  driver = oauth2
  mechanisms = {MECHANISMS}
  args = {self.root}/dovecot-oauth2.conf.ext
}}
"""
