"""What the UI reads of runs: their records (ROOT/runs/*/run.json) and the MLMD store (executions,
events, artifacts of each run's context; lineage). The registry: kfx.ui.registry; drift and
skew: kfx.ui.monitoring.

Read-only: nothing here writes under ROOT. Run records are read one at a time and only a page of
rows is kept (heapq over a generator), so memory does not grow with the number of runs; a small
bounded cache keeps the summary rows of finished runs (their run.json no longer changes)."""
from __future__ import annotations

import collections
import heapq
import json
import os
import re
import threading
from pathlib import Path
from typing import Iterator, Optional

from kfx import gc
from kfx.stores.metadata import RUN_CONTEXT, MetadataStore, State, prop

try:   # in the main lock; ~3x faster than json on a run record (150 KB for the taxi run)
    from orjson import loads as _loads
except ImportError:   # pragma: no cover - a slimmer install
    _loads = json.loads

PAGE = 50
SUMMARY_CACHE = 10000                # summary rows kept (finished runs only, ~1 KB each): bounds the UI's memory
_RUN_ID = re.compile(r"^(?P<pipeline>.+)-\d{8}-\d{6}-[0-9a-f]{6}$")   # kfx.runner's run id
_ITERATION = re.compile(r"(\[\d+\])+$")                                # square[2] -> square
_MLMD_STATE = {State.NEW: "PENDING", State.RUNNING: "RUNNING", State.COMPLETE: "COMPLETE",
               State.FAILED: "FAILED", State.CACHED: "CACHED", State.CANCELED: "SKIPPED"}
SORTS = ("started", "run", "pipeline", "seconds", "state", "span", "metric")



def relative_to_root(root: Path, path: str) -> Optional[str]:
    """`path` (an artifact URI or a log path a record holds) relative to `root`, or None when it
    is not under it (an s3:// URI, a file elsewhere): the UI links (and serves) only what is under ROOT."""
    if "://" in path and not path.startswith("file://"):
        return None
    real = Path(os.path.realpath(path.removeprefix("file://")))
    root = Path(root).resolve()
    if root not in real.parents:
        return None
    return real.relative_to(root).as_posix()


class Root:
    """One root, opened once by the app; MLMD calls are serialized (its store is not thread-safe)."""

    def __init__(self, path: str | Path):
        self.path = Path(path).resolve()
        self.registry = self.path / "registry"
        self._md: Optional[MetadataStore] = None
        self.lock = threading.RLock()
        self._summaries: collections.OrderedDict = collections.OrderedDict()

    @property
    def md(self) -> Optional[MetadataStore]:
        """The MLMD store, or None before the first run made one (never created by the UI)."""
        if self._md is None and (self.path / "metadata.sqlite").is_file():
            self._md = MetadataStore(str(self.path / "metadata.sqlite"))
        return self._md

    def run_dir(self, run_id: str) -> Optional[Path]:
        path = self.path / "runs" / run_id
        return path if "/" not in run_id and run_id not in ("", ".", "..") and path.is_dir() else None

    def servable(self, path: Optional[str]) -> Optional[str]:
        return relative_to_root(self.path, path) if path else None


# ------------------------------------------------------------------ run records
def read_record(run_dir: Path, name: str = "run.json") -> Optional[dict]:
    """A run's record; name="summary.json": its listing (what the Runs page shows, ~1 KB)."""
    try:
        return _loads((run_dir / name).read_bytes())
    except (OSError, ValueError):   # orjson.JSONDecodeError is a ValueError too
        return None


def outputs(record: dict) -> Iterator[tuple[str, str, dict]]:
    """(step, output name, artifact) of every output a run record holds."""
    for step, body in record.get("steps", {}).items():
        for name, artifact in (body.get("outputs") or {}).items():
            yield step, name, artifact


def primary_metric(record: dict) -> Optional[dict]:
    """The evaluation's primary metric and its bootstrap interval (the blessing's `trust`)."""
    for _, _, artifact in outputs(record):
        trust = (artifact.get("metadata") or {}).get("trust")
        if isinstance(trust, dict) and isinstance(trust.get("model"), dict):
            ci = trust["model"].get("ci") or [None, None]
            return {"name": trust.get("metric") or (artifact["metadata"].get("primary_metric")),
                    "value": trust["model"].get("metric"), "low": ci[0], "high": ci[1]}
    return None


def outcome(record: dict) -> str:
    """The run's outcome line: the last output `summary` (the convention of kfx.runner.outcome)."""
    lines = [" ".join(str(a["metadata"]["summary"]).split()) for _, _, a in outputs(record)
             if (a.get("metadata") or {}).get("summary")]
    return lines[-1] if lines else ""


def summary(root: Root, run: gc.RunInfo) -> dict:
    """One row of the Runs page."""
    record_path = run.path / "run.json"
    stamp = record_path.stat().st_mtime_ns if record_path.is_file() else None
    key = (run.run_id, stamp)
    with root.lock:
        if stamp is not None and key in root._summaries:
            root._summaries.move_to_end(key)
            return root._summaries[key]
    # The runner's small listing beside run.json; a root older than it has only run.json.
    record = (read_record(run.path, "summary.json") or read_record(run.path)) if stamp is not None else None
    match = _RUN_ID.match(run.run_id)
    row = {"run": run.run_id, "pipeline": match.group("pipeline") if match else "",
           "started": run.started, "seconds": None, "state": "RUNNING" if run.live else "UNFINISHED",
           "span": None, "cached": 0, "steps": 0, "outcome": "", "metric": None}
    if record:
        states = [s.get("state") for s in record.get("steps", {}).values()]
        row.update(pipeline=record.get("pipeline", row["pipeline"]), seconds=record.get("seconds"),
                   state=record.get("state", "UNKNOWN"), span=(record.get("parameters") or {}).get("span"),
                   cached=states.count("CACHED"), steps=len(states), outcome=outcome(record),
                   metric=primary_metric(record))
        if row["state"] == "FAILED" and record.get("error_line"):
            row["outcome"] = record["error_line"]
        with root.lock:   # a finished run's row never changes: keep it (bounded)
            root._summaries[key] = row
            while len(root._summaries) > SUMMARY_CACHE:
                root._summaries.popitem(last=False)
    return row


def _sort_key(sort: str):
    def key(row):
        value = row["metric"]["value"] if sort == "metric" and row["metric"] else row.get(sort)
        return (value is None, value if value is not None else 0)
    return key


def _matches(row: dict, text: str, state: str) -> bool:
    if state and not row["state"].startswith(state.upper()):
        return False
    if not text:
        return True
    text = text.lower()
    return any(text in str(row[k]).lower() for k in ("run", "pipeline", "outcome", "state", "span"))


def runs_page(root: Root, text: str = "", state: str = "", sort: str = "started", desc: bool = True,
              page: int = 1, per_page: int = PAGE) -> dict:
    """A page of runs, filtered and sorted. The default order (newest first) reads only the page's
    records; any other order or a filter reads them one at a time and keeps page * per_page rows
    (a heap), never the whole list of records."""
    sort = sort if sort in SORTS else "started"
    page, per_page = max(1, page), max(1, min(per_page, 500))
    keep = page * per_page
    listed = gc.list_runs(root.path) if (root.path / "runs").is_dir() else []   # newest first, by start
    if sort == "started" and not text and not state:   # the default view: only the page's records are read
        ordered = listed if desc else listed[::-1]
        rows = [summary(root, run) for run in ordered[keep - per_page:keep]]
        return _page(rows, len(listed), page, per_page, sort, desc, text, state)
    total = 0

    def rows():
        nonlocal total
        for run in listed:
            row = summary(root, run)
            if _matches(row, text, state):
                total += 1
                yield row
    if desc:   # None values last either way
        kept = heapq.nsmallest(keep, rows(), key=lambda r: _negated(_sort_key(sort)(r)))
    else:
        kept = heapq.nsmallest(keep, rows(), key=_sort_key(sort))
    return _page(kept[keep - per_page:], total, page, per_page, sort, desc, text, state)


def _page(rows: list, total: int, page: int, per_page: int, sort: str, desc: bool, text: str, state: str) -> dict:
    return {"rows": rows, "total": total, "page": page, "per_page": per_page,
            "pages": max(1, -(-total // per_page)), "sort": sort, "desc": desc, "text": text, "state": state}


class _negated:
    """A sort key reversed, None last: heapq has no `reverse`."""
    __slots__ = ("key",)

    def __init__(self, key):
        self.key = key

    def __lt__(self, other):
        if self.key[0] != other.key[0]:
            return self.key[0] < other.key[0]
        return other.key[1] < self.key[1]


# ------------------------------------------------------------------ one run from MLMD
def _execution(md: MetadataStore, execution) -> dict:
    name = prop(execution, "task_name") or f"execution {execution.id}"
    state = _MLMD_STATE.get(execution.last_known_state, "UNKNOWN")
    if state == "SKIPPED" and not prop(execution, "skipped"):
        state = "CANCELED"
    params = prop(execution, "input_parameters")
    outs = prop(execution, "output_parameters")
    return {"id": execution.id, "name": name, "label": _ITERATION.sub("", name), "state": state,
            "start": execution.create_time_since_epoch / 1000.0,
            "end": execution.last_update_time_since_epoch / 1000.0 if state != "RUNNING" else None,
            "cache_key": prop(execution, "cache_key") or "",
            "cached_from": prop(execution, "cached_from_execution"),
            "parameters": json.loads(params) if isinstance(params, str) else (params or {}),
            "output_parameters": json.loads(outs) if isinstance(outs, str) else (outs or {}),
            "log": prop(execution, "log"), "skipped": prop(execution, "skipped") or "",
            "failure": prop(execution, "failure") or "", "inputs": [], "outputs": []}


def executions(root: Root, run_id: str, with_artifacts: bool = False) -> list[dict]:
    """The run's executions in MLMD (what a live run has done so far), oldest first."""
    md = root.md
    if md is None:
        return []
    with root.lock:
        context = md.store.get_context_by_type_and_name(RUN_CONTEXT, run_id)
        if context is None:
            return []
        found = sorted(md.store.get_executions_by_context(context.id), key=lambda e: e.id)
        rows = [_execution(md, e) for e in found]
        if with_artifacts and rows:
            _attach_artifacts(root, md, rows)
    return rows


def _attach_artifacts(root: Root, md: MetadataStore, rows: list[dict]) -> None:
    from ml_metadata.proto import metadata_store_pb2 as pb
    events = md.store.get_events_by_execution_ids([r["id"] for r in rows])
    artifacts = {a.id: a for a in md.store.get_artifacts_by_id(list({e.artifact_id for e in events}))}
    by_id = {r["id"]: r for r in rows}
    for event in events:
        artifact = artifacts.get(event.artifact_id)
        if artifact is None:
            continue
        stored = md.stored_artifact(artifact)
        entry = {"name": event.path.steps[0].key if event.path.steps else str(artifact.id), "id": artifact.id,
                 "type": stored.type, "uri": stored.uri, "metadata": stored.metadata,
                 "has_content": stored.has_content, "deleted": artifact.state == pb.Artifact.DELETED,
                 "path": root.servable(stored.uri) if stored.has_content else None}
        by_id[event.execution_id]["inputs" if event.type == pb.Event.INPUT else "outputs"].append(entry)


def run_state(root: Root, run_id: str) -> str:
    """COMPLETE/FAILED from the record; RUNNING while its runner holds the lease, else UNFINISHED."""
    run_dir = root.run_dir(run_id)
    record = read_record(run_dir) if run_dir else None
    if record:
        return record.get("state", "UNKNOWN")
    return "RUNNING" if run_dir and _live(run_dir) else "UNFINISHED"


def _live(run_dir: Path) -> bool:
    """Whether a runner holds the run's lease (kfx.runner: an flock the kernel drops when it dies)."""
    from kfx.runner.orchestrator import LEASE, take_lease
    if not (run_dir / LEASE).exists():
        return False
    fd = take_lease(run_dir)
    if fd is None:
        return True
    os.close(fd)
    return False


def status(root: Root, run_id: str) -> dict:
    """What the live view polls: the run's state and each task's, from MLMD."""
    rows = executions(root, run_id)
    return {"run": run_id, "state": run_state(root, run_id),
            "tasks": {r["name"]: {"state": r["state"], "label": r["label"], "start": r["start"], "end": r["end"]}
                      for r in rows}}


def log_tail(path: Optional[str], lines: int = 40) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 16384))
            return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
    except OSError:
        return ""


# ------------------------------------------------------------------ compare
def compare(root: Root, run_ids: list[str]) -> dict:
    """Runs side by side: parameters (those that differ flagged), the primary metric with its
    interval, every Metrics scalar, ROC curves, drift and the data each run read."""
    from kfx.views.charts import roc_points
    records = {r: read_record(d) if (d := root.run_dir(r)) else None for r in run_ids}
    runs = [r for r in run_ids if records[r]]
    params = sorted({k for r in runs for k in (records[r].get("parameters") or {})})
    parameter_rows = []
    for name in params:
        values = [(records[r].get("parameters") or {}).get(name) for r in runs]
        parameter_rows.append({"name": name, "values": values,
                               "differs": len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1})
    metric_rows: dict[str, list] = {}
    rocs, inputs = [], []
    for i, r in enumerate(runs):
        parameters = records[r].get("parameters") or {}
        seen = {"run": r, "span": parameters.get("span"), "rows": None, "data": parameters.get("data_uri", ""),
                "drift_checked": False, "drifted": []}
        inputs.append(seen)
        for step, name, artifact in outputs(records[r]):
            meta = artifact.get("metadata") or {}
            if artifact.get("type") == "system.Metrics":
                for key, value in meta.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        metric_rows.setdefault(f"{step} / {key}", [None] * len(runs))[i] = value
            elif artifact.get("type") == "system.ClassificationMetrics" and meta.get("confidenceMetrics"):
                rocs.append((r, roc_points(meta)))
            if name == "drift" and "drifted_features" in meta:
                seen.update(drift_checked=bool(meta.get("drift_checked")), drifted=meta["drifted_features"])
            if step == "ingest" and "rows" in meta:
                seen["rows"] = meta["rows"]
    return {"runs": runs, "missing": [r for r in run_ids if not records[r]], "parameters": parameter_rows,
            "primary": [primary_metric(records[r]) for r in runs],
            "metrics": [{"name": k, "values": v, "differs": len(set(map(str, v))) > 1}
                        for k, v in sorted(metric_rows.items())],
            "rocs": rocs, "inputs": inputs}


# ------------------------------------------------------------------ lineage
def lineage_graph(root: Root, uri: str) -> Optional[dict]:
    """The provenance of the newest artifact at `uri` (kfx.stores.lineage.trace) as nodes and edges:
    artifact -> the execution that made it -> that execution's inputs, back to the data file."""
    from kfx.stores import lineage
    md = root.md
    if md is None:
        return None
    with root.lock:
        try:
            tree = lineage.trace(md, uri)
        except lineage.LineageError:
            return None
        nodes_by_id: dict[str, dict] = {}
        edges: set[tuple[str, str]] = set()
        execution_ids = {n.execution_id for n in tree.walk() if n.execution_id}
        runs = {e.id: prop(e, "run_id") for e in md.store.get_executions_by_id(list(execution_ids))}
    for node in tree.walk():
        artifact_id = f"a{node.artifact_id}"
        nodes_by_id.setdefault(artifact_id, {"id": artifact_id, "kind": "artifact", "name": node.name,
                                             "sub": node.type.removeprefix("system.") + f" #{node.artifact_id}",
                                             "title": node.uri, "uri": node.uri})
        if node.execution_id:
            execution_id = f"e{node.execution_id}"
            nodes_by_id.setdefault(execution_id, {"id": execution_id, "kind": "execution", "name": node.task or "",
                                                  "sub": f"execution {node.execution_id}",
                                                  "title": f"run {runs.get(node.execution_id)}",
                                                  "run": runs.get(node.execution_id), "task": node.task})
            edges.add((artifact_id, execution_id))
            edges.update((execution_id, f"a{child.artifact_id}") for child in node.inputs)
    return {"root": tree, "nodes": list(nodes_by_id.values()), "edges": sorted(edges)}
