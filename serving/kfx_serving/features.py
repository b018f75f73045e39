"""Raw features in, serialized tf.Examples out, with 4xx-grade validation.

The raw feature spec comes from the SavedModel itself: kfx_formats.features reads it from the
`serving_default` signature's ParseExampleV2 op (the spec the model was trained with); nothing
else needs to travel with the model.

Request contract (docs/serving.md):
  * every feature of the spec must be present in every instance (a missing key
    is a client bug: 400 naming it); `null` is an explicit missing value and is
    accepted for optional (VarLen) features, which the TFT graph imputes;
  * unknown keys are rejected (400 naming them);
  * int64 features take JSON integers (or integral floats), float features take
    numbers, string features take strings; a list gives a multivalent value.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Sequence

from kfx_formats.features import INT64, STRING, Feature


class FeatureError(ValueError):
    """A request does not match the model's raw feature spec (an HTTP 400)."""

    def __init__(self, message: str, field: str | None = None, index: int | None = None):
        super().__init__(message)
        self.field, self.index = field, index


def _coerce(value: Any, feature: Feature, where: str) -> Any:
    if isinstance(value, bool):
        raise FeatureError(f"{where}: feature {feature.name!r} expects {feature.dtype}, got a boolean",
                           feature.name)
    if feature.dtype == STRING:
        if not isinstance(value, str):
            raise FeatureError(f"{where}: feature {feature.name!r} expects a string, got "
                               f"{type(value).__name__} {value!r}", feature.name)
        return value.encode("utf-8")
    if not isinstance(value, (int, float)):
        raise FeatureError(f"{where}: feature {feature.name!r} expects {feature.dtype}, got "
                           f"{type(value).__name__} {value!r}", feature.name)
    if feature.dtype == INT64:
        if isinstance(value, float):
            if not math.isfinite(value) or value != int(value):
                raise FeatureError(f"{where}: feature {feature.name!r} expects an integer, got {value!r}",
                                   feature.name)
            value = int(value)
        if not -(1 << 63) <= value < (1 << 63):
            raise FeatureError(f"{where}: feature {feature.name!r}: {value} is out of int64 range", feature.name)
        return value
    value = float(value)
    if not math.isfinite(value):
        raise FeatureError(f"{where}: feature {feature.name!r}: {value!r} is not a finite number", feature.name)
    return value


def _values(value: Any, feature: Feature, where: str) -> List[Any]:
    if value is None:
        if feature.required:
            raise FeatureError(f"{where}: feature {feature.name!r} is required and may not be null", feature.name)
        return []
    items = value if isinstance(value, list) else [value]
    out = [_coerce(v, feature, where) for v in items]
    if feature.kind == "dense":
        want = 1
        for d in feature.shape:
            want *= d
        if len(out) != want:
            raise FeatureError(f"{where}: feature {feature.name!r} expects {want} value(s), got {len(out)}",
                               feature.name)
    return out


def validate(instances: Any, spec: Mapping[str, Feature]) -> List[Dict[str, List[Any]]]:
    """Checked, typed values per instance (lists); raises FeatureError naming the field."""
    if not isinstance(instances, list):
        raise FeatureError('"instances" must be a list of {feature: value} objects', "instances")
    if not instances:
        raise FeatureError('"instances" is empty', "instances")
    rows = []
    for i, inst in enumerate(instances):
        where = f"instances[{i}]"
        if not isinstance(inst, dict):
            raise FeatureError(f"{where}: expected an object of feature values, got {type(inst).__name__}",
                               "instances", i)
        unknown = sorted(set(inst) - set(spec))
        if unknown:
            raise FeatureError(f"{where}: unknown feature(s) {unknown}; the model takes {sorted(spec)}",
                               unknown[0], i)
        missing = sorted(set(spec) - set(inst))
        if missing:
            raise FeatureError(f"{where}: missing feature(s) {missing} (send null for a missing value)",
                               missing[0], i)
        rows.append({name: _values(inst[name], feature, where) for name, feature in spec.items()})
    return rows


def serialize(rows: Sequence[Mapping[str, List[Any]]], spec: Mapping[str, Feature]) -> List[bytes]:
    """tf.Example bytes for validated rows (validate() output)."""
    from tensorflow.core.example import example_pb2

    out = []
    for row in rows:
        ex = example_pb2.Example()
        fmap = ex.features.feature
        for name, values in row.items():
            if not values:
                continue
            dtype = spec[name].dtype
            if dtype == STRING:
                fmap[name].bytes_list.value.extend(values)
            elif dtype == INT64:
                fmap[name].int64_list.value.extend(values)
            else:
                fmap[name].float_list.value.extend(values)
        out.append(ex.SerializeToString())
    return out


def columns_to_instances(columns: Mapping[str, Sequence[Any]]) -> List[Dict[str, Any]]:
    """V2 / Open Inference Protocol: one named 1-D tensor per feature -> row dicts."""
    lengths = {name: len(vals) for name, vals in columns.items()}
    if len(set(lengths.values())) > 1:
        raise FeatureError(f"inputs have different lengths: {lengths}", sorted(lengths)[0])
    n = next(iter(lengths.values()), 0)
    return [{name: vals[i] for name, vals in columns.items()} for i in range(n)]
