"""Generated mail content: reproducible, realistic, CRLF, cheap large messages."""

from __future__ import annotations

import email
import hashlib
import os
import random
import subprocess
import sys
from email import policy
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from postern.fakes.mailbox import (
    DATE_END,
    DATE_START,
    DEFAULT_COUNTS,
    Mailbox,
    MailGenerator,
    MailStore,
    PatternMessage,
    StoredMessage,
    large_message,
)

ROOT = Path(__file__).resolve().parents[1]
DIGEST = ("import hashlib; from fakes.mailbox import MailGenerator; h = hashlib.sha256();"
          "[h.update(e.message.raw) or h.update(str((e.uid, sorted(e.flags), e.internaldate))"
          ".encode()) for b in MailGenerator(42, 'alice').mailboxes().values() for e in b.entries];"
          "print(h.hexdigest())")


def digest(boxes: dict[str, Mailbox]) -> str:
    h = hashlib.sha256()
    for box in boxes.values():
        for e in box.entries:
            h.update(e.message.raw)
            h.update(str((e.uid, sorted(e.flags), e.internaldate)).encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def boxes() -> dict[str, Mailbox]:
    return MailGenerator(42, "alice").mailboxes()


def parsed(box: Mailbox) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(e.message.raw, policy=policy.default) for e in box.entries]


def test_same_seed_same_bytes_other_seed_differs(boxes):
    assert digest(MailGenerator(42, "alice").mailboxes()) == digest(boxes)
    assert digest(MailGenerator(43, "alice").mailboxes()) != digest(boxes)
    assert digest(MailGenerator(42, "bob").mailboxes()) != digest(boxes)


def test_reproducible_across_processes(boxes):
    """Fresh interpreters with different hash seeds: no 'now', no global random, no hash()."""
    outputs = set()
    for hash_seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", DIGEST], cwd=ROOT, capture_output=True,
                             text=True, timeout=60, check=True,
                             env={**os.environ, "PYTHONHASHSEED": hash_seed})
        outputs.add(out.stdout.strip())
    assert outputs == {digest(boxes)}


def test_mailboxes_and_counts(boxes):
    assert {n: len(b) for n, b in boxes.items()} == dict(DEFAULT_COUNTS)
    for box in boxes.values():
        uids = [e.uid for e in box.entries]
        assert uids == sorted(set(uids)) and box.uidnext > uids[-1]
        assert box.uidvalidity > 0
    senders = {m["From"].addresses[0].addr_spec for m in parsed(boxes["Sent"])}
    assert senders == {"alice@example.test"}
    assert all("alice@example.test" in str(m["To"]) for m in parsed(boxes["INBOX"]))


def test_realistic_content(boxes):
    msgs = [m for b in boxes.values() for m in parsed(b)]
    raws = [e.message.raw for b in boxes.values() for e in b.entries]
    ids = {m["Message-ID"] for m in msgs}
    replies = [m for m in msgs if m["In-Reply-To"]]
    assert replies and all(m["In-Reply-To"] in m["References"] for m in replies)
    assert any(m["In-Reply-To"] in ids for m in replies)  # threads link within the corpus
    assert any(m["Subject"].startswith("Re: ") for m in replies)
    assert any(m.is_multipart() and any(p.get_filename() for p in m.iter_attachments())
               for m in msgs)
    assert any(b"=?utf-8?" in raw.split(b"\r\n\r\n", 1)[0] for raw in raws)  # RFC 2047
    assert any(any(ord(c) > 127 for c in str(m["Subject"]) + str(m["From"])) for m in msgs)
    sizes = [len(r) for r in raws]
    assert min(sizes) < 2_000 and max(sizes) > 20_000
    for m in msgs:
        assert DATE_START <= parsedate_to_datetime(m["Date"]) <= DATE_END
        assert m["Message-ID"].endswith(".example.test>") or m["Message-ID"].endswith(
            "@example.test>")


def test_crlf_only_and_header_size(boxes):
    for box in boxes.values():
        for e in box.entries:
            raw = e.message.raw
            assert raw.count(b"\n") == raw.count(b"\r\n")
            assert raw[e.message.header_size - 4:e.message.header_size] == b"\r\n\r\n"
            assert e.message.header == raw[:e.message.header_size]


def test_flags_vary(boxes):
    inbox_flags = [e.flags for e in boxes["INBOX"].entries]
    assert any("\\Seen" in f for f in inbox_flags)
    assert any("\\Seen" not in f for f in inbox_flags)
    assert all("\\Seen" in e.flags for e in boxes["Sent"].entries)


def test_large_message_exact_size_and_ranges():
    size = 3_000_017
    msg = large_message(size)
    full = msg.read()
    assert isinstance(msg, PatternMessage) and len(full) == msg.size == size
    assert full.endswith(b"\r\n") and full[:msg.header_size] == msg.header
    assert email.message_from_bytes(full[:msg.header_size])["Subject"] == "Large message"
    body = full[msg.header_size:-2]
    assert body == (msg.pattern * (len(body) // len(msg.pattern) + 1))[:len(body)]
    rnd = random.Random(5)
    for _ in range(200):
        chunk = rnd.choice((1, 13, 4096, 1 << 18))
        a = rnd.randrange(size)
        b = rnd.randrange(a, size + 10) if chunk > 13 else a + rnd.randrange(3000)
        assert b"".join(bytes(c) for c in msg.chunks(a, b, chunk)) == full[a:b]
    assert len(msg._block) < 1 << 20  # one block, not the body


def test_huge_message_costs_no_memory():
    msg = large_message(200 * 1024 * 1024)
    total = sum(len(c) for c in msg.chunks())
    assert total == msg.size
    with pytest.raises(ValueError):
        large_message(10)


def test_store_lazy_shared_and_large():
    store = MailStore(seed=3, shared=True, large_message=1_000_000)
    a, b = store.mailboxes("alice"), store.mailboxes("bob")
    assert a is store.mailboxes("alice")
    assert [e.message for e in a["Sent"].entries] == [e.message for e in b["Sent"].entries]
    a["Sent"].entries[0].flags.add("\\Deleted")
    assert "\\Deleted" not in b["Sent"].entries[0].flags  # own flags per user
    assert a["INBOX"].entries[-1].message is b["INBOX"].entries[-1].message
    assert a["INBOX"].entries[-1].message.size == 1_000_000
    per_user = MailStore(seed=3)
    assert per_user.mailbox("alice", "inbox") is per_user.mailboxes("alice")["INBOX"]
    assert digest(per_user.mailboxes("alice")) != digest(per_user.mailboxes("bob"))


def test_mailbox_append_and_expunge():
    store = MailStore(seed=1, counts={"INBOX": 3})
    box = store.mailbox("carol", "INBOX")
    uidnext = box.uidnext
    entry = store.add("carol", "INBOX", b"Subject: x\r\n\r\nhello\r\n", ("\\Seen",))
    assert entry.uid == uidnext and box.uidnext == uidnext + 1 and len(box) == 4
    assert isinstance(entry.message, StoredMessage) and entry.message.header_size == 14
    store.add("carol", "New", b"Subject: y\r\n\r\n")
    assert len(store.mailbox("carol", "New")) == 1
    box.entries[0].flags.add("\\Deleted")
    box.entries[2].flags.add("\\Deleted")
    assert box.expunge() == [3, 1] and len(box) == 2
