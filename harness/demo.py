"""The local environment's demo: a mailbox that syncs, a user who syncs it, and a link to the page.

`make up` (unless `--no-demo`) runs a Dovecot named after the environment and labelled with it (so
`make down` removes it), fills a demo mailbox with a few hundred generated messages (threads,
attachments, non-ASCII, some malformed), and creates a demo user whose account points at it with
auto-sync on every 5 minutes. Inside the Dovecot container a shell loop drops one more message into
the Maildir every `DEMO_MAIL_EVERY_S` seconds, so the next runs import something; it lives as long
as the container does (a pid file keeps a second `up` from starting a second loop).

Everything is idempotent: a second `up` reuses the user, the account and the mail.
"""

from __future__ import annotations

import io
import secrets
import tarfile
import time
import uuid
from dataclasses import dataclass

import docker
import httpx
import psycopg

from harness import docker_local, mailgen
from harness.dovecot import DovecotServer
from harness.dovecot_spec import (
    MAIL_GID,
    MAIL_ROOT,
    MAIL_UID,
    DovecotConfig,
    dovecot_container,
    dovecot_image,
)
from harness.tokens import user_token

DEMO_EMAIL = "demo@autosync.invalid"
DEMO_MAILBOX_USER = "demo"
DEMO_MESSAGES = 300
DEMO_INTERVAL_MINUTES = 5
DEMO_MAIL_EVERY_S = 180
DEMO_LINK_TTL_S = 3600
POOL_DIR = "/srv/demo-pool"
POOL_SIZE = 40

# Copies the pool's messages into the demo Maildir one at a time, as new mail. Dovecot assigns UIDs
# in file-name order, hence the time-stamped names; the pid file makes a second start a no-op.
ARRIVAL_LOOP = f"""
set -u
pidfile=/run/autosync-demo-mail.pid
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then exit 0; fi
echo $$ > "$pidfile"
i=0
while sleep "$1"; do
    files=({POOL_DIR}/*.eml)
    [ -e "${{files[0]}}" ] || continue
    source=${{files[$((i % ${{#files[@]}}))]}}
    name="$(date +%s).M$i.P$$.demo"
    cp "$source" "{MAIL_ROOT}/{DEMO_MAILBOX_USER}/tmp/$name"
    chown {MAIL_UID}:{MAIL_GID} "{MAIL_ROOT}/{DEMO_MAILBOX_USER}/tmp/$name"
    mv "{MAIL_ROOT}/{DEMO_MAILBOX_USER}/tmp/$name" "{MAIL_ROOT}/{DEMO_MAILBOX_USER}/new/$name"
    i=$((i + 1))
done
"""  # noqa: S108 - the Maildir's own tmp/ (deliver there, then rename into new/), not /tmp


@dataclass(frozen=True)
class Demo:
    user_id: uuid.UUID
    imap_port: int
    messages: int
    link: str


def dovecot_config(env_name: str, *, imap_port: int, imaps_port: int) -> DovecotConfig:
    return DovecotConfig(name=f"{env_name}-dovecot", imap_port=imap_port, imaps_port=imaps_port)


def demo_link(api_url: str, *, user_id: uuid.UUID, jwt_secret: str, ttl_s: int = DEMO_LINK_TTL_S) -> str:
    """The page's address with a short-lived token in the fragment (never sent to the server)."""
    token = user_token(jwt_secret, user_id, expires_in=ttl_s, iat=int(time.time()))
    return f"{api_url}/app/#token={token}"


def start(
    engine: docker.DockerClient,
    *,
    env_name: str,
    config: DovecotConfig,
    password: str,
    database_url: str,
    api_url: str,
    jwt_secret: str,
    mail_every_s: int = DEMO_MAIL_EVERY_S,
) -> Demo:
    """Run the demo's Dovecot, mail, user and account (reusing what exists); returns the page link."""
    spec = dovecot_container(config)
    tag = docker_local.ensure_image(engine, dovecot_image())
    running = engine.containers.list(filters={"name": f"^{spec.name}$", "status": "running"})
    container = running[0] if running else docker_local.run(engine, spec, env_name=env_name, image_tag=tag)
    docker_local.wait_healthy(container, timeout_s=60)
    server = DovecotServer(engine, container, config)
    server.add_user(DEMO_MAILBOX_USER, password)
    messages = _fill_mailbox(server)
    _put_pool(container)
    container.exec_run(["bash", "-c", ARRIVAL_LOOP, "arrivals", str(mail_every_s)], detach=True)

    user_id = _demo_user(database_url)
    token_link = demo_link(api_url, user_id=user_id, jwt_secret=jwt_secret)
    token = token_link.split("#token=", 1)[1]
    _configure_user(api_url, token=token, imap_port=config.imap_port, password=password)
    return Demo(user_id=user_id, imap_port=config.imap_port, messages=messages, link=token_link)


def _fill_mailbox(server: DovecotServer) -> int:
    """The initial few hundred messages, delivered once; returns how many the mailbox holds."""
    held = server.status(DEMO_MAILBOX_USER).get(b"MESSAGES", 0)
    if held == 0:
        server.deliver(DEMO_MAILBOX_USER, [m.raw for m in mailgen.generate(DEMO_MESSAGES, seed=2026)])
        held = server.status(DEMO_MAILBOX_USER)[b"MESSAGES"]
    return int(held)


def _put_pool(container) -> None:  # type: ignore[no-untyped-def]
    """The messages the arrival loop hands out, one file each (a different seed than the mailbox)."""
    buffer = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        directory = tarfile.TarInfo(POOL_DIR.lstrip("/"))
        directory.type, directory.mode, directory.mtime = tarfile.DIRTYPE, 0o755, now
        tar.addfile(directory)
        for index, message in enumerate(mailgen.generate(POOL_SIZE, seed=7002)):
            info = tarfile.TarInfo(f"{POOL_DIR.lstrip('/')}/{index:03d}.eml")
            info.size, info.mode, info.mtime = len(message.raw), 0o644, now
            tar.addfile(info, io.BytesIO(message.raw))
    if not container.put_archive("/", buffer.getvalue()):
        raise docker_local.HarnessError(f"could not write the demo mail pool into {container.name}")


def _demo_user(database_url: str) -> uuid.UUID:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            """INSERT INTO auth.users (email) VALUES (%(email)s)
               ON CONFLICT (email) DO UPDATE SET email = excluded.email
               RETURNING id""",
            {"email": DEMO_EMAIL},
        ).fetchone()
    assert row is not None
    user_id: uuid.UUID = row[0]
    return user_id


def _configure_user(api_url: str, *, token: str, imap_port: int, password: str) -> None:
    """Through the API, as the page would: the account (once) and auto-sync every 5 minutes."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=api_url, headers=headers, timeout=30) as client:
        accounts = client.get("/api/email-accounts").raise_for_status().json()["accounts"]
        mine = [a for a in accounts if a["port"] == imap_port and a["username"] == DEMO_MAILBOX_USER]
        for stale in (a for a in accounts if a["username"] == DEMO_MAILBOX_USER and a not in mine):
            client.delete(f"/api/email-accounts/{stale['id']}").raise_for_status()
        if not mine:
            response = client.post(
                "/api/email-accounts",
                json={
                    "host": "127.0.0.1",
                    "port": imap_port,
                    "tls_mode": "plain",
                    "username": DEMO_MAILBOX_USER,
                    "password": password,
                },
            )
            if response.status_code != 201:
                raise docker_local.HarnessError(f"the demo account was refused: {response.text}")
        client.post(
            "/api/settings/save-auto-sync", json={"enabled": True, "interval_minutes": DEMO_INTERVAL_MINUTES}
        ).raise_for_status()


def new_password() -> str:
    return secrets.token_urlsafe(18)
