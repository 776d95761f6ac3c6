"""A real JWKS endpoint on loopback: keys can be added, removed and the endpoint taken down."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


@dataclass
class SigningKey:
    kid: str
    algorithm: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        codec = RSAAlgorithm if self.algorithm == "RS256" else ECAlgorithm
        data: dict[str, Any] = json.loads(codec.to_jwk(public))
        return {**data, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def token(self, user_id: uuid.UUID, *, role: str = "authenticated", expires_in: int = 300) -> str:
        claims = {"sub": str(user_id), "role": role, "exp": int(time.time()) + expires_in}
        return jwt.encode(claims, self.private, algorithm=self.algorithm, headers={"kid": self.kid})


def new_key(algorithm: str = "RS256") -> SigningKey:
    private: Any = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    return SigningKey(kid=f"{algorithm.lower()}-{uuid.uuid4().hex[:8]}", algorithm=algorithm, private=private)


@dataclass
class JwksServer:
    url: str
    keys: list[SigningKey] = field(default_factory=list)
    down: bool = False  # answer 503, as an identity provider in an outage would
    requests: int = 0


@contextlib.contextmanager
def jwks_server() -> Iterator[JwksServer]:
    """Serves `{"keys": [...]}` at /auth/v1/.well-known/jwks.json on a free loopback port."""
    state = JwksServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests += 1
            if state.down or self.path != "/auth/v1/.well-known/jwks.json":
                self.send_response(503 if state.down else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = json.dumps({"keys": [key.jwk() for key in state.keys]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/auth/v1/.well-known/jwks.json"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
