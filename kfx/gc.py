"""`kfx gc`: retention for a kfx root.

    kfx gc --root R [--keep-runs N] [--older-than DAYS] [--keep-versions N] [--dry-run]

Policy (flags win over the root's retention setting `<root>/retention.yaml`, keys `keep_runs`,
`older_than_days`, `keep_versions`; without either, keep_runs 20 and nothing else):

* A run **expires** when it is not among the newest `keep_runs` runs and (with `older_than_days`)
  started more than that many days ago. A run whose lease is held (its runner lives) never expires.
  An expired run loses `runs/<run>/` (logs, report, run.json, `failed/` step folders) and its
  artifacts under `artifacts/<pipeline>/<run>/`, except every artifact a kept run's lineage needs:
  the artifacts a kept run's executions read or wrote (a cached step reuses an older run's
  outputs) and, recursively, what produced them. Removed artifacts are marked DELETED in MLMD
  (the records stay: lineage remains readable; a later run recomputes instead of using the cache).
  While any run is live, no artifact is removed (a live run may be about to reuse one): the next
  gc with no live run removes them (artifacts whose run's records are gone are collected too).
* `failed/` step folders of kept runs older than `older_than_days` are removed too.
* Resume directories (`.resume/<cache key>`, a killed step's checkpoints) not in use by a live step
  and untouched for `older_than_days` (default 7 days), and staging left by dead runs.
* Registry versions (`<root>/registry/<model>/v<N>`) beyond the newest `keep_versions`, never the
  version a serving alias (`aliases.json`, kfx rollout's) points to, nor one a kept run refers to (the
  baseline it evaluated against, the version it pushed). The newest version is always kept: a
  version number is never reused. Removal renames the version to a hidden name first (atomic).

Prints one line per removal with its size, and the total.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from kfx_formats import registry

DAY = 86400.0
DEFAULT_KEEP_RUNS = 20
DEFAULT_RESUME_DAYS = 7.0
RETENTION_FILE = "retention.yaml"


@dataclass
class Policy:
    keep_runs: Optional[int] = DEFAULT_KEEP_RUNS
    older_than_days: Optional[float] = None
    keep_versions: Optional[int] = None

    def __post_init__(self):
        if self.keep_runs is not None and self.keep_runs < 0:
            raise ValueError("keep_runs must be >= 0")
        if self.keep_versions is not None and self.keep_versions < 1:
            raise ValueError("keep_versions must be >= 1 (the newest version is always kept)")
        if self.older_than_days is not None and self.older_than_days < 0:
            raise ValueError("older_than_days must be >= 0")


@dataclass
class Report:
    dry_run: bool
    removed: list = field(default_factory=list)     # (what, path, bytes)
    notes: list = field(default_factory=list)

    def add(self, what: str, path, size: int) -> None:
        self.removed.append((what, str(path), size))

    @property
    def total(self) -> int:
        return sum(size for _, _, size in self.removed)

    def lines(self) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        out = [f"{verb} {what} {path} ({_human(size)})" for what, path, size in self.removed]
        out += self.notes
        out.append(f"{verb} {len(self.removed)} item(s), {self.total} bytes ({_human(self.total)})")
        return out


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def size_of(path: Path) -> int:
    try:
        if path.is_symlink() or path.is_file():
            return path.lstat().st_size
        return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    except OSError:
        return 0


def load_policy(root: Path, keep_runs=None, older_than=None, keep_versions=None) -> Policy:
    """The root's retention setting, overridden by flags."""
    settings = {}
    path = root / RETENTION_FILE
    if path.is_file():
        import yaml
        settings = yaml.safe_load(path.read_text()) or {}
        unknown = set(settings) - {"keep_runs", "older_than_days", "keep_versions"}
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}")
    return Policy(keep_runs=keep_runs if keep_runs is not None else settings.get("keep_runs", DEFAULT_KEEP_RUNS),
                  older_than_days=older_than if older_than is not None else settings.get("older_than_days"),
                  keep_versions=keep_versions if keep_versions is not None else settings.get("keep_versions"))


# ------------------------------------------------------------------ runs
@dataclass
class RunInfo:
    run_id: str
    path: Path
    started: float
    live: bool


def _started(run_dir: Path) -> float:
    for name in ("pipeline.yaml", "logs"):
        if (run_dir / name).exists():
            return (run_dir / name).stat().st_mtime
    return run_dir.stat().st_mtime


def list_runs(root: Path) -> list[RunInfo]:
    from kfx.runner.orchestrator import LEASE, take_lease
    runs = []
    for run_dir in sorted((root / "runs").glob("*")):
        if not run_dir.is_dir():
            continue
        live = False
        if (run_dir / LEASE).exists():
            fd = take_lease(run_dir)
            live = fd is None
            if fd is not None:
                os.close(fd)
        runs.append(RunInfo(run_dir.name, run_dir, _started(run_dir), live))
    return sorted(runs, key=lambda r: r.started, reverse=True)   # newest first


def expired_runs(runs: list[RunInfo], policy: Policy, now: float) -> list[RunInfo]:
    keep = policy.keep_runs
    out = []
    for i, run in enumerate(runs):
        if run.live:
            continue
        beyond = keep is not None and i >= keep
        old = policy.older_than_days is not None and now - run.started > policy.older_than_days * DAY
        if keep is None and policy.older_than_days is None:
            continue
        if (keep is None or beyond) and (policy.older_than_days is None or old):
            out.append(run)
    return out


# ------------------------------------------------------------------ lineage
def needed_by(md, run_ids: list[str]) -> tuple[set[str], set[str]]:
    """(artifact URIs, string parameter values) the runs' lineage needs: every artifact their
    executions read or wrote, and recursively what produced those; the parameters they took."""
    from kfx.stores.metadata import prop
    uris, strings, seen = set(), set(), set()
    frontier: list[int] = []
    for run_id in run_ids:
        ctx = md.store.get_context_by_type_and_name("system.PipelineRun", run_id)
        if ctx is None:
            continue
        params = prop(ctx, "parameters")
        strings |= _strings(params)
        executions = md.store.get_executions_by_context(ctx.id)
        for e in executions:
            strings |= _strings(prop(e, "input_parameters")) | _strings(prop(e, "output_parameters"))
        frontier += [e.id for e in executions]
    while frontier:
        batch = [i for i in frontier if i not in seen]
        seen |= set(batch)
        frontier = []
        if not batch:
            break
        events = md.store.get_events_by_execution_ids(batch)
        artifact_ids = sorted({ev.artifact_id for ev in events})
        artifacts = md.store.get_artifacts_by_id(artifact_ids) if artifact_ids else []
        uris |= {a.uri for a in artifacts}
        if artifact_ids:   # the producers of everything read or written: their inputs are needed too
            producers = [ev.execution_id for ev in md.store.get_events_by_artifact_ids(artifact_ids)
                         if ev.type == ev.OUTPUT]
            frontier = [p for p in producers if p not in seen]
    return uris, strings


def _strings(value) -> set[str]:
    if value is None:
        return set()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, ValueError):
            return {value}
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set().union(*(_strings(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_strings(v) for v in value)) if value else set()
    return set()


def _is_needed(path: str, needed: set[str]) -> bool:
    """A path is needed when a needed URI is it, inside it, or contains it."""
    path = path.rstrip("/")
    return any(u == path or u.startswith(path + "/") or path.startswith(u.rstrip("/") + "/") for u in needed)


# ------------------------------------------------------------------ the collection
def collect(root: str | Path, policy: Policy, dry_run: bool = False, now: Optional[float] = None) -> Report:
    from kfx.runner.run_context import Workspace
    from kfx.runner.dispatch import lock_resume_dir
    root = Path(root).resolve()
    ws = Workspace(root)
    now = time.time() if now is None else now
    report = Report(dry_run)
    runs = list_runs(root)
    expired = expired_runs(runs, policy, now)
    kept = [r for r in runs if r not in expired]
    live = [r for r in runs if r.live]

    md = None
    if ws.metadata_path.exists():
        from kfx.stores.metadata import MetadataStore
        md = MetadataStore(str(ws.metadata_path))
    needed, strings = needed_by(md, [r.run_id for r in kept]) if md else (set(), set())

    # Expired runs: their artifacts (unless a kept run needs them, or a run is live), then their records.
    # Artifacts of runs whose records are gone already (an earlier gc while a run was live) too.
    known = {r.run_id for r in runs}
    orphans = sorted({d.name for d in ws.artifacts.glob("*/*") if d.is_dir() and d.name not in known})
    deleted_uris = []
    if live and (expired or orphans):
        report.notes.append(f"{len(live)} live run(s) ({', '.join(r.run_id for r in live)}): artifacts of "
                            "expired runs are kept this time (a live run may reuse one from the cache)")
    for run_id in ([] if live else [r.run_id for r in expired] + orphans):
        for art_dir in sorted(ws.artifacts.glob(f"*/{run_id}/*/*")):
            if _is_needed(str(art_dir), needed):
                continue
            report.add("artifact", art_dir, size_of(art_dir))
            deleted_uris.append(str(art_dir))
            if not dry_run:
                _remove(art_dir)
        if md is not None:
            deleted_uris += _remove_s3_artifacts(md, run_id, needed, report, dry_run)
        if not dry_run:
            for empty in sorted(ws.artifacts.glob(f"*/{run_id}")):
                _prune_empty(empty)
    for run in expired:
        report.add(f"run {run.run_id}", run.path, size_of(run.path))
        if not dry_run:
            _remove(run.path)
    if md is not None and deleted_uris and not dry_run:
        md.mark_deleted(deleted_uris)

    # Failed-step folders of kept runs, past the age limit.
    if policy.older_than_days is not None:
        for run in kept:
            failed = run.path / "failed"
            if failed.is_dir() and not run.live and now - failed.stat().st_mtime > policy.older_than_days * DAY:
                report.add(f"failed-step folders of {run.run_id}", failed, size_of(failed))
                if not dry_run:
                    _remove(failed)

    # Resume directories nobody uses, and staging of dead runs.
    resume_days = policy.older_than_days if policy.older_than_days is not None else DEFAULT_RESUME_DAYS
    if ws.resume.is_dir():
        for entry in sorted(ws.resume.iterdir()):
            if not entry.is_dir() or now - entry.stat().st_mtime <= resume_days * DAY:
                continue
            fd = lock_resume_dir(entry)
            if fd is None:
                continue     # a live step resumes from it
            try:
                report.add("resume dir", entry, size_of(entry))
                if not dry_run:
                    _remove(entry)
            finally:
                os.close(fd)
    if ws.staging.is_dir():
        from kfx.runner.orchestrator import take_lease
        for entry in sorted(ws.staging.iterdir()):
            run_dir = ws.run_dir(entry.name)
            fd = take_lease(run_dir) if run_dir.is_dir() else None
            if run_dir.is_dir() and fd is None:
                continue     # its runner lives (checked now, not when the runs were listed)
            try:
                report.add("staging of a dead run", entry, size_of(entry))
                if not dry_run:
                    _remove(entry)
            finally:
                if fd is not None:
                    os.close(fd)

    # Registry versions.
    if policy.keep_versions is not None and ws.registry.is_dir():
        _collect_registry(ws.registry, policy.keep_versions, needed | strings, report, dry_run)
    if md is not None:
        md.lock.close()
    return report


def _remove_s3_artifacts(md, run_id: str, needed: set[str], report: Report, dry_run: bool) -> list[str]:
    """Artifacts of an expired run that live in S3 (the S3 artifact store)."""
    from kfx.stores.metadata import prop
    ctx = md.store.get_context_by_type_and_name("system.PipelineRun", run_id)
    if ctx is None:
        return []
    uris = {a.uri for a in md.store.get_artifacts_by_context(ctx.id)
            if a.uri.startswith(("s3://", "minio://")) and f"/{run_id}/" in a.uri
            and a.state != a.DELETED and prop(a, "has_content")}
    removed = []
    for uri in sorted(uris):
        if _is_needed(uri, needed):
            continue
        from kfx.stores.s3 import S3Store, split_uri
        bucket, key = split_uri(uri)
        store = S3Store(f"s3://{bucket}/{key.split('/')[0]}")
        if dry_run:
            report.add("artifact", uri, 0)
        else:
            report.add("artifact", uri, store.delete(uri))
        removed.append(uri)
    return removed


def _collect_registry(registry_dir: Path, keep: int, pinned_refs: set[str], report: Report, dry_run: bool) -> None:
    for model_dir in sorted(p for p in registry_dir.iterdir() if p.is_dir()):
        numbers = registry.version_numbers(str(model_dir))
        if not numbers:
            continue
        pinned = set(numbers[-keep:])
        try:
            pinned |= registry.alias_versions(str(model_dir))
        except (ValueError, OSError):
            # An alias that cannot be read pins everything: never guess.
            report.notes.append(f"{model_dir / registry.ALIASES_FILE}: unreadable aliases, {model_dir.name} versions kept")
            pinned |= set(numbers)
        for n in numbers:
            path = model_dir / f"v{n}"
            if n in pinned or _is_needed(str(path), pinned_refs):
                continue
            report.add(f"registry version {model_dir.name} v{n}", path, size_of(path))
            if not dry_run:
                hidden = model_dir / f"{registry.STAGING_PREFIX}gc-{uuid.uuid4().hex}"
                os.rename(path, hidden)     # gone from the version list at once
                _remove(hidden)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _prune_empty(path: Path) -> None:
    for p in sorted([*path.rglob("*"), path], key=lambda p: len(p.parts), reverse=True):
        try:
            if p.is_dir():
                p.rmdir()
        except OSError:
            pass
