"""Shared pieces of the reliability tests: worker processes that can be SIGKILLed, a second API
on a database of the test's own, and exact comparisons of what is stored with what is served."""

from __future__ import annotations

import hashlib
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import imapclient
import psycopg

from harness.dovecot import DovecotServer
from harness.ports import free_port
from harness.processes import stop as stop_processes
from harness.service import worker_env
from sync_function.config import Config

REPO = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """`python -m sync_function.cli worker` as a real process, so that SIGKILL is a real crash.

    Output goes to a file that the secret-leak tests read afterwards.
    """

    def __init__(self, settings: Config, log_path: Path, **env: str) -> None:
        self.env = {**worker_env(settings), "PYTHONUNBUFFERED": "1", **env}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sync_function.cli", "worker"],
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye to Postgres or IMAP, exactly like a lost host."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None:
            stop_processes([self.process])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextmanager
def worker_process(settings: Config, log_path: Path, **env: str) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(settings, log_path, **env)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


# Fast stalled-job recovery: a worker silent for 3 x 0.5 s is dead, checked every 0.5 s.
FAST_RECOVERY = {
    "AUTOSYNC_HEARTBEAT_SECONDS": "0.5",
    "AUTOSYNC_STALLED_CHECK_SECONDS": "0.5",
    "AUTOSYNC_RETRY_BASE_SECONDS": "0.5",
    "AUTOSYNC_MAX_ATTEMPTS": "20",
    "AUTOSYNC_IMAP_TIMEOUT_SECONDS": "5",
    "AUTOSYNC_LOG_LEVEL": "info",
}


def served(dovecot: DovecotServer, user: str, mailbox: str = "INBOX") -> dict[int, str]:
    """UID -> SHA-256 of the bytes Dovecot serves in `mailbox`, fetched in a few large chunks."""
    client = imapclient.IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=30)
    try:
        client.login(user, dovecot.users[user])
        client.select_folder(mailbox, readonly=True)
        uids = client.search(["ALL"])
        out: dict[int, str] = {}
        for start in range(0, len(uids), 1000):
            data = client.fetch(uids[start : start + 1000], ["BODY.PEEK[]"])
            out.update({uid: hashlib.sha256(item[b"BODY[]"]).hexdigest() for uid, item in data.items()})
        return out
    finally:
        client.logout()


def stored(database_url: str, user_id: uuid.UUID) -> list[tuple[int, str]]:
    """(UID, SHA-256) of every stored message of the user, duplicates included, in UID order."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT uid, encode(sha256, 'hex') FROM public.messages WHERE user_id = %s ORDER BY uid",
            (user_id,),
        ).fetchall()
    return [(int(uid), str(digest)) for uid, digest in rows]


def stored_count(database_url: str, user_id: uuid.UUID) -> int:
    with psycopg.connect(database_url, connect_timeout=2) as conn:
        row = conn.execute("SELECT count(*) FROM public.messages WHERE user_id = %s", (user_id,)).fetchone()
    return int(row[0]) if row else 0


def run_row(database_url: str, run_id: str) -> tuple[str, int, int, str | None]:
    with psycopg.connect(database_url, connect_timeout=2) as conn:
        row = conn.execute(
            "SELECT status, attempts, messages_imported, error FROM public.sync_runs WHERE id = %s", (run_id,)
        ).fetchone()
    assert row is not None, f"no run {run_id}"
    return row  # type: ignore[return-value]


def attempts_of(database_url: str, run_id: str) -> list[tuple[int, str, str | None, str | None]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(  # type: ignore[return-value]
            """SELECT attempt, status, error, worker FROM public.sync_run_attempts
               WHERE run_id = %s ORDER BY attempt""",
            (run_id,),
        ).fetchall()


class SilentServer:
    """A loopback TCP server that accepts connections and never says a word (a stalled IMAP server)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                self.accepted.append(self.sock.accept()[0])
            except (TimeoutError, OSError):
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    return free_port()


def wait_until(predicate, *, timeout_s: float, every_s: float = 0.1, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every_s)
    raise AssertionError(f"{what} did not happen within {timeout_s} s")
