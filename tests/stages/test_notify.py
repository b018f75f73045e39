"""notify: the run's outcome posted as Slack-compatible JSON to a real HTTP server on 127.0.0.1; a
version published since the run was created is the run's push; no URL, no request."""
import datetime
import json
import os
import sys
import tempfile

import pytest

from kfx_formats import registry
from kfx_components.notify import executor
from tests.webhook import Webhook


def _publish(reg: str, name: str, published_at: str) -> registry.Version:
    model = tempfile.mkdtemp()
    open(os.path.join(model, "saved_model.pb"), "wb").write(b"pb")
    card = {"model_name": name, "published_at": published_at,
            "trust": {"metric": "auc", "model": {"metric": 0.8731, "ci": [0.85, 0.89]}}}
    return registry.publish({"saved_model": model}, {"model_card.json": json.dumps(card).encode()}, reg, name)


def _now(offset_seconds: int = 0) -> str:
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset_seconds)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_failed_run_names_the_failing_step_and_its_error_line():
    with Webhook() as hook:
        payload = executor.run(hook.url, "FAILED", "kfx-tabular-1",
                               "transform: ValueError: categorical feature 'zone' is not in the schema")
    assert hook.posts == [payload]
    assert payload["kfx"] == {"run": "kfx-tabular-1", "state": "FAILED", "failed_step": "transform",
                              "error": "ValueError: categorical feature 'zone' is not in the schema"}
    assert payload["text"] == ("kfx run kfx-tabular-1 FAILED in transform: "
                               "ValueError: categorical feature 'zone' is not in the schema")


def test_a_succeeding_run_names_the_version_it_pushed_and_its_metric(tmp_path):
    reg = str(tmp_path / "registry")
    created = _now(-5)
    version = _publish(reg, "churn", _now())
    with Webhook() as hook:
        payload = executor.run(hook.url, "SUCCEEDED", "kfx-tabular-2", registry_uri=reg, model_name="churn",
                               run_created=created)
    assert hook.posts == [payload]
    assert payload["kfx"] == {"run": "kfx-tabular-2", "state": "SUCCEEDED", "pushed": True, "model": "churn",
                              "version": 1, "uri": version.uri, "metric": "auc", "value": 0.8731}
    assert payload["text"] == f"kfx run kfx-tabular-2 SUCCEEDED: pushed churn v1, auc 0.8731 ({version.uri})"


def test_a_version_older_than_the_run_is_not_its_push(tmp_path):
    reg = str(tmp_path / "registry")
    _publish(reg, "churn", _now(-3600))     # an earlier run's; this one's blessing refused its model
    with Webhook() as hook:
        payload = executor.run(hook.url, "SUCCEEDED", "kfx-tabular-3", registry_uri=reg, model_name="churn",
                               run_created=_now(-60))
    assert hook.posts == [payload] and payload["kfx"]["pushed"] is False
    assert "no model pushed" in payload["text"]


def test_without_a_url_nothing_is_read_or_posted(tmp_path):
    assert executor.run("", "SUCCEEDED", "r", registry_uri=str(tmp_path / "nowhere"), model_name="m") == {}


def test_an_unreachable_webhook_is_one_error_naming_its_host_not_its_path():
    with Webhook() as hook:
        url = hook.url
    with pytest.raises(ValueError, match=r"^notify: cannot post to 127\.0\.0\.1:\d+: ") as err:
        executor.post(url, {"text": "x"}, timeout=2)
    assert "/hooks/" not in str(err.value)


def test_notify_imports_no_tensorflow():
    import subprocess
    probe = "import sys, kfx_components.notify.executor; print('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"
