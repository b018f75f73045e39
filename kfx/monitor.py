"""kfx monitor: is a pushed model still seeing the data it was trained on?

    kfx monitor --serving-data PATH --model REGISTRY_URI/MODEL/vN [--previous PATH] [--labels FILE]
                [--root DIR] [--retrain DATA_PATTERN [--host URL] [--config FILE] [--param NAME=VALUE]]

Compiles the monitor pipeline (pipelines/monitor.py: import the serving window
and the registry version, run the monitor stage) and runs its IR with kfx's
runner, as `kfx run` does: MLMD lineage in ROOT/metadata.sqlite, the step's log
and the run report under ROOT/runs/<run>/. The stage (components/monitor)
compares the window with the version's training statistics and schema (TFDV:
skew, drift against --previous, missing features; columns the model does not use are
listed, not compared) and, with --labels, the logged predictions with late labels (concept drift).

Exit codes: 0 all is well; 3 retraining is due (one line names the features);
1 the monitor failed (one `error:` line); 2 a usage error (one `error:` line).
With --retrain, a due retraining runs the lifecycle pipeline on DATA_PATTERN
(in this process, with kfx.runner.execute.run_pipeline as `kfx run` does, into
the same --root) or, with --host, submits that run to KFP; the exit code is then
3 when the retraining run was started (locally: completed), 1 when it failed.

Platform code: imports no kfx_components (stage) module; it learns the verdict
only from the stage-neutral metadata of kfx.runner.outcome (`summary`, `alert`,
`details`, `warnings`); kfx_pipelines only through kfx.bundled.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from kfx import bundled
from kfx.errors import UsageError
from kfx_formats import registry

if TYPE_CHECKING:   # the runner (MLMD, gRPC) is imported when a window runs, not when the CLI starts
    from kfx.runner.run_context import RunResult

TASK = "monitor"   # the monitor pipeline's step (pipelines/monitor.py) whose page and statistics are shown
# What a registry version must hold for the monitor (push publishes them with the model).
# The monitor step needs TFDV (and what it imports); the fork server imports only that.
PRELOAD = "tensorflow_data_validation"


def _is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def _local(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri


def _existing(flag: str, value: Optional[str], what: str) -> str:
    """The absolute path of a local input (or a remote URI as is); a usage error naming it when absent."""
    if not value:
        return ""
    if _is_remote(value):
        return value
    path = Path(_local(value)).expanduser()
    if not path.exists():
        raise UsageError(f"{flag} {value}: no such file or directory ({what})")
    return str(path.resolve())


def check_model(value: str) -> str:
    """A registry version `<registry_uri>/<model_name>/vN` holding training statistics and a schema."""
    if _is_remote(value):
        if registry.parse_version(value.rstrip("/").rsplit("/", 1)[-1]) is None:
            raise UsageError(f"--model {value}: expected a registry version <registry_uri>/<model_name>/vN")
        return value.rstrip("/")
    path = Path(_local(value)).expanduser().resolve()
    if not path.is_dir():
        raise UsageError(f"--model {value}: no such registry version directory "
                         "(expected <registry_uri>/<model_name>/vN)")
    if registry.parse_version(path.name) is None:
        raise UsageError(f"--model {value}: {path.name!r} is not a version; name one: "
                         f"{path}/v1, or see `ls {path}`")
    for rel, what in ((registry.TRAIN_STATISTICS, "the training statistics"), (registry.SCHEMA, "the schema")):
        if not (path / rel).is_file():
            raise UsageError(f"--model {value}: {path / rel} not found ({what} the model was trained with); "
                             "this version was pushed without them: push it again with a kfx whose push "
                             "publishes statistics/ and schema/")
    return str(path)


def default_root(model: str) -> str:
    """The workspace the model was pushed from (ROOT/registry/<model>/vN -> ROOT), else runs/monitor."""
    if not _is_remote(model):
        version = Path(model)
        if version.parent.parent.name == "registry":
            return str(version.parent.parent.parent)
    return "runs/monitor"


@dataclasses.dataclass
class Window:
    """One monitor run's result: the run, its alert (None when all is well) and what it wrote."""
    result: RunResult
    alert: Optional[dict]
    summary: str
    warnings: list
    report: str
    statistics: str


def watch(model: str, serving_data: str, root: Optional[str] = None, previous: Optional[str] = None,
          labels: Optional[str] = None, metric_tolerance: float = 0.05, artifact_store: Optional[str] = None,
          executor: str = "process", preload: Optional[str] = PRELOAD, verbose: bool = False) -> Window:
    """Runs the monitor pipeline on one window of logged serving data against a registry version."""
    from kfx.runner import outcome
    from kfx.runner.execute import run_pipeline
    if not 0 <= metric_tolerance < 1:
        raise UsageError(f"--metric-tolerance {metric_tolerance}: expected a fraction in [0, 1)")
    model = check_model(model)
    params = {
        "serving_data_uri": _existing("--serving-data", serving_data,
                                      "logged requests: payload-log JSON lines, or a CSV"),
        "model_uri": model,
        "previous_uri": _existing("--previous", previous, "the previous window's data or statistics"),
        "labels_uri": _existing("--labels", labels, "a CSV of request_id,label"),
        "metric_tolerance": metric_tolerance,
    }
    with tempfile.TemporaryDirectory() as tmp:
        ir_path = bundled.compile_monitor(str(Path(tmp) / "monitor.yaml"))
        result = run_pipeline(ir_path, params, root or default_root(model), artifact_store=artifact_store,
                              executor=executor, preload=preload, cache=True, verbose=verbose)
    alerts = outcome.alerts(result)
    lines = outcome.outcome_lines(result)
    outputs = result.steps[TASK].outputs if TASK in result.steps else {}
    page = _html_copy(outputs["report"].uri, result.run_dir / "monitor.html") if "report" in outputs else ""
    statistics = outputs["statistics"].uri if "statistics" in outputs else ""
    return Window(result=result, alert=alerts[0] if alerts else None, summary=lines[-1] if lines else "",
                  warnings=outcome.warning_lines(result), report=page, statistics=statistics)


def _html_copy(uri: str, dest: Path) -> str:
    """The monitor's page under an .html name, so a browser renders it."""
    if "://" not in uri and Path(uri).is_file():
        import shutil
        return str(shutil.copyfile(uri, dest))
    return uri


def retrain_parameters(model: str, config: Optional[str], data: str, pairs: Sequence[str] = ()) -> dict:
    """The lifecycle run's parameters: the config, the data pattern and --param pairs; the retrained
    model goes where the monitored one came from (its registry and name) unless a pair says otherwise."""
    from kfx.runner import ir
    from kfx.runner.params import run_parameters
    registry_uri, model_name = registry.split_model_uri(model)[0].rsplit("/", 1)
    params = run_parameters(config=config, data=data, pairs=pairs,
                            strings=ir.string_parameters(bundled.lifecycle_parameters("local")))
    params.setdefault("model_name", model_name)
    params.setdefault("registry_uri", registry_uri)
    return params


def retrain(model: str, data: str, root: str, config: Optional[str] = None, pairs: Sequence[str] = (),
            host: Optional[str] = None, artifact_store: Optional[str] = None, verbose: bool = False):
    """Retrains on `data`: the lifecycle run in this process (returns its RunResult) or, with `host`,
    submitted to KFP (returns the submission's ids)."""
    from kfx.runner.execute import run_pipeline
    with tempfile.TemporaryDirectory() as tmp:
        profile = "gpu" if host else "local"
        ir_path = bundled.compile_lifecycle(str(Path(tmp) / "pipeline.yaml"), profile)
        params = retrain_parameters(model, config, data, pairs)
        if host:
            from kfx.submit import submit
            from kfx.submit import DEFAULT_SERVICE_ACCOUNT
            return submit(ir_path, host=host, pipeline_name="kfx-tabular", version_name="monitor-{digest}",
                          experiment="kfx", run_name=None, params=params, service_account=DEFAULT_SERVICE_ACCOUNT)
        return run_pipeline(ir_path, params, root, artifact_store=artifact_store, verbose=verbose)
