"""A real Dovecot 2.4 (IMAP, STARTTLS, IMAPS) in a container on free loopback ports.

Mail is injected by writing files straight into Maildirs through the Docker API (one tar per
call), which is orders of magnitude faster than APPEND and leaves messages unread and unflagged.
"""

from __future__ import annotations

import contextlib
import io
import re
import secrets
import ssl
import tarfile
import threading
import time
from collections.abc import Iterable, Iterator

import docker
import imapclient
from docker.models.containers import Container

from harness import docker_local
from harness.dovecot_spec import (
    CERT_FILE,
    MAIL_GID,
    MAIL_ROOT,
    MAIL_UID,
    DovecotConfig,
    dovecot_container,
    dovecot_image,
    user_file,
)
from harness.ports import free_port, unique_name
from sync_function.destinations import DestinationPolicy

# Bytes per tar sent to the engine: bounds memory when benchmarks deliver many thousands.
# The test Dovecot listens on loopback, which the service refuses unless allowed: callers pass this.
LOOPBACK_ALLOWED = DestinationPolicy.parse(["127.0.0.0/8", "::1/128"])
TAR_CHUNK_BYTES = 64 * 1024 * 1024
_LOGOUT = re.compile(r"imap\((?P<user>[^)]+)\).*?Disconnected: .*?body_count=(?P<bodies>\d+)")


def maildir_name(seq: int, data: bytes) -> str:
    """The file name Dovecot's own delivery gives a message: unique base, then ,S=size,W=vsize.

    Dovecot sorts new files by the timestamp that starts the name when it assigns UIDs. The sizes
    (S: bytes on disk, W: with every bare LF counted as CRLF, what IMAP reports) are what a server
    that delivered the mail itself knows without opening the file; without them every SEARCH
    LARGER or RFC822.SIZE makes Dovecot read the whole mailbox.
    """
    vsize = len(data) + data.count(b"\n") - data.count(b"\r\n")
    return f"{1_600_000_000 + seq}.M{seq}P1.autosync,S={len(data)},W={vsize}"


class DovecotServer:
    """A running Dovecot container and helpers to arrange mailboxes for a test."""

    def __init__(self, engine: docker.DockerClient, container: Container, config: DovecotConfig) -> None:
        self.engine = engine
        self.container = container
        self.config = config
        self.host = config.host
        self.port = config.imap_port
        self.tls_port = config.imaps_port
        self.users: dict[str, str] = dict(config.users)
        self.cert_pem = self._read_file(CERT_FILE).decode()
        self._lock = threading.Lock()
        self._sequence = 0
        self._maildirs: set[str] = set()

    # -- TLS -----------------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying context that trusts exactly this server's self-signed certificate."""
        return ssl.create_default_context(cadata=self.cert_pem)

    # -- users ---------------------------------------------------------------------------------

    def add_user(self, name: str, password: str) -> None:
        """Create a user, usable at once. (A changed password takes Dovecot a few seconds to see.)"""
        path, content = user_file(name, password)
        with self._lock:
            self.users[name] = password
            # Readable by Dovecot's auth process through the users.d directory's group.
            self._put({path: content}, mode=0o644)

    def add_users_with_mail(
        self, users: dict[str, str], messages: list[bytes], *, chunk: int = 2_000
    ) -> None:
        """Many users at once, each with the same `messages` as new mail in INBOX (benchmarks).

        One tar per `chunk` users instead of two Docker calls per user: 10,000 users take seconds.
        """
        names = list(users)
        for start in range(0, len(names), chunk):
            part = names[start : start + chunk]
            credentials = dict(user_file(name, users[name]) for name in part)
            with self._lock:
                self.users.update({name: users[name] for name in part})
                self._put(credentials, mode=0o644)
            files: dict[str, bytes] = {}
            dirs: list[str] = []
            for name in part:
                directory = self.maildir(name)
                dirs += [directory, *(f"{directory}/{sub}" for sub in ("cur", "new", "tmp"))]
                self._maildirs.add(directory)
                for seq, data in enumerate(messages, start=1):
                    files[f"{directory}/new/{maildir_name(seq, data)}"] = data
            self._put(files, dirs=dirs, mode=0o600, uid=MAIL_UID, gid=MAIL_GID)

    def new_user(self, prefix: str = "user") -> tuple[str, str]:
        """A fresh user with a random password: tests never share a mailbox."""
        name = f"{prefix}-{secrets.token_hex(4)}"
        password = secrets.token_urlsafe(12)
        self.add_user(name, password)
        return name, password

    # -- mail ----------------------------------------------------------------------------------

    def maildir(self, user: str, mailbox: str = "INBOX") -> str:
        if mailbox.upper() == "INBOX":
            return f"{MAIL_ROOT}/{user}"
        # Maildir++: a folder is a dot-directory, "." separates levels.
        return f"{MAIL_ROOT}/{user}/.{mailbox.replace('/', '.')}"

    def deliver(self, user: str, raw: bytes | Iterable[bytes], mailbox: str = "INBOX") -> int:
        """Put messages into `user`'s `mailbox` (created if needed) as new mail; returns how many.

        UIDs are assigned in delivery order (file names carry increasing timestamps).
        """
        messages = [raw] if isinstance(raw, bytes) else raw
        directory = self.maildir(user, mailbox)
        count = 0
        files: dict[str, bytes] = {}
        size = 0
        for data in messages:
            with self._lock:
                self._sequence += 1
                seq = self._sequence
            files[f"{directory}/new/{maildir_name(seq, data)}"] = data
            size += len(data)
            count += 1
            if size >= TAR_CHUNK_BYTES:
                self._deliver_files(directory, files)
                files, size = {}, 0
        if files:
            self._deliver_files(directory, files)
        return count

    def _deliver_files(self, directory: str, files: dict[str, bytes]) -> None:
        dirs: list[str] = []
        if directory not in self._maildirs:
            # Directories only on first use: re-sending them would reset new/'s mtime, which
            # Dovecot reads to notice new mail.
            user_dir = (
                directory if directory.count("/") == MAIL_ROOT.count("/") + 1 else directory.rsplit("/", 1)[0]
            )
            dirs = [user_dir, directory, *(f"{directory}/{sub}" for sub in ("cur", "new", "tmp"))]
            self._maildirs.add(directory)
        self._put(files, dirs=dirs, mode=0o600, uid=MAIL_UID, gid=MAIL_GID)

    def reset_uidvalidity(self, user: str, mailbox: str = "INBOX") -> int:
        """Give the mailbox a new UIDVALIDITY (as a server restore would); returns it."""
        current = self.status(user, mailbox)[b"UIDVALIDITY"]
        new = current + 1000
        self._exec(["doveadm", "mailbox", "update", "-u", user, "--uid-validity", str(new), mailbox])
        return new

    def expunge(self, user: str, uids: Iterable[int], mailbox: str = "INBOX") -> None:
        """Delete messages on the server (as a user's other mail client would)."""
        client = self._login(user)
        try:
            client.select_folder(mailbox)
            client.delete_messages(list(uids))
            client.expunge()
        finally:
            client.logout()

    def rename_folder(self, user: str, old: str, new: str) -> None:
        """Rename a folder on the server (as a user's other mail client would)."""
        client = self._login(user)
        try:
            client.rename_folder(old, new)
        finally:
            client.logout()

    def _login(self, user: str) -> imapclient.IMAPClient:
        client = imapclient.IMAPClient(self.host, port=self.port, ssl=False, timeout=30)
        try:
            client.login(user, self.users[user])
        except BaseException:
            client.shutdown()  # a refused login must not leave the socket open
            raise
        return client

    def status(self, user: str, mailbox: str = "INBOX") -> dict[bytes, int]:
        client = self._login(user)
        try:
            return client.folder_status(mailbox, ["UIDVALIDITY", "UIDNEXT", "MESSAGES"])
        finally:
            client.logout()

    def flags(self, user: str, mailbox: str = "INBOX") -> dict[int, tuple[bytes, ...]]:
        """UID → flags, read without changing anything (EXAMINE)."""
        client = self._login(user)
        try:
            client.select_folder(mailbox, readonly=True)
            uids = client.search(["ALL"])
            data = client.fetch(uids, ["FLAGS"]) if uids else {}
            return {uid: tuple(item[b"FLAGS"]) for uid, item in data.items()}
        finally:
            client.logout()

    def messages(self, user: str, mailbox: str = "INBOX") -> dict[int, bytes]:
        """UID → the bytes the server serves, fetched with BODY.PEEK[] (nothing marked read)."""
        client = self._login(user)
        try:
            client.select_folder(mailbox, readonly=True)
            uids = client.search(["ALL"])
            out: dict[int, bytes] = {}
            for start in range(0, len(uids), 500):
                data = client.fetch(uids[start : start + 500], ["BODY.PEEK[]"])
                out.update({uid: item[b"BODY[]"] for uid, item in data.items()})
            return out
        finally:
            client.logout()

    # -- logs and lifecycle --------------------------------------------------------------------

    def log(self) -> str:
        return self.container.logs().decode(errors="replace")

    def bodies_fetched(self, user: str, *, sessions: int = 0, timeout_s: float = 10.0) -> list[int]:
        """Per finished session of `user`, how many bodies it fetched (from Dovecot's logout line).

        Dovecot logs a logout just after the client has gone: wait until `sessions` lines are in.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            counts = [int(m["bodies"]) for m in _LOGOUT.finditer(self.log()) if m["user"] == user]
            if len(counts) >= sessions or time.monotonic() > deadline:
                return counts
            time.sleep(0.05)

    def stop(self) -> None:
        self.container.stop(timeout=5)

    def start(self) -> None:
        self.container.start()
        docker_local.wait_healthy(self.container, timeout_s=60)

    # -- docker plumbing -----------------------------------------------------------------------

    def _exec(self, command: list[str]) -> str:
        result = self.container.exec_run(command)
        output = result.output.decode(errors="replace")
        if result.exit_code != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.exit_code}): {output}")
        return output

    def _read_file(self, path: str) -> bytes:
        deadline = time.monotonic() + 30
        while True:
            try:
                chunks, _ = self.container.get_archive(path)
                break
            except docker.errors.NotFound:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            member = tar.next()
            assert member is not None
            extracted = tar.extractfile(member)
            assert extracted is not None
            return extracted.read()

    def _put(
        self,
        files: dict[str, bytes],
        *,
        dirs: Iterable[str] = (),
        mode: int,
        uid: int = 0,
        gid: int = 0,
        mtime: int | None = None,
    ) -> None:
        """Write files (absolute paths) in one tar; `dirs` are created first, owned like the files."""
        when = mtime if mtime is not None else int(time.time())
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for directory in dirs:
                info = tarfile.TarInfo(directory.lstrip("/"))
                info.type = tarfile.DIRTYPE
                info.mode = 0o700
                info.uid, info.gid, info.mtime = uid, gid, when
                tar.addfile(info)
            for path, data in files.items():
                info = tarfile.TarInfo(path.lstrip("/"))
                info.size = len(data)
                info.mode = mode
                info.uid, info.gid, info.mtime = uid, gid, when
                tar.addfile(info, io.BytesIO(data))
        if not self.container.put_archive("/", buffer.getvalue()):
            raise RuntimeError(f"writing {len(files)} file(s) into {self.container.name} failed")


@contextlib.contextmanager
def running_dovecot(
    engine: docker.DockerClient, *, oauth2_introspection_url: str | None = None
) -> Iterator[DovecotServer]:
    """A fresh Dovecot (image built on demand) until the block ends; then its container is removed.

    With `oauth2_introspection_url`, it also accepts XOAUTH2/OAUTHBEARER logins whose bearer
    token that endpoint calls active for the user.
    """
    image_tag = docker_local.ensure_image(engine, dovecot_image())
    env_name = unique_name("autosync-test")
    config = DovecotConfig(
        name=f"{env_name}-dovecot",
        imap_port=free_port(),
        imaps_port=free_port(),
        oauth2_introspection_url=oauth2_introspection_url,
    )
    try:
        container = docker_local.run(
            engine, dovecot_container(config), env_name=env_name, image_tag=image_tag
        )
        docker_local.wait_healthy(container, timeout_s=60)
        yield DovecotServer(engine, container, config)
    finally:
        docker_local.remove_environment(engine, env_name)
