"""What the Monitoring page reads: for each run under ROOT, the drift and skew it judged. Training
runs: check-drift's `drift` output (which features drifted from the previous span); `kfx monitor`
runs: the monitor stage's `anomalies` verdict (skew and drift distances per feature, the online
metric from late labels, whether retraining is due). See docs/monitoring.md."""
from __future__ import annotations

import re
from datetime import datetime, timezone

from kfx import gc
from kfx.views.run_records import Root, outputs, read_record


def windows(root: Root) -> list[dict]:
    """Drift and skew per feature, per window, oldest first: one entry per run that judged data,
    training runs (check-drift's `drift` output, previous span vs this one) and monitor runs
    (the `anomalies` verdict: skew and drift distances, the online metric, retrain or not)."""
    found = []
    for run in sorted(gc.list_runs(root.path), key=lambda r: r.started) if (root.path / "runs").is_dir() else []:
        record = read_record(run.path)
        if not record:
            continue
        for step, name, artifact in outputs(record):
            meta = artifact.get("metadata") or {}
            if step == "monitor" and name == "anomalies":
                found.append({"run": run.run_id, "kind": "monitor window", "started": run.started,
                              "label": datetime.fromtimestamp(run.started, timezone.utc).strftime("%m-%d %H:%M"),
                              "model": meta.get("model", ""), "skew": _distances(meta.get("skew")),
                              "drift": _distances(meta.get("drift")),
                              "flagged": sorted(set(meta.get("skewed") or []) | set(meta.get("drifted") or [])),
                              "online": meta.get("online") or {}, "retrain": bool(meta.get("retrain")),
                              "reasons": meta.get("reasons") or []})
            elif name == "drift" and meta.get("drift_checked"):
                # check-drift records which features drifted (TFDV's anomalies), not their distances.
                span = f"span {(record.get('parameters') or {}).get('span', '?')}"
                found.append({"run": run.run_id, "kind": span, "label": span, "started": run.started,
                              "model": "", "skew": {},
                              "drift": {f: None for f in meta.get("drifted_features") or []},
                              "flagged": sorted(meta.get("drifted_features") or []), "online": {},
                              "retrain": bool(meta.get("drifted_features")),
                              "reasons": [f"{a.get('feature')}: {a.get('short')}" for a in meta.get("drift") or []]})
        drift_step = (record.get("steps") or {}).get("check-drift") or {}
        if drift_step.get("state") == "FAILED":   # drift_action=block: no output, the features are in the error
            named = _BLOCKED.search(drift_step.get("error") or record.get("error_line") or "")
            features = [f.strip() for f in named.group(1).split(",")] if named else []
            span = f"span {(record.get('parameters') or {}).get('span', '?')}"
            found.append({"run": run.run_id, "kind": f"{span} (stopped)", "label": span, "started": run.started,
                          "model": "", "skew": {}, "drift": {f: None for f in features}, "flagged": features,
                          "online": {}, "retrain": True,
                          "reasons": [drift_step.get("error") or record.get("error_line", "")]})
    return found


# validate's AnomaliesFoundError: "data validation found 2 anomalies in a, b (the report shows them): ..."
_BLOCKED = re.compile(r"found \d+ anomal\w* in (.+?) \(the report shows them\)")


def _distances(value) -> dict:
    """feature -> distance, from a monitor verdict's `skew`/`drift` ({feature: {measure, value, threshold}})."""
    out = {}
    for feature, entry in (value or {}).items() if isinstance(value, dict) else []:
        number = entry.get("value") if isinstance(entry, dict) else entry
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            out[feature] = float(number)
    return out
