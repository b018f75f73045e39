"""What MLMD says of where things came from: the chain from an artifact back to the data it came
from (`kfx lineage URI`), and the schema a run validated with (`kfx schema export`)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from kfx.stores.metadata import RUN_CONTEXT, MetadataStore, prop


@dataclasses.dataclass
class Node:
    """An artifact, the execution that produced it, and that execution's inputs."""
    artifact_id: int
    name: str
    type: str
    uri: str
    task: Optional[str] = None
    execution_id: Optional[int] = None
    inputs: list["Node"] = dataclasses.field(default_factory=list)
    repeated: bool = False   # already traced above (ingested examples feed several stages)

    def walk(self):
        yield self
        for child in self.inputs:
            yield from child.walk()


class LineageError(LookupError):
    pass


def trace(md: MetadataStore, uri: str) -> Node:
    """The provenance tree of the newest artifact stored at `uri`."""
    candidates = md.artifacts_by_uri(uri) or md.artifacts_by_uri(str(Path(uri).resolve()))
    if not candidates:
        raise LineageError(f"no artifact with URI {uri} in this metadata store")
    newest = max(candidates, key=lambda a: a.id)
    return _node(md, newest, prop(newest, "display_name"), set())


def _node(md: MetadataStore, artifact, name: str, seen: set) -> Node:
    node = Node(artifact.id, name or "artifact", md.type_name(artifact), artifact.uri)
    execution = md.producer(artifact.id)
    if execution is None:
        return node
    node.task, node.execution_id = prop(execution, "task_name"), execution.id
    if artifact.id in seen:
        node.repeated = True
        return node
    seen.add(artifact.id)
    node.inputs = [_node(md, art, input_name, seen) for input_name, art in md.inputs_of(execution.id)]
    return node


def render(node: Node, depth: int = 0) -> str:
    pad = "    " * depth
    made_by = f"  <- {node.task} (execution {node.execution_id})" if node.task else ""
    if node.repeated:
        made_by += " (traced above)"
    lines = [f"{pad}{node.name} [{node.type}, artifact {node.artifact_id}] {node.uri}{made_by}"]
    lines += [render(child, depth + 1) for child in node.inputs]
    return "\n".join(lines)


def run_schema(md: MetadataStore, run: Optional[str] = None) -> Optional[tuple[str, Path]]:
    """(run name, schema.pbtxt path) of the newest run (or the run named) that has a schema."""
    runs = sorted(md.store.get_contexts_by_type(RUN_CONTEXT), key=lambda c: c.id)
    if run:
        runs = [c for c in runs if c.name == run]
    for ctx in reversed(runs):
        schemas = [a for a in md.store.get_artifacts_by_context(ctx.id) if md.type_name(a) == "system.Schema"]
        if schemas:
            return ctx.name, Path(schemas[-1].uri) / "schema.pbtxt"
    return None
