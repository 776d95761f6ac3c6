"""Deterministic RFC 5322 test messages, well-formed and malformed, fast enough for 10,000 at once.

Message `i` of a seed is always the same bytes, whatever `count` is, so a benchmark and a test that
share a seed agree. Messages are built as bytes from templates (not through `email.message`), both
for speed and because the malformed kinds cannot be produced by a well-behaved library.
Lines end in CRLF, the form IMAP servers serve, so a delivered file and the fetched bytes match
(see `served_bytes` for the one exception, NUL).
"""

from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# Malformed kinds appear once per cycle; plain and multipart mail dominate, as in a real mailbox.
KINDS: tuple[str, ...] = (
    "plain",
    "alternative",
    "attachment",
    "no_message_id",
    "duplicate_message_id",
    "unknown_charset",
    "wrong_charset",
    "missing_boundary",
    "truncated_multipart",
    "raw_8bit_header",
    "encoded_word_subject",
    "missing_date",
    "bad_date",
    "html_only",
    "nul_bytes",
    "quoted_printable",
)
CYCLE: tuple[str, ...] = ("plain", "alternative", "plain", "attachment", "plain", *KINDS[3:])
MALFORMED_KINDS: frozenset[str] = frozenset(
    {
        "no_message_id",
        "unknown_charset",
        "wrong_charset",
        "missing_boundary",
        "truncated_multipart",
        "raw_8bit_header",
        "missing_date",
        "bad_date",
        "nul_bytes",
    }
)
OVERSIZED = "oversized"
BASE_DATE = datetime(2024, 1, 1, 8, 0, tzinfo=UTC)
WORDS = (
    "invoice",
    "meeting",
    "report",
    "budget",
    "schedule",
    "travel",
    "update",
    "review",
    "quarterly",
    "project",
    "release",
    "customer",
    "support",
    "ticket",
    "weekly",
    "summary",
    "draft",
    "agenda",
    "notes",
    "holiday",
    "lunch",
    "deadline",
    "contract",
    "proposal",
    "feedback",
    "design",
    "server",
    "backup",
    "migration",
)


@dataclass(frozen=True, slots=True)
class Generated:
    """One message and what a parser should find in it (None: nothing to assert)."""

    index: int
    kind: str
    raw: bytes
    message_id: str | None
    subject: str | None
    has_date: bool
    body_marker: str

    @property
    def served(self) -> bytes:
        return served_bytes(self.raw)

    @property
    def sha256(self) -> bytes:
        """The hash of the bytes an IMAP server serves for this message."""
        return hashlib.sha256(self.served).digest()


def served_bytes(raw: bytes) -> bytes:
    """What Dovecot serves for a file of `raw` bytes: it replaces NUL by 0x80 (and LF by CRLF)."""
    return raw.replace(b"\0", b"\x80")


def generate(
    count: int, *, seed: int = 0, oversized_index: int | None = None, oversized_bytes: int = 0
) -> list[Generated]:
    """`count` messages; if `oversized_index` is given, that one is `oversized_bytes` or larger."""
    return list(
        iter_messages(count, seed=seed, oversized_index=oversized_index, oversized_bytes=oversized_bytes)
    )


def iter_messages(
    count: int, *, seed: int = 0, oversized_index: int | None = None, oversized_bytes: int = 0
) -> Iterator[Generated]:
    if count < 0:
        raise ValueError(f"count must be >= 0 (got {count})")
    if oversized_index is not None and oversized_bytes <= 0:
        raise ValueError("oversized_bytes must be positive when oversized_index is given")
    for index in range(count):
        if index == oversized_index:
            yield message(OVERSIZED, index, seed=seed, oversized_bytes=oversized_bytes)
        else:
            yield message(CYCLE[index % len(CYCLE)], index, seed=seed)


def one_of_each(*, seed: int = 0) -> list[Generated]:
    """Every kind once (the oversized one at 300 KB): the parser's unit-test corpus."""
    return [
        message(kind, i, seed=seed, oversized_bytes=300_000) for i, kind in enumerate((*KINDS, OVERSIZED))
    ]


def message(kind: str, index: int, *, seed: int = 0, oversized_bytes: int = 0) -> Generated:
    """Message `index` of `seed`, of the given kind."""
    builder = _BUILDERS.get(kind)
    if builder is None:
        raise ValueError(f"unknown kind {kind!r}; kinds are {', '.join((*KINDS, OVERSIZED))}")
    rng = random.Random(seed * 1_000_003 + index)  # noqa: S311 - reproducible test data, not secrets
    ctx = _Context(index=index, seed=seed, rng=rng, oversized_bytes=oversized_bytes)
    return builder(ctx)


@dataclass(slots=True)
class _Context:
    index: int
    seed: int
    rng: random.Random
    oversized_bytes: int

    @property
    def marker(self) -> str:
        # A token that only this message's body contains, for asserting the right text was found.
        return f"marker{self.seed}x{self.index}"

    @property
    def message_id(self) -> str:
        return f"<{self.seed}.{self.index}@mailgen.test>"

    @property
    def date(self) -> str:
        when = BASE_DATE + timedelta(minutes=7 * self.index)
        return when.strftime("%a, %d %b %Y %H:%M:%S +0000")

    def subject(self) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(2, 6))) + f" #{self.index}"

    def text(self, lines: int | None = None) -> str:
        count = lines if lines is not None else self.rng.randint(3, 30)
        out = [f"Hello, this is {self.marker}."]
        for _ in range(count):
            out.append(" ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(4, 12))))
        return "\r\n".join(out)

    def boundary(self) -> str:
        return f"==b{self.seed}_{self.index}_{self.rng.getrandbits(32):08x}"


def _headers(
    ctx: _Context, subject: str | None, *, message_id: str | None, date: str | None, extra: str = ""
) -> str:
    lines = [
        f"From: Sender {ctx.index} <sender{ctx.index % 50}@example.com>",
        f"To: Recipient <rcpt{ctx.index % 7}@example.org>, other@example.org",
    ]
    if ctx.index % 3 == 0:
        lines.append("Cc: Copy <cc@example.net>")
    if subject is not None:
        lines.append(f"Subject: {subject}")
    if date is not None:
        lines.append(f"Date: {date}")
    if message_id is not None:
        lines.append(f"Message-ID: {message_id}")
    lines.append("MIME-Version: 1.0")
    head = "\r\n".join(lines) + "\r\n"
    return head + extra


def _result(
    ctx: _Context,
    kind: str,
    raw: bytes,
    *,
    message_id: str | None,
    subject: str | None,
    has_date: bool = True,
) -> Generated:
    return Generated(
        index=ctx.index,
        kind=kind,
        raw=raw,
        message_id=message_id,
        subject=subject,
        has_date=has_date,
        body_marker=ctx.marker,
    )


def _plain(ctx: _Context) -> Generated:
    subject = ctx.subject()
    head = _headers(ctx, subject, message_id=ctx.message_id, date=ctx.date)
    raw = (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + ctx.text() + "\r\n").encode()
    return _result(ctx, "plain", raw, message_id=ctx.message_id, subject=subject)


def _alternative(ctx: _Context) -> Generated:
    subject = ctx.subject()
    b = ctx.boundary()
    text = ctx.text()
    html = "<html><body><p>" + text.replace("\r\n", "</p>\r\n<p>") + "</p></body></html>"
    body = (
        f"--{b}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
        f"--{b}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n"
        f"--{b}--\r\n"
    )
    head = _headers(ctx, subject, message_id=ctx.message_id, date=ctx.date)
    raw = (head + f'Content-Type: multipart/alternative; boundary="{b}"\r\n\r\n' + body).encode()
    return _result(ctx, "alternative", raw, message_id=ctx.message_id, subject=subject)


def _base64_lines(data: bytes) -> str:
    encoded = base64.b64encode(data).decode()
    return "\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))


def _with_attachment(ctx: _Context, kind: str, size: int) -> Generated:
    subject = ctx.subject()
    b = ctx.boundary()
    payload = _base64_lines(ctx.rng.randbytes(size))
    body = (
        f"--{b}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{ctx.text()}\r\n"
        f"--{b}\r\nContent-Type: application/octet-stream\r\n"
        f'Content-Disposition: attachment; filename="file{ctx.index}.bin"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{payload}\r\n"
        f"--{b}--\r\n"
    )
    head = _headers(ctx, subject, message_id=ctx.message_id, date=ctx.date)
    raw = (head + f'Content-Type: multipart/mixed; boundary="{b}"\r\n\r\n' + body).encode()
    return _result(ctx, kind, raw, message_id=ctx.message_id, subject=subject)


def _attachment(ctx: _Context) -> Generated:
    # Log-uniform between 1 KB and 200 KB: many small attachments, a few large ones.
    size = int(1024 * (200 ** ctx.rng.random()))
    return _with_attachment(ctx, "attachment", size)


def _oversized(ctx: _Context) -> Generated:
    # base64 grows data by 4/3; aim a little above the requested size.
    return _with_attachment(ctx, OVERSIZED, max(ctx.oversized_bytes, 1024) * 3 // 4 + 4096)


def _no_message_id(ctx: _Context) -> Generated:
    subject = ctx.subject()
    head = _headers(ctx, subject, message_id=None, date=ctx.date)
    raw = (head + "Content-Type: text/plain; charset=us-ascii\r\n\r\n" + ctx.text() + "\r\n").encode()
    return _result(ctx, "no_message_id", raw, message_id=None, subject=subject)


def _duplicate_message_id(ctx: _Context) -> Generated:
    # Every message of this kind (per seed) shares one Message-ID, as mailing-list copies do.
    subject = ctx.subject()
    mid = f"<duplicate.{ctx.seed}@mailgen.test>"
    head = _headers(ctx, subject, message_id=mid, date=ctx.date)
    raw = (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + ctx.text() + "\r\n").encode()
    return _result(ctx, "duplicate_message_id", raw, message_id=mid, subject=subject)


def _unknown_charset(ctx: _Context) -> Generated:
    subject = ctx.subject()
    head = _headers(ctx, subject, message_id=ctx.message_id, date=ctx.date)
    body = (ctx.text() + "\r\nna\u00efve caf\u00e9\r\n").encode("utf-8")
    raw = (head + "Content-Type: text/plain; charset=x-unknown\r\n\r\n").encode() + body
    return _result(ctx, "unknown_charset", raw, message_id=ctx.message_id, subject=subject)


def _wrong_charset(ctx: _Context) -> Generated:
    # Declared UTF-8, written in Latin-1: a classic of old mail clients.
    subject = ctx.subject()
    head = _headers(ctx, subject, message_id=ctx.message_id, date=ctx.date)
    body = (ctx.text() + "\r\nCaf\u00e9 cr\u00e8me br\u00fbl\u00e9e\r\n").encode("latin-1")
    raw = (
        head + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode() + body
    return _result(ctx, "wrong_charset", raw, message_id=ctx.message_id, subject=subject)


def _missing_boundary(ctx: _Context) -> Generated:
    subject = ctx.subject()
    head = _headers(ctx, subject, message_id=ctx.message_id, date=ctx.date)
    body = f"--nowhere\r\nContent-Type: text/plain\r\n\r\n{ctx.text()}\r\n--nowhere--\r\n"
    raw = (head + "Content-Type: multipart/mixed\r\n\r\n" + body).encode()
    return _result(ctx, "missing_boundary", raw, message_id=ctx.message_id, subject=subject)


def _truncated_multipart(ctx: _Context) -> Generated:
    subject = ctx.subject()
    b = ctx.boundary()
    payload = _base64_lines(ctx.rng.randbytes(3000))
    body = (
        f"--{b}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{ctx.text()}\r\n"
        f"--{b}\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + payload[: len(payload) // 2]
        # Cut mid-line, with no closing boundary: the connection dropped while it was sent.
    )
    head = _headers(ctx, subject, message_id=ctx.message_id, date=ctx.date)
    raw = (head + f'Content-Type: multipart/mixed; boundary="{b}"\r\n\r\n' + body).encode()
    return _result(ctx, "truncated_multipart", raw, message_id=ctx.message_id, subject=subject)


def _raw_8bit_header(ctx: _Context) -> Generated:
    words = ctx.subject()
    head = _headers(ctx, None, message_id=ctx.message_id, date=ctx.date).encode()
    # Unencoded UTF-8 in Subject, Latin-1 in From: both forbidden by RFC 5322, both common.
    subject = f"R\u00e9sum\u00e9 {words}"
    extra = b"Subject: " + subject.encode("utf-8") + b"\r\nReply-To: J\xf6rg <j@example.com>\r\n"
    raw = head + extra + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + ctx.text().encode() + b"\r\n"
    return _result(ctx, "raw_8bit_header", raw, message_id=ctx.message_id, subject=subject)


def _encoded_word_subject(ctx: _Context) -> Generated:
    words = ctx.subject()
    subject = f"\u00dcber {words} \u2014 \u65e5\u672c"
    encoded = "=?utf-8?b?" + base64.b64encode(subject.encode()).decode() + "?="
    head = _headers(ctx, encoded, message_id=ctx.message_id, date=ctx.date)
    raw = (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + ctx.text() + "\r\n").encode()
    return _result(ctx, "encoded_word_subject", raw, message_id=ctx.message_id, subject=subject)


def _missing_date(ctx: _Context) -> Generated:
    subject = ctx.subject()
    head = _headers(ctx, subject, message_id=ctx.message_id, date=None)
    raw = (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + ctx.text() + "\r\n").encode()
    return _result(ctx, "missing_date", raw, message_id=ctx.message_id, subject=subject, has_date=False)


def _bad_date(ctx: _Context) -> Generated:
    subject = ctx.subject()
    head = _headers(ctx, subject, message_id=ctx.message_id, date="sometime last Tuesday, 99:99")
    raw = (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + ctx.text() + "\r\n").encode()
    return _result(ctx, "bad_date", raw, message_id=ctx.message_id, subject=subject, has_date=False)


def _html_only(ctx: _Context) -> Generated:
    subject = ctx.subject()
    text = ctx.text()
    html = (
        "<html><head><style>p { color: red; }</style></head><body><p>"
        + text.replace("\r\n", "</p>\r\n<p>")
        + "</p><p>caf&eacute; &amp; more</p></body></html>"
    )
    head = _headers(ctx, subject, message_id=ctx.message_id, date=ctx.date)
    raw = (head + "Content-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n").encode()
    return _result(ctx, "html_only", raw, message_id=ctx.message_id, subject=subject)


def _nul_bytes(ctx: _Context) -> Generated:
    subject = ctx.subject()
    head = _headers(ctx, subject, message_id=ctx.message_id, date=ctx.date)
    raw = (
        head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + ctx.text() + "\r\nnul\0here\r\n"
    ).encode()
    return _result(ctx, "nul_bytes", raw, message_id=ctx.message_id, subject=subject)


def _quoted_printable(ctx: _Context) -> Generated:
    subject = ctx.subject()
    head = _headers(ctx, subject, message_id=ctx.message_id, date=ctx.date)
    text = ctx.text() + "\r\nd=C3=A9j=C3=A0 vu, a soft=\r\n break"
    raw = (
        head
        + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        + text
        + "\r\n"
    ).encode()
    return _result(ctx, "quoted_printable", raw, message_id=ctx.message_id, subject=subject)


_BUILDERS = {
    "plain": _plain,
    "alternative": _alternative,
    "attachment": _attachment,
    "no_message_id": _no_message_id,
    "duplicate_message_id": _duplicate_message_id,
    "unknown_charset": _unknown_charset,
    "wrong_charset": _wrong_charset,
    "missing_boundary": _missing_boundary,
    "truncated_multipart": _truncated_multipart,
    "raw_8bit_header": _raw_8bit_header,
    "encoded_word_subject": _encoded_word_subject,
    "missing_date": _missing_date,
    "bad_date": _bad_date,
    "html_only": _html_only,
    "nul_bytes": _nul_bytes,
    "quoted_printable": _quoted_printable,
    OVERSIZED: _oversized,
}
