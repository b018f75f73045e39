"""deploy: record a deployment request for a pushed (blessed) model version.

After push, for a blessed model only, this step writes
`<registry_uri>/<model_name>/deployments/<UTC stamp>-v<N>.json`:

    {"model_name", "version": N, "uri": ".../vN", "rollout": "none|canary|blue-green|shadow",
     "status": "pending", "requested_at", "run": {...}, "commands": {"serve": ..., "rollout": ...}}

`kfx serve` / `kfx rollout` (kfx/serving/) act on it; on Kubernetes the chart's serving
values (or Argo CD) do. The step starts no server: nothing keeps running after the run.
No TensorFlow: runs on the push runtime (kfp + minio).
"""
from __future__ import annotations

import datetime
from typing import Any, Dict, Mapping

from kfx_formats import choices, registry


def record_uri(registry_uri: str, model_name: str, version: int, stamp: str) -> str:
    return f"{registry_uri.rstrip('/')}/{model_name}/deployments/{stamp}-v{version}.json"


def run(pushed: Mapping[str, Any], registry_uri: str, model_name: str, rollout: str,
        run_info: Mapping[str, Any] | None = None) -> Dict[str, Any]:
    """Write the deployment record for a pushed version; nothing for a model that was not pushed."""
    choices.check("rollout", rollout, choices.ROLLOUTS)
    if not pushed.get("pushed"):
        return {"deployed": False, "reason": f"not pushed: {pushed.get('reason', 'model not blessed')}"}
    version = int(pushed.get("version") or 0)
    if version < 1:
        raise ValueError(f"pushed model has no registry version: {dict(pushed)}")
    model_dir = f"{registry_uri.rstrip('/')}/{model_name}"
    now = datetime.datetime.now(datetime.timezone.utc)
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    commands = {"serve": f"kfx serve {model_dir}/v{version}"}
    if rollout != "none":
        commands["rollout"] = f"kfx rollout start {model_dir} --candidate v{version} --strategy {rollout}"
    record = {"model_name": model_name, "version": version, "uri": f"{model_dir}/v{version}",
              "rollout": rollout, "status": "pending", "requested_at": now.isoformat().replace("+00:00", "Z"),
              "run": dict(run_info or {}), "commands": commands}
    uri = record_uri(registry_uri, model_name, version, stamp)
    registry.write_json(uri, record)   # atomic locally, one object on S3
    return {"deployed": True, "record": uri, **record}
