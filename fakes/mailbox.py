"""Reproducible mail content for the fake upstreams.

Messages come from Faker seeded per generator (``seed_instance``) with dates drawn from a fixed
range, so one seed always yields the same bytes for a pinned Faker version. Time-relative
generators such as ``date_time()`` are avoided: their range ends at "now". MIME boundaries are
set from the seeded generator too, because the email package would otherwise draw them from the
global ``random`` module.

``MailStore`` hands each user INBOX, Sent and Archive mailboxes, generated lazily and cached;
``large_message()`` builds a message of an exact size from a repeated pattern without holding
the body in memory.
"""

from __future__ import annotations

import re
import threading
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from faker import Faker

DOMAIN = "example.test"
DATE_START = datetime(2024, 1, 1, tzinfo=UTC)
DATE_END = datetime(2025, 1, 1, tzinfo=UTC)
DEFAULT_COUNTS: Mapping[str, int] = {"INBOX": 12, "Sent": 4, "Archive": 8}
CHUNK = 256 * 1024
_INTL_LOCALES = ("de_DE", "fr_FR", "ja_JP", "ru_RU")
_CRLF_POLICY = policy.SMTP  # IMAP and POP3 serve messages with CRLF line ends


class Message:
    """An immutable RFC 5322 message served by byte ranges (``size``, ``read``, ``chunks``)."""

    size: int
    header_size: int  # header block including the empty line

    def read(self, start: int = 0, end: int | None = None) -> bytes:
        return b"".join(bytes(c) for c in self.chunks(start, end))

    def chunks(self, start: int = 0, end: int | None = None,
               chunk_size: int = CHUNK) -> Iterator[bytes | memoryview]:
        raise NotImplementedError

    @property
    def header(self) -> bytes:
        return self.read(0, self.header_size)

    def _bounds(self, start: int, end: int | None) -> tuple[int, int]:
        end = self.size if end is None else min(end, self.size)
        return min(max(start, 0), end), end


def _header_size(head: bytes) -> int:
    i = head.find(b"\r\n\r\n")
    return len(head) if i < 0 else i + 4


class StoredMessage(Message):
    """A message held as bytes (generated or APPENDed)."""

    __slots__ = ("header_size", "raw", "size")

    def __init__(self, raw: bytes) -> None:
        self.raw = bytes(raw)
        self.size = len(self.raw)
        self.header_size = _header_size(self.raw)

    def read(self, start: int = 0, end: int | None = None) -> bytes:
        start, end = self._bounds(start, end)
        return self.raw[start:end]

    def chunks(self, start: int = 0, end: int | None = None,
               chunk_size: int = CHUNK) -> Iterator[bytes | memoryview]:
        start, end = self._bounds(start, end)
        view = memoryview(self.raw)
        for pos in range(start, end, chunk_size):
            yield view[pos:min(pos + chunk_size, end)]


class PatternMessage(Message):
    """Header bytes + a body repeating ``pattern``, ending in CRLF; only one block is stored."""

    __slots__ = ("_block", "head", "header_size", "pattern", "size")

    def __init__(self, head: bytes, size: int, pattern: bytes) -> None:
        if size < len(head) + 2:
            raise ValueError(f"size {size} is smaller than the header block ({len(head)} bytes)")
        self.head, self.size, self.pattern = head, size, pattern
        self.header_size = len(head)
        # A block that is a whole number of patterns, so any offset maps into it.
        reps = max(1, CHUNK // len(pattern))
        self._block = memoryview(pattern * (reps + 1))

    def chunks(self, start: int = 0, end: int | None = None,
               chunk_size: int = CHUNK) -> Iterator[bytes | memoryview]:
        start, end = self._bounds(start, end)
        hs, plen, tail = self.header_size, len(self.pattern), self.size - 2
        if start < hs:
            yield self.head[start:min(end, hs)]
            start = hs
        span = len(self._block) - plen
        while start < min(end, tail):
            off = (start - hs) % plen
            n = min(chunk_size, span, end - start, tail - start)
            yield self._block[off:off + n]
            start += n
        if start < end:  # inside the final CRLF
            yield b"\r\n"[start - tail:end - tail]


def large_message(size: int, *, subject: str = "Large message", pattern: bytes | None = None,
                  date: datetime = DATE_START, owner: str = f"user@{DOMAIN}") -> PatternMessage:
    """A message of exactly ``size`` bytes (headers included) for relay benchmarks."""
    pattern = pattern or b"".join(bytes([65 + (i + j) % 26 for j in range(76)]) + b"\r\n"
                                  for i in range(26))
    head = (f"From: Bulk Sender <bulk@{DOMAIN}>\r\nTo: <{owner}>\r\nSubject: {subject}\r\n"
            f"Date: {format_datetime(date)}\r\nMessage-ID: <large-{size}@{DOMAIN}>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n"
            "Content-Transfer-Encoding: 7bit\r\n\r\n").encode()
    return PatternMessage(head, size, pattern)


@dataclass
class Entry:
    """One message in one mailbox: its UID and mutable flags."""

    uid: int
    message: Message
    flags: set[str] = field(default_factory=set)
    internaldate: datetime = DATE_START


class Mailbox:
    """A mailbox's messages in UID order, with UIDVALIDITY/UIDNEXT bookkeeping."""

    def __init__(self, name: str, uidvalidity: int, entries: list[Entry] | None = None) -> None:
        self.name = name
        self.uidvalidity = uidvalidity
        self.entries: list[Entry] = entries or []
        self.uidnext = (self.entries[-1].uid + 1) if self.entries else 1

    def append(self, message: Message, flags: tuple[str, ...] | set[str] = (),
               internaldate: datetime | None = None) -> Entry:
        entry = Entry(self.uidnext, message, set(flags), internaldate or DATE_END)
        self.entries.append(entry)
        self.uidnext += 1
        return entry

    def expunge(self) -> list[int]:
        """Remove \\Deleted messages; returns sequence numbers as IMAP reports them, in order."""
        gone = []
        for seq in range(len(self.entries), 0, -1):
            if "\\Deleted" in self.entries[seq - 1].flags:
                del self.entries[seq - 1]
                gone.append(seq)
        return gone

    @property
    def unseen(self) -> int:
        return sum(1 for e in self.entries if "\\Seen" not in e.flags)

    def __len__(self) -> int:
        return len(self.entries)


def stable_seed(*parts: object) -> int:
    """A seed derived from values without Python's per-process string hashing."""
    return zlib.crc32("/".join(map(str, parts)).encode())


def _uidvalidity(*parts: object) -> int:
    return 1_700_000_000 + stable_seed(*parts) % 10**7


_fakers: dict[str, Faker] = {}
_fakers_lock = threading.Lock()  # generators are shared (construction costs ~15 ms each)


def _faker(locale: str, seed: int) -> Faker:
    fake = _fakers.get(locale)
    if fake is None:
        fake = _fakers[locale] = Faker(locale)
    fake.seed_instance(seed)
    return fake


@dataclass
class _Sent:
    msg_id: str
    subject: str
    sender: Address
    refs: list[str]
    entry: Entry | None = None


class MailGenerator:
    """Builds one user's mailboxes from a seed: threads, attachments, RFC 2047 headers."""

    def __init__(self, seed: int, owner: str = f"user@{DOMAIN}") -> None:
        self.seed = seed
        # a login need not be an address local part ("us er"): make one that is
        local, _, domain = owner.partition("@")
        local = re.sub(r"[^A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]", "_", local).strip(".") or "user"
        self.owner = f"{local}@{domain or DOMAIN}"

    def mailboxes(self, counts: Mapping[str, int] = DEFAULT_COUNTS) -> dict[str, Mailbox]:
        with _fakers_lock:
            self.fake = _faker("en_US", self.seed)
            self.intl = {loc: _faker(loc, stable_seed(self.seed, loc)) for loc in _INTL_LOCALES}
            return self._build(counts)

    def _person(self, fake: Faker) -> Address:
        first, last = fake.first_name(), fake.last_name()
        local = self.fake.user_name()
        return Address(f"{first} {last}", addr_spec=f"{local}@{self.fake.domain_word()}.{DOMAIN}")

    def _build(self, counts: Mapping[str, int]) -> dict[str, Mailbox]:
        fake, rnd = self.fake, self.fake.random
        me = Address(fake.name(), addr_spec=self.owner)
        contacts = [self._person(self.intl[rnd.choice(_INTL_LOCALES)] if i % 3 == 2 else fake)
                    for i in range(8)]
        total = sum(counts.values())
        dates = sorted(fake.date_time_between(DATE_START, DATE_END, tzinfo=UTC)
                       for _ in range(total))
        # Archive-like folders take the oldest mail; the rest is interleaved.
        slots = [n for n, c in counts.items() if n.lower() == "archive" for _ in range(c)]
        rest = [n for n, c in counts.items() if n.lower() != "archive" for _ in range(c)]
        rnd.shuffle(rest)
        boxes = {n: Mailbox(n, _uidvalidity(self.seed, self.owner, n)) for n in counts}
        history: list[_Sent] = []
        for when, box in zip(dates, slots + rest):
            outgoing = box.lower() == "sent"
            parent = rnd.choice(history) if history and rnd.random() < 0.35 else None
            if outgoing:
                sender = me
                to = parent.sender if parent and parent.sender != me else rnd.choice(contacts)
            else:
                sender = parent.sender if parent and parent.sender != me and rnd.random() < .5 \
                    else rnd.choice(contacts)
                to = me
            intl = rnd.random() < 0.25
            text_fake = self.intl[rnd.choice(_INTL_LOCALES)] if intl else fake
            msg, sent = self._message(text_fake, sender, to, when, parent, contacts)
            flags = set()
            if outgoing or box.lower() == "archive" or rnd.random() < 0.7:
                flags.add("\\Seen")
            if rnd.random() < 0.1:
                flags.add("\\Flagged")
            if parent and outgoing and parent.entry is not None:
                parent.entry.flags.add("\\Answered")
            mailbox = boxes[box]
            mailbox.uidnext += 1 if rnd.random() < 0.15 else 0  # UID gaps, as after expunges
            sent.entry = mailbox.append(StoredMessage(msg.as_bytes(policy=_CRLF_POLICY)),
                                        flags, when + timedelta(seconds=rnd.randint(1, 90)))
            history.append(sent)
        return boxes

    def _message(self, text_fake: Faker, sender: Address, to: Address, when: datetime,
                 parent: _Sent | None, contacts: list[Address]) -> tuple[EmailMessage, _Sent]:
        fake, rnd = self.fake, self.fake.random
        msg = EmailMessage()
        msg["From"] = sender
        msg["To"] = to
        if rnd.random() < 0.2:
            msg["Cc"] = rnd.choice(contacts)
        if parent:
            base = parent.subject
            subject = base if base.startswith("Re: ") else f"Re: {base}"
            refs = parent.refs + [parent.msg_id]
        else:
            subject = text_fake.sentence(nb_words=rnd.randint(3, 8)).rstrip(".。")
            refs = []
        msg["Subject"] = subject
        tz = timezone(timedelta(hours=rnd.choice((-5, 0, 1, 2, 9))))
        msg["Date"] = format_datetime(when.astimezone(tz))
        msg_id = f"<{fake.uuid4()}@{sender.domain}>"
        msg["Message-ID"] = msg_id
        if parent:
            msg["In-Reply-To"] = parent.msg_id
            msg["References"] = " ".join(refs[-10:])
        paragraphs = text_fake.paragraphs(nb=rnd.choice((1, 2, 3, 5, 8, 20)))
        body = "\n\n".join(paragraphs)
        if parent:
            body += f"\n\nOn {when:%a, %d %b %Y}, {parent.sender.display_name} wrote:\n> " + \
                text_fake.sentence()
        msg.set_content(body + f"\n\n-- \n{sender.display_name}\n")
        if rnd.random() < 0.15:
            html = "".join(f"<p>{p}</p>" for p in paragraphs)
            msg.add_alternative(f"<html><body>{html}</body></html>\n", subtype="html")
        if rnd.random() < 0.2:
            kind, maintype, subtype = rnd.choice((("pdf", "application", "pdf"),
                                                  ("png", "image", "png"),
                                                  ("zip", "application", "zip")))
            size = rnd.choice((600, 3_000, 20_000, 90_000))
            msg.add_attachment(rnd.randbytes(size), maintype=maintype, subtype=subtype,
                               filename=text_fake.file_name(extension=kind))
        for part in msg.walk():
            if part.is_multipart():
                part.set_boundary(f"=_{rnd.getrandbits(96):024x}")
        return msg, _Sent(msg_id, subject, sender, refs)


class MailStore:
    """Per-user mailboxes, generated on first use and cached.

    ``shared=True`` generates the content once and gives every user their own mailbox objects
    (own flags and UIDs) over the same message bytes: cheap for thousands of load-test users.
    ``large_message`` (bytes) adds one ``large_message()`` of that size to every INBOX.
    """

    def __init__(self, seed: int = 1, counts: Mapping[str, int] = DEFAULT_COUNTS,
                 shared: bool = False, large_message: int | None = None) -> None:
        self.seed, self.counts, self.shared = seed, dict(counts), shared
        self.large_size = large_message
        self._large: Message | None = None
        self._users: dict[str, dict[str, Mailbox]] = {}
        self._template: dict[str, Mailbox] | None = None
        self._lock = threading.RLock()  # a test thread and the server thread may both ask

    def mailboxes(self, user: str) -> dict[str, Mailbox]:
        boxes = self._users.get(user)
        if boxes is None:
            with self._lock:
                boxes = self._users.get(user)
                if boxes is None:
                    boxes = self._users[user] = self._generate(user)
        return boxes

    def mailbox(self, user: str, name: str) -> Mailbox | None:
        boxes = self.mailboxes(user)
        if name.upper() == "INBOX":
            name = "INBOX"
        return boxes.get(name)

    def add(self, user: str, mailbox: str, message: Message | bytes,
            flags: tuple[str, ...] = ()) -> Entry:
        """Deliver a message (creating the mailbox if needed)."""
        boxes = self.mailboxes(user)
        box = boxes.get(mailbox)
        if box is None:
            box = boxes[mailbox] = Mailbox(mailbox, _uidvalidity(self.seed, user, mailbox))
        if isinstance(message, (bytes, bytearray)):
            message = StoredMessage(message)
        return box.append(message, flags)

    def _generate(self, user: str) -> dict[str, Mailbox]:
        if self.shared:
            if self._template is None:
                self._template = MailGenerator(self.seed).mailboxes(self.counts)
            boxes = {n: Mailbox(n, b.uidvalidity,
                                [Entry(e.uid, e.message, set(e.flags), e.internaldate)
                                 for e in b.entries])
                     for n, b in self._template.items()}
        else:
            boxes = MailGenerator(stable_seed(self.seed, user), owner=user).mailboxes(self.counts)
        if self.large_size:
            if self._large is None:
                self._large = large_message(self.large_size)
            boxes.setdefault("INBOX", Mailbox("INBOX", 1)).append(self._large, (), DATE_END)
        return boxes
