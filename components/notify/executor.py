"""notify: the run's outcome posted to a webhook (Slack-compatible JSON), from the exit task of the
lifecycle's dsl.ExitHandler.

The exit task sees what KFP hands an exit task (dsl.PipelineTaskFinalStatus: state, error message,
the run's name) and the run's own parameters; what was pushed it reads from the model registry (a
version published since the run was created is this run's). No TensorFlow, and only the standard
library for HTTP: the task costs next to nothing, and nothing at all without a URL.
"""
from __future__ import annotations

import datetime
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

from kfx_formats import registry

# On a cluster the URL comes from a Kubernetes Secret as this variable (pipelines/profiles.py),
# never as a literal in the IR; locally it may be the `notify_url` parameter.
URL_ENV = "KFX_NOTIFY_URL"
TIMEOUT_SECONDS = 10


def _when(stamp: str) -> Optional[datetime.datetime]:
    try:
        when = datetime.datetime.fromisoformat(stamp.strip().replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)


def pushed_since(registry_uri: str, model_name: str, run_created: str) -> Optional[dict]:
    """The model card of the version this run pushed (published at or after `run_created`), else None."""
    if not registry_uri or not model_name:
        return None
    head = registry.latest(registry_uri, model_name)
    if head is None:
        return None
    try:
        card = json.loads(registry.read_file(head, registry.CARD_JSON) or b"{}")
    except ValueError:
        return None
    published, created = _when(str(card.get("published_at", ""))), _when(run_created)
    if published is None or created is None or published < created.replace(microsecond=0):
        return None
    return {**card, "version": head.number, "uri": head.uri}


def message(state: str, run_name: str, error_message: str = "", pushed: Optional[dict] = None) -> dict:
    """The Slack-compatible payload: {"text": one line for a person, "kfx": the same as fields}."""
    facts = {"run": run_name, "state": state}
    if state != "SUCCEEDED":
        step, _, error = (error_message or "").partition(": ")
        facts.update(failed_step=step if error else "", error=error or error_message)
        where = f" in {facts['failed_step']}" if facts["failed_step"] else ""
        text = f"kfx run {run_name} {state}{where}: {facts['error'] or 'no error message'}"
    elif pushed:
        trust = pushed.get("trust") or {}
        metric, value = trust.get("metric"), (trust.get("model") or {}).get("metric")
        facts.update(pushed=True, model=pushed.get("model_name", ""), version=pushed["version"],
                     uri=pushed["uri"], metric=metric, value=value)
        quality = f", {metric} {value:.4f}" if metric and isinstance(value, (int, float)) else ""
        text = f"kfx run {run_name} SUCCEEDED: pushed {facts['model']} v{facts['version']}{quality} ({facts['uri']})"
    else:
        facts.update(pushed=False)
        text = f"kfx run {run_name} SUCCEEDED: no model pushed (not blessed, or the same model is already published)"
    return {"text": text, "kfx": facts}


def post(url: str, payload: dict, timeout: float = TIMEOUT_SECONDS) -> int:
    """POSTs the JSON payload; the HTTP status, or ValueError naming the URL's host when it fails."""
    request = urllib.request.Request(url, data=json.dumps(payload).encode("utf-8"), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except (urllib.error.URLError, OSError) as err:
        host = urllib.parse.urlsplit(url).netloc or url   # never the path: a webhook's path is its secret
        raise ValueError(f"notify: cannot post to {host}: {getattr(err, 'reason', err)}") from None


def run(url: str, state: str, run_name: str, error_message: str = "", registry_uri: str = "",
        model_name: str = "", run_created: str = "") -> dict:
    """Posts the run's outcome to `url` and returns the payload posted; {} (and nothing read or
    posted) when there is no URL."""
    if not url:
        return {}
    pushed = pushed_since(registry_uri, model_name, run_created) if state == "SUCCEEDED" else None
    payload = message(state, run_name, error_message, pushed)
    post(url, payload)
    return payload
