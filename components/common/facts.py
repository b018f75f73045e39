"""The facts that travel downstream with the data, from artifact to artifact.

ingest learns what the problem is (label key, problem type, classes); every
later stage reads them from its input artifact's metadata and puts them on
its outputs with ``carried``, so any artifact says what it is about.
"""
from __future__ import annotations

from typing import Any, Mapping

TRAVELLING = ("label_key", "problem_type", "num_classes", "label_vocabulary")


def carried(metadata: Mapping[str, Any]) -> dict:
    """The travelling facts present in an input artifact's metadata."""
    return {key: metadata[key] for key in TRAVELLING if key in metadata}
