"""Lineage in ml-metadata: what ran, what it read, what it wrote.

The records follow what the KFP backend writes: one `system.Pipeline` and
one `system.PipelineRun` context per run, one execution per task, artifacts
typed by their KFP schema title, INPUT/OUTPUT events keyed by the
input/output name. The cache is a query over executions (`cache_key`).
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import subprocess
import sys
import threading
from typing import Iterable, Optional

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2 as pb

PIPELINE_CONTEXT = "system.Pipeline"
RUN_CONTEXT = "system.PipelineRun"
CONTAINER_EXECUTION = "system.ContainerExecution"
IMPORTER_EXECUTION = "system.ImporterExecution"

State = pb.Execution.State
_TYPES = {"artifact": ("artifact_type", pb.ArtifactType), "execution": ("execution_type", pb.ExecutionType),
          "context": ("context_type", pb.ContextType)}


@dataclasses.dataclass(frozen=True)
class StoredArtifact:
    """An artifact as the runner passes it between steps."""
    id: int
    type: str
    uri: str
    metadata: dict
    fingerprint: str
    has_content: bool = True         # False: metadata only (e.g. Metrics), nothing stored at uri


@dataclasses.dataclass(frozen=True)
class NewArtifact:
    """An output artifact not stored yet: its proto, and what it is once stored with an id."""
    proto: pb.Artifact
    artifact: StoredArtifact

    def stored(self, artifact_id: int) -> StoredArtifact:
        return dataclasses.replace(self.artifact, id=artifact_id)


def _rollback_journal(sqlite_path: str) -> None:
    """Keeps the SQLite store in rollback-journal mode (a store an older kfx put in WAL mode is
    switched back once, by a separate short process: MLMD carries its own SQLite, and two SQLite
    libraries must never open one file in the same process,
    https://www.sqlite.org/howtocorrupt.html 2.2.1).

    Not WAL: with MLMD's SQLite, a WAL store written by two processes was corrupted ("database disk
    image is malformed", failed integrity_check), even with every call serialized by the lock
    below (each process keeps its own view of the WAL index); in rollback mode the same test
    (six processes, 60 executions each, three rounds) left an intact store.
    tests/reliability/test_concurrency.py runs concurrent runs against it."""
    try:
        with open(sqlite_path, "rb") as db:
            header = db.read(20)
    except OSError:
        return
    if header[18:20] != b"\x02\x02":   # the file format's read/write versions: 2 is WAL
        return
    subprocess.run([sys.executable, "-I", "-S", "-c", _SET_DELETE, sqlite_path], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)


# A store another process holds open stays as it is (the pragma needs it alone); the next open retries.
_SET_DELETE = "import sqlite3, sys; sqlite3.connect(sys.argv[1], timeout=5).execute('PRAGMA journal_mode=DELETE')"


class StoreLock:
    """One process at a time in the store: an exclusive flock on `<store>.lock`, taken around every
    MLMD call (and around a read-then-write that must not interleave), reentrant within a process.

    SQLite's own locking makes a second writer fail with `database is locked` (or MLMD give up
    after its retries); waiting on a flock instead costs a concurrent run milliseconds per step.
    The kernel drops the lock when its process dies, however it dies."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self._thread = threading.RLock()
        self._depth = 0

    def __enter__(self):
        self._thread.acquire()
        if self._depth == 0:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        self._depth += 1
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        self._thread.release()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self):
        self.close()


class _Serialized:
    """An MLMD store whose every method call holds the StoreLock."""

    def __init__(self, store, lock: StoreLock):
        self._store, self._lock = store, lock

    def __getattr__(self, name):
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            with self._lock:
                return attr(*args, **kwargs)
        return call


def _linked(contexts: Iterable[int]) -> list[pb.Context]:
    """Contexts to link by id (put_execution's force_reuse_context: they are not rewritten)."""
    return [pb.Context(id=c) for c in contexts]


def _value(v) -> pb.Value:
    out = pb.Value()
    if isinstance(v, bool):
        out.bool_value = v
    elif isinstance(v, int):
        out.int_value = v
    elif isinstance(v, float):
        out.double_value = v
    elif isinstance(v, str):
        out.string_value = v
    else:
        # Lists and dicts as JSON text: a protobuf Struct would turn every int into a float.
        out.string_value = json.dumps(v, sort_keys=True, default=str)
    return out


def _plain(value: pb.Value):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _json_prop(entity, name: str):
    return json.loads(entity.custom_properties[name].string_value or "null") \
        if name in entity.custom_properties else None


class MetadataStore:
    """A thin layer over an ml-metadata SQLite store (or any MLMD connection)."""

    def __init__(self, sqlite_path: str):
        config = pb.ConnectionConfig()
        config.sqlite.filename_uri = sqlite_path
        config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        self.lock = StoreLock(sqlite_path + ".lock")
        with self.lock:   # creating the schema included: two runs may start at once on a new root
            _rollback_journal(sqlite_path)
            self.store = _Serialized(mlmd.MetadataStore(config), self.lock)
        self._type_ids: dict = {}
        self._type_names: dict[int, str] = {}
        self._running: dict[int, pb.Execution] = {}   # started, not finished: id -> execution

    # --- types -------------------------------------------------------------
    def _type_id(self, kind: str, name: str) -> int:
        key = (kind, name)
        if key not in self._type_ids:
            # A read when the type exists (every run after the first): cheaper than an idempotent put.
            method, proto = _TYPES[kind]
            with self.lock:   # no other process between the read and the put
                try:
                    self._type_ids[key] = getattr(self.store, f"get_{method}")(name).id
                except mlmd.errors.NotFoundError:
                    self._type_ids[key] = getattr(self.store, f"put_{method}")(proto(name=name))
        return self._type_ids[key]

    # --- contexts ----------------------------------------------------------
    def context(self, type_name: str, name: str, properties: Optional[dict] = None) -> int:
        with self.lock:   # two runs of one pipeline create its context once
            found = self.store.get_context_by_type_and_name(type_name, name)
            if found:
                return found.id
            ctx = pb.Context(type_id=self._type_id("context", type_name), name=name)
            for k, v in (properties or {}).items():
                ctx.custom_properties[k].CopyFrom(_value(v))
            [ctx_id] = self.store.put_contexts([ctx])
            return ctx_id

    # --- executions --------------------------------------------------------
    # One MLMD transaction to start an execution and one to finish it (with its new artifacts, its
    # events and the contexts' links): each is a SQLite commit, the bulk of a trivial step's cost.
    def start_execution(self, type_name: str, properties: dict, contexts: Iterable[int]) -> int:
        execution = pb.Execution(type_id=self._type_id("execution", type_name),
                                 last_known_state=State.RUNNING)
        for k, v in properties.items():
            execution.custom_properties[k].CopyFrom(_value(v))
        exec_id, _, _ = self.store.put_execution(execution, [], _linked(contexts), force_reuse_context=True)
        execution.id = exec_id
        self._running[exec_id] = execution
        return exec_id

    def finish_execution(self, exec_id: int, state: int, properties: dict,
                         inputs: dict[str, "StoredArtifact | list[StoredArtifact]"], outputs: dict[str, "StoredArtifact | NewArtifact"],
                         contexts: Iterable[int]) -> dict[str, StoredArtifact]:
        """Sets the final state, stores the new output artifacts and links inputs and outputs to the
        execution (events) and the outputs to the contexts; returns the outputs as stored."""
        execution = self._running.pop(exec_id)
        execution.last_known_state = state
        for k, v in properties.items():
            execution.custom_properties[k].CopyFrom(_value(v))
        # An input of a list of artifacts (dsl.Collected) is one INPUT event per item, indexed.
        listed = [(name, i, art) for name, value in inputs.items()
                  for i, art in (enumerate(value) if isinstance(value, list) else [(None, value)])]
        # MLMD keeps one INPUT event per artifact: an item twice in a list (two iterations served
        # by one cached execution) is recorded at its first index.
        listed = [entry for n, entry in enumerate(listed) if entry[2].id not in {a.id for *_, a in listed[:n]}]
        known = [a.id for *_, a in listed] + [a.id for a in outputs.values() if isinstance(a, StoredArtifact)]
        protos = {a.id: a for a in self.store.get_artifacts_by_id(known)} if known else {}
        pairs, names = [], []
        for kind, arts in ((pb.Event.INPUT, listed), (pb.Event.OUTPUT, [(n, None, a) for n, a in outputs.items()])):
            for name, index, art in arts:
                event = pb.Event(type=kind)
                event.path.steps.add().key = name
                if index is not None:
                    event.path.steps.add().index = index
                pairs.append((protos[art.id] if isinstance(art, StoredArtifact) else art.proto, event))
                names.append(name if kind == pb.Event.OUTPUT else None)
        _, ids, _ = self.store.put_execution(execution, pairs, _linked(contexts), force_reuse_context=True)
        stored = {name: i for name, i in zip(names, ids) if name is not None}
        return {name: art if isinstance(art, StoredArtifact) else art.stored(stored[name])
                for name, art in outputs.items()}

    def skipped_execution(self, type_name: str, properties: dict, contexts: Iterable[int]) -> int:
        """A task a condition or an empty loop skipped. MLMD has no SKIPPED state (KFP's API has):
        CANCELED, with the reason in the `skipped` property."""
        execution = pb.Execution(type_id=self._type_id("execution", type_name),
                                 last_known_state=State.CANCELED)
        for k, v in properties.items():
            execution.custom_properties[k].CopyFrom(_value(v))
        exec_id, _, _ = self.store.put_execution(execution, [], _linked(contexts), force_reuse_context=True)
        return exec_id

    def running_executions(self) -> dict[str, list[pb.Execution]]:
        """Executions still RUNNING, by the run that started them."""
        executions = self.store.get_executions(list_options=mlmd.ListOptions(
            filter_query=f"last_known_state = {pb.Execution.State.Name(State.RUNNING)}"))
        by_run: dict[str, list[pb.Execution]] = {}
        for execution in executions:
            by_run.setdefault(prop(execution, "run_id") or "", []).append(execution)
        return by_run

    def abandon(self, executions: list[pb.Execution], why: str) -> list[str]:
        """Marks executions no runner will finish FAILED; their task names."""
        for execution in executions:
            execution.last_known_state = State.FAILED
            execution.custom_properties["failure"].string_value = why
        if executions:
            self.store.put_executions(executions)
        return [prop(e, "task_name") for e in executions]

    def mark_deleted(self, uris: Iterable[str]) -> int:
        """Artifacts whose content was removed (kfx gc): state DELETED, records kept for lineage."""
        changed = []
        with self.lock:
            for uri in set(uris):
                for artifact in self.store.get_artifacts_by_uri(uri):
                    if artifact.state != pb.Artifact.DELETED:
                        artifact.state = pb.Artifact.DELETED
                        changed.append(artifact)
            if changed:
                self.store.put_artifacts(changed)
        return len(changed)

    # --- artifacts ---------------------------------------------------------
    def new_artifact(self, type_name: str, uri: str, name: str, metadata: dict,
                     fingerprint: str, has_content: bool) -> "NewArtifact":
        """An output artifact, stored by the finish_execution that records it."""
        artifact = pb.Artifact(type_id=self._type_id("artifact", type_name), uri=uri,
                               state=pb.Artifact.LIVE)
        artifact.custom_properties["display_name"].string_value = name
        artifact.custom_properties["fingerprint"].string_value = fingerprint
        artifact.custom_properties["has_content"].bool_value = has_content
        artifact.custom_properties["metadata"].string_value = json.dumps(metadata, sort_keys=True)
        return NewArtifact(artifact, StoredArtifact(0, type_name, uri, metadata, fingerprint, has_content))

    def stored_artifact(self, artifact: pb.Artifact) -> StoredArtifact:
        props = artifact.custom_properties
        return StoredArtifact(artifact.id, self.type_name(artifact), artifact.uri,
                              _json_prop(artifact, "metadata") or {}, props["fingerprint"].string_value,
                              props["has_content"].bool_value)

    # --- the cache ---------------------------------------------------------
    def cached_outputs(self, cache_key: str) -> Optional[tuple[dict[str, pb.Artifact], dict]]:
        """Outputs of the newest complete execution with this cache key, or None."""
        executions = self.store.get_executions(list_options=mlmd.ListOptions(
            filter_query=f"custom_properties.cache_key.string_value = '{cache_key}'"))
        complete = [e for e in executions if e.last_known_state == State.COMPLETE]
        if not complete:
            return None
        source = max(complete, key=lambda e: e.id)
        events = self.store.get_events_by_execution_ids([source.id])
        outputs = {e.path.steps[0].key: e.artifact_id for e in events if e.type == pb.Event.OUTPUT}
        artifacts = {a.id: a for a in self.store.get_artifacts_by_id(list(outputs.values()))}
        params = _json_prop(source, "output_parameters") or {}
        return {name: artifacts[i] for name, i in outputs.items()}, {"params": params, "execution_id": source.id}

    # --- lineage -----------------------------------------------------------
    def artifacts_by_uri(self, uri: str) -> list[pb.Artifact]:
        return list(self.store.get_artifacts_by_uri(uri))

    def producer(self, artifact_id: int) -> Optional[pb.Execution]:
        """The execution that first wrote the artifact (a cached re-use is not a producer)."""
        events = [e for e in self.store.get_events_by_artifact_ids([artifact_id])
                  if e.type == pb.Event.OUTPUT]
        if not events:
            return None
        executions = self.store.get_executions_by_id([e.execution_id for e in events])
        return min(executions, key=lambda e: e.id)

    def inputs_of(self, execution_id: int) -> list[tuple[str, pb.Artifact]]:
        events = [e for e in self.store.get_events_by_execution_ids([execution_id])
                  if e.type == pb.Event.INPUT]
        artifacts = {a.id: a for a in self.store.get_artifacts_by_id([e.artifact_id for e in events])}
        return [(e.path.steps[0].key, artifacts[e.artifact_id]) for e in events]

    def type_name(self, artifact: pb.Artifact) -> str:
        if artifact.type_id not in self._type_names:
            self._type_names[artifact.type_id] = self.store.get_artifact_types_by_id([artifact.type_id])[0].name
        return self._type_names[artifact.type_id]


def prop(entity, name: str):
    """A custom property of an MLMD artifact/execution/context as a plain value."""
    return _plain(entity.custom_properties[name]) if name in entity.custom_properties else None
