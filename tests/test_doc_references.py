"""Every behaviour section the code cites exists in docs/behaviour.md.

Citations look like "docs/behaviour.md \u00a710.4", "spec \u00a710.4" (the older name) or a bare
"\u00a710.4". Sections after an RFC number in the same clause ("RFC 3501 \u00a76.2.3 LOGIN,
\u00a76.3.1 SELECT") belong to that RFC: the same rule the scenario runner uses to group
results by reference (scenarios' references module, `_TOKENS` and `_SAME_CLAUSE`), so a
scenario's docstring and this check agree on what is a behaviour section.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "behaviour.md"
CITING = ("proxy", "scenarios", "fakes", "loadtest", "tests", "reports")
SECTION = "\u00a7"

_TOKENS = re.compile(
    r"\bRFC\s?(?P<rfc>\d{3,5})(?:\s?" + SECTION + r"\s?\d+(?:\.\d+)*)?"
    r"|(?<![\w" + SECTION + r"])(?P<named>(?:spec|behaviour\.md|notes)\s)?"
    + SECTION + r"\s?(?P<sec>\d+(?:\.\d+)*)")
_SAME_CLAUSE = re.compile(r"(?!.*\b(?:nginx|spec|behaviour)\b)[^;:()]{0,40}", re.DOTALL)
_HEADING = re.compile(r"^#+\s+" + SECTION + r"?(\d+(?:\.\d+)*)\.?\s", re.MULTILINE)

# RFC sections the clause rule cannot tell from ours: (file name, section, why).
NOT_OURS = {
    ("grammar.py", "4.5.3.1.5"),   # "RFC 5321 §4.2 (...), §4.5.3.1.5": parentheses end the clause
    ("test_reports.py", "6.1.1"),  # RFC 3501 sections compared as strings in a sort test
    ("test_reports.py", "6.1.10"),
}


def cited_sections(text: str) -> list[str]:
    """Behaviour sections cited in `text`, RFC sections and "notes §" left out."""
    text = " ".join(text.split())
    out: list[str] = []
    rfc, last_end = False, 0
    for m in _TOKENS.finditer(text):
        between = text[last_end:m.start()]
        last_end = m.end()
        if m.group("rfc"):
            rfc = True
        elif rfc and not m.group("named") and _SAME_CLAUSE.fullmatch(between):
            pass                                    # still the RFC's section
        else:
            rfc = False
            if (m.group("named") or "").strip() != "notes":   # another document's sections
                out.append(m.group("sec"))
    return out


def headings() -> set[str]:
    return set(_HEADING.findall(DOC.read_text(encoding="utf-8")))


def citations() -> dict[str, set[str]]:
    """section -> the files citing it."""
    found: dict[str, set[str]] = {}
    for top in CITING:
        for path in sorted((ROOT / top).rglob("*.py")):
            if path == Path(__file__).resolve() or ".venv" in path.parts:
                continue
            for sec in cited_sections(path.read_text(encoding="utf-8")):
                if (path.name, sec) not in NOT_OURS:
                    found.setdefault(sec, set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("text, expected", [
    ("spec \u00a75.4 and \u00a710.4.1", ["5.4", "10.4.1"]),
    ("docs/behaviour.md \u00a77.2", ["7.2"]),
    ("RFC 3501 \u00a76.2.3 LOGIN, \u00a76.3.1 SELECT; spec \u00a77.2", ["7.2"]),
    ("RFC 4616 and spec \u00a710.2", ["10.2"]),
    ("RFC 3501 \u00a74.3 strings, docs/behaviour.md \u00a710.2", ["10.2"]),
    ("RFC 1939 \u00a73. nginx: the buffer (\u00a75.1)", ["5.1"]),
    ("python-stack notes \u00a76.3", []),
])
def test_what_counts_as_a_behaviour_citation(text, expected):
    assert cited_sections(text) == expected


def test_headings_are_found():
    found = headings()
    assert {"0", "5.4", "10.4.1", "16.8", "18"} <= found
    assert "19" not in found


def test_every_cited_section_has_a_heading():
    found = citations()
    assert len(found) > 40, "the scan found too few citations to be reading the code"
    missing = {sec: sorted(files) for sec, files in found.items() if sec not in headings()}
    assert not missing, f"sections cited but absent from docs/behaviour.md: {missing}"
