"""Each step in its own container, through the Docker SDK.

The container runs exactly the IR's command and arguments in the stage's
image, as a non-root user, with the task's CPU and memory limits, no capabilities, no
privilege escalation and a read-only root filesystem (the step writes only to its mounted
staging, the registry, its resume directory and a tmpfs /tmp). Host paths
the step reads or writes are bind-mounted at the same path, so KFP's executor
input (which names local paths, as KFP's launcher does after downloading)
needs no rewriting. S3 credentials are passed from the runner's environment at
run time; they are never in the IR or the image.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Optional

from kfx.runner.launchers import Step

CONTAINER_UID = 1000
# Environment a step may need from the runner's: object store settings, never baked in.
PASSTHROUGH_ENV = ("KFX_S3_ENDPOINT", "KFX_S3_SECURE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                   "AWS_REGION")
_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}


def memory_bytes(limit: str) -> int:
    """Kubernetes quantities as KFP writes them ('4G', '512Mi') in bytes."""
    match = re.fullmatch(r"([0-9.]+)\s*([KMGT]i?)?", limit.strip(), re.I)
    if not match:
        raise ValueError(f"memory limit {limit!r} is not a quantity like '4G' or '512Mi'")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").upper()])


def _give_to(path: Path, uid: int) -> None:
    """Lets the container's non-root user write where the step must write."""
    if os.geteuid() != 0:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, uid, uid)
        for name in files:
            os.chown(os.path.join(root, name), uid, uid)


class DockerLauncher:
    name = "docker"

    def __init__(self, client=None, uid: int = CONTAINER_UID, network: str = "host", read_only: bool = True):
        import docker
        self.client = client or docker.from_env()
        self.uid, self.network, self.read_only = uid, network, read_only
        self.running: dict = {}   # task -> its container (a step's timeout stops it: `stop`)

    def stop(self, task: str) -> bool:
        """Kills the task's container, as Kubernetes ends a pod past its deadline; False if none runs."""
        import docker
        container = self.running.get(task)
        if container is None:
            return False
        try:
            container.kill()
        except docker.errors.APIError:   # it ended meanwhile
            pass
        return True

    def launch(self, step: Step, log_path: Path, on_line: Callable[[str], None]) -> int:
        # A readable path inside a writable one is visible through it already; mounted read-only on
        # top, it would make that part of the writable tree read-only (deploy reads the pushed model
        # and writes its record beside it, both under the registry).
        volumes = {p: {"bind": p, "mode": "ro"} for p in step.readable
                   if not any(Path(p).is_relative_to(w) for w in step.writable)}
        for p in step.writable:
            Path(p).mkdir(parents=True, exist_ok=True)
            _give_to(Path(p), self.uid)
            volumes[p] = {"bind": p, "mode": "rw"}
        env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
        env.update(step.env)
        kwargs = {}
        if step.cpu_limit:
            # A limit sized for a cluster node may exceed this machine: cap it at what exists.
            kwargs["nano_cpus"] = int(min(step.cpu_limit, os.cpu_count() or 1) * 1e9)
        if step.memory_limit:
            # Swap counted in the limit, as on Kubernetes: a step over its memory is killed, not slowed.
            kwargs["mem_limit"] = kwargs["memswap_limit"] = memory_bytes(step.memory_limit)
        container = self.client.containers.run(
            step.image, entrypoint=[step.argv[0]], command=step.argv[1:], user=f"{self.uid}:{self.uid}",
            working_dir=str(step.workdir), environment=env, volumes=volumes,
            network_mode=self.network, detach=True, security_opt=["no-new-privileges"],
            cap_drop=["ALL"], read_only=self.read_only, tmpfs={"/tmp": "rw,nosuid,nodev,mode=1777"},
            labels={"kfx.task": step.task}, **kwargs)
        self.running[step.task] = container
        try:
            with open(log_path, "w") as log:
                pending = ""
                for chunk in container.logs(stream=True, follow=True):
                    pending += chunk.decode(errors="replace")
                    *lines, pending = pending.split("\n")
                    for line in lines:
                        log.write(line + "\n")
                        on_line(line)
                if pending:
                    log.write(pending + "\n")
                    on_line(pending)
                code = container.wait()["StatusCode"]
                container.reload()
                if container.attrs["State"].get("OOMKilled"):
                    line = f"kfx: the container was killed for exceeding its memory limit ({step.memory_limit})"
                    log.write(line + "\n")
                    on_line(line)
            return code
        finally:
            self.running.pop(step.task, None)
            container.remove(force=True)


def image_exists(client, image: str) -> Optional[bool]:
    import docker
    try:
        client.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False
