"""Pre-generated messages for SmtpUser: Faker text, a realistic spread of sizes.

Building one message costs milliseconds (Faker and the email package), so each load process
builds a small corpus once and the users draw from it. Seeded per process; dates from a fixed
range (``date_time()`` would not be reproducible); every address is under example.test.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from faker import Faker

DOMAIN = "example.test"
# (share, kind, low, high): body/attachment bytes drawn uniformly from [low, high].
# Most mail is a few KB of text; a quarter carries an HTML part; some carry documents,
# and a few a large attachment (which base64 inflates by a third on the wire).
SIZE_MIXES = {
    "mixed": ((0.55, "text", 1_000, 8_000), (0.25, "html", 6_000, 40_000),
              (0.15, "attachment", 30_000, 300_000), (0.05, "attachment", 300_000, 1_000_000)),
    "small": ((1.0, "text", 500, 4_000),),
}
_START, _END = datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)


def build_corpus(seed: int, count: int = 60, mix: str = "mixed") -> list[bytes]:
    """``count`` messages as CRLF bytes, kinds in the mix's proportions (largest first
    rounding, so even a small corpus has one of each kind)."""
    fake = Faker()
    fake.seed_instance(seed)
    rng = random.Random(seed)
    plan = []
    for share, kind, low, high in SIZE_MIXES[mix]:
        plan += [(kind, low, high)] * max(1, round(share * count))
    rng.shuffle(plan)
    return [_message(fake, rng, kind, rng.randint(low, high)) for kind, low, high in plan]


def _text(fake: Faker, size: int) -> str:
    paragraphs, total = [], 0
    while total < size:
        p = fake.paragraph(nb_sentences=6)
        paragraphs.append(p)
        total += len(p) + 2
    return "\n\n".join(paragraphs)


def _message(fake: Faker, rng: random.Random, kind: str, size: int) -> bytes:
    m = EmailMessage()
    m["From"] = str(Address(fake.name(), addr_spec=fake.email(domain=DOMAIN)))
    m["To"] = ", ".join(str(Address(fake.name(), addr_spec=fake.email(domain=DOMAIN)))
                        for _ in range(rng.randint(1, 3)))
    m["Subject"] = fake.sentence(nb_words=rng.randint(3, 9)).rstrip(".")
    m["Date"] = format_datetime(fake.date_time_between(_START, _END, tzinfo=UTC))
    m["Message-ID"] = f"<{fake.uuid4()}@{DOMAIN}>"
    if kind == "text":
        m.set_content(_text(fake, size))
    elif kind == "html":
        body = _text(fake, size // 2)
        m.set_content(body)
        html = "".join(f"<p>{p}</p>\n" for p in body.split("\n\n"))
        m.add_alternative(f"<html><body>{html}</body></html>", subtype="html")
    else:
        m.set_content(_text(fake, 1_500))
        m.add_attachment(rng.randbytes(size), maintype="application", subtype="octet-stream",
                         filename=fake.file_name(extension=rng.choice(("pdf", "xlsx", "zip"))))
    # A fixed boundary from the seeded generator: email would draw it from global random.
    if m.is_multipart():
        m.set_boundary(f"=_{rng.getrandbits(64):016x}")
    return m.as_bytes(policy=policy.SMTP)
