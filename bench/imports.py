"""Full import, no-op and memory: autosync against mbsync and the raw `UID FETCH` ceiling.

All three read the same Dovecot mailbox over plain IMAP on loopback. The autosync import runs in a
child process (`bench.import_child`) so that its wall time and peak RSS are its own.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.env import BenchEnv
from harness import mailgen
from harness.dovecot import LOOPBACK_ALLOWED
from sync_function.imap import connect
from sync_function.importer import ImapAccount, import_mailbox

LITERAL = re.compile(rb"\{(\d+)\}\r\n$")
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mailbox:
    """A Dovecot user with `count` generated messages and the account row that imports it."""

    user: str
    password: str
    user_id: uuid.UUID
    account_id: uuid.UUID
    count: int
    bytes: int
    host: str
    port: int

    @property
    def account(self) -> ImapAccount:
        return ImapAccount(
            account_id=self.account_id,
            host=self.host,
            port=self.port,
            tls_mode="plain",
            username=self.user,
            password=self.password,
        )


def make_mailbox(env: BenchEnv, count: int, *, seed: int) -> Mailbox:
    """Deliver `count` mailgen messages (1 KB-200 KB, attachments, malformed kinds) as new mail."""
    assert env.dovecot is not None
    dovecot = env.dovecot
    user, password = dovecot.new_user("bench")
    total = 0

    def raws() -> Any:
        nonlocal total
        # A generator: 100,000 messages are never all in memory at once.
        for generated in mailgen.iter_messages(count, seed=seed):
            total += len(generated.served)
            yield generated.raw

    dovecot.deliver(user, raws())
    with env.connect() as conn:
        user_id = uuid.uuid4()
        conn.execute("INSERT INTO auth.users (id, email) VALUES (%s, %s)", (user_id, f"{user_id}@bench.test"))
        row = conn.execute(
            """INSERT INTO public.email_accounts (user_id, host, port, tls_mode, username, password_encrypted, mailbox)
               VALUES (%s, %s, %s, 'plain', %s, %s, 'INBOX') RETURNING id""",
            (user_id, dovecot.host, dovecot.port, user, b"not-used-by-the-benchmark"),
        ).fetchone()
    assert row is not None
    return Mailbox(user, password, user_id, row[0], count, total, dovecot.host, dovecot.port)


# -- the raw ceiling ---------------------------------------------------------------------------


def raw_fetch(box: Mailbox) -> dict[str, float]:
    """One `UID FETCH 1:* BODY.PEEK[]` over a bare socket, bodies counted and dropped.

    No IMAP library, no parsing beyond finding literals: the fastest a client can pull this mailbox.
    """
    started = time.perf_counter()
    with socket.create_connection((box.host, box.port), timeout=120) as sock:
        stream = sock.makefile("rb", buffering=1 << 20)
        stream.readline()  # greeting

        def command(tag: bytes, text: bytes) -> tuple[int, int]:
            sock.sendall(tag + b" " + text + b"\r\n")
            messages = body_bytes = 0
            while True:
                line = stream.readline()
                if not line:
                    raise ConnectionError("Dovecot closed the connection")
                literal = LITERAL.search(line)
                if literal:
                    size = int(literal.group(1))
                    remaining = size
                    while remaining:
                        chunk = stream.read(min(remaining, 1 << 20))
                        remaining -= len(chunk)
                    messages += 1
                    body_bytes += size
                    continue
                if line.startswith(tag + b" "):
                    if not line.startswith(tag + b" OK"):
                        raise RuntimeError(line.decode(errors="replace"))
                    return messages, body_bytes

        command(b"a1", b"LOGIN " + box.user.encode() + b" " + box.password.encode())
        command(b"a2", b"EXAMINE INBOX")
        count, size = command(b"a3", b"UID FETCH 1:* (BODY.PEEK[])")
        command(b"a4", b"LOGOUT")
    seconds = time.perf_counter() - started
    return {"messages": count, "bytes": size, "seconds": seconds}


def client_fetch(box: Mailbox, *, batch: int = 200) -> dict[str, float]:
    """The importer's own fetch path (sync_function.imap, imapclient) with nothing stored."""
    started = time.perf_counter()
    count = size = 0
    with connect(host=box.host, port=box.port, tls_mode="plain", username=box.user, password=box.password,
                 allowed=LOOPBACK_ALLOWED) as session:
        session.examine("INBOX")
        uids = session.search_uids(min_uid=1)
        for start in range(0, len(uids), batch):
            for message in session.fetch_messages(uids[start : start + batch]):
                count += 1
                size += len(message.raw)
    return {"messages": count, "bytes": size, "seconds": time.perf_counter() - started}


# -- autosync ----------------------------------------------------------------------------------


def autosync_import(env: BenchEnv, box: Mailbox, *, profile: str | None = None) -> dict[str, Any]:
    """A full import of `box` in a child process: counts, wall time, peak RSS."""
    args = {
        "database_url": env.database_url,
        "account_id": str(box.account_id),
        "user_id": str(box.user_id),
        "host": box.host,
        "port": box.port,
        "username": box.user,
        "password": box.password,
        "profile": profile,
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench.import_child", json.dumps(args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the import child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["imported"] != box.count:
        raise RuntimeError(f"autosync imported {result['imported']} of {box.count} messages")
    return result


def autosync_noop(env: BenchEnv, box: Mailbox, runs: int) -> list[float]:
    """Wall time of `runs` incremental imports with nothing new, as a warm worker runs them."""
    times: list[float] = []
    with env.connect() as conn:
        for _ in range(runs):
            started = time.perf_counter()
            result = import_mailbox(conn, account=box.account, user_id=box.user_id, allowed=LOOPBACK_ALLOWED)
            times.append(time.perf_counter() - started)
            if not result.unchanged:
                raise RuntimeError("a no-op import found something to do")
    return times


def forget_import(env: BenchEnv, box: Mailbox) -> None:
    """Remove what an import of `box` stored, so that the next one is a full import again.

    VACUUM too, so that no autovacuum of the deleted rows runs during the next timed import.
    """
    with env.connect() as conn:
        conn.execute("DELETE FROM public.message_folders WHERE account_id = %s", (box.account_id,))
        conn.execute("DELETE FROM public.messages WHERE account_id = %s", (box.account_id,))
        conn.execute("DELETE FROM public.mailbox_state WHERE account_id = %s", (box.account_id,))
        conn.execute("VACUUM public.messages")


@dataclass
class ImportRounds:
    """Full imports of one mailbox by autosync and by mbsync, timed in alternation."""

    autosync: list[dict[str, Any]] = field(default_factory=list)
    mbsync_s: list[float] = field(default_factory=list)
    # Per round, autosync's messages/s over mbsync's: the two ran back to back, under the same load.
    ratios: list[float] = field(default_factory=list)

    @property
    def median_ratio(self) -> float:
        return statistics.median(self.ratios)


def import_rounds(env: BenchEnv, box: Mailbox, repeats: int, *, profile: str | None = None) -> tuple[ImportRounds, Mbsync]:
    """One untimed warm-up of each side, then `repeats` rounds of one import each.

    The side that goes first alternates from round to round, so that neither always meets the
    machine in the state the other left it in. Each autosync import starts from an empty store
    (`forget_import`), each mbsync from an empty Maildir. Returns the rounds and the last mbsync,
    whose Maildir is in sync (the no-op benchmark continues from it); the caller cleans it up.
    """
    rounds = ImportRounds()
    previous: Mbsync | None = None

    def mbsync_once() -> float:
        nonlocal previous
        if previous is not None:
            previous.cleanup()
        previous = Mbsync(box)
        seconds = previous.run()
        if previous.messages() != box.count:
            raise RuntimeError(f"mbsync pulled {previous.messages()} of {box.count} messages")
        return seconds

    def autosync_once(profile: str | None = None) -> dict[str, Any]:
        forget_import(env, box)
        return autosync_import(env, box, profile=profile)

    try:
        autosync_once()
        mbsync_once()
        for round_no in range(repeats):
            # Profile the last round only: the profiler slows the import it watches.
            wanted_profile = profile if round_no == repeats - 1 else None
            if round_no % 2 == 0:
                ours = autosync_once(wanted_profile)
                theirs = mbsync_once()
            else:
                theirs = mbsync_once()
                ours = autosync_once(wanted_profile)
            rounds.autosync.append(ours)
            rounds.mbsync_s.append(theirs)
            rounds.ratios.append(theirs / ours["seconds"])
    except BaseException:
        if previous is not None:
            previous.cleanup()
        raise
    assert previous is not None
    return rounds, previous


# -- mbsync ------------------------------------------------------------------------------------


class Mbsync:
    """mbsync (isync) pulling `box` into a Maildir of its own, configured for plain IMAP."""

    def __init__(self, box: Mailbox) -> None:
        if shutil.which("mbsync") is None:
            raise RuntimeError("mbsync is missing: apt-get install isync (bench/run does it)")
        self.box = box
        self.dir = Path(tempfile.mkdtemp(prefix="autosync-bench-mbsync-"))
        self.maildir = self.dir / "mail"
        self.maildir.mkdir()
        self.config = self.dir / "mbsyncrc"
        # Defaults otherwise (FSync on, unlimited pipeline depth): mbsync as its users run it.
        self.config.write_text(
            f"""IMAPAccount bench
Host {box.host}
Port {box.port}
User {box.user}
Pass "{box.password}"
SSLType None
AuthMechs LOGIN PLAIN

IMAPStore bench-far
Account bench

MaildirStore bench-near
Path {self.maildir}/
Inbox {self.maildir}/INBOX

Channel bench
Far :bench-far:
Near :bench-near:
Patterns INBOX
Sync Pull
Create Near
SyncState *
"""
        )
        self.config.chmod(0o600)

    def run(self) -> float:
        started = time.perf_counter()
        done = subprocess.run(
            ["mbsync", "-q", "-c", str(self.config), "bench"], capture_output=True, text=True, check=False
        )
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"mbsync failed ({done.returncode}): {done.stderr[-2000:]}")
        return seconds

    def messages(self) -> int:
        inbox = self.maildir / "INBOX"
        return sum(1 for sub in ("cur", "new") for _ in (inbox / sub).iterdir())

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
