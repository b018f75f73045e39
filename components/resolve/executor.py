"""resolve: the baseline a new run is judged against, found in the model registry.

Like TFX's Resolver with its latest-blessed-model strategy: the registry holds
only blessed models (push publishes nothing else), so the baseline is the
model the `production` alias points to when there is one, else the newest
version. It returns that version's SavedModel URI and the URI of the
statistics of the data it was trained on (published with it by push), for
evaluate (is the candidate at least as good?) and validate (has the data
drifted since?). Empty strings when the registry holds no version yet.

The URIs are parameters, not copies: registry versions are never
overwritten, so a URI names its content and a step that takes it is cached
exactly when the baseline is unchanged, locally and on KFP.

No TensorFlow here: resolve runs on the push image.
"""
from __future__ import annotations

import json

from kfx_formats import registry

PRODUCTION_ALIAS = "production"


def run(registry_uri: str, model_name: str) -> dict:
    """{"version": N or 0, "model_uri": ..., "statistics_uri": ..., "source": why this one}."""
    none = {"version": 0, "model_uri": "", "statistics_uri": "", "source": "the registry holds no version"}
    if not registry_uri:
        return {**none, "source": "no registry_uri"}
    versions = registry.versions(registry_uri, model_name)
    if not versions:
        return none
    chosen, source = versions[-1], "the newest version"
    alias = registry.read_alias(registry_uri, model_name, PRODUCTION_ALIAS)
    if alias is not None:
        by_number = {v.number: v for v in versions}
        if alias in by_number:
            chosen, source = by_number[alias], f"the {PRODUCTION_ALIAS!r} alias"
    statistics_uri = f"{chosen.uri}/{registry.STATISTICS}" if registry.read_file(chosen, registry.TRAIN_STATISTICS) \
        is not None else ""
    return {"version": chosen.number, "model_uri": f"{chosen.uri}/{registry.SAVED_MODEL}",
            "statistics_uri": statistics_uri, "source": source}


def describe(facts: dict) -> str:
    """One line for the run's log."""
    if not facts["version"]:
        return f"resolve: no baseline ({facts['source']})"
    return (f"resolve: baseline v{facts['version']} ({facts['source']}): {facts['model_uri']}"
            + (f"; statistics {facts['statistics_uri']}" if facts["statistics_uri"] else "; no statistics"))


if __name__ == "__main__":  # pragma: no cover - a person's check: python -m ... REGISTRY MODEL
    import sys
    print(json.dumps(run(sys.argv[1], sys.argv[2]), indent=2))
