"""User JWTs signed with asymmetric keys from a JWKS (Supabase's signing keys), against a real JWKS server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import jwt
import pytest

from harness.service import Service, make_config, running_service
from sync_function.auth import JwksKeys, TokenVerifier, Unauthorized
from sync_function.config import ConfigError, load_config
from tests.support.jwks import JwksServer, jwks_server, new_key
from tests.support.users import users

LOAD = "/api/settings/load-auto-sync"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    with jwks_server() as server:
        server.keys = [new_key("RS256"), new_key("ES256")]
        yield server


def test_rs256_and_es256_verify_with_one_fetch(jwks: JwksServer) -> None:
    keys = JwksKeys(jwks.url, clock=Clock())
    verifier = TokenVerifier(secret=None, jwks=keys, audience=None)
    user = uuid.uuid4()
    for key in jwks.keys:
        assert verifier.user(key.token(user)) == user
    assert jwks.requests == 1, "both keys come from one cached fetch"


def test_only_authenticated_tokens_act_as_a_user(jwks: JwksServer) -> None:
    verifier = TokenVerifier(secret=None, jwks=JwksKeys(jwks.url, clock=Clock()), audience=None)
    for role in ("anon", "service_role", ""):
        with pytest.raises(Unauthorized, match="authenticated"):
            verifier.user(jwks.keys[0].token(uuid.uuid4(), role=role))


def test_an_unknown_kid_refetches_at_most_once_per_interval(jwks: JwksServer) -> None:
    clock = Clock()
    verifier = TokenVerifier(
        secret=None, jwks=JwksKeys(jwks.url, min_refresh_s=60, clock=clock), audience=None
    )
    user = uuid.uuid4()
    assert verifier.user(jwks.keys[0].token(user)) == user
    stranger = new_key("RS256")  # never published
    for _ in range(5):
        with pytest.raises(Unauthorized, match="unknown key"):
            verifier.user(stranger.token(user))
    assert jwks.requests == 1, "a flood of unknown kids does not hammer the identity provider"
    clock.now += 61
    with pytest.raises(Unauthorized, match="unknown key"):
        verifier.user(stranger.token(user))
    assert jwks.requests == 2


def test_rotation_new_key_picked_up_and_old_key_retired(jwks: JwksServer) -> None:
    clock = Clock()
    verifier = TokenVerifier(
        secret=None, jwks=JwksKeys(jwks.url, min_refresh_s=60, max_age_s=600, clock=clock), audience=None
    )
    user = uuid.uuid4()
    old = jwks.keys[0]
    assert verifier.user(old.token(user)) == user
    rotated = new_key("ES256")
    jwks.keys = [rotated, old]  # the provider publishes the next key before signing with it
    clock.now += 61
    assert verifier.user(rotated.token(user)) == user
    jwks.keys = [rotated]  # the old key is retired
    clock.now += 601
    with pytest.raises(Unauthorized, match="unknown key"):
        verifier.user(old.token(user))
    assert verifier.user(rotated.token(user)) == user


def test_an_outage_keeps_cached_keys_working(jwks: JwksServer) -> None:
    clock = Clock()
    verifier = TokenVerifier(
        secret=None, jwks=JwksKeys(jwks.url, min_refresh_s=1, max_age_s=10, clock=clock), audience=None
    )
    user = uuid.uuid4()
    assert verifier.user(jwks.keys[0].token(user)) == user
    jwks.down = True
    clock.now += 3600  # long past max age: a refresh is tried, fails, and the cached key still serves
    assert verifier.user(jwks.keys[0].token(user)) == user
    assert verifier.user(jwks.keys[1].token(user)) == user
    assert jwks.requests >= 2
    with pytest.raises(Unauthorized, match="unknown key"):
        verifier.user(new_key("RS256").token(user))


def test_a_jwks_key_cannot_sign_with_another_algorithm(jwks: JwksServer) -> None:
    verifier = TokenVerifier(secret=None, jwks=JwksKeys(jwks.url, clock=Clock()), audience=None)
    rsa_key = jwks.keys[0]
    # An ES256 token carrying the RSA key's kid: refused, whatever the signature.
    forged = new_key("ES256")
    forged.kid = rsa_key.kid
    with pytest.raises(Unauthorized, match="invalid token"):
        verifier.user(forged.token(uuid.uuid4()))
    # HS256 with no secret configured: refused, never verified against a published public key.

    hs = jwt.encode(
        {"sub": str(uuid.uuid4()), "exp": 2**31, "role": "authenticated"}, "k" * 40, algorithm="HS256"
    )
    with pytest.raises(Unauthorized, match="invalid token"):
        verifier.user(hs)


def test_a_config_needs_a_secret_or_a_jwks_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1/db")
    monkeypatch.setenv("AUTOSYNC_SERVICE_KEY", "s" * 40)
    monkeypatch.setenv("AUTOSYNC_ENCRYPTION_KEY", "A" * 43 + "=")
    monkeypatch.delenv("AUTOSYNC_JWT_SECRET", raising=False)
    monkeypatch.delenv("AUTOSYNC_JWT_JWKS_URL", raising=False)
    with pytest.raises(ConfigError, match=r"AUTOSYNC_JWT_JWKS_URL: .*AUTOSYNC_JWT_SECRET"):
        load_config()
    monkeypatch.setenv("AUTOSYNC_JWT_JWKS_URL", "http://127.0.0.1:9/jwks.json")
    assert load_config().jwt_secret is None


@pytest.mark.docker
def test_the_api_accepts_jwks_and_hs256_tokens(jwks: JwksServer, database_url: str) -> None:
    config = make_config(database_url, jwt_jwks_url=jwks.url, jwt_jwks_min_refresh_seconds=0)
    with running_service(config) as service, users(database_url) as (user,):
        tokens = [key.token(user) for key in jwks.keys] + [service.token(user)]
        for token in tokens:
            response = service.client.get(LOAD, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, response.text
        rotated = new_key("RS256")
        jwks.keys.append(rotated)
        response = service.client.get(LOAD, headers={"Authorization": f"Bearer {rotated.token(user)}"})
        assert response.status_code == 200, response.text
        jwks.down = True
        for token in [*tokens, rotated.token(user)]:
            response = service.client.get(LOAD, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, "cached keys keep working through an outage"
        anon = jwks.keys[0].token(user, role="anon")
        response = service.client.get(LOAD, headers={"Authorization": f"Bearer {anon}"})
        assert response.status_code == 401 and "authenticated" in response.json()["error"]
        assert isinstance(service, Service)
