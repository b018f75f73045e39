"""The serving feature spec: the raw features a kfx model takes (name, type, required), read from
its serving signature without TensorFlow.

A kfx `serving_default` signature parses serialized tf.Examples with ParseExampleV2 ops whose
constant inputs (sparse and dense keys, dense defaults) and attributes (types, shapes) ARE the spec
the model was trained with (the transform graph's raw spec minus the label). This module reads them
from the signature's GraphDef proto (`fn.graph.as_graph_def()`), so the serving runtime, batch
scoring and the platform share one reading; the caller, who has TensorFlow, hands the proto over.

A sparse (VarLen) feature is optional and of any length; a dense (FixedLen) one is required unless
the graph gives it a default.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List

STRING, INT64, FLOAT = "string", "int64", "float"
# tensorflow.DataType enum values: DT_FLOAT, DT_INT64, DT_STRING (the types tf.Example holds).
_DTYPES = {1: FLOAT, 9: INT64, 7: STRING}
PARSE_OP = "ParseExampleV2"
# ParseExampleV2's inputs: serialized, names, sparse_keys, dense_keys, ragged_keys, dense_defaults...
_SPARSE_KEYS, _DENSE_KEYS, _DENSE_DEFAULTS = 2, 3, 5


@dataclasses.dataclass(frozen=True)
class Feature:
    name: str
    dtype: str            # string | int64 | float
    kind: str             # sparse (VarLen: optional, any length) | dense (FixedLen)
    shape: tuple = ()     # dense only
    required: bool = False

    def describe(self) -> dict:
        """The feature as JSON (the server's /kfx/metadata "features")."""
        return {"name": self.name, "dtype": self.dtype, "kind": self.kind, "shape": list(self.shape),
                "required": self.required}


def _size(tensor) -> int:
    """Number of elements of a TensorProto (from its shape)."""
    n = 1
    for d in tensor.tensor_shape.dim:
        n *= d.size
    return n


def _strings(tensor) -> List[str]:
    """The elements of a DT_STRING TensorProto (TensorFlow keeps them in string_val)."""
    values = [v.decode("utf-8") for v in tensor.string_val]
    if len(values) == 1 and _size(tensor) > 1:   # a splat: one value stands for every element
        values *= _size(tensor)
    return values


def _parsed(node, nodes) -> List[Feature]:
    """The features one ParseExampleV2 node reads."""
    by_name = {n.name: n for n in nodes}

    def const(i: int):
        source = by_name.get(node.input[i].split(":")[0])
        # A default given to parse_example is reshaped to the feature's shape: its value is the Const before.
        while source is not None and source.op in ("Reshape", "Identity"):
            source = by_name.get(source.input[0].split(":")[0])
        if source is None or source.op != "Const":
            raise ValueError(f"{PARSE_OP} input {i} ({node.input[i]}) is not a constant")
        return source.attr["value"].tensor

    sparse_types = [_DTYPES.get(t, str(t)) for t in node.attr["sparse_types"].list.type]
    dense_types = [_DTYPES.get(t, str(t)) for t in node.attr["Tdense"].list.type]
    dense_shapes = [tuple(d.size for d in s.dim) for s in node.attr["dense_shapes"].list.shape]
    found = [Feature(key, dtype, "sparse") for key, dtype in zip(_strings(const(_SPARSE_KEYS)), sparse_types)]
    for i, (key, dtype, shape) in enumerate(zip(_strings(const(_DENSE_KEYS)), dense_types, dense_shapes)):
        has_default = len(node.input) > _DENSE_DEFAULTS + i and _size(const(_DENSE_DEFAULTS + i)) > 0
        found.append(Feature(key, dtype, "dense", shape, not has_default))
    return found


def spec_from_graph_def(graph_def) -> Dict[str, Feature]:
    """{name: Feature}, sorted by name, of a serving signature's GraphDef (`fn.graph.as_graph_def()`);
    a ValueError when the graph parses no tf.Examples or a feature of a type tf.Example cannot hold."""
    bodies = [list(graph_def.node)] + [list(f.node_def) for f in graph_def.library.function]
    # A signature may parse the examples more than once (a wrapper reading one feature, the model
    # reading all of them): the spec is the union of every ParseExampleV2 op's features.
    spec: Dict[str, Feature] = {}
    for nodes in bodies:
        for node in (n for n in nodes if n.op == PARSE_OP):
            for f in _parsed(node, nodes):
                have = spec.get(f.name)
                if have is not None and have.dtype != f.dtype:
                    raise ValueError(f"feature {f.name!r} is parsed as {have.dtype} and as {f.dtype}")
                if have is None or (f.kind == "dense" and have.kind == "sparse"):
                    spec[f.name] = f     # the stricter reading wins
    if not spec:
        raise ValueError(f"serving_default has no {PARSE_OP} op: not a kfx serving signature "
                         "(serialized tf.Examples in)")
    unsupported = [(f.name, f.dtype) for f in spec.values() if f.dtype not in (STRING, INT64, FLOAT)]
    if unsupported:
        raise ValueError(f"unsupported feature dtypes: {unsupported}")
    return dict(sorted(spec.items()))


def spec_from_signature(fn) -> Dict[str, Feature]:
    """The raw feature spec of a loaded `serving_default` concrete function."""
    return spec_from_graph_def(fn.graph.as_graph_def())
