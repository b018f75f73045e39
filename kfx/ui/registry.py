"""The model registry as the Models page shows it: ROOT/registry/<model>/vN (model card, size),
aliases.json (aliases and their history), rollouts/*/state.json; the run that made each version
from MLMD. Read with the registry's own readers (kfx_formats.registry)."""
from __future__ import annotations

import collections
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from kfx import gc
from kfx.stores.metadata import prop
from kfx.views.run_records import Root
from kfx_formats import registry


def models(root: Root) -> list[dict]:
    """Every registry model: its versions (newest first) with metric, size, aliases and the run
    that made each one; its rollout history."""
    if not root.registry.is_dir():
        return []
    out = []
    for model_dir in sorted(p for p in root.registry.iterdir() if p.is_dir()):
        numbers = registry.version_numbers(str(model_dir))
        if not numbers:
            continue
        names = registry.aliases(str(model_dir))
        version_aliases = collections.defaultdict(list)
        for alias, entry in names.items():
            if alias != "history" and isinstance(entry, dict):
                version_aliases[entry.get("version")].append(alias)
        versions = [_version(root, model_dir, n, version_aliases.get(n, [])) for n in reversed(numbers)]
        out.append({"name": model_dir.name, "versions": versions, "alias_history": names.get("history", []),
                    "rollouts": _rollouts(model_dir)})
    return out


def _version(root: Root, model_dir: Path, number: int, aliases: list) -> dict:
    path = model_dir / f"v{number}"
    card = registry.read_json(str(path / registry.CARD_JSON)) or {}
    trust = card.get("trust") or {}
    model = trust.get("model") or {}
    ci = model.get("ci") or [None, None]
    card_html = path / "model_card.html"
    return {"version": number, "path": str(path), "aliases": aliases, "size": gc.size_of(path),
            "metric": {"name": trust.get("metric"), "value": model.get("metric"), "low": ci[0], "high": ci[1]}
            if model else None,
            "created": datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds"),
            "card": root.servable(str(card_html)) if card_html.is_file() else None,
            "run": made_by(root, str(path))}


def made_by(root: Root, uri: str) -> Optional[str]:
    """The run whose execution first wrote an artifact at `uri` (push's published version)."""
    md = root.md
    if md is None:
        return None
    with root.lock:
        for artifact in sorted(md.artifacts_by_uri(uri), key=lambda a: a.id):
            execution = md.producer(artifact.id)
            if execution is not None:
                return prop(execution, "run_id")
    return None


def _rollouts(model_dir: Path) -> list[dict]:
    base = model_dir / "rollouts"
    if not base.is_dir():
        return []
    states = [registry.read_json(str(p / "state.json")) for p in sorted(base.iterdir()) if p.is_dir()]
    return [s for s in states if s]
