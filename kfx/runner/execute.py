"""The one way to run a compiled pipeline on this machine: `run_pipeline`, used by `kfx run`,
`kfx monitor` (and its retraining run) and the benchmarks. It picks the artifact store and the
launcher from their names, runs the IR with the Runner and returns the RunResult; it prints
nothing but the steps' progress and writes no report (the caller decides what to show)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from kfx.errors import UsageError
from kfx.runner import ir
from kfx.runner.orchestrator import Runner
from kfx.runner.run_context import RunResult, Workspace

EXECUTORS = ("process", "subprocess", "docker")


def make_store(uri: Optional[str]):
    """None (the embedded default, a directory under the root) or an S3/MinIO store."""
    if not uri:
        return None
    if not uri.startswith("s3://"):
        raise UsageError(f"--artifact-store {uri}: expected s3://BUCKET/PREFIX")
    from kfx.stores.s3 import S3ConfigError, S3Store, S3Unavailable
    try:
        return S3Store(uri)
    except (S3ConfigError, S3Unavailable) as err:
        raise UsageError(f"--artifact-store {uri}: {err}") from err


def make_launcher(name: str, pipeline: ir.Pipeline, preload: Optional[str] = None):
    """A launcher by name; `preload` None: what the pipeline's steps import (preload.preload_for)."""
    if name == "process":
        from kfx.runner.forkserver import ForkServerLauncher
        from kfx.runner.preload import preload_for
        if preload is None:
            return ForkServerLauncher(preload_for(t for t in pipeline.tasks.values() if not t.is_importer))
        return ForkServerLauncher([m.strip() for m in preload.split(",") if m.strip()])
    if name == "subprocess":
        from kfx.runner.launchers import SubprocessLauncher
        return SubprocessLauncher()
    if name != "docker":
        raise UsageError(f"--executor {name}: expected one of {', '.join(EXECUTORS)}")
    from kfx.runner.docker_launcher import DockerLauncher, image_exists
    try:
        launcher = DockerLauncher()
    except Exception as err:  # docker.errors.DockerException: no engine
        raise UsageError(f"--executor docker: no Docker engine ({err}); start one with scripts/docker-engine.sh") from err
    images = sorted({t.container["image"] for t in pipeline.tasks.values() if not t.is_importer})
    missing = [i for i in images if not image_exists(launcher.client, i)]
    if missing:
        raise UsageError(f"--executor docker: image(s) {missing} not built; run `make images`")
    return launcher


def run_pipeline(ir_path: str | Path, params: dict, root: str | Path, *, artifact_store: Optional[str] = None,
                 executor: str = "process", preload: Optional[str] = None, cache: bool = True,
                 parallelism: int = 1, verbose: bool = False) -> RunResult:
    """Runs the IR at `ir_path` with `params` in the workspace `root` and returns its result
    (state COMPLETE or FAILED; a failure is a result, not an exception)."""
    pipeline = ir.load(str(ir_path))
    runner = Runner(Workspace(root), store=make_store(artifact_store),
                    launcher=make_launcher(executor, pipeline, preload),
                    cache=cache, parallelism=parallelism, verbose=verbose)
    return runner.run(str(ir_path), params)


def default_registry(root: str | Path, artifact_store: Optional[str] = None) -> str:
    """Where a pipeline that pushes publishes by default: beside the artifacts (ROOT/registry, or
    the artifact store's prefix + /registry)."""
    if artifact_store:
        return f"{artifact_store.rstrip('/')}/registry"
    return str(Workspace(root).registry)
