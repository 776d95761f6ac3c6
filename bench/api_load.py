"""The user-facing API under load: `load-auto-sync` and `save-auto-sync` at C concurrent clients.

The server is the real `autosync serve --processes N` in its own process(es), against the migrated
Postgres; the client is this process (asyncio streams, one kept-alive HTTP/1.1 connection per
client, requests encoded in advance), on the same two cores. Each client sends its next request as soon as the previous answer arrives
(closed loop), for a fixed time after a warm-up; latency is send → full answer. Tokens are signed
before timing: a real client holds its token, it does not sign one per request.

save-auto-sync is rate-limited per user (`AUTOSYNC_SAVE_AUTO_SYNC_LIMIT`, 60 a minute): the clients
go round a population of many users, so that no user comes near it (each user is saved a few
times at most) and every request takes the full path: rate-limit row, preference upsert, and
`schedule_auto_sync` (a pg_cron job upsert in per-user mode) in one transaction.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import uvloop

from bench.env import BenchEnv, new_users, serve_function
from harness.service import make_config
from harness.tokens import user_token
from sync_function.config import Config

LOAD = "/api/settings/load-auto-sync"
SAVE = "/api/settings/save-auto-sync"


@dataclass
class Load:
    """One endpoint at one concurrency against one server."""

    endpoint: str
    processes: int
    clients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""

    @property
    def requests_per_s(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else float("nan")


def tokens(config: Config, users: list[uuid.UUID]) -> list[str]:
    assert config.jwt_secret is not None
    secret = config.jwt_secret.get_secret_value()
    return [user_token(secret, u, expires_in=3600) for u in users]


class _Client:
    """One kept-alive HTTP/1.1 connection, requests pre-encoded: the client costs microseconds per call.

    httpx's AsyncClient spent ~5 ms of CPU per request here, on the same two cores as the server, and
    so measured itself more than the server. The server's answers are JSON with a Content-Length.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str) -> _Client:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = next(
            (int(line.split(":", 1)[1]) for line in lines[1:] if line.lower().startswith("content-length:")),
            None,
        )
        if length is None:
            raise RuntimeError(f"an answer without Content-Length: {lines[0]}")
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def requests(endpoint: str, tokens: list[str]) -> list[bytes]:
    """The exact bytes of one request per user, encoded before timing."""
    if endpoint == SAVE:
        body = json.dumps({"enabled": True, "interval_minutes": 30}).encode()
        return [
            f"POST {SAVE} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
            for token in tokens
        ]
    return [
        f"GET {endpoint} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        for token in tokens
    ]


async def _drive(
    url: str, encoded: list[bytes], *, clients: int, warmup_s: float, seconds: float
) -> tuple[list[float], int, str]:
    latencies: list[float] = []
    errors = 0
    first_error = ""
    turn = itertools.cycle(encoded)
    connections = [await _Client.open(url) for _ in range(clients)]
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + seconds

    async def one_client(client: _Client) -> None:
        nonlocal errors, first_error
        while (now := time.perf_counter()) < stop_at:
            status, body = await client.send(next(turn))
            done = time.perf_counter()
            if now < measure_from or done > stop_at:
                continue
            if status == 200:
                latencies.append(done - now)
            else:
                errors += 1
                first_error = first_error or f"{status} {body[:200].decode(errors='replace')}"

    try:
        await asyncio.gather(*(one_client(c) for c in connections))
    finally:
        for client in connections:
            await client.close()
    return latencies, errors, first_error


@dataclass(frozen=True)
class Population:
    """Users who exist (auth.users) with auto-sync off, and the requests each endpoint sends for them."""

    users: list[uuid.UUID]
    config: Config
    encoded: dict[str, list[bytes]]


def population(env: BenchEnv, *, users: int) -> Population:
    config = make_config(env.database_url)
    with env.connect() as conn:
        ids = new_users(conn, users, enabled=False, interval=30)
    signed = tokens(config, ids)
    return Population(ids, config, {endpoint: requests(endpoint, signed) for endpoint in (LOAD, SAVE)})


def measure(
    env: BenchEnv,
    population: Population,
    *,
    processes: int,
    clients: int,
    seconds: float,
    warmup_s: float = 1.0,
    source: Path | None = None,
) -> list[Load]:
    """Both endpoints against `autosync serve --processes N`, then every schedule the saves made removed.

    The saves schedule pg_cron jobs (or dispatcher slots): unscheduled again with the project's own
    `unschedule_auto_sync`, so that no later benchmark sees them fire.
    """
    results: list[Load] = []
    try:
        with serve_function(population.config, processes=processes, source=source) as url:
            for endpoint in (LOAD, SAVE):
                # uvloop, as the server uses: the client shares its two cores, so its CPU is latency.
                with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                    latencies, errors, first = runner.run(
                        _drive(
                            url,
                            population.encoded[endpoint],
                            clients=clients,
                            warmup_s=warmup_s,
                            seconds=seconds,
                        )
                    )
                results.append(Load(endpoint, processes, clients, seconds, latencies, errors, first))
    finally:
        with env.connect() as conn, conn.cursor() as cur:
            conn.execute(
                "UPDATE public.user_settings SET enabled = false WHERE user_id = ANY (%s)",
                (population.users,),
            )
            # In chunks: a pipelined executemany is one implicit transaction, holding every user's lock.
            for start in range(0, len(population.users), 500):
                chunk = population.users[start : start + 500]
                cur.executemany("SELECT public.unschedule_auto_sync(%s)", [(u,) for u in chunk])
    return results
