"""The MIME tree the stdlib parser builds, for plainly structured mail, at a fraction of its cost.

The stdlib's feedparser pushes every line of a message through a Python loop (and, inside a
multipart, through a boundary regex): a 200 KB attachment is ~2,700 base64 lines read one by one
although nothing of it is stored but the raw bytes. Here the boundaries are found with `bytes.find`
and bodies become payloads by slicing.

Header blocks are split here too, by the rules of feedparser's `_parse_headers` with the `compat32`
policy (which keeps raw values); a block those rules would flag in any way is left to the stdlib.

`build` returns the same tree the full parse (`BytesParser(policy=compat32).parsebytes`) returns:
the same headers, payloads, preambles, epilogues and default types, part for part. It does so only
for structure it can mirror exactly, and returns None for everything else, so that the caller runs
the full parse: line ends other than CRLF, any defect in a header block, `message/*` parts, a
multipart without a boundary, without a start or close boundary, with doubled boundary lines or a
transfer encoding other than 7bit/8bit/binary, a part with no header/body separator. Malformed mail
therefore always takes the full parse and keeps its recorded defects. Each rule below names the
feedparser behaviour it mirrors; tests/imap/test_mimetree.py checks that both parses give the same
trees and stored columns over the mailgen corpus, hand-made shapes and generated ones.
"""

from __future__ import annotations

import itertools
import re
from email.message import Message

# What feedparser's boundary regex accepts after the `--boundary` separator at the start of a line.
_AFTER_SEPARATOR = re.compile(rb"(--)?[ \t]*(\r\n|\r|\n)?$")
# A header line feedparser takes without remark: a non-empty name of printable ASCII, then a colon.
_HEADER_NAME = re.compile(r"[\041-\071\073-\176]+:")
_CRLF = b"\r\n"
_LF = 0x0A
_PLAIN_ENCODINGS = ("7bit", "8bit", "binary")


def build(raw: bytes) -> Message | None:
    """The parsed message, or None when only the full parse can say what it is."""
    crlf = raw.count(_CRLF)
    # Only CRLF line ends: then feedparser's lines (split at CR, LF and CRLF) are the CRLF lines.
    if raw.count(b"\n") != crlf or raw.count(b"\r") != crlf:
        return None
    return _entity(raw, 0, len(raw), digest=False)


def _text(raw: bytes, start: int, stop: int) -> str:
    # BytesParser decodes the whole message this way before parsing it.
    return raw[start:stop].decode("ascii", errors="surrogateescape")


def _strip_eol(text: str) -> str:
    # RFC 2046: the line end before a boundary belongs to the boundary (feedparser's NLCRE_eol).
    return text[:-2] if text.endswith("\r\n") else text


def _entity(raw: bytes, start: int, stop: int, *, digest: bool, in_multipart: bool = False) -> Message | None:
    """Headers and body of the entity in raw[start:stop] (a whole message or one part)."""
    if raw.startswith(_CRLF, start):
        return None  # a part without headers: rare, left to the full parse
    header_end = raw.find(b"\r\n\r\n", start, stop)
    if header_end < 0:
        return None
    body_start = header_end + 4
    msg = _headers(_text(raw, start, header_end))
    if msg is None:
        return None
    if digest:
        msg.set_default_type("message/rfc822")
    maintype = msg.get_content_maintype()
    if maintype == "message":
        return None
    if maintype != "multipart":
        payload = _text(raw, body_start, stop)
        msg.set_payload(_strip_eol(payload) if in_multipart else payload)
        return msg
    return msg if _split(msg, raw, body_start, stop) else None


def _headers(block: str) -> Message | None:
    """A message holding the headers of `block` (CRLF-separated lines), as feedparser stores them."""
    msg = Message()
    name = ""
    value: list[str] = []
    for line in block.split("\r\n"):
        if line[:1] in (" ", "\t"):
            if not name:
                return None  # FirstHeaderLineIsContinuationDefect
            value.append(line + "\r\n")
            continue
        if name:
            msg.set_raw(*_source_parse(value))
        match = _HEADER_NAME.match(line)
        if match is None:
            return None  # a unix From line, a missing name or colon: feedparser has rules (and defects)
        name = line[: match.end() - 1]
        value = [line + "\r\n"]
    if name:
        msg.set_raw(*_source_parse(value))
    return msg


def _source_parse(lines: list[str]) -> tuple[str, str]:
    # compat32's header_source_parse: the name, and the raw value with its folding kept.
    name, value = lines[0].split(":", 1)
    return name, (value.lstrip(" \t") + "".join(lines[1:])).rstrip("\r\n")


def _boundary_lines(
    raw: bytes, start: int, stop: int, separator: bytes
) -> list[tuple[int, int, bool]] | None:
    """(line start, line end, is the close boundary) of each boundary line up to the close one."""
    lines: list[tuple[int, int, bool]] = []
    pos = start
    while True:
        at = raw.find(separator, pos, stop)
        if at < 0:
            return lines
        eol = raw.find(_CRLF, at, stop)
        line_end = stop if eol < 0 else eol + 2
        pos = line_end
        if at != start and raw[at - 1] != _LF:
            continue  # not at the start of a line: content
        match = _AFTER_SEPARATOR.match(raw, at + len(separator), line_end)
        if match is None:
            continue  # `--boundary` followed by more text: content
        closing = match.group(1) is not None
        if lines and lines[-1][1] == at:
            return None  # consecutive boundary lines: feedparser swallows them, not mirrored here
        lines.append((at, line_end, closing))
        if closing:
            return lines


def _split(msg: Message, raw: bytes, start: int, stop: int) -> bool:
    """Attach the parts of multipart `msg`, whose body is raw[start:stop]; False when not mirrored."""
    boundary = msg.get_boundary()
    if boundary is None:
        return False
    if str(msg.get("content-transfer-encoding", "8bit")).lower() not in _PLAIN_ENCODINGS:
        return False
    try:
        separator = ("--" + boundary).encode("ascii", errors="surrogateescape")
    except UnicodeEncodeError:
        return False
    lines = _boundary_lines(raw, start, stop, separator)
    # Needed: a first boundary that opens a part, and a close boundary (no defect either way).
    if not lines or lines[0][2] or not lines[-1][2]:
        return False
    first = lines[0][0]
    if first > start:
        msg.preamble = _strip_eol(_text(raw, start, first))
    msg.set_payload([])  # the parts are attached below (the header-only message had a text payload)
    digest = msg.get_content_type() == "multipart/digest"
    for (_, part_start, _), (part_stop, _, _) in itertools.pairwise(lines):
        part = _entity(raw, part_start, part_stop, digest=digest, in_multipart=True)
        if part is None:
            return False
        if part.get_content_maintype() == "multipart":
            epilogue = part.epilogue
            part.epilogue = None if epilogue == "" else _strip_eol(epilogue) if epilogue is not None else None
        msg.attach(part)
    # Everything after the close boundary line is the epilogue (its line end stays with the boundary).
    msg.epilogue = _text(raw, lines[-1][1], stop)
    return True
