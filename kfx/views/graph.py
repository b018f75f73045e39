"""The pipeline's graph from its compiled IR, drawn as SVG: a layered layout (each node one layer
below its deepest upstream), tasks coloured by state. dsl.If/Elif/Else and dsl.ParallelFor sub-DAGs
are nodes of their own (dashed, with their condition or "for each"), linked to the tasks inside
them; a task a condition skipped is drawn SKIPPED."""
from __future__ import annotations

import dataclasses
from html import escape
from typing import Callable, Iterable, Optional

from kfx.runner import ir

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 168, 40, 22, 24, 12
_DONE = {"COMPLETE", "CACHED", "IMPORTED"}


@dataclasses.dataclass
class Node:
    id: str                          # the task's path in the tree of DAGs: "for-loop-2/square"
    title: str
    kind: str                        # task | importer | if | for each | branches (If/Elif/Else) | exit handler | dag
    note: str = ""                   # a condition's text, a loop's items
    label: str = ""                  # a container/importer task's label (its name in MLMD), else ""
    children: list[str] = dataclasses.field(default_factory=list)   # a sub-DAG's leaf labels


def pipeline_nodes(pipeline: ir.Pipeline) -> tuple[list[Node], list[tuple[str, str, bool]]]:
    """Nodes and edges (source, target, dashed) of every task of every DAG of the pipeline."""
    nodes: list[Node] = []
    edges: list[tuple[str, str, bool]] = []

    def visit(dag: ir.Dag, prefix: str, parent: Optional[str]) -> None:
        for name in dag.order:
            task = dag.tasks[name]
            node_id = f"{prefix}{name}"
            if task.dag:
                kind = "if" if task.condition else "for each" if task.iterator else \
                    "branches" if all(t.condition for t in task.dag.tasks.values()) else \
                    "exit handler" if name.startswith("exit-handler-") else "dag"   # the compiler's names
                note = task.condition if task.condition else _loop_items(task.iterator)
                nodes.append(Node(node_id, name, kind, note, children=[t.label for t in task.dag.leaves()]))
                visit(task.dag, f"{node_id}/", node_id)
            else:
                nodes.append(Node(node_id, name, "importer" if task.is_importer else "task", label=task.label))
            upstream = [u for u in task.upstream if u in dag.tasks]
            edges.extend((f"{prefix}{u}", node_id, False) for u in sorted(upstream))
            if parent and not upstream:   # an entry task of a sub-DAG hangs below it
                edges.append((parent, node_id, True))
    visit(pipeline.root, "", None)
    return nodes, edges


def _loop_items(iterator: Optional[dict]) -> str:
    if not iterator:
        return ""
    items = iterator.get("items", {})
    return str(items.get("raw") or items.get("inputParameter") or items.get("inputArtifact") or "")[:60]


def layers(ids: Iterable[str], edges: Iterable[tuple[str, str, bool]]) -> dict[str, tuple[int, int]]:
    """id -> (layer, position in layer): longest path from a source; within a layer, ordered by
    the mean position of the node's upstream (one barycentre pass keeps edges from crossing much)."""
    ids = list(ids)
    upstream: dict[str, list[str]] = {i: [] for i in ids}
    for source, target, _ in edges:
        if source in upstream and target in upstream:
            upstream[target].append(source)
    depth: dict[str, int] = {}

    def level(node: str, seen=()) -> int:
        if node not in depth:
            depth[node] = 0 if not upstream[node] else \
                1 + max(level(u, seen + (node,)) for u in upstream[node] if u not in seen)
        return depth[node]
    for node in ids:
        level(node)
    placed: dict[str, tuple[int, int]] = {}
    for layer in range(max(depth.values(), default=-1) + 1):
        row = [n for n in ids if depth[n] == layer]
        row.sort(key=lambda n: sum(placed[u][1] for u in upstream[n]) / len(upstream[n]) if upstream[n] else 0)
        placed.update({n: (layer, i) for i, n in enumerate(row)})
    return placed


def aggregate(states: list[str]) -> str:
    """One state for several executions (a loop's iterations, a sub-DAG's tasks)."""
    if not states:
        return "PENDING"
    for state in ("FAILED", "RUNNING"):
        if state in states:
            return state
    if all(s == "SKIPPED" for s in states):
        return "SKIPPED"
    if all(s in _DONE or s == "SKIPPED" for s in states):
        return "CACHED" if all(s == "CACHED" for s in states) else "COMPLETE"
    return "RUNNING" if any(s in _DONE for s in states) else "PENDING"


def node_states(nodes: list[Node], executions: list[dict]) -> dict[str, tuple[str, int]]:
    """node id -> (state, executions), from the run's executions (by label: `square[2]` is `square`)."""
    by_label: dict[str, list[str]] = {}
    for execution in executions:
        by_label.setdefault(execution["label"], []).append(execution["state"])
    out = {}
    for node in nodes:
        states = by_label.get(node.label, []) if node.label else \
            [s for child in node.children for s in by_label.get(child, [])]
        if not node.label and len(states) < len(node.children) and states and aggregate(states) == "COMPLETE":
            states = states + ["PENDING"]   # some of a sub-DAG's tasks have not started yet
        out[node.id] = (aggregate(states), len(states))
    return out


def svg(pipeline: ir.Pipeline, executions: list[dict], href: Callable[[Node], str]) -> str:
    nodes, edges = pipeline_nodes(pipeline)
    states = node_states(nodes, executions)
    place = layers([n.id for n in nodes], edges)
    widest = max((p[1] for p in place.values()), default=0) + 1
    height = (max((p[0] for p in place.values()), default=0) + 1) * (NODE_H + GAP_Y) - GAP_Y + 2 * PAD
    width = widest * (NODE_W + GAP_X) - GAP_X + 2 * PAD
    row_sizes: dict[int, int] = {}
    for layer, _ in place.values():
        row_sizes[layer] = row_sizes.get(layer, 0) + 1

    def xy(node_id: str) -> tuple[float, float]:
        layer, pos = place[node_id]
        offset = (widest - row_sizes[layer]) * (NODE_W + GAP_X) / 2   # each row centred
        return PAD + offset + pos * (NODE_W + GAP_X), PAD + layer * (NODE_H + GAP_Y)
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' class='graph' width='{width:.0f}' height='{height:.0f}' "
             f"viewBox='0 0 {width:.0f} {height:.0f}' role='img' aria-label='pipeline graph'>"]
    for source, target, dashed in edges:
        (x1, y1), (x2, y2) = xy(source), xy(target)
        x1, y1, x2 = x1 + NODE_W / 2, y1 + NODE_H, x2 + NODE_W / 2
        mid = (y1 + y2) / 2
        parts.append(f"<path class='edge{' dashed' if dashed else ''}' d='M{x1:.0f},{y1:.0f} C{x1:.0f},{mid:.0f} "
                     f"{x2:.0f},{mid:.0f} {x2:.0f},{y2:.0f}'/>")
    for node in nodes:
        x, y = xy(node.id)
        state, count = states[node.id]
        sub = node.kind if node.kind not in ("task",) else ""
        line = f"{sub + ': ' if sub else ''}{state.lower()}{f' ×{count}' if count > 1 else ''}"
        tip = f"{node.id} ({node.kind}) {state}" + (f"\n{node.note}" if node.note else "")
        parts.append(
            f"<a href='{escape(href(node), quote=True)}' class='node kind-{node.kind.replace(' ', '-')} state-{state}' "
            f"data-node='{escape(node.id, quote=True)}' data-label='{escape(node.label, quote=True)}'>"
            f"<title>{escape(tip)}</title>"
            f"<rect x='{x:.0f}' y='{y:.0f}' width='{NODE_W}' height='{NODE_H}' rx='6'/>"
            f"<text x='{x + 8:.0f}' y='{y + 16:.0f}' class='name'>{escape(_fit(node.title, 22))}</text>"
            f"<text x='{x + 8:.0f}' y='{y + 32:.0f}' class='state'>{escape(_fit(line, 26))}</text></a>")
    parts.append("</svg>")
    return "".join(parts)


def _fit(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars - 1] + "…"
