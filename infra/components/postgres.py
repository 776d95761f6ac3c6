"""PostgreSQL 17 with pg_cron and http: image, data volume, and a container Pulumi waits on until healthy."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import pulumi
import pulumi_docker as docker

from infra.components import docker_mapping
from infra.containers import PostgresConfig, postgres_container


@dataclass
class PostgresArgs:
    """Arguments of `Postgres`.

    The fields that shape the container (name, port, database, user) are plain values from the
    validated stack config: the container spec is built from them in plain Python, as the harness
    builds it. Only the password is a Pulumi Input (a secret).
    """

    container_name: str
    password: pulumi.Input[str]
    port: int = 5432
    database: str = "autosync"
    user: str = "postgres"
    image_tag: str | None = None
    env_label: str = "autosync"


def database_url(config: PostgresConfig, password: str) -> str:
    """The URL clients use. The password is percent-encoded: a configured one may contain '@' or '/'."""
    return (
        f"postgresql://{config.user}:{quote(password, safe='')}@{config.host}:{config.port}/{config.database}"
    )


class Postgres(pulumi.ComponentResource):
    """The database server. `container` is what later steps depend on: with `wait` it is created
    only once Docker reports the server healthy (accepting connections to the database)."""

    image: docker.Image
    volumes: list[docker.Volume]
    container: docker.Container
    url: pulumi.Output[str]

    def __init__(self, name: str, args: PostgresArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("autosync:postgres:Postgres", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        config = PostgresConfig(
            name=args.container_name,
            password=docker_mapping.SECRET_PLACEHOLDER,
            user=args.user,
            database=args.database,
            port=args.port,
        )
        spec = postgres_container(config)

        self.image = docker.Image(
            f"{name}-image", docker_mapping.image_args(spec.image, tag_override=args.image_tag), child
        )
        self.volumes = [
            docker.Volume(
                f"{name}-volume-{volume}",
                docker_mapping.volume_args(volume, env_label=args.env_label),
                # A separate resource, so replacing the container (a new image) keeps the data.
                child,
            )
            for volume in sorted(spec.volumes)
        ]
        # Referencing the Volume's output makes the container depend on it.
        volume_names = {
            volume: resource.name for volume, resource in zip(sorted(spec.volumes), self.volumes, strict=True)
        }
        password = pulumi.Output.secret(args.password)
        self.container = docker.Container(
            f"{name}-container",
            docker_mapping.container_args(
                spec,
                image=self.image.image_name,
                env_label=args.env_label,
                secrets={"POSTGRES_PASSWORD": password},
                volume_names=volume_names,
            ),
            child,
        )
        self.url = pulumi.Output.secret(password.apply(lambda value: database_url(config, value)))
        self.register_outputs({"url": self.url, "container_name": self.container.name})
