"""Submit a compiled pipeline to a Kubeflow Pipelines API server.

``submit()`` uploads the compiled IR as a new version of a named pipeline (the
pipeline is created on first use), makes sure the experiment exists, and then
either starts one run of that version or, with ``recurring_cron``, points the
experiment's recurring run of that name at the new version (KFP has no update
call for recurring runs: the old one is disabled and deleted once the new one
exists). Everything goes through ``kfp.Client`` and the KFP v2beta1 REST API.

It is idempotent for the PostSync hook that calls it on every Argo CD sync: a
version whose name already exists is reused, and a recurring run that already
points at the version is left alone.

Also runnable as ``python -m kfx.submit`` (the chart's registration Job).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import sys
import time
import warnings
from typing import Any, Dict, List, Optional

from kfx.runner import ir
from kfx.runner.params import parse_params

log = logging.getLogger("kfx.submit")
# The least-privilege account runs execute as (created by the chart and manifests/).
DEFAULT_SERVICE_ACCOUNT = "kfx-pipeline-runner"


class SubmitError(RuntimeError):
    """A submission step failed; the message names the step, the host and the cause."""


class PipelineFileError(SubmitError, ValueError):
    """The IR file is missing, unreadable or not a KFP pipeline."""


class ParameterError(SubmitError, ValueError):
    """A run parameter is malformed or not an input of the pipeline."""


class KfpApiError(SubmitError):
    """The KFP API answered with an error status or could not be reached."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


def _equals(key: str, value: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": key, "stringValue": value}]})


def ir_digest(ir_path: str, length: int = 10) -> str:
    """First hex digits of the IR file's SHA-256 (``{digest}`` in a version name)."""
    with open(ir_path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()[:length]


def checked_params(ir_path: str, params: Dict[str, Any]) -> Dict[str, Any]:
    """The parameters as the IR declares them (kfx.runner.ir's rules, as `kfx run` applies them)."""
    try:
        spec, _ = ir.read_spec(ir_path)
    except ir.IRError as exc:
        raise PipelineFileError(str(exc)) from exc
    try:
        return ir.check_values(ir.root_parameters(spec), dict(params or {}),
                               f"pipeline {spec['pipelineInfo'].get('name', '?')!r}")
    except ir.IRError as exc:
        raise ParameterError(str(exc)) from exc


class _Step:
    """Turns API/transport errors inside a ``with`` block into KfpApiError naming the step."""

    def __init__(self, what: str, host: str):
        self.what, self.host = what, host

    def __enter__(self):
        return self

    def __exit__(self, etype, exc, tb):
        if exc is None or isinstance(exc, SubmitError):
            return False
        from kfp_server_api.exceptions import ApiException
        import urllib3.exceptions
        if isinstance(exc, ApiException):
            body = (exc.body or b"")
            body = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
            raise KfpApiError(
                f"{self.what}: KFP API at {self.host} answered HTTP {exc.status} {exc.reason}: "
                f"{body.strip()[:500]}", status=exc.status) from exc
        if isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, OSError)):
            raise KfpApiError(f"{self.what}: cannot reach the KFP API at {self.host}: {exc}") from exc
        return False


def make_client(host: str, namespace: Optional[str] = None):
    import kfp
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with _Step("connecting", host):
            return kfp.Client(host=host, namespace=namespace or "kubeflow")


def _find_version(client, pipeline_id: str, version_name: str, host: str) -> Optional[str]:
    with _Step(f"listing versions of pipeline {pipeline_id}", host):
        resp = client.list_pipeline_versions(pipeline_id=pipeline_id, page_size=100,
                                             filter=_equals("display_name", version_name))
    for v in resp.pipeline_versions or []:
        if v.display_name == version_name:
            return v.pipeline_version_id
    return None


def submit(ir_path: str, host: str, pipeline_name: str, version_name: str, experiment: str,
           run_name: Optional[str], params: Optional[dict] = None, namespace: Optional[str] = None,
           recurring_cron: Optional[str] = None, service_account: Optional[str] = None,
           client=None) -> dict:
    """Upload ``ir_path`` as version ``version_name`` of ``pipeline_name`` and run it.

    ``{digest}`` in ``version_name`` is replaced by the first 10 hex digits of the
    IR's SHA-256, so a changed pipeline always gets a new version.

    Returns the ids: ``pipeline_id``, ``version_id``, ``experiment_id`` and either
    ``run_id`` or ``recurring_run_id`` (plus ``replaced_recurring_run_ids``), and
    ``version_reused`` when the version already existed.

    ``kfp.Client`` prints "... details: URL" lines; they go to stderr, so the caller's
    stdout carries only what it prints itself (``python -m kfx.submit``: one JSON object,
    ready for ``jq``).
    """
    with contextlib.redirect_stdout(sys.stderr):
        return _submit(ir_path, host, pipeline_name, version_name, experiment, run_name, params,
                       namespace, recurring_cron, service_account, client)


def _submit(ir_path, host, pipeline_name, version_name, experiment, run_name, params, namespace,
            recurring_cron, service_account, client) -> dict:
    params = checked_params(ir_path, params)
    if "{digest}" in (version_name or ""):
        version_name = version_name.replace("{digest}", ir_digest(ir_path))
    if not run_name:
        run_name = (f"{pipeline_name}-recurring" if recurring_cron
                    else f"{pipeline_name}-{version_name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    for label, value in (("pipeline name", pipeline_name), ("version name", version_name),
                         ("experiment", experiment)):
        if not value or not str(value).strip():
            raise SubmitError(f"{label} must not be empty")
    client = client or make_client(host, namespace)
    out: Dict[str, Any] = {"host": host, "pipeline_name": pipeline_name, "version_name": version_name}

    with _Step(f"looking up pipeline {pipeline_name!r}", host):
        pipeline_id = client.get_pipeline_id(pipeline_name)
    if pipeline_id is None:
        with _Step(f"uploading pipeline {pipeline_name!r}", host):
            pipeline_id = client.upload_pipeline(ir_path, pipeline_name=pipeline_name,
                                                 namespace=namespace).pipeline_id
        log.info("created pipeline %s (%s)", pipeline_name, pipeline_id)
    out["pipeline_id"] = pipeline_id

    version_id = _find_version(client, pipeline_id, version_name, host)
    out["version_reused"] = version_id is not None
    if version_id is None:
        with _Step(f"uploading version {version_name!r} of pipeline {pipeline_name!r}", host):
            version_id = client.upload_pipeline_version(
                ir_path, pipeline_version_name=version_name, pipeline_id=pipeline_id).pipeline_version_id
    out["version_id"] = version_id

    with _Step(f"getting or creating experiment {experiment!r}", host):
        out["experiment_id"] = exp_id = client.create_experiment(experiment, namespace=namespace).experiment_id

    if recurring_cron:
        with _Step(f"listing recurring runs named {run_name!r}", host):
            existing = client.list_recurring_runs(experiment_id=exp_id, page_size=100, namespace=namespace,
                                                  filter=_equals("display_name", run_name)).recurring_runs or []
        existing = [r for r in existing if r.display_name == run_name]
        current = [r for r in existing
                   if r.pipeline_version_reference is not None
                   and r.pipeline_version_reference.pipeline_version_id == version_id
                   and r.trigger and r.trigger.cron_schedule
                   and r.trigger.cron_schedule.cron == recurring_cron
                   and ((r.runtime_config.parameters if r.runtime_config else None) or {}) == params]
        if current:
            out["recurring_run_id"] = current[0].recurring_run_id
            stale = [r for r in existing if r.recurring_run_id != current[0].recurring_run_id]
        else:
            with _Step(f"creating recurring run {run_name!r}", host):
                rr = client.create_recurring_run(
                    experiment_id=exp_id, job_name=run_name, cron_expression=recurring_cron,
                    pipeline_id=pipeline_id, version_id=version_id, params=params,
                    max_concurrency=1, no_catchup=True, enabled=True, service_account=service_account)
            out["recurring_run_id"] = rr.recurring_run_id
            stale = existing
        out["replaced_recurring_run_ids"] = []
        for old in stale:
            with _Step(f"retiring recurring run {old.recurring_run_id}", host):
                client.disable_recurring_run(old.recurring_run_id)
                client.delete_recurring_run(old.recurring_run_id)
            out["replaced_recurring_run_ids"].append(old.recurring_run_id)
    else:
        with _Step(f"starting run {run_name!r}", host):
            run = client.run_pipeline(experiment_id=exp_id, job_name=run_name, params=params,
                                      pipeline_id=pipeline_id, version_id=version_id,
                                      service_account=service_account)
        out["run_id"] = run.run_id
    return out


def _params(pairs: List[str], ir_path: str) -> Dict[str, Any]:
    """--param pairs; the IR's STRING parameters verbatim, as `kfx submit` takes them."""
    try:
        spec, _ = ir.read_spec(ir_path)
    except ir.IRError as exc:
        raise PipelineFileError(str(exc)) from exc
    try:
        return parse_params(pairs, ir.string_parameters(ir.root_parameters(spec)))
    except ValueError as exc:
        raise ParameterError(str(exc)) from exc


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kfx.submit", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default=os.environ.get("KF_PIPELINES_ENDPOINT"), required=False,
                   help="KFP API endpoint, e.g. http://ml-pipeline.kubeflow:8888")
    p.add_argument("--ir", required=True, help="compiled pipeline YAML")
    p.add_argument("--pipeline-name", required=True)
    p.add_argument("--version", required=True,
                   help="pipeline version name; {digest} is replaced by the IR's SHA-256 prefix")
    p.add_argument("--experiment", default="kfx")
    p.add_argument("--run-name", default=None, help="default: <pipeline>-<version>-<UTC time>")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--namespace", default=None, help="multi-user KFP: the profile namespace")
    p.add_argument("--cron", default=None, help="6-field cron: create/update a recurring run instead of one run")
    p.add_argument("--service-account", default=DEFAULT_SERVICE_ACCOUNT)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not a.host:
        p.error("--host (or KF_PIPELINES_ENDPOINT) is required")
    try:
        out = submit(a.ir, a.host, a.pipeline_name, a.version, a.experiment, a.run_name,
                     _params(a.param, a.ir), namespace=a.namespace, recurring_cron=a.cron,
                     service_account=a.service_account)
    except SubmitError as exc:
        print(f"kfx submit: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
