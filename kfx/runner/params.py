"""Pipeline parameters as a person gives them: a data set's configuration file, --data/--label/
--task and NAME=VALUE pairs. One parser for `kfx run`, `kfx submit`, `kfx monitor --retrain` and the
chart's registration Job (`python -m kfx.submit`). Types are checked against the IR by kfx.runner.ir."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Collection, Dict, Iterable, Optional

import yaml

from kfx.errors import UsageError
from kfx.runner import spans
from kfx_formats import choices

# Config keys that are not pipeline parameters under the same name.
_CONFIG_ALIASES = {"data": "data_uri", "schema": "schema_uri"}


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


def load_config(path: Optional[str]) -> dict:
    """A data set's configuration as pipeline parameters; paths resolved against the file."""
    if not path:
        return {}
    config_path = Path(path)
    try:
        raw = yaml.safe_load(config_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise UsageError(f"--config {path}: {err}") from err
    if not isinstance(raw, dict):
        raise UsageError(f"--config {path}: expected a mapping of parameter names to values")
    params = {_CONFIG_ALIASES.get(k, k): v for k, v in raw.items()}
    for key in ("data_uri", "schema_uri"):
        if key in params and "://" not in str(params[key]):
            params[key] = str((config_path.parent / params[key]).resolve())
    return params


def run_parameters(config: Optional[str] = None, data: Optional[str] = None, label: Optional[str] = None,
                   task: Optional[str] = None, pairs: Iterable[str] = (), strings: Collection[str] = (),
                   train_spans: Optional[int] = None, backtest: Optional[bool] = None) -> dict:
    """A run's parameters from a config file, --data/--label/--task and NAME=VALUE pairs (later
    ones win); `strings`: the pipeline's STRING parameters, whose pair text is taken verbatim.
    A data pattern with {SPAN} is resolved here to one file (and `span`), or with `train_spans`
    (--train-spans; --no-backtest: `backtest` False) to a window of spans, before anything runs."""
    params = load_config(config)
    if data is not None:
        params["data_uri"] = str(Path(data).resolve()) if "://" not in data else data
    for name, value in (("label", label), ("problem_type", task)):
        if value is not None:
            params[name] = value
    try:
        params.update(parse_params(pairs, strings))
    except ValueError as err:
        raise UsageError(str(err)) from err
    if train_spans is not None:
        params["train_spans"] = train_spans
    if backtest is not None:
        params["temporal_backtest"] = backtest
    data_uri = params.get("data_uri", "")
    if spans.is_pattern(str(data_uri)):   # a new span is a new input: resolve it before anything is imported
        try:
            params.update(spans.parameters(str(data_uri), params))
        except spans.SpanError as err:
            raise UsageError(str(err)) from err
    elif params.get("train_spans"):
        raise UsageError(f"train_spans={params['train_spans']}: a window of spans needs --data with {spans.SPAN} "
                         f"(e.g. incoming/span-{spans.SPAN}/data.csv); {data_uri or 'no data'} names one file")
    elif data and "://" not in data and not Path(data).exists():
        raise UsageError(f"--data {data}: no such file")
    try:   # the stage that reads a word would refuse it too, but minutes into the run
        choices.check_run_parameters(params)
    except ValueError as err:
        raise UsageError(str(err)) from err
    # evaluate would refuse it too, but only after training: say so before anything runs.
    if params.get("bless_on") == "temporal" and not params.get("backtest_span"):
        raise UsageError("bless_on=temporal needs train_spans with a backtest (--train-spans K and a "
                         f"{spans.SPAN} --data pattern, not --no-backtest): the newest span is what it judges on")
    return params
