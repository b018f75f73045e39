"""What a component body does around its executor: facts read from input artifacts, facts, files
and metrics written onto output artifacts.

An executor is a plain function of paths and values returning a dict of facts; its component body
(components/<stage>/component.py) adapts it to KFP's artifacts with these functions. An artifact
is anything with KFP's `.metadata` (dict), `.path` and `.name`; a metrics artifact also has
`.log_metric` (kfp.dsl.Metrics). No KFP or TensorFlow import: bodies run this in the stage image.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Optional

from kfx_components.common import facts as travelling
from kfx_formats import artifact_metadata as keys


def problem(source) -> dict:
    """The executor arguments the problem's travelling facts give (label_key, problem_type,
    num_classes: 0 when the problem has no classes), read from an input artifact's metadata."""
    meta = source.metadata
    return {"label_key": meta["label_key"], "problem_type": meta["problem_type"],
            "num_classes": int(meta.get("num_classes") or 0)}


def put(output, facts: Mapping[str, Any], keys: Optional[Iterable[str]] = None, **more: Any) -> None:
    """Put `facts` (only those of `keys` it holds, when `keys` is given), then `more`, on an
    output artifact's metadata."""
    chosen = facts if keys is None else {key: facts[key] for key in keys if key in facts}
    output.metadata.update({**chosen, **more})


def carry(output, source, facts: Mapping[str, Any] = ()) -> None:
    """Put `facts` and the travelling facts of input `source` (common/facts.py: label key,
    problem type, classes; these win) on an output artifact's metadata, so that every artifact
    says what problem it is about."""
    output.metadata.update({**dict(facts), **travelling.carried(source.metadata)})


def result(output, summary: str, published: Optional[bool] = None, alert: Optional[bool] = None,
           details: Optional[Iterable[str]] = None, **facts: Any) -> None:
    """A stage's result, by kfx's stage-neutral convention (kfx_formats.artifact_metadata): `facts`,
    then `summary`, the one line the run ends with; `published` when given (true: the artifact's
    URI is outside the run's store, e.g. a registry version, and the run shows it); `alert` and
    its `details` when given (true: something a person must act on, and the lines saying why)."""
    stage_neutral = {keys.SUMMARY: summary}
    for key, value in ((keys.PUBLISHED, published), (keys.ALERT, alert)):
        if value is not None:
            stage_neutral[key] = value
    if details is not None:
        stage_neutral[keys.DETAILS] = list(details)
    output.metadata.update({**facts, **stage_neutral})


def write_text(output, text: str) -> None:
    """Write `text` (Markdown, HTML, JSON) as an output artifact's file, UTF-8, creating its directory."""
    os.makedirs(os.path.dirname(output.path) or ".", exist_ok=True)
    with open(output.path, "w", encoding="utf-8") as f:
        f.write(text)


def log_metrics(metrics, values: Mapping[str, Any], **metadata: Any) -> None:
    """Log each of `values`, as given, on a metrics artifact; then put `metadata` (not scalars:
    names, choices) on its metadata."""
    for name, value in values.items():
        metrics.log_metric(name, value)
    metrics.metadata.update(metadata)


def names(**inputs) -> dict:
    """{role: artifact name} of input artifacts: the lineage a card or record shows."""
    return {role: artifact.name for role, artifact in inputs.items()}


def source_fingerprint(*inputs) -> str:
    """The inputs' lineage fingerprints joined with "+"; "" when one has none. kfx's runner puts
    each input's fingerprint in its metadata (`kfx_fingerprint`); KFP does not, and then a
    consumer compares bytes instead."""
    prints = [artifact.metadata.get(keys.FINGERPRINT, "") for artifact in inputs]
    return "+".join(prints) if all(prints) else ""
