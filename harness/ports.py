"""Free loopback ports and unique names for throw-away containers, environments and users."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket


def free_port() -> int:
    """A loopback TCP port that is free right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback TCP ports that are free right now.

    The sockets stay bound until all are chosen, so the ports differ from each other.
    """
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def unique_name(prefix: str) -> str:
    """`prefix-<pid>-<random>`: unique across concurrent test runs on one Docker engine."""
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
