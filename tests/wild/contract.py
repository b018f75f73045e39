"""The contract of issue 20, checked: what an ingest that took a table promises, and what a finished
`kfx run` ended with (a verdict, a one-line ingest refusal, or how it broke the contract). Used by
tests/wild and bench/wild.py."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from tests.wild.tables import WildTable


def ingest(table: WildTable, work: Path) -> dict:
    """kfx's ingest executor on the table as written to a file, in this process."""
    from kfx_components.ingest import executor
    data = table.write(work / "in")
    return executor.run(data_path=str(data), examples_dir=str(work / "examples"), label=table.label,
                        problem_type=table.task, drop_columns=table.drop_columns)


def check_ingested(table: WildTable, work: Path, facts: dict) -> None:
    """What an ingest that succeeded promises, checked against the table itself."""
    import tensorflow as tf
    from kfx_components.common import io

    labels = table.frame[table.label]
    missing_labels = int(labels.isna().sum())
    assert facts["dropped_rows"] == missing_labels, (facts["dropped_rows"], missing_labels)
    assert facts["rows"] + facts["dropped_rows"] == len(table.frame)
    assert facts["rows_train"] + facts["rows_eval"] + facts["rows_test"] == facts["rows"]
    for split in io.SPLITS:
        path = io.split_file(str(work / "examples"), split)
        written = sum(1 for _ in tf.data.TFRecordDataset(path, "GZIP"))
        assert written == facts[f"rows_{split}"] > 0, (split, written, facts[f"rows_{split}"])
    if missing_labels:   # rows left out are said, not dropped out of sight
        assert any(str(missing_labels) in w for w in facts["warnings"]), facts["warnings"]
    if table.task != "regression":
        assert facts["num_classes"] == labels.dropna().astype(str).nunique()
    # No column is lost on the way: every feature is in the facts under the name it has in the file.
    said = json.dumps(facts, ensure_ascii=False)
    kept = [c.strip() for c in table.frame.columns if c != table.label and c not in table.drop_columns]
    lost = [c for c in kept if json.dumps(c, ensure_ascii=False)[1:-1] not in said]
    assert not lost, f"columns missing from ingest's facts: {lost}"


def one_line_names_culprit(message: str, table: Optional[WildTable] = None) -> bool:
    """The ingest contract's message: one line naming a column, a line/row or a parameter."""
    if "\n" in message.strip() or "unexpectedly" in message:
        return False
    if re.search(r"\b(line|row)s? \d+", message):
        return True
    parameters = ("label", "problem_type", "eval_ratio", "test_ratio", "drop_columns", "split_key", "engine")
    if any(p in message for p in parameters):
        return True
    columns = list(table.frame.columns) if table is not None else []
    return any(repr(c) in message or repr(c.strip()) in message for c in columns)


# What a `kfx run` may end with: kinds that keep the contract, and the ways of breaking it.
PUSHED, NOT_PUSHED, REFUSED_IN_INGEST = "pushed", "not pushed", "refused in ingest"
KEPT = (PUSHED, NOT_PUSHED, REFUSED_IN_INGEST)
_VERDICT = r"^(pushed .+|already v\d+: .+|not pushed: .+)$"


def classify(returncode: int, stdout: str, stderr: str, table: Optional[WildTable] = None):
    """(kind, the line that says it) of a finished `kfx run`: a verdict, a one-line ingest refusal,
    or how it broke the contract ('traceback', 'failed in STEP', 'error of N lines', 'no verdict',
    'ingest error names nothing')."""
    if "Traceback (most recent call last)" in stdout + stderr:
        last = [ln for ln in stderr.strip().splitlines() if ln.strip()] or ["?"]
        return "traceback", last[-1]
    if returncode == 0:
        verdict = re.search(_VERDICT, stdout, re.M)
        if not verdict:
            return "no verdict", (stdout.strip().splitlines() or ["?"])[-1]
        return (NOT_PUSHED if verdict.group(1).startswith("not pushed") else PUSHED), verdict.group(1)
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    if len(lines) != 1 or not lines[0].startswith("error: "):
        return f"error of {len(lines)} lines", (lines or ["?"])[-1]
    line = lines[0]
    step = re.match(r"error: ([\w-]+): ", line)
    if not step or step.group(1) != "ingest":
        return f"failed in {step.group(1) if step else 'the CLI'}", line
    if not one_line_names_culprit(line, table):
        return "ingest error names nothing", line
    return REFUSED_IN_INGEST, line


def metrics_of(verdict: str) -> dict:
    """The figures of a `pushed ...` line: metric, value, test rows, CI, trivial and reference."""
    m = re.search(r": (\w+) ([\d.]+) on (\d+) test rows(?: \(95% CI ([\d.]+)-([\d.]+)\))?, trivial ([\d.]+), "
                  r"(\w+) ([\d.]+)", verdict)
    if not m:
        return {}
    return {"metric": m.group(1), "value": float(m.group(2)), "test_rows": int(m.group(3)),
            "ci": f"{m.group(4)}-{m.group(5)}" if m.group(4) else "", "trivial": float(m.group(6)),
            "reference": m.group(7), "reference_value": float(m.group(8))}
