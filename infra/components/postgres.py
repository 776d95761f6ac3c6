"""PostgreSQL 17 with pg_cron and http: image, data volume, a container Pulumi waits on until healthy,
and the login role's password as the running server has it (rotated, not only redeployed)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from infra.components import docker_mapping
from infra.components.database_password import DatabasePassword, DatabasePasswordArgs
from infra.containers import PostgresConfig, postgres_container
from infra.dbpassword import Login


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
    return login(config).url(password)


def login(config: PostgresConfig) -> Login:
    return Login(host=config.host, port=config.port, user=config.user, database=config.database)


class Postgres(pulumi.ComponentResource):
    """The database server. `container` is created only once Docker reports the server healthy
    (`wait`); `password` then makes sure the server has the stack's password. `url` comes from
    `password`, so whatever uses it waits for both."""

    image: docker.Image
    volumes: list[docker.Volume]
    container: docker.Container
    password: DatabasePassword
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
                image=docker_mapping.image_reference(self.image),
                env_label=args.env_label,
                secrets={"POSTGRES_PASSWORD": password},
                volume_names=volume_names,
            ),
            child,
        )
        # POSTGRES_PASSWORD above only initialises an empty volume; this applies a changed password
        # to the running server (with the previous one) before anything connects with it.
        where = login(config)
        self.password = DatabasePassword(
            f"{name}-password",
            DatabasePasswordArgs(
                host=where.host, port=where.port, user=where.user, database=where.database, password=password
            ),
            pulumi.ResourceOptions(parent=self, depends_on=[self.container]),
        )
        self.url = pulumi.Output.secret(self.password.url)
        self.register_outputs({"url": self.url, "container_name": self.container.name})
