"""What a run says about itself, by a convention any component may follow on its output
artifacts' metadata (the keys: kfx_formats.artifact_metadata), so the platform never reads one
stage's own structure:

- `summary`: the one line the run ends with (ingest's says what it left out of the file,
  push's what it published, monitor's whether retraining is due);
- `published: true`: the artifact was put outside the run's store (a registry version);
- `warnings`: one-line texts of what a stage let pass but a person must know;
- `alert: true`: something a person must act on (the monitor: retraining is due), with
  `details`, the lines that say why.
"""
from __future__ import annotations

from typing import Iterator, Tuple

from kfx.runner.run_context import RunResult
from kfx_formats.artifact_metadata import ALERT, DETAILS, PUBLISHED, SUMMARY, WARNINGS


def outputs(result: RunResult) -> Iterator[Tuple[str, str, object]]:
    """(step, output name, artifact) of every output of the run."""
    for name, step in result.steps.items():
        for out, artifact in step.outputs.items():
            yield name, out, artifact


def _one_line(text) -> str:
    return " ".join(str(text).split())


def outcome_lines(result: RunResult) -> list[str]:
    """Every `summary`, and the URI of every `published` artifact, in step order."""
    lines = []
    for _, _, artifact in outputs(result):
        if artifact.metadata.get(SUMMARY):
            lines.append(_one_line(artifact.metadata[SUMMARY]))
        if artifact.metadata.get(PUBLISHED):
            lines.append(f"published: {artifact.uri}")
    return lines


def warning_lines(result: RunResult) -> list[str]:
    """Every output's `warnings`, each prefixed by its step."""
    lines = []
    for name, _, artifact in outputs(result):
        warnings = artifact.metadata.get(WARNINGS)
        if isinstance(warnings, list):
            lines += [f"{name}: {_one_line(w)}" for w in warnings]
    return lines


def alerts(result: RunResult) -> list[dict]:
    """The outputs that raise an alert: each as {"step", "summary", "details"}."""
    found = []
    for name, _, artifact in outputs(result):
        if artifact.metadata.get(ALERT):
            details = artifact.metadata.get(DETAILS)
            found.append({"step": name, "summary": _one_line(artifact.metadata.get(SUMMARY) or ""),
                          "details": [_one_line(d) for d in details] if isinstance(details, list) else []})
    return found
