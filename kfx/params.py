"""Pipeline parameters given on a command line: one parser for `kfx run`, `kfx submit` and the
chart's registration Job (`python -m kfx.submit`). Types are checked against the IR by kfx.ir."""
from __future__ import annotations

from typing import Any, Collection, Dict, Iterable

import yaml


def parse_params(pairs: Iterable[str], verbatim: Collection[str] = ()) -> Dict[str, Any]:
    """``["NAME=VALUE", ...]`` -> dict; VALUE is read as YAML (``3`` int, ``1.5``, ``true``, ``[a, b]``;
    empty: ""), except for the names in `verbatim` (the pipeline's STRING parameters), whose text
    is taken as it is (``' World'`` keeps its space, as the KFP UI and API pass it). A malformed
    pair is a ValueError naming it."""
    params: Dict[str, Any] = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--param {pair!r}: expected NAME=VALUE")
        if name.strip() in verbatim:
            params[name.strip()] = value
            continue
        try:
            params[name.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            params[name.strip()] = value
    return params
