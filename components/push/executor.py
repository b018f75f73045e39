"""push: publish a blessed model to the versioned registry with its model card.

A blessed model becomes `<registry_uri>/<model_name>/v<N>/` holding
`saved_model/` (the SavedModel), `tflite/` (the quantized files),
`model_card.md` and `model_card.json`; the version is created by an atomic
rename (see `kfx_components.common.registry`) and never overwritten. A model
that is not blessed publishes nothing.

No TensorFlow here: the push image carries none.
"""
from __future__ import annotations

import datetime
import json
import os
from typing import Any, Dict, Mapping

from kfx_components.common import registry

CARD_MD, CARD_JSON = "model_card.md", "model_card.json"


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e6 else f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _md_escape(value: Any) -> str:
    return _fmt(value).replace("|", "\\|").replace("\n", " ")


def _kv_table(rows: Mapping[str, Any], header=("name", "value")) -> str:
    if not rows:
        return "_none recorded_\n"
    lines = [f"| {header[0]} | {header[1]} |", "| --- | --- |"]
    lines += [f"| {_md_escape(k)} | {_md_escape(v)} |" for k, v in rows.items()]
    return "\n".join(lines) + "\n"


def _human_bytes(n: Any) -> str:
    try:
        n = float(n)
    except (TypeError, ValueError):
        return str(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def render_card(card: Mapping[str, Any]) -> str:
    """The human-readable model card (Markdown) for one published version."""
    name, version = card.get("model_name", "?"), card.get("version", "?")
    out = [f"# Model card: {name} v{version}", ""]
    out += [f"- **Registry URI:** `{card.get('uri', '')}`",
            f"- **Published:** {card.get('published_at', '')}",
            f"- **Problem type:** {card.get('problem_type', '')}"
            + (f" (label `{card['label_key']}`)" if card.get("label_key") else ""), ""]
    if card.get("label_vocabulary"):
        out += [f"- **Classes:** {', '.join(map(str, card['label_vocabulary']))}", ""]

    blessing = card.get("blessing") or {}
    out += ["## Evaluation", "",
            f"Blessed: **{'yes' if blessing.get('blessed', True) else 'no'}**"
            + (" (compared with baseline)" if blessing.get("baseline_used") else ""), ""]
    metrics = card.get("metrics") or {}
    overall = metrics.get("overall") or {}
    out += ["### Overall", "", _kv_table(overall, ("metric", "value"))]
    per_slice = metrics.get("per_slice") or {}
    if per_slice:
        cols = sorted({k for m in per_slice.values() for k in m})
        out += [f"### Per slice ({metrics.get('slice_feature', '')})", "",
                "| slice | " + " | ".join(cols) + " |",
                "| --- |" + " --- |" * len(cols)]
        out += ["| " + _md_escape(s) + " | " + " | ".join(_md_escape(m.get(c, "")) for c in cols) + " |"
                for s, m in per_slice.items()]
        out.append("")

    data = card.get("data") or {}
    out += ["## Data", "", _kv_table(data, ("fact", "value"))]
    out += ["## Hyperparameters", "", _kv_table(card.get("hyperparameters") or {})]
    if card.get("training"):
        out += ["## Training (distilled student)", "", _kv_table(card["training"])]

    quantized = card.get("quantized") or {}
    out += ["## Quantized variants (TFLite)", ""]
    if quantized:
        out += ["| variant | size | details |", "| --- | --- | --- |"]
        for variant, info in quantized.items():
            if isinstance(info, Mapping):
                size = info.get("size_bytes", info.get("size", ""))
                rest = {k: v for k, v in info.items() if k not in ("size_bytes", "size")}
            else:
                size, rest = info, {}
            out.append(f"| {_md_escape(variant)} | {_human_bytes(size) if size != '' else ''} | "
                       f"{_md_escape(rest) if rest else ''} |")
        out.append("")
    else:
        out += ["_none recorded_", ""]

    out += ["## Lineage", "", "Input artifact ids (ml-metadata):", "",
            _kv_table(card.get("lineage") or {}, ("input", "artifact id"))]
    return "\n".join(out)


def _check_model(model_dir: str) -> None:
    if not os.path.isfile(os.path.join(model_dir, "saved_model.pb")):
        raise ValueError(f"model_dir {model_dir!r} is not a SavedModel directory (no saved_model.pb)")


def run(model_dir: str, quantized_dir: str, blessing: Dict[str, Any], registry_uri: str,
        model_name: str, card: Dict[str, Any]) -> dict:
    """Publish the blessed model as the next registry version, or nothing when not blessed."""
    if not isinstance(blessing, Mapping) or "blessed" not in blessing:
        raise ValueError("blessing must be a dict with a 'blessed' entry")
    if not registry_uri:
        raise ValueError("registry_uri is empty")
    if not blessing["blessed"]:
        reasons = blessing.get("reasons") or []
        reason = "not blessed" + (": " + "; ".join(map(str, reasons)) if reasons else "")
        return {"pushed": False, "reason": reason, "model_name": model_name}

    _check_model(model_dir)
    sources = {"saved_model": model_dir}
    if quantized_dir:
        if not os.path.isdir(quantized_dir):
            raise ValueError(f"quantized_dir {quantized_dir!r} is not a directory")
        sources["tflite"] = quantized_dir
    base_card = dict(card or {})
    base_card.setdefault("model_name", model_name)
    base_card.setdefault("blessing", {k: v for k, v in blessing.items()
                                      if k in ("blessed", "reasons", "baseline_used")})
    published_at = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def card_files(number: int) -> Dict[str, bytes]:
        full = {**base_card, "version": number, "published_at": published_at,
                "uri": f"{registry_uri.rstrip('/')}/{model_name}/v{number}"}
        return {CARD_MD: render_card(full).encode("utf-8"),
                CARD_JSON: json.dumps(full, indent=2, sort_keys=True, default=str).encode("utf-8")}

    published: Dict[str, bytes] = {}

    def remember(number: int) -> Dict[str, bytes]:
        published.clear()
        published.update(card_files(number))
        return published

    version = registry.publish(sources, {}, registry_uri, model_name, versioned_files=remember)
    # `model_card` (the Markdown) is for the component's Markdown output, not for metadata.
    return {"pushed": True, "version": version.number, "uri": version.uri, "model_name": model_name,
            "model_card": published[CARD_MD].decode("utf-8")}
