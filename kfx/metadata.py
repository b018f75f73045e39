"""Lineage in ml-metadata: what ran, what it read, what it wrote.

The records follow what the KFP backend writes: one `system.Pipeline` and
one `system.PipelineRun` context per run, one execution per task, artifacts
typed by their KFP schema title, INPUT/OUTPUT events keyed by the
input/output name. The cache is a query over executions (`cache_key`).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Iterable, Optional

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2 as pb

PIPELINE_CONTEXT = "system.Pipeline"
RUN_CONTEXT = "system.PipelineRun"
CONTAINER_EXECUTION = "system.ContainerExecution"
IMPORTER_EXECUTION = "system.ImporterExecution"

State = pb.Execution.State


@dataclasses.dataclass(frozen=True)
class StoredArtifact:
    """An artifact as the runner passes it between steps."""
    id: int
    type: str
    uri: str
    metadata: dict
    fingerprint: str
    has_content: bool = True         # False: metadata only (e.g. Metrics), nothing stored at uri


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
        self.store = mlmd.MetadataStore(config)
        self._type_ids: dict = {}

    # --- types -------------------------------------------------------------
    def _type_id(self, kind: str, name: str) -> int:
        key = (kind, name)
        if key not in self._type_ids:
            if kind == "artifact":
                self._type_ids[key] = self.store.put_artifact_type(pb.ArtifactType(name=name))
            elif kind == "execution":
                self._type_ids[key] = self.store.put_execution_type(pb.ExecutionType(name=name))
            else:
                self._type_ids[key] = self.store.put_context_type(pb.ContextType(name=name))
        return self._type_ids[key]

    # --- contexts ----------------------------------------------------------
    def context(self, type_name: str, name: str, properties: Optional[dict] = None) -> int:
        found = self.store.get_context_by_type_and_name(type_name, name)
        if found:
            return found.id
        ctx = pb.Context(type_id=self._type_id("context", type_name), name=name)
        for k, v in (properties or {}).items():
            ctx.custom_properties[k].CopyFrom(_value(v))
        [ctx_id] = self.store.put_contexts([ctx])
        return ctx_id

    # --- executions --------------------------------------------------------
    def start_execution(self, type_name: str, properties: dict, contexts: Iterable[int]) -> int:
        execution = pb.Execution(type_id=self._type_id("execution", type_name),
                                 last_known_state=State.RUNNING)
        for k, v in properties.items():
            execution.custom_properties[k].CopyFrom(_value(v))
        [exec_id] = self.store.put_executions([execution])
        self.store.put_attributions_and_associations(
            [], [pb.Association(context_id=c, execution_id=exec_id) for c in contexts])
        return exec_id

    def finish_execution(self, exec_id: int, state: int, properties: dict,
                         inputs: dict[str, StoredArtifact], outputs: dict[str, StoredArtifact],
                         contexts: Iterable[int]) -> None:
        """Sets the final state and links input/output artifacts to the execution."""
        [execution] = self.store.get_executions_by_id([exec_id])
        execution.last_known_state = state
        for k, v in properties.items():
            execution.custom_properties[k].CopyFrom(_value(v))
        events = []
        for kind, arts in ((pb.Event.INPUT, inputs), (pb.Event.OUTPUT, outputs)):
            for name, art in arts.items():
                event = pb.Event(artifact_id=art.id, execution_id=exec_id, type=kind)
                event.path.steps.add().key = name
                events.append(event)
        self.store.put_executions([execution])
        self.store.put_events(events)
        contexts = list(contexts)
        self.store.put_attributions_and_associations(
            [pb.Attribution(context_id=c, artifact_id=a.id) for c in contexts
             for a in outputs.values()], [])

    # --- artifacts ---------------------------------------------------------
    def put_artifact(self, type_name: str, uri: str, name: str, metadata: dict,
                     fingerprint: str, has_content: bool) -> StoredArtifact:
        artifact = pb.Artifact(type_id=self._type_id("artifact", type_name), uri=uri,
                               state=pb.Artifact.LIVE)
        artifact.custom_properties["display_name"].string_value = name
        artifact.custom_properties["fingerprint"].string_value = fingerprint
        artifact.custom_properties["has_content"].bool_value = has_content
        artifact.custom_properties["metadata"].string_value = json.dumps(metadata, sort_keys=True)
        [art_id] = self.store.put_artifacts([artifact])
        return StoredArtifact(art_id, type_name, uri, metadata, fingerprint, has_content)

    def stored_artifact(self, artifact: pb.Artifact) -> StoredArtifact:
        props = artifact.custom_properties
        [type_] = self.store.get_artifact_types_by_id([artifact.type_id])
        return StoredArtifact(artifact.id, type_.name, artifact.uri,
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
        return self.store.get_artifact_types_by_id([artifact.type_id])[0].name


def prop(entity, name: str):
    """A custom property of an MLMD artifact/execution/context as a plain value."""
    return _plain(entity.custom_properties[name]) if name in entity.custom_properties else None
