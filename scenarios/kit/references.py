"""What a scenario says it checks, read from its docstring.

Every scenario names an RFC ("RFC 3501 §6.1.1") or a named nginx behaviour: "nginx: ...",
"nginx <directive>: ...", a CVE, or a section of the behavioural spec
(docs/behaviour.md, cited as "§10.4" or "docs/behaviour.md §10.4"), which is nginx's
behaviour written down. Results are grouped by these names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

# "nginx: ...", "nginx imap_auth: ...", "nginx (1.11.9): ...", "(nginx 0.7.34): ..."
NGINX = re.compile(r"\bnginx\b((?:(?!\. )[^:;\n]){0,80}?):|\bnginx QUIRK\b")
# a docstring opening with a mail directive names that directive's behaviour
DIRECTIVE = re.compile(r"^[`\s]*([a-z][a-z0-9_]+)\b")
CVE = re.compile(r"\bCVE-\d{4}-\d{4,}\b")


@dataclass
class References:
    rfcs: list[str] = field(default_factory=list)       # "RFC 3501 §6.1.1"
    nginx: list[str] = field(default_factory=list)      # "docs/behaviour.md §10.4", "nginx imap_auth"
    cves: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.rfcs or self.nginx or self.cves)

    @property
    def rfc_numbers(self) -> list[str]:
        return list(dict.fromkeys(r.split(" §")[0] for r in self.rfcs))

    @property
    def groups(self) -> list[str]:
        """Coarse groups for reports: "RFC 3501", "nginx docs/behaviour.md §10", "CVE-...", "nginx"."""
        out = self.rfc_numbers + self.cves
        for name in self.nginx:
            if name.startswith("docs/behaviour.md §"):
                out.append("nginx docs/behaviour.md §" + name.partition("§")[2].split(".")[0])
            else:
                out.append("nginx")
        return list(dict.fromkeys(out))

    def as_dict(self) -> dict:
        return {"rfc": self.rfcs, "nginx": self.nginx, "cve": self.cves, "groups": self.groups}

    def label(self) -> str:
        return "; ".join(self.rfcs + self.cves + self.nginx)


def references(doc: str | None) -> References:
    doc = " ".join((doc or "").split())
    refs = References()
    rfc, last_end = None, 0
    for m in _TOKENS.finditer(doc):
        between = doc[last_end:m.start()]
        last_end = m.end()
        if m.group("rfc"):
            rfc = m.group("rfc")
            section = m.group("rsec")
            refs.rfcs.append(f"RFC {rfc}" + (f" §{section}" if section else ""))
        elif rfc and not m.group("spec") and _SAME_CLAUSE.fullmatch(between):
            # "RFC 3501 §6.2.3 LOGIN, §6.3.1 SELECT": still that RFC's sections
            refs.rfcs.append(f"RFC {rfc} §{m.group('sec')}")
        else:
            rfc = None
            refs.nginx.append(f"docs/behaviour.md §{m.group('sec')}")
    for m in NGINX.finditer(doc):
        name = "nginx QUIRK" if m.group(0).endswith("QUIRK") else \
            " ".join(f"nginx {(m.group(1) or '').strip(' `()')}".split())
        refs.nginx.append(name)
    opening = DIRECTIVE.match(doc)
    if opening and opening.group(1) in mail_directives():
        refs.nginx.append(f"nginx {opening.group(1)}")
    refs.cves.extend(CVE.findall(doc))
    refs.rfcs = list(dict.fromkeys(refs.rfcs))
    refs.nginx = list(dict.fromkeys(refs.nginx))
    refs.cves = list(dict.fromkeys(refs.cves))
    return refs


_TOKENS = re.compile(r"\bRFC\s?(?P<rfc>\d{3,5})(?:\s?§\s?(?P<rsec>\d+(?:\.\d+)*))?"
                     r"|(?<![\w§])(?P<spec>(?:spec|docs/behaviour\.md)\s)?§\s?(?P<sec>\d+(?:\.\d+)*)")
_SAME_CLAUSE = re.compile(r"(?!.*\b(?:nginx|spec|behaviour)\b)[^;:()]{0,40}", re.DOTALL)


@cache
def mail_directives() -> frozenset[str]:
    from postern.proxy.conf.table import TABLE
    return frozenset(name for name, row in TABLE.items() if row.contexts & {"mail", "server"})


def first_line(doc: str | None) -> str:
    """The docstring's first sentence-ish line, for reports."""
    text = " ".join((doc or "").split())
    return text[:160] + ("…" if len(text) > 160 else "")


MISSING = ("this scenario's docstring names no RFC (\"RFC NNNN §x\") and no nginx behaviour "
           "(\"nginx: ...\", \"nginx <directive>: ...\", a CVE or a spec section \"§N\"): "
           "say what it checks")
