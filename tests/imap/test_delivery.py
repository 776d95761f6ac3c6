"""The test Dovecot's delivery: file names carry the sizes Dovecot reports, as its own delivery does."""

from __future__ import annotations

import re

import imapclient
import pytest

from harness import mailgen
from harness.dovecot import DovecotServer, maildir_name

pytestmark = pytest.mark.docker

# Every line-end shape a test delivers: the S= and W= of each name must be what Dovecot serves.
SHAPES: dict[str, bytes] = {
    "crlf": b"Subject: crlf\r\n\r\nbody\r\n",
    "bare lf": b"Subject: lf\n\nline one\nline two\n",
    "bare cr": b"Subject: cr\r\n\r\nhalf\rline\r\n",
    "mixed": b"Subject: mixed\r\nX-A: 1\n\r\nbody\nmore\r\nend",
    "no final line end": b"Subject: open\r\n\r\nno end",
    "nul": b"Subject: nul\r\n\r\nbefore\x00after\r\n",
}
BARE_LF = re.compile(rb"(?<!\r)\n")


def test_names_carry_size_and_virtual_size() -> None:
    name = maildir_name(7, b"a\nb\r\nc\n")
    assert name.endswith(",S=7,W=9")
    # The timestamp that starts the name orders UIDs: a later delivery sorts after.
    assert maildir_name(7, b"").split(".")[0] < maildir_name(8, b"").split(".")[0]


def test_dovecot_reports_the_sizes_it_serves_for_every_line_end_shape(dovecot: DovecotServer) -> None:
    user, password = dovecot.new_user("delivery")
    generated = [g.raw for g in mailgen.generate(40, seed=11)]
    delivered = [*SHAPES.values(), *generated]
    dovecot.deliver(user, delivered)

    client = imapclient.IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=30)
    try:
        client.login(user, password)
        client.select_folder("INBOX", readonly=True)
        data = client.fetch(client.search(["ALL"]), ["RFC822.SIZE", "BODY.PEEK[]"])
        sizes = {uid: int(item[b"RFC822.SIZE"]) for uid, item in data.items()}
        served = {uid: item[b"BODY[]"] for uid, item in data.items()}
        threshold = sorted(sizes.values())[len(sizes) // 2]
        larger = set(client.search(["LARGER", threshold]))
    finally:
        client.logout()

    assert len(served) == len(delivered)
    # The size Dovecot announces (taken from W= in the name) is the length of what it then sends.
    assert {uid: len(body) for uid, body in served.items()} == sizes
    # In delivery order, and each the delivered bytes with bare LFs made CRLF (and NUL replaced).
    for (uid, body), raw in zip(sorted(served.items()), delivered, strict=True):
        assert body == mailgen.served_bytes(BARE_LF.sub(b"\r\n", raw)), uid
    assert larger == {uid for uid, size in sizes.items() if size > threshold}
    # Dovecot checks a name's sizes against the file when it reads it, and logs any mismatch.
    assert "size" not in "\n".join(
        line for line in dovecot.log().splitlines() if user in line and ("rror" in line or "arning" in line)
    )
