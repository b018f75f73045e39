"""A step's outputs and their MLMD records, once its process has ended.

On success each output moves from the step's staging to its final URI (whole or not at all), the
executor output gives artifact metadata and output parameters, and one MLMD transaction records
the execution COMPLETE with its new artifacts and events. On failure nothing is committed or
registered; what the step wrote is kept aside for a person.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Optional

from kfx.runner import ir
from kfx.stores.metadata import State
from kfx.runner.run_context import RunContext, StepFailed, StepRecord, TaskCall
from kfx.stores.local import remove_tree


def commit_step(run: RunContext, call: TaskCall, exec_id: int, executor_input: dict, staging: Path,
                cache_key: str, log_path: Path, started: float) -> StepRecord:
    """Commits a step that exited 0 and records it COMPLETE; StepFailed when it cannot."""
    try:
        outputs, params = _commit_outputs(run, call, executor_input, staging, cache_key)
    except Exception as err:  # an unreachable store, a malformed executor output, a missing parameter
        record_failure(run, call, exec_id, {"exit_code": 0})
        raise StepFailed(call.name, f"cannot commit its outputs: {err}", log_path) from err
    with run.md_lock:
        new = {name: run.md.new_artifact(o["type"], o["uri"], name, o["metadata"], o["fingerprint"],
                                         o["has_content"])
               for name, o in outputs.items()}
        stored = run.md.finish_execution(exec_id, State.COMPLETE, {
            "output_parameters": params, "seconds": time.time() - started},
            call.inputs, new, run.contexts)
    return StepRecord(call.name, "COMPLETE", 0.0, exec_id, str(log_path), stored, params)


def record_failure(run: RunContext, call: TaskCall, exec_id: int, properties: dict) -> None:
    with run.md_lock:
        run.md.finish_execution(exec_id, State.FAILED, properties, call.inputs, {}, run.contexts)


def _commit_outputs(run: RunContext, call: TaskCall, executor_input: dict, staging: Path,
                    cache_key: str) -> tuple[dict, dict]:
    """(output name -> {type, uri, metadata, fingerprint, has_content}, output parameters)."""
    task = call.task
    executor_output = {}
    output_file = staging / "executor_output.json"
    if output_file.exists():
        executor_output = json.loads(output_file.read_text())
    reported = {name: a["artifacts"][0] for name, a in executor_output.get("artifacts", {}).items()}
    outputs = {}
    for name, type_ in task.output_artifacts().items():
        staged_uri = executor_input["outputs"]["artifacts"][name]["artifacts"][0]["uri"]
        runtime = reported.get(name, {})
        output = {"type": type_, "metadata": runtime.get("metadata", {}),
                  "fingerprint": hashlib.sha256(f"{cache_key}:{name}".encode()).hexdigest()}
        written = runtime.get("uri", staged_uri)
        if written != staged_uri and not _under(written, staging):
            # The component placed the artifact itself (outside the store, e.g. a registry version).
            outputs[name] = {**output, "uri": runtime["uri"], "has_content": False}
            continue
        # The staged output, or a pythonic artifact (returned, its URI from dsl.get_uri(): under the
        # step's staging too): committed to the store like any output.
        uri = run.store.output_uri(run.pipeline.name, run.run_id, call.name, name)
        outputs[name] = {**output, "uri": uri, "has_content": run.store.commit(Path(written), uri)}
    params = dict(executor_output.get("parameterValues", {}))
    types = task.output_parameter_types()
    for name in task.output_parameters():
        path = staging / "parameters" / name
        if name not in params and path.exists():
            params[name] = read_parameter(types[name], path.read_text(), name)
        if name not in params:
            raise ValueError(f"output parameter '{name}' was not written")
        params[name] = ir.coerce(types[name], params[name])
    return outputs, params


def _under(uri: str, folder: Path) -> bool:
    return "://" not in uri and Path(os.path.normpath(uri)).is_relative_to(folder)


def keep_failed_outputs(run: RunContext, task: str, staging: Path) -> Optional[Path]:
    """Moves what a failed step wrote out of staging into the run's folder, for a person to read.

    Never committed to the store nor recorded in MLMD, so no later step, run or cache hit uses it.
    """
    outputs = staging / "outputs"
    if not outputs.is_dir() or not any(outputs.iterdir()):
        return None
    kept = run.run_dir / "failed" / task
    kept.parent.mkdir(parents=True, exist_ok=True)
    remove_tree(kept)      # an earlier attempt's (set_retry): the last attempt's is kept
    outputs.rename(kept)   # staging and runs/ are both under --root: one filesystem
    return kept


_TRUE, _FALSE = ("1", "t", "T", "TRUE", "true", "True"), ("0", "f", "F", "FALSE", "false", "False")


def read_parameter(kind: str, text: str, name: str = "output"):
    """An output parameter's file (OutputPath) read by its declared type, as KFP's launcher reads
    it: a STRING verbatim, a BOOLEAN as Go's ParseBool ("True", "true", "1"...), numbers, and JSON
    for a LIST or STRUCT. ValueError naming the output when the text is not of its type."""
    try:
        if kind == "STRING":
            return text
        if kind == "BOOLEAN":
            if text.strip() in _TRUE + _FALSE:
                return text.strip() in _TRUE
            raise ValueError("not a boolean")
        if kind in ("NUMBER_INTEGER", "NUMBER_DOUBLE"):
            number = float(text)
            return int(number) if kind == "NUMBER_INTEGER" and number.is_integer() else number
        value = json.loads(text)
    except ValueError as err:
        raise ValueError(f"output parameter '{name}' ({kind}) cannot be read from {text[:80]!r}: {err}") from None
    expected = {"LIST": list, "STRUCT": dict}.get(kind)
    if expected and not isinstance(value, expected):
        raise ValueError(f"output parameter '{name}' ({kind}) is not a {kind.lower()}: {text[:80]!r}")
    return value
