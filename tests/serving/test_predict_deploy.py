"""`kfx predict` (Beam DirectRunner, the same SavedModel) and the deploy step's record."""
import csv
import json
import subprocess
import sys

import pytest

from kfx.serving.batch import to_example
from kfx_formats import features
from kfx_components.common import loading
from kfx_components.deploy import executor as deploy
from tests.serving.conftest import REPO


def test_batch_predict_writes_keys_and_matches_savedmodel(served_registry, taxi_csv, tmp_path):
    out = tmp_path / "pred"
    p = subprocess.run([sys.executable, "-m", "kfx.cli", "predict", "--model",
                        f"{served_registry['model_dir']}/v1", "--data", str(taxi_csv), "--out", str(out),
                        "--key", "trip_start_timestamp"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    recs = [json.loads(l) for f in sorted(out.glob("predictions*.jsonl")) for l in f.read_text().splitlines()]
    with open(taxi_csv) as f:
        rows = list(csv.DictReader(f))
    assert len(recs) == len(rows) == json.loads((out / "summary.json").read_text())["rows"]
    assert sorted(r["key"] for r in recs) == sorted(r["trip_start_timestamp"] for r in rows)
    import tensorflow as tf
    fn = loading.load_model(str(served_registry["v1"] / "saved_model")).signatures["serving_default"]
    spec = features.spec_from_signature(fn)
    first = {r["key"]: r for r in recs}
    sample = rows[:20]
    want = fn(examples=tf.constant([to_example(tf, r, spec) for r in sample]))["probabilities"].numpy()[:, 0]
    vocab = served_registry["card"]["label_vocabulary"]
    for r, w in zip(sample, want):
        assert abs(first[r["trip_start_timestamp"]]["probabilities"][vocab[1]] - w) < 1e-5


def test_deploy_records_only_pushed_models(tmp_path):
    reg = str(tmp_path / "registry")
    assert deploy.run({"pushed": False, "reason": "not blessed"}, reg, "m", "canary")["deployed"] is False
    assert not (tmp_path / "registry").exists()
    facts = deploy.run({"pushed": True, "version": 3}, reg, "m", "canary", {"run": "r1"})
    rec = json.loads(open(facts["record"]).read())
    assert rec["version"] == 3 and rec["rollout"] == "canary" and rec["status"] == "pending"
    assert rec["commands"]["rollout"].endswith("--candidate v3 --strategy canary")
    assert facts["record"].startswith(f"{reg}/m/deployments/")
    with pytest.raises(ValueError):
        deploy.run({"pushed": True, "version": 3}, reg, "m", "rainbow")


def test_deploy_component_compiles(tmp_path):
    from kfp import compiler, dsl
    from kfx_components.deploy.component import deploy as deploy_op

    @dsl.pipeline(name="deploy-only")
    def p(model_uri: str = "x"):
        imp = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model)
        deploy_op(pushed_model=imp.output, registry_uri="/r", model_name="m", rollout="shadow")
    compiler.Compiler().compile(p, str(tmp_path / "p.yaml"))
    assert "kfx-deploy" in (tmp_path / "p.yaml").read_text()
