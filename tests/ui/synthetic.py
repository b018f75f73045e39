"""Synthetic roots for the UI's unit tests and bench/ui.py: run records shaped as kfx.runner writes
them (runs/<id>/run.json, pipeline.yaml), a registry with versions, aliases and a rollout, and
monitor windows. No pipeline runs: what is checked is how the UI reads these files."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from kfx.runner.orchestrator import run_listing

PIPELINE = "kfx-tabular"


def run_id(i: int) -> str:
    return f"{PIPELINE}-20260101-{i // 3600 % 24:02d}{i // 60 % 60:02d}{i % 60:02d}-{i % 0xffffff:06x}"


def record(i: int, state: str = "COMPLETE") -> dict:
    """A finished run: ingest, validate, check-drift, evaluate (primary metric with its interval), push."""
    auc = 0.80 + (i % 17) / 100
    outputs = {
        "ingest": {"examples": {"type": "system.Dataset", "uri": f"/r/{i}/examples", "metadata": {"rows": 1000 + i}}},
        "check-drift": {"drift": {"type": "system.ExampleAnomalies", "uri": f"/r/{i}/drift", "metadata": {
            "drift_checked": i > 0, "drifted_features": ["trip_miles"] if i % 5 == 4 else [],
            "drift": [{"feature": "trip_miles", "short": "High Linfty distance"}] if i % 5 == 4 else []}}},
        "evaluate": {
            "blessing": {"type": "system.Artifact", "uri": f"/r/{i}/blessing", "metadata": {
                "blessed": True, "trust": {"metric": "auc", "model": {"metric": auc, "ci": [auc - 0.02, auc + 0.02]}}}},
            "metrics": {"type": "system.Metrics", "uri": "", "metadata": {"auc": auc, "accuracy": auc - 0.1}},
            "classification_metrics": {"type": "system.ClassificationMetrics", "uri": "", "metadata": {
                "confidenceMetrics": [{"falsePositiveRate": f, "recall": min(1.0, f ** 0.3), "confidenceThreshold": 1 - f}
                                      for f in (0.0, 0.1, 0.3, 0.6, 1.0)]}}},
        "push": {"pushed_model": {"type": "system.Model", "uri": f"/r/{i}/model",
                                  "metadata": {"summary": f"pushed taxi v{i + 1} (auc {auc:.3f})"}}},
    }
    steps = {name: {"state": "CACHED" if i % 2 and name == "ingest" else "COMPLETE", "seconds": 1.5,
                    "execution_id": i * 10 + k, "log": None, "kept": None, "parameters": {}, "outputs": outs}
             for k, (name, outs) in enumerate(outputs.items())}
    return {"run_id": run_id(i), "pipeline": PIPELINE, "state": state, "error": "",
            "error_line": "validate: anomalies found" if state == "FAILED" else "",
            "seconds": 60.0 + i, "parameters": {"span": i % 4 + 1, "train_epochs": 4 + i % 2,
                                                 "data_uri": f"/data/span-{i % 4 + 1}/data.csv"},
            "steps": steps}


def write_runs(root: Path, count: int, start: int = 0, failed_every: int = 0, pad_kb: int = 0,
               listing: bool = True) -> list[str]:
    """`count` run directories, one started a second after the other (pipeline.yaml's mtime);
    `pad_kb`: metadata added to reach a real run's record size (the taxi run's: ~150 KB);
    `listing`: summary.json beside run.json, as the runner writes it (False: a root older than it)."""
    ids = []
    base = time.time() - count - start - 10
    for i in range(start, start + count):
        run_dir = root / "runs" / run_id(i)
        run_dir.mkdir(parents=True, exist_ok=True)
        state = "FAILED" if failed_every and i % failed_every == failed_every - 1 else "COMPLETE"
        body = record(i, state)
        if state == "FAILED":   # check-drift blocked the run, as validate's error says it
            body["steps"]["check-drift"].update(state="FAILED", outputs={}, error=(
                "data validation found 1 anomaly in trip_miles (the report shows them): [previous] trip_miles: "
                "High Linfty distance"))
        if pad_kb:
            # Mixed as a real record is (names, sentences, numbers): parsing it costs what a real one does.
            body["steps"]["evaluate"]["outputs"]["blessing"]["metadata"]["per_slice"] = \
                [{"slice": f"trip_start_hour={k % 24}", "note": "within the interval of the overall metric",
                  "auc": round(0.9 + k % 7 * 0.001, 4), "rows": k} for k in range(int(pad_kb * 1024 / 120))]
        (run_dir / "run.json").write_text(json.dumps(body))
        if listing:
            (run_dir / "summary.json").write_text(json.dumps(run_listing(body)))
        (run_dir / "pipeline.yaml").write_text("pipelineInfo: {name: kfx-tabular}\nroot: {dag: {tasks: {}}}\n")
        os.utime(run_dir / "pipeline.yaml", (base + i, base + i))
        ids.append(run_id(i))
    return ids


def write_monitor_run(root: Path, i: int, retrain: bool, online: float) -> str:
    """A `kfx monitor` window: the verdict in the anomalies' metadata, as the monitor stage writes it."""
    rid = f"kfx-monitor-20260102-0000{i:02d}-{i:06x}"
    run_dir = root / "runs" / rid
    run_dir.mkdir(parents=True)
    verdict = {"retrain": retrain, "features": ["fare"] if retrain else [], "skewed": ["fare"] if retrain else [],
               "drifted": [], "reasons": ["fare: training/serving skew (jensen shannon 0.240 > 0.1)"] if retrain else [],
               "model": "taxi v1", "online": {"metric": "accuracy", "value": online, "ci": [online - 0.03, online + 0.03],
                                              "reference": 0.9, "labelled": 200},
               "skew": {"fare": {"measure": "jensen_shannon_divergence", "value": 0.24 if retrain else 0.03,
                                 "threshold": 0.1},
                        "trip_miles": {"measure": "jensen_shannon_divergence", "value": 0.02, "threshold": 0.1}},
               "drift": {}}
    rec = {"run_id": rid, "pipeline": "kfx-monitor", "state": "COMPLETE", "seconds": 5.0, "parameters": {},
           "steps": {"monitor": {"state": "COMPLETE", "seconds": 4.0, "outputs": {
               "anomalies": {"type": "system.ExampleAnomalies", "uri": "", "metadata": verdict}}}}}
    (run_dir / "run.json").write_text(json.dumps(rec))
    (run_dir / "pipeline.yaml").write_text("x: 1\n")
    os.utime(run_dir / "pipeline.yaml", (time.time() - 3600 + i, time.time() - 3600 + i))
    return rid


def write_registry(root: Path, model: str = "taxi") -> Path:
    """Two versions (v2 in production), the alias history and one finished rollout."""
    model_dir = root / "registry" / model
    for n, auc in ((1, 0.91), (2, 0.93)):
        version = model_dir / f"v{n}"
        (version / "saved_model").mkdir(parents=True)
        (version / "saved_model" / "saved_model.pb").write_bytes(b"\0" * 1000 * n)
        (version / "model_card.json").write_text(json.dumps(
            {"model_name": model, "version": n, "trust": {"metric": "auc", "model": {"metric": auc, "ci": [auc - .01, auc + .01]}}}))
        (version / "model_card.html").write_text(f"<!doctype html><h1>{model} v{n}</h1><p>card</p>")
    (model_dir / "aliases.json").write_text(json.dumps({
        "production": {"version": 2, "updated": "2026-01-02T00:00:00Z", "by": "rollout"},
        "staging": {"version": 1, "updated": "2026-01-01T00:00:00Z", "by": "push"},
        "history": [{"alias": "production", "from": 1, "to": 2, "time": "2026-01-02T00:00:00Z", "by": "rollout",
                     "note": "canary passed"}]}))
    rollout = model_dir / "rollouts" / "20260102T000000-canary-v1-v2"
    rollout.mkdir(parents=True)
    (rollout / "state.json").write_text(json.dumps({"id": rollout.name, "strategy": "canary", "current": "v1",
                                                    "candidate": "v2", "status": "promoted",
                                                    "started": "2026-01-02T00:00:00Z", "steps": [10, 50, 100]}))
    return model_dir
