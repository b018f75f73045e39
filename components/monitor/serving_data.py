"""The serving window: logged requests read into rows, and the rows as TFDV statistics.

Serving data is a file, or a directory of such files read recursively:
* the payload log (kfx_formats.payload_log), one request per line:
  ``{"request_id", "time", "model", "model_version", "instances": [{feature: value}], "outputs": [...]}``;
* JSON lines of bare feature dicts (one instance per line);
* CSV with a header (one instance per row).
A ``request_id`` (and ``index``) column or key identifies a request, never a feature.

Bad input is a ValueError whose one line names the file (and line) and what is expected.
"""
from __future__ import annotations

import csv
import json
import math
import os
from typing import Any, Dict, List, Optional

from kfx_formats import payload_log

STATS_FILE = "FeatureStats.pb"
# Columns of a CSV / keys of a bare-dict line that identify a request, never a feature.
ID_COLUMNS = ("request_id", "index")
SUFFIXES = payload_log.LOG_SUFFIXES + (".csv",)


def _first_char(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                return line.strip()[0]
    return ""


def read_serving_data(path: str, what: str = "serving data") -> dict:
    """{"rows": [{feature: value}], "predictions": {(request_id, index): output} (of payload-log records),
    "model_versions": set, "requests": n, "format": ...} from payload logs, bare JSON lines or CSV files."""
    rows: List[dict] = []
    predictions: Dict[payload_log.Key, Any] = {}
    versions = set()
    requests = 0
    formats = set()
    for file in payload_log.files(path, what, SUFFIXES):
        first = _first_char(file)
        if not first:
            continue
        if first in "{[":
            for n, obj in payload_log.json_lines(file, what):
                requests += 1
                if payload_log.is_record(obj):
                    formats.add("payload log")
                    record = payload_log.check_record(obj, f"{what} {file}, line {n}")
                    if record["model_version"]:
                        versions.add(record["model_version"])
                    rows += record["instances"]
                    predictions.update(payload_log.predictions([record]))
                else:
                    formats.add("feature dicts")
                    rows.append({k: v for k, v in obj.items() if k not in ID_COLUMNS})
        else:
            formats.add("csv")
            with open(file, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if not reader.fieldnames:
                    raise ValueError(f"{what} {file}: no CSV header")
                for row in reader:
                    requests += 1
                    rows.append({k: v for k, v in row.items() if k not in ID_COLUMNS and k is not None})
    if not rows:
        raise ValueError(f"{what} {path}: no rows (expected payload-log JSON lines, JSON lines of "
                         "feature dicts, or a CSV with a header)")
    return {"rows": rows, "predictions": predictions, "model_versions": versions, "requests": requests,
            "format": ", ".join(sorted(formats))}


# ------------------------------------------------------------------ statistics
def _cell(value) -> Optional[list]:
    """A cell as a list of scalar values, or None when missing."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        values = [v for v in value if v is not None and not (isinstance(v, float) and math.isnan(v))]
        return values or None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str) and value.strip() == "":
        return None
    return [value]


def _number(v) -> Optional[float]:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _kind(cells: List[Optional[list]], expected: str) -> str:
    """"INT", "FLOAT" or "BYTES" for a column: the schema's type when the values allow it."""
    values = [v for c in cells if c for v in c]
    numbers = [_number(v) for v in values]
    numeric = all(n is not None and math.isfinite(n) for n in numbers)
    integral = numeric and all(float(n).is_integer() for n in numbers)
    if expected == "BYTES":
        return "BYTES"
    if expected == "INT":
        return "INT" if integral else ("FLOAT" if numeric else "BYTES")
    if expected == "FLOAT":
        return "FLOAT" if numeric else "BYTES"
    if not values:
        return "BYTES"
    return "INT" if integral else ("FLOAT" if numeric else "BYTES")


def record_batch(rows: List[dict], schema=None):
    """Rows as the Arrow RecordBatch of list arrays TFDV computes statistics on (a missing cell is null),
    typed as the schema says (an INT column parsed from text stays INT) unless the values disagree."""
    import pyarrow as pa
    from tensorflow_metadata.proto.v0 import schema_pb2
    declared = {f.name: schema_pb2.FeatureType.Name(f.type) for f in schema.feature} if schema is not None else {}
    names = list(dict.fromkeys(k for r in rows for k in r))
    arrays, fields = [], []
    for name in names:
        cells = [_cell(r.get(name)) for r in rows]
        kind = _kind(cells, declared.get(name, ""))
        if kind == "INT":
            data = [[int(_number(v)) for v in c] if c else None for c in cells]
            arrays.append(pa.array(data, type=pa.list_(pa.int64())))
        elif kind == "FLOAT":
            data = [[_number(v) for v in c] if c else None for c in cells]
            arrays.append(pa.array(data, type=pa.list_(pa.float32())))
        else:
            data = [[(v if isinstance(v, str) else json.dumps(v) if isinstance(v, (dict, list)) else str(v))
                     .encode("utf-8") for v in c] if c else None for c in cells]
            arrays.append(pa.array(data, type=pa.list_(pa.binary())))
        fields.append(name)
    return pa.RecordBatch.from_arrays(arrays, fields)


def statistics(rows: List[dict], schema=None):
    """TFDV statistics of in-memory rows (no Beam: a serving window fits in memory)."""
    import tensorflow_data_validation as tfdv
    from tensorflow_data_validation.statistics import stats_impl
    options = tfdv.StatsOptions(schema=schema) if schema is not None else tfdv.StatsOptions()
    return stats_impl.generate_statistics_in_memory(record_batch(rows, schema), options)


def write_statistics(stats, path: str) -> None:
    """A binary DatasetFeatureStatisticsList, as validate writes FeatureStats.pb (tfdv.load_stats_binary reads it)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(stats.SerializeToString())


def load_previous(path: str, schema):
    """The previous window's statistics: a FeatureStats.pb, a directory holding one (a monitor's
    statistics output: serving/FeatureStats.pb), or the previous window's logged data."""
    import tensorflow_data_validation as tfdv
    candidates = [path] if path.endswith(".pb") else [os.path.join(path, "serving", STATS_FILE),
                                                        os.path.join(path, STATS_FILE)]
    for file in candidates:
        if os.path.isfile(file):
            try:
                return tfdv.load_stats_binary(file), file
            except Exception as e:
                raise ValueError(f"previous window {file}: not a binary DatasetFeatureStatisticsList: "
                                 f"{e}") from e
    return statistics(read_serving_data(path, "previous window")["rows"], schema), path
