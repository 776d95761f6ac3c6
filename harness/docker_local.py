"""Realise container specs on the local Docker engine (the harness side of `containers.py`).

Used by the test fixtures, by `make up` and by ephemeral environments where the Pulumi CLI is not
available. Every object created carries the label `autosync.env=<environment name>`, so an
environment can always be removed completely, even after a crash.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import time

import docker
from docker.errors import ImageNotFound, NotFound
from docker.models.containers import Container

from infra.containers import ENV_LABEL, ContainerSpec, ImageSpec


class HarnessError(RuntimeError):
    """The Docker engine could not realise a spec (build failed, container unhealthy …)."""


def client() -> docker.DockerClient:
    engine: docker.DockerClient | None = None
    try:
        engine = docker.from_env(timeout=300)
        engine.ping()
    except Exception as exc:  # docker raises several unrelated types here
        if engine is not None:
            engine.close()
        raise HarnessError(
            f"no Docker engine answers ({exc}); run `scripts/ensure-docker` to install and start one"
        ) from exc
    return engine


def ensure_image(engine: docker.DockerClient, image: ImageSpec) -> str:
    """Build `image` unless an image with its content-hash tag exists; returns the tag."""
    tag = image.tag
    try:
        engine.images.get(tag)
        return tag
    except ImageNotFound:
        pass
    try:
        # Host networking so that apt-get inside the build reaches the machine's Debian mirror.
        engine.images.build(
            path=str(image.context),
            dockerfile=image.dockerfile,
            tag=tag,
            buildargs=dict(image.build_args),
            network_mode="host",
            rm=True,
            forcerm=True,
            labels={"autosync.image": image.repository},
        )
    except docker.errors.BuildError as exc:
        tail = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in exc.build_log)[-3000:]
        raise HarnessError(f"building {tag} failed: {exc.msg}\n{tail}") from exc
    prune_old_images(engine, image.repository, keep=tag)
    return tag


def prune_old_images(engine: docker.DockerClient, repository: str, *, keep: str, keep_count: int = 2) -> None:
    """Remove all but the newest `keep_count` builds of `repository` (always keeping `keep`).

    Every change to an image's files makes a new content-hash tag; without this the cache grows by
    one image per change. Images still used by a container are left alone.
    """
    builds = sorted(
        (image for image in engine.images.list(name=repository) if image.tags),
        key=lambda image: image.attrs.get("Created", ""),
        reverse=True,
    )
    kept = 0
    for image in builds:
        if keep in image.tags or kept < keep_count:
            kept += 1
            continue
        for old_tag in image.tags:
            with contextlib.suppress(docker.errors.APIError):
                engine.images.remove(old_tag)
    with contextlib.suppress(docker.errors.APIError):
        engine.images.prune(filters={"dangling": True, "label": "autosync.image"})


def run(engine: docker.DockerClient, spec: ContainerSpec, *, env_name: str, image_tag: str) -> Container:
    """Start `spec` (replacing a stopped leftover of the same name) with host networking."""
    remove_container(engine, spec.name)
    healthcheck = None
    if spec.healthcheck is not None:
        hc = spec.healthcheck
        healthcheck = {
            "test": list(hc.test),
            "interval": int(hc.interval_s * 1e9),
            "timeout": int(hc.timeout_s * 1e9),
            "retries": hc.retries,
            "start_period": int(hc.start_period_s * 1e9),
        }
    for volume in spec.volumes:
        engine.volumes.create(name=volume, labels={ENV_LABEL: env_name})
    return engine.containers.run(
        image_tag,
        command=list(spec.command) or None,
        name=spec.name,
        environment=dict(spec.env),
        network_mode="host",
        volumes={name: {"bind": path, "mode": "rw"} for name, path in spec.volumes.items()},
        healthcheck=healthcheck,
        stop_signal=spec.stop_signal,
        labels={ENV_LABEL: env_name},
        detach=True,
    )


def wait_healthy(container: Container, *, timeout_s: float = 120.0) -> None:
    """Wait until Docker reports the container healthy; raise with its log tail if it never is."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        container.reload()
        state = container.attrs["State"]
        if state.get("Health", {}).get("Status") == "healthy":
            return
        if state["Status"] in {"exited", "dead"}:
            break
        time.sleep(0.2)
    logs = container.logs(tail=40).decode(errors="replace")
    raise HarnessError(f"container {container.name} did not become healthy:\n{logs}")


def remove_container(engine: docker.DockerClient, name: str) -> None:
    with contextlib.suppress(NotFound):
        engine.containers.get(name).remove(force=True, v=True)


def remove_environment(engine: docker.DockerClient, env_name: str) -> list[str]:
    """Remove every container and volume labelled with `env_name`; returns what was removed."""
    removed: list[str] = []
    selector = {"label": f"{ENV_LABEL}={env_name}"}
    for container in engine.containers.list(all=True, filters=selector):
        container.remove(force=True, v=True)
        removed.append(f"container {container.name}")
    for volume in engine.volumes.list(filters=selector):
        volume.remove(force=True)
        removed.append(f"volume {volume.name}")
    return removed


def put_file(container: Container, path: str, data: bytes, *, mode: int = 0o644, uid: int = 0) -> None:
    """Write one file into a running container (used to inject mail and configuration)."""
    directory, _, name = path.rpartition("/")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode
        info.uid = info.gid = uid
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(data))
    container.put_archive(directory or "/", buffer.getvalue())
