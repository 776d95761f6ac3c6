"""The sync function: one image, a `serve` container (waited on until /healthz answers) and workers."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker

from infra.components import docker_mapping
from infra.function_specs import SyncFunctionConfig, sync_function_container, sync_function_image


@dataclass
class SyncFunctionArgs:
    """Arguments of `SyncFunction`.

    Structural fields (names, port, worker count, build args) are plain values from the validated
    stack config, because the container specs are built from them in plain Python; the secrets and
    the database URL are Pulumi Inputs and reach the containers as Pulumi secrets only.
    """

    name_prefix: str
    database_url: pulumi.Input[str]
    service_key: pulumi.Input[str]
    jwt_secret: pulumi.Input[str]
    encryption_key: pulumi.Input[str]  # a key list (sync_function/crypto.py)
    # The key the database still sends during a rotation ('' when none): ServiceKeys.previous.
    service_key_previous: pulumi.Input[str] = ""
    port: int = 8000
    workers: int = 1
    worker_metrics_port: int | None = None
    api_processes: int = 1
    image_tag: str | None = None
    build_args: dict[str, str] = field(default_factory=dict)
    env_label: str = "autosync"


class SyncFunction(pulumi.ComponentResource):
    """The HTTP service pg_cron calls, and the workers that import mail."""

    image: docker.Image
    serve: docker.Container
    workers: list[docker.Container]
    url: str

    def __init__(self, name: str, args: SyncFunctionArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("autosync:sync_function:SyncFunction", name, None, opts)
        # Children do not inherit the component's depends_on by themselves. The containers must not
        # start before the database is migrated and configured, so they get it explicitly; the image
        # does not: it needs nothing from the database and builds meanwhile.
        image_opts = pulumi.ResourceOptions(parent=self)
        child = pulumi.ResourceOptions(parent=self, depends_on=opts.depends_on if opts is not None else None)
        placeholder = docker_mapping.SECRET_PLACEHOLDER
        config = SyncFunctionConfig(
            name=args.name_prefix,
            database_url=placeholder,
            service_key=placeholder,
            service_key_previous=placeholder,
            jwt_secret=placeholder,
            encryption_key=placeholder,
            port=args.port,
            worker_metrics_port=args.worker_metrics_port,
            api_processes=args.api_processes,
        )
        image_spec = sync_function_image(args.build_args)
        secrets = {
            "DATABASE_URL": pulumi.Output.secret(args.database_url),
            "AUTOSYNC_SERVICE_KEY": pulumi.Output.secret(args.service_key),
            "AUTOSYNC_SERVICE_KEY_PREVIOUS": pulumi.Output.secret(args.service_key_previous),
            "AUTOSYNC_JWT_SECRET": pulumi.Output.secret(args.jwt_secret),
            "AUTOSYNC_ENCRYPTION_KEY": pulumi.Output.secret(args.encryption_key),
        }

        self.image = docker.Image(
            f"{name}-image", docker_mapping.image_args(image_spec, tag_override=args.image_tag), image_opts
        )

        specs = {"serve": sync_function_container(config, role="serve", image=image_spec)}
        for index in range(1, args.workers + 1):
            specs[f"worker-{index}"] = sync_function_container(
                config, role="worker", index=index, image=image_spec
            )
        containers = {
            suffix: docker.Container(
                f"{name}-{suffix}",
                docker_mapping.container_args(
                    spec,
                    image=docker_mapping.image_reference(self.image),
                    env_label=args.env_label,
                    secrets=secrets,
                ),
                child,
            )
            for suffix, spec in specs.items()
        }
        self.serve = containers["serve"]
        self.workers = [containers[f"worker-{index}"] for index in range(1, args.workers + 1)]
        self.url = config.url
        self.register_outputs({"url": self.url, "serve_container": self.serve.name})
