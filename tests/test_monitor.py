"""kfx monitor: logged serving data against a pushed model's training statistics and schema.

One registry version per module, published with `registry.publish` as push does:
TFDV statistics of the bundled taxi data (data/chicago_taxi/data.csv) under the
curated schema (pipelines/schemas/chicago_taxi.pbtxt), a model card, and a
stand-in SavedModel directory (the monitor never loads the model: it reads what
the model answered from the payload log). The "model" whose answers are logged
is a logistic regression fitted on the same rows; its test AUC is the card's.

Serving windows are trips of another sample (second_sample.csv), as the payload
logger writes them (JSON lines, 1-3 instances per request, no label). Each
window is monitored with the real pipeline through kfx's runner: the CLI
(`kfx monitor`, as `python -m kfx.cli monitor`) once in a subprocess,
`kfx.monitor.main` in-process for the others.
"""
import csv
import json
import math
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TAXI = REPO / "data" / "chicago_taxi" / "data.csv"
SECOND = Path("/work/shared/data/chicago_taxi/second_sample.csv")
SCHEMA = REPO / "pipelines" / "schemas" / "chicago_taxi.pbtxt"
MODEL = "chicago-taxi-big-tipper"
# The label's source: never served. Clients send the rest of the record whole, trip_start_timestamp
# included (the taxi config drops it: the model does not use it, and the monitor ignores it).
LABEL_DERIVED = ("tips",)
DROPPED = "trip_start_timestamp"
WINDOW = 1500
FEATURES = ("fare", "trip_miles", "trip_seconds", "trip_start_hour")


def _schema_types():
    from tensorflow_metadata.proto.v0 import schema_pb2
    import tensorflow_data_validation as tfdv
    schema = tfdv.load_schema_text(str(SCHEMA))
    return schema, {f.name: schema_pb2.FeatureType.Name(f.type) for f in schema.feature}


def _typed(row: dict, types: dict) -> dict:
    """A CSV row as the JSON a client sends: numbers as numbers, an empty cell as null."""
    out = {}
    for k, v in row.items():
        if k in LABEL_DERIVED:
            continue
        if v is None or v.strip() == "":
            out[k] = None
        elif types.get(k) == "INT":
            out[k] = int(float(v))
        elif types.get(k) == "FLOAT":
            out[k] = float(v)
        else:
            out[k] = v
    return out


def _label(row: dict) -> int:
    try:
        return int(float(row["tips"] or 0) > 0.2 * float(row["fare"] or 0))
    except ValueError:
        return 0


def _x(inst: dict) -> list:
    vals = [float(inst.get(f) or 0.0) for f in FEATURES]
    return [math.log1p(max(v, 0.0)) for v in vals[:3]] + [vals[3], float(inst.get("payment_type") == "Credit Card")]


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """A pushed version of the taxi model (statistics/, schema/, model_card.json) and the tools to log
    a serving window against it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from kfx_components.monitor import serving_data
    from kfx_formats import registry

    root = tmp_path_factory.mktemp("monitor")
    schema, types = _schema_types()
    raw = list(csv.DictReader(TAXI.open()))
    rows = [{**{k: v for k, v in _typed(r, types).items() if k != DROPPED}, "label": _label(r)} for r in raw]
    stage = root / "stage"
    (stage / "statistics" / "train").mkdir(parents=True)
    (stage / "schema").mkdir()
    (stage / "saved_model").mkdir()
    (stage / "saved_model" / "README").write_text("stand-in: the monitor reads logged outputs, not the model\n")
    serving_data.write_statistics(serving_data.statistics(rows, schema),
                              str(stage / "statistics" / "train" / "FeatureStats.pb"))
    shutil.copy(SCHEMA, stage / "schema" / "schema.pbtxt")

    cut = int(len(rows) * 0.8)
    model = LogisticRegression(max_iter=500).fit([_x(r) for r in rows[:cut]], [r["label"] for r in rows[:cut]])
    test_auc = float(roc_auc_score([r["label"] for r in rows[cut:]],
                                   model.predict_proba([_x(r) for r in rows[cut:]])[:, 1]))
    card = {"model_name": MODEL, "problem_type": "binary", "label_key": "label",
            "label_vocabulary": ["false", "true"],
            "metrics": {"split": "test", "overall": {"auc": test_auc}},
            "trust": {"metric": "auc", "test_rows": len(rows) - cut, "model": {"metric": test_auc}}}
    version = registry.publish(
        {"saved_model": str(stage / "saved_model"), "statistics": str(stage / "statistics"),
         "schema": str(stage / "schema")}, {}, str(root / "registry"), MODEL,
        versioned_files=lambda n: {"model_card.json": json.dumps({**card, "version": n}).encode()})

    serving_raw = list(csv.DictReader(SECOND.open()))
    random.Random(7).shuffle(serving_raw)
    window = serving_raw[:WINDOW]

    def log(name, change=lambda inst, i: inst, labels=None, flip=False):
        """The window as payload-log JSON lines (and, with labels=..., a late-labels CSV)."""
        path, records, i = root / f"{name}.jsonl", [], 0
        with path.open("w") as f:
            while i < len(window):
                batch = window[i:i + 1 + (i % 3)]
                instances = [change(_typed(r, types), i + k) for k, r in enumerate(batch)]
                probs = model.predict_proba([_x(inst) for inst in instances])[:, 1]
                rid = f"{name}-{i:05d}"
                f.write(json.dumps({
                    "request_id": rid, "time": "2026-11-26T01:02:03.456Z", "model": MODEL, "model_version": 1,
                    "instances": instances,
                    "outputs": [{"label": "true" if p > 0.5 else "false",
                                 "probabilities": {"false": 1 - float(p), "true": float(p)}} for p in probs]}) + "\n")
                records += [(rid, k, _label(r)) for k, r in enumerate(batch)]
                i += len(batch)
        if labels:
            with (root / labels).open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["request_id", "index", "label"])
                for rid, k, y in records:
                    w.writerow([rid, k, "true" if (y == 1) != flip else "false"])
        return str(path)

    return {"root": root, "version": version.uri, "test_auc": test_auc, "log": log}


def _monitor(pushed, capsys, serving, *extra):
    """kfx monitor in this process (the runner forks its step as for `kfx run`): (exit code, stdout, verdict)."""
    from kfx.cli import main
    code = main(["monitor", "--serving-data", serving, "--model", pushed["version"],
                         "--root", str(pushed["root"] / "ws"), *extra])
    out, err = capsys.readouterr()
    return code, out, err, _verdict(out)


def _verdict(out: str):
    report = next((line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("report: ")), None)
    if report is None:
        return None
    run_dir = Path(report).parent
    found = sorted((run_dir.parents[1] / "artifacts" / "kfx-monitor" / run_dir.name).rglob("verdict.json"))
    return json.loads(found[0].read_text()) if found else None


def test_unshifted_window_passes_through_the_cli(pushed):
    """The real CLI path, in a subprocess: exit 0, a report, and with true late labels no concept drift."""
    serving = pushed["log"]("unshifted", labels="labels-true.csv")
    proc = subprocess.run([sys.executable, "-m", "kfx.cli", "monitor", "--serving-data", serving,
                           "--model", pushed["version"], "--labels", str(pushed["root"] / "labels-true.csv"),
                           "--root", str(pushed["root"] / "ws")],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all is well" in proc.stdout
    verdict = _verdict(proc.stdout)
    assert verdict["verdict"]["retrain"] is False and verdict["verdict"]["features"] == []
    assert verdict["verdict"]["ignored_columns"] == [DROPPED]
    assert verdict["rows"] == WINDOW
    # Every feature was compared, the numeric ones on the training deciles, all below their thresholds.
    assert {"fare", "trip_miles", "payment_type", "company"} <= set(verdict["skew"])
    assert all(m["value"] <= m["threshold"] for m in verdict["skew"].values())
    online = verdict["online"]
    assert online["labelled"] == WINDOW and online["judged"] and not online["concept_drift"]
    assert abs(online["value"] - pushed["test_auc"]) < 0.05, online
    page = Path(next(line.split(": ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("report: ")))
    assert page.suffix == ".html" and "All is well" in page.read_text()


def test_shifted_numeric_feature_is_skew_and_drift(pushed, capsys):
    previous = pushed["log"]("previous")

    def longer(inst, i):
        if inst["trip_miles"] is not None:
            inst["trip_miles"] = inst["trip_miles"] * 2 + 1
        return inst

    code, out, err, verdict = _monitor(pushed, capsys, pushed["log"]("miles", longer), "--previous", previous)
    assert code == 3, out + err
    due = [line for line in out.splitlines() if line.startswith("retraining due: ")]
    assert len(due) == 1 and "trip_miles" in due[0], out
    v = verdict["verdict"]
    assert v["features"] == ["trip_miles"], v["reasons"]
    assert v["skewed"] == ["trip_miles"] and v["drifted"] == ["trip_miles"]
    assert verdict["skew"]["trip_miles"]["value"] > verdict["skew"]["trip_miles"]["threshold"]
    report = Path(next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("report: ")))
    page = report.read_text()
    # Self-contained, the moved feature's two distributions drawn inline.
    assert '<svg' in page and 'aria-label="trip_miles distributions"' in page
    assert "<script" not in page and "<link" not in page and "src=" not in page


def test_new_categorical_value(pushed, capsys):
    def crypto(inst, i):
        if i % 4 == 0:
            inst["payment_type"] = "Crypto"
        return inst

    code, out, err, verdict = _monitor(pushed, capsys, pushed["log"]("crypto", crypto))
    assert code == 3, out + err
    assert "payment_type" in [line for line in out.splitlines() if line.startswith("retraining due: ")][0]
    v = verdict["verdict"]
    assert v["features"] == ["payment_type"], v["reasons"]
    assert "payment_type" in v["schema_anomalies"]   # out of the schema's domain
    assert any("Crypto" in r or "domain" in r.lower() for r in v["reasons"]), v["reasons"]


def test_missing_feature(pushed, capsys):
    def no_seconds(inst, i):
        inst.pop("trip_seconds")
        return inst

    code, out, err, verdict = _monitor(pushed, capsys, pushed["log"]("noseconds", no_seconds))
    assert code == 3, out + err
    assert "trip_seconds (missing)" in out
    assert verdict["verdict"]["features"] == ["trip_seconds"]
    assert verdict["verdict"]["missing_features"] == ["trip_seconds"]


def test_flipped_labels_are_concept_drift(pushed, capsys):
    """The inputs are unchanged (no feature moves); only the labels' relation to them: concept drift."""
    serving = pushed["log"]("flipped", labels="labels-flipped.csv", flip=True)
    code, out, err, verdict = _monitor(pushed, capsys, serving,
                                       "--labels", str(pushed["root"] / "labels-flipped.csv"))
    assert code == 3, out + err
    due = [line for line in out.splitlines() if line.startswith("retraining due: ")][0]
    assert "concept drift" in due
    v, online = verdict["verdict"], verdict["online"]
    assert v["features"] == [] and v["concept_drift"]
    assert online["value"] < pushed["test_auc"] - 0.2 and online["ci"][1] < pushed["test_auc"]


def test_unreadable_window_fails_the_step_with_one_error_line(pushed, tmp_path, capsys):
    """Bad serving data is found by the step: exit 1, one `error:` line naming file and line."""
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"request_id": "a", "instances": [{"fare": 1.0}]}\nnot json\n')
    code, out, err, _ = _monitor(pushed, capsys, str(broken))
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"error: monitor: serving data {broken}, line 2: not JSON" in errors[0], err


def test_bad_input_is_one_error_line(pushed, tmp_path):
    """Usage errors (exit 2) name the file and what to do; bad serving data names file and line."""
    from kfx.cli import main
    from kfx_components.monitor import serving_data
    from kfx_formats import payload_log

    bare = tmp_path / "registry" / MODEL / "v1"
    bare.mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-m", "kfx.cli", "monitor", "--serving-data", str(SECOND),
                           "--model", str(bare)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --model")
    assert "statistics/train/FeatureStats.pb" in lines[0] and "push" in lines[0]
    assert main(["monitor", "--serving-data", str(tmp_path / "nope.jsonl"), "--model", pushed["version"]]) == 2
    assert main(["monitor", "--serving-data", str(SECOND), "--model", pushed["version"],
                         "--host", "http://kfp:8888"]) == 2

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"request_id": "a", "instances": [{"fare": 1.0}]}\nnot json\n')
    with pytest.raises(ValueError, match=r"broken.jsonl, line 2: not JSON"):
        serving_data.read_serving_data(str(broken))
    labels = tmp_path / "labels.csv"
    labels.write_text("id,y\na,1\n")
    with pytest.raises(ValueError, match=r"labels .*labels.csv: header .* lacks request_id and label"):
        payload_log.read_labels(str(labels))


def test_plain_csv_and_feature_dicts_are_read(tmp_path):
    from kfx_components.monitor import serving_data
    (tmp_path / "a.csv").write_text("request_id,fare,company\nr1,3.5,A\nr2,,B\n")
    (tmp_path / "b.jsonl").write_text('{"fare": 4.0, "company": "C"}\n')
    data = serving_data.read_serving_data(str(tmp_path))
    assert [r.get("fare") for r in data["rows"]] == ["3.5", "", 4.0]
    assert "request_id" not in data["rows"][0] and data["requests"] == 3
    assert data["format"] == "csv, feature dicts" and data["predictions"] == {}


def test_retraining_runs_the_lifecycle_into_the_monitored_registry(tmp_path, monkeypatch):
    """--retrain runs the lifecycle in this process (kfx.runner.execute.run_pipeline, as `kfx run`)
    into the registry and name of the monitored model, unless a --param says otherwise; the IR is KFP's."""
    import yaml

    from kfx import monitor
    params = monitor.retrain_parameters(f"{tmp_path}/registry/{MODEL}/v3", "pipelines/configs/chicago_taxi.yaml",
                                        str(TAXI), ["train_epochs=5"])
    assert params["registry_uri"] == f"{tmp_path}/registry" and params["model_name"] == MODEL
    assert params["train_epochs"] == 5 and params["data_uri"] == str(TAXI)
    params = monitor.retrain_parameters(f"s3://kfx/registry/{MODEL}/v3", None, str(TAXI), ["model_name=other"])
    assert params["registry_uri"] == "s3://kfx/registry" and params["model_name"] == "other"

    calls = []
    import kfx.runner.execute     # monitor imports it when it retrains, so the CLI starts without it
    monkeypatch.setattr(kfx.runner.execute, "run_pipeline", lambda ir_path, params, root, **kw: calls.append(
        (next(yaml.safe_load_all(Path(ir_path).read_text()))["pipelineInfo"]["name"], params, root)) or "result")
    assert monitor.retrain(f"{tmp_path}/registry/{MODEL}/v3", str(TAXI), str(tmp_path)) == "result"
    (name, given, root), = calls
    assert name == "kfx-tabular" and root == str(tmp_path) and given["model_name"] == MODEL

    from kfx_pipelines.monitor import compile_pipeline
    docs = list(yaml.safe_load_all(Path(compile_pipeline(str(tmp_path / "m.yaml"), profile="cpu")).read_text()))
    spec, platform = docs[0], docs[1]
    # Placed like every stage on the cluster: the CPU pool, the S3 settings by reference.
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert any(e.get("nodeSelector", {}).get("labels", {}).get("kfx.dev/node-pool") == "cpu" for e in k8s.values())
    tasks = spec["root"]["dag"]["tasks"]
    assert {t["taskInfo"]["name"] for t in tasks.values()} == {
        "import-serving-data", "import-model-version", "monitor"}
    mon = next(t for t in tasks.values() if t["taskInfo"]["name"] == "monitor")
    assert mon.get("cachingOptions", {}).get("enableCache") is not True   # always runs
    image = next(e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values() if "container" in e)
    assert "/kfx-monitor:" in image
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {
        "serving_data_uri", "model_uri", "previous_uri", "labels_uri", "metric_tolerance"}


HELM = REPO / ".tools" / "bin" / "helm"


@pytest.mark.skipif(not HELM.exists(), reason="helm not installed: run `make k8s-tools`")
@pytest.mark.parametrize("kind", ["recurringRun", "cronJob"])
def test_chart_schedules_the_monitor(kind, tmp_path):
    """Off by default; enabled, it submits the compiled monitor IR with the monitor's parameters."""
    import yaml

    from kfx_pipelines.monitor import compile_pipeline
    ir = compile_pipeline(str(tmp_path / "monitor.yaml"), profile="cpu")
    base = [str(HELM), "template", "kfx", str(REPO / "helm" / "kfx")]
    off = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert off.returncode == 0 and "kfx-monitor" not in off.stdout
    no_ir = subprocess.run(base + ["--set", "monitor.enabled=true"], capture_output=True, text=True, timeout=60)
    assert no_ir.returncode != 0 and "monitor.ir" in no_ir.stderr
    out = subprocess.run(base + ["--set", "monitor.enabled=true", "--set", f"monitor.kind={kind}",
                                 "--set-file", f"monitor.ir={ir}",
                                 "--show-only", "templates/monitor-cronjob.yaml"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    docs = {d["kind"]: d for d in yaml.safe_load_all(out) if d}
    assert docs["ConfigMap"]["data"]["pipeline.yaml"] == Path(ir).read_text()
    if kind == "cronJob":
        assert docs["CronJob"]["spec"]["schedule"] == "0 * * * *"
        pod = docs["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    else:
        pod = docs["Job"]["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert "--pipeline-name=kfx-monitor" in args
    assert ("--cron=0 0 * * * *" in args) == (kind == "recurringRun")
    assert "--param=model_uri=s3://kfx-artifacts/registry/chicago-taxi-big-tipper/v1" in args
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
