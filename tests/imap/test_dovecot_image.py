"""The Dovecot image's own configuration paths: users from the environment, TLS switched off."""

from __future__ import annotations

import socket

import docker
import imapclient
import pytest

from harness import docker_local
from harness.dovecot_spec import DovecotConfig, dovecot_container
from harness.ports import free_port, unique_name

pytestmark = pytest.mark.docker


def test_users_from_the_environment_and_no_tls(docker_engine: docker.DockerClient, dovecot_image_tag: str) -> None:
    env_name = unique_name("autosync-test")
    config = DovecotConfig(
        name=f"{env_name}-dovecot",
        imap_port=free_port(),
        imaps_port=free_port(),
        ssl="no",
        users={"envuser": "s3cret-pass", "other": "x"},
    )
    try:
        container = docker_local.run(
            docker_engine, dovecot_container(config), env_name=env_name, image_tag=dovecot_image_tag
        )
        docker_local.wait_healthy(container, timeout_s=60)
        client = imapclient.IMAPClient(config.host, port=config.imap_port, ssl=False, timeout=10)
        try:
            assert b"STARTTLS" not in client.capabilities()
            client.login("envuser", "s3cret-pass")
            assert client.folder_status("INBOX", ["MESSAGES"]) == {b"MESSAGES": 0}
        finally:
            client.logout()
        with pytest.raises(ConnectionRefusedError), socket.create_connection((config.host, config.imaps_port), 2):
            pass
    finally:
        docker_local.remove_environment(docker_engine, env_name)


def test_bad_configuration_is_refused_before_docker_is_involved() -> None:
    with pytest.raises(ValueError, match="ssl must be one of"):
        DovecotConfig(name="x", imap_port=1143, imaps_port=1993, ssl="maybe")
    with pytest.raises(ValueError, match="must not contain ':'"):
        DovecotConfig(name="x", imap_port=1143, imaps_port=1993, users={"a": "b:c"})
    with pytest.raises(ValueError, match="ports"):
        DovecotConfig(name="x", imap_port=0, imaps_port=1993)
