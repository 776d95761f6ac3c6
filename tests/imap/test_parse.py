"""parse_message over every kind of mailgen message, well-formed and broken, and over random bytes."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import mailgen
from sync_function.parse import MAX_MESSAGE_ID_CHARS, SNIPPET_CHARS, parse_message

CORPUS = mailgen.one_of_each(seed=3)
EXPECTED_DEFECT = {
    "no_message_id": "no Message-ID header",
    "unknown_charset": "unknown charset 'x-unknown'",
    "wrong_charset": "not valid utf-8",
    "missing_boundary": "NoBoundaryInMultipartDefect",
    "truncated_multipart": "CloseBoundaryNotFoundDefect",
    "raw_8bit_header": "8-bit bytes in Subject header",
    "missing_date": "no Date header",
    "bad_date": "unparsable Date header",
    "nul_bytes": "NUL characters removed",
}


def test_the_corpus_covers_every_kind() -> None:
    assert {m.kind for m in CORPUS} == {*mailgen.KINDS, mailgen.OVERSIZED}
    assert set(EXPECTED_DEFECT) == mailgen.MALFORMED_KINDS


@pytest.mark.parametrize("generated", CORPUS, ids=lambda m: m.kind)
def test_every_kind_parses_with_its_defects_recorded(generated: mailgen.Generated) -> None:
    parsed = parse_message(generated.raw)

    assert parsed.sha256 == hashlib.sha256(generated.raw).digest()
    assert generated.body_marker in parsed.body_text, "the text part was not found"
    assert parsed.snippet and len(parsed.snippet) <= SNIPPET_CHARS
    assert "  " not in parsed.snippet and "\n" not in parsed.snippet
    assert parsed.message_id == generated.message_id
    assert parsed.subject == generated.subject
    assert (parsed.sent_at is not None) == generated.has_date
    if parsed.sent_at is not None:
        assert parsed.sent_at.tzinfo is not None
    for text in (parsed.body_text, parsed.subject or "", parsed.from_addr or "", *parsed.defects):
        assert "\x00" not in text, "Postgres text cannot hold NUL"
    expected = EXPECTED_DEFECT.get(generated.kind)
    if expected is None:
        assert parsed.defects == (), f"a well-formed {generated.kind} message reported defects"
    else:
        assert any(expected in d for d in parsed.defects), parsed.defects


def test_wrong_charset_is_decoded_as_windows_1252_not_dropped() -> None:
    parsed = parse_message(mailgen.message("wrong_charset", 1).raw)
    assert "Café crème brûlée" in parsed.body_text


def test_html_only_mail_gets_text_without_markup() -> None:
    parsed = parse_message(mailgen.message("html_only", 1).raw)
    assert "<p>" not in parsed.body_text and "color: red" not in parsed.body_text
    assert "café & more" in parsed.body_text


def test_quoted_printable_is_decoded() -> None:
    parsed = parse_message(mailgen.message("quoted_printable", 1).raw)
    assert "déjà vu, a soft break" in parsed.body_text


def test_addresses_and_date_of_a_plain_message() -> None:
    generated = mailgen.message("plain", 3)
    parsed = parse_message(generated.raw)
    assert parsed.from_addr == "Sender 3 <sender3@example.com>"
    assert parsed.to_addrs == "Recipient <rcpt3@example.org>, other@example.org"
    assert parsed.cc_addrs == "Copy <cc@example.net>"
    assert parsed.sent_at is not None and parsed.sent_at.isoformat() == "2024-01-01T08:21:00+00:00"


def test_attachment_bytes_never_leak_into_the_text() -> None:
    parsed = parse_message(mailgen.message("attachment", 2).raw)
    assert len(parsed.body_text) < 2000


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n\r\n",
        b"no headers at all, just text",
        b"\xff\xfe\x00\x01binary garbage",
        b"Subject: =?utf-8?b?!!!not base64?= x\r\n\r\nbody",
        b"Subject: =?x-nope?q?abc?=\r\n\r\nbody",
        b"Content-Type: text/plain; charset=hex\r\n\r\nabc",
        b"Content-Type: text/plain; charset=\"\r\n\r\nabc",
        b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n\r\n--",
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!!@@@@",
        b"Date: Mon, 99 Foo 99999 99:99:99 +9999\r\n\r\nx",
        b"From: \x00\x00\r\nSubject: \xc3\r\n\r\n\x00",
        b"Content-Type: text/plain; charset=unicode_escape\r\n\r\nlone \\ud800 surrogate",
        b"Message-ID: <" + b"\xc3\xa9" * 3000 + b">\r\n\r\nhuge id",
    ],
)
def test_hostile_inputs_never_raise(raw: bytes) -> None:
    parsed = parse_message(raw)
    assert parsed.sha256 == hashlib.sha256(raw).digest()
    assert "\x00" not in parsed.body_text
    # Everything must be storable: valid UTF-8 text, and an indexable Message-ID.
    for text in (parsed.body_text, parsed.subject, parsed.message_id, parsed.from_addr, *parsed.defects):
        (text or "").encode("utf-8")
    assert len((parsed.message_id or "").encode()) <= MAX_MESSAGE_ID_CHARS


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(raw: bytes) -> None:
    parse_message(raw)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"Subject: ", b"From: ", b"Content-Type: multipart/mixed; boundary=b\r\n", b"\r\n", b"--b\r\n",
                b"--b--\r\n", b"=?utf-8?q?", b"?=", b"\xe9", b"\x00", b"charset=x-y", b"Content-Type: text/html\r\n",
                b"<p>", b"Date: ", b"Content-Transfer-Encoding: base64\r\n", b"Content-Transfer-Encoding: quoted-printable\r\n",
                b"=C3", b"=\r\n", b"abc ",
            ]
        ),
        max_size=60,
    )
)
def test_mime_shaped_garbage_never_raises(parts: list[bytes]) -> None:
    parse_message(b"".join(parts))


def test_generation_is_deterministic_and_independent_of_count() -> None:
    first = mailgen.generate(40, seed=9)
    again = mailgen.generate(60, seed=9)[:40]
    assert [m.raw for m in first] == [m.raw for m in again]
    assert [m.raw for m in mailgen.generate(5, seed=10)] != [m.raw for m in first[:5]]


def test_oversized_message_exceeds_the_requested_size() -> None:
    messages = mailgen.generate(10, oversized_index=4, oversized_bytes=150_000)
    assert messages[4].kind == mailgen.OVERSIZED and len(messages[4].raw) > 150_000
    assert all(len(m.raw) < 150_000 for i, m in enumerate(messages) if i != 4)


def test_attachment_sizes_span_1kb_to_200kb() -> None:
    sizes = [len(m.raw) for m in mailgen.generate(2000) if m.kind == "attachment"]
    assert min(sizes) < 5_000 and max(sizes) > 150_000 and max(sizes) < 290_000
