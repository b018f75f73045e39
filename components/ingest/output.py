"""What both engines write beside the records (the columns file) and report (the facts)."""
import json
import os
from typing import Dict, List, Optional, Sequence

from kfx_components.common import io


def write_columns_file(staging: str, types: Dict[str, str]) -> None:
    with open(os.path.join(staging, io.COLUMNS_FILE), "w", encoding="utf-8") as f:
        json.dump(types, f, indent=1, sort_keys=True)


def ingest_facts(*, label_key: str, problem_type: str, vocabulary: List[str], rows, types: Dict[str, str],
                 data_path: str, dropped_rows: int, eval_ratio: float, test_ratio: float, split_method: str,
                 warnings: List[str], class_counts: Optional[dict], classes_only_in_train: List[str],
                 engine: Optional[str] = None, dropped_columns: Sequence[str] = (),
                 empty_columns: Sequence[str] = ()) -> dict:
    """What the step reports (the examples artifact's metadata); rows: the row count per split (and
    io.BACKTEST's, when a window of spans has one).
    The pandas path, the reference, names no engine. What was left out of the file (rows and
    columns, beside its row count) is counted by facts.left_out, and its summary ends the run."""
    from kfx_components.common.facts import left_out
    facts = {
        "label_key": label_key,
        "problem_type": problem_type,
        "num_classes": len(vocabulary),
        "label_vocabulary": vocabulary,
        "rows": sum(rows[s] for s in io.SPLITS),
        "rows_train": rows[io.TRAIN],
        "rows_eval": rows[io.EVAL],
        "rows_test": rows[io.TEST],
        "columns": types,
        "source": str(data_path),
        "dropped_rows": dropped_rows,
        "eval_ratio": eval_ratio,
        "test_ratio": test_ratio,
        "split_method": split_method,
        "warnings": warnings,
    }
    if rows.get(io.BACKTEST):   # a window of spans: the newest span's rows, written beside the splits
        facts["rows_backtest"] = rows[io.BACKTEST]
    facts.update(left_out(facts["rows"] + facts.get("rows_backtest", 0), dropped_rows, dropped_columns,
                          empty_columns))
    if engine:
        facts["engine"] = engine
    if problem_type != "regression":
        facts["class_counts"] = class_counts
        facts["classes_only_in_train"] = classes_only_in_train
    return facts
