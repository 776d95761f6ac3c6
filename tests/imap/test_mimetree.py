"""The fast MIME tree (`mimetree.build`) against the stdlib's full parse.

Whenever `build` answers, its tree must be the stdlib's, part for part, and `parse_message` must
store the same columns either way; whenever the structure is odd or a defect would be recorded, it
must decline (and the full parse keeps the defects).
"""

from __future__ import annotations

from email import policy
from email.message import Message
from email.parser import BytesParser
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import mailgen
from sync_function import mimetree
from sync_function.parse import parse_message

FULL = BytesParser(policy=policy.compat32)
# Two whole cycles of the benchmark's mix, every kind once, and an oversized attachment.
CORPUS = [*mailgen.generate(2 * len(mailgen.CYCLE), seed=5), *mailgen.one_of_each(seed=6)]
# Kinds whose structure or headers carry a defect: the fast tree must leave them to the full parse.
DECLINED_KINDS = {"missing_boundary", "truncated_multipart"}


def shape(msg: Message) -> list[Any]:
    """Everything feedparser puts in a tree, part by part (payloads of leaves included)."""
    out: list[Any] = []
    for part in msg.walk():
        payload = part.get_payload()
        out.append(
            (
                part.get_unixfrom(),
                part.raw_items() and list(part.raw_items()),
                part.get_default_type(),
                part.preamble,
                part.epilogue,
                [type(d).__name__ for d in part.defects],
                payload if isinstance(payload, str) else len(payload),
                part.get_payload(decode=True),  # bytes as parsed (the plain form replaces 8-bit bytes)
            )
        )
    return out


def assert_same(raw: bytes) -> bool:
    """The fast tree equals the full one (when there is one), and so do the stored columns."""
    fast = mimetree.build(raw)
    if fast is not None:
        assert shape(fast) == shape(FULL.parsebytes(raw))
    assert parse_message(raw) == parse_message(raw, fast=False)
    return fast is not None


@pytest.mark.parametrize("generated", CORPUS, ids=lambda m: f"{m.index}-{m.kind}")
def test_mailgen_corpus_stores_the_same_columns_either_way(generated: mailgen.Generated) -> None:
    took_fast_path = assert_same(generated.served)
    assert took_fast_path == (generated.kind not in DECLINED_KINDS), generated.kind


def test_the_fast_path_serves_most_of_the_benchmark_mix() -> None:
    generated = mailgen.generate(len(mailgen.CYCLE), seed=7)
    fast = sum(mimetree.build(m.served) is not None for m in generated)
    assert fast == len(generated) - sum(m.kind in DECLINED_KINDS for m in generated)
    assert fast / len(generated) > 0.85


HEAD = b"From: a@example.com\r\nSubject: s\r\n"


def multipart(body: bytes, ctype: bytes = b"multipart/mixed", boundary: bytes = b"XX") -> bytes:
    return HEAD + b"Content-Type: " + ctype + b'; boundary="' + boundary + b'"\r\n\r\n' + body


TEXT = b"--XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
CLOSE = b"--XX--\r\n"


@pytest.mark.parametrize(
    ("raw", "fast"),
    [
        pytest.param(HEAD + b"\r\nplain body\r\n", True, id="single part"),
        pytest.param(HEAD + b"X-Folded: one\r\n two\r\n\tthree\r\n\r\nbody", True, id="folded header"),
        pytest.param(HEAD + b"Subject:\r\n  later\r\n\r\nbody", True, id="empty first header line"),
        pytest.param(
            multipart(b"preamble\r\n" + TEXT + CLOSE + b"epilogue\r\n"), True, id="preamble+epilogue"
        ),
        pytest.param(multipart(TEXT + b"--XX--"), True, id="close at end of data"),
        pytest.param(multipart(TEXT + b"--XX-- \t\r\n"), True, id="close with trailing blanks"),
        pytest.param(
            multipart(TEXT + b"--XXY not a boundary\r\n" + CLOSE), True, id="boundary prefix in text"
        ),
        pytest.param(multipart(TEXT + b"x --XX\r\n" + CLOSE), True, id="separator mid-line"),
        pytest.param(
            multipart(
                b"--XX\r\nContent-Type: multipart/alternative; boundary=YY\r\n\r\n"
                b"--YY\r\nContent-Type: text/plain\r\n\r\ninner\r\n--YY--\r\nafter inner\r\n" + TEXT + CLOSE
            ),
            True,
            id="nested with inner epilogue",
        ),
        pytest.param(
            multipart(
                b"--XX\r\nContent-Type: multipart/alternative; boundary=YY\r\n\r\n"
                b"--YY\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--YY--\r\n" + CLOSE
            ),
            True,
            id="nested html only",
        ),
        pytest.param(
            multipart(b"--XX\r\nContent-Type: text/plain\r\n\r\n" + CLOSE, ctype=b"multipart/digest"),
            True,
            id="digest with typed part",
        ),
        pytest.param(
            multipart(b"--XX\r\nSubject: inner\r\n\r\nbody\r\n" + CLOSE, ctype=b"multipart/digest"),
            False,
            id="digest part is a message",
        ),
        pytest.param(
            multipart(b"--XX\r\nContent-Type: message/rfc822\r\n\r\n" + HEAD + b"\r\nx\r\n" + CLOSE),
            False,
            id="message part",
        ),
        pytest.param(multipart(TEXT + TEXT.replace(b"hello", b"again") + CLOSE), True, id="two parts"),
        pytest.param(multipart(b"--XX\r\n" + TEXT + CLOSE), False, id="doubled boundary line"),
        pytest.param(multipart(b"--XX\r\n\r\nno headers\r\n" + CLOSE), False, id="part without headers"),
        pytest.param(
            multipart(b"--XX\r\nContent-Type: text/plain\r\n" + CLOSE), False, id="part without body"
        ),
        pytest.param(multipart(TEXT), False, id="no close boundary"),
        pytest.param(multipart(CLOSE), False, id="close before any part"),
        pytest.param(multipart(b"just text\r\n"), False, id="no boundary line"),
        pytest.param(HEAD.replace(b"\r\n", b"\n") + b"\nbody\n", False, id="LF line ends"),
        pytest.param(HEAD + b"\r\nbody\rwith a bare CR\r\n", False, id="bare CR in body"),
        pytest.param(
            b"From someone Mon Jan 1 00:00:00 2024\r\n" + HEAD + b"\r\nx", False, id="unix From line"
        ),
        pytest.param(b" folded first\r\n" + HEAD + b"\r\nx", False, id="continuation first"),
        pytest.param(HEAD + b"not a header line\r\n\r\nx", False, id="missing separator"),
        pytest.param(HEAD + b": no name\r\n\r\nx", False, id="missing header name"),
        pytest.param(HEAD + b"Subj\xc3\xa9ct: 8-bit name\r\n\r\nx", False, id="8-bit header name"),
        pytest.param(
            multipart(TEXT + CLOSE).replace(
                b"Content-Type", b"Content-Transfer-Encoding: base64\r\nContent-Type", 1
            ),
            False,
            id="encoded multipart",
        ),
        pytest.param(
            HEAD + b"Content-Type: multipart/mixed\r\n\r\n" + TEXT + CLOSE, False, id="no boundary param"
        ),
        pytest.param(b"\r\n\r\nbody", False, id="empty header block"),
        pytest.param(HEAD + b"Subject: headers only, no blank line\r\n", False, id="no body separator"),
    ],
)
def test_shapes_the_fast_tree_takes_or_declines(raw: bytes, fast: bool) -> None:
    assert assert_same(raw) == fast


PIECES = [
    b"--XX\r\n",
    b"--XX--\r\n",
    b"--XX",
    b"--YY\r\n",
    b"--YY--\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"Content-Type: text/plain\r\n",
    b"Content-Type: text/html; charset=utf-8\r\n",
    b"Content-Type: multipart/alternative; boundary=YY\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Type: application/pdf\r\nContent-Disposition: attachment\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b" folded\r\n",
    b"X-A: 1\r\n",
    b"text line\r\n",
    b"=C3=A9\r\n",
    b"\xe9\r\n",
    b"--XX \r\n",
    b"--XXtail\r\n",
]

# Without bare CR or LF most of these take the fast tree, which is what needs checking.
CRLF_PIECES = [piece for piece in PIECES if piece not in (b"\n", b"\r")]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40))
def test_multipart_shaped_input_never_differs(pieces: list[bytes]) -> None:
    assert_same(multipart(b"".join(pieces)))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(CRLF_PIECES), max_size=40))
def test_crlf_multipart_shaped_input_never_differs(pieces: list[bytes]) -> None:
    assert_same(multipart(b"".join(pieces)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40))
def test_any_top_level_shape_never_differs(pieces: list[bytes]) -> None:
    assert_same(HEAD + b"".join(pieces))
