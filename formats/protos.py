"""The few TensorFlow and TF Metadata proto messages kfx reads where no TensorFlow is installed (the push
image): a SavedModel's `serving_default` graph, for kfx_formats.features, and a TFDV schema's string
domains, for kfx_formats.contract.

Each message is declared here with only the fields read, under the field numbers of
tensorflow/core/framework/*.proto, tensorflow/core/protobuf/{saved_model,meta_graph}.proto and
tensorflow_metadata/proto/v0/schema.proto (tests/formats/test_contract.py holds them equal to the real
descriptors). Protobuf skips the fields left out, so the real files parse with these.
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, List, Optional, Tuple

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory, text_format

_PACKAGE = "kfx_protos"
_F = descriptor_pb2.FieldDescriptorProto
# (name, number, type, repeated?, message type name or None)
_MESSAGES: Dict[str, List[Tuple[str, int, int, bool, Optional[str]]]] = {
    "Dim": [("size", 1, _F.TYPE_INT64, False, None)],
    "TensorShapeProto": [("dim", 2, _F.TYPE_MESSAGE, True, "Dim")],
    "TensorProto": [("dtype", 1, _F.TYPE_INT32, False, None),
                    ("tensor_shape", 2, _F.TYPE_MESSAGE, False, "TensorShapeProto"),
                    ("string_val", 8, _F.TYPE_BYTES, True, None)],
    "NameAttrList": [("name", 1, _F.TYPE_STRING, False, None)],
    "ListValue": [("type", 6, _F.TYPE_INT32, True, None),
                  ("shape", 7, _F.TYPE_MESSAGE, True, "TensorShapeProto"),
                  ("func", 9, _F.TYPE_MESSAGE, True, "NameAttrList")],
    "AttrValue": [("list", 1, _F.TYPE_MESSAGE, False, "ListValue"),
                  ("tensor", 8, _F.TYPE_MESSAGE, False, "TensorProto"),
                  ("func", 10, _F.TYPE_MESSAGE, False, "NameAttrList")],
    "NodeDef": [("name", 1, _F.TYPE_STRING, False, None), ("op", 2, _F.TYPE_STRING, False, None),
                ("input", 3, _F.TYPE_STRING, True, None), ("attr", 5, _F.TYPE_MESSAGE, True, "map:AttrValue")],
    "OpDef": [("name", 1, _F.TYPE_STRING, False, None)],
    "FunctionDef": [("signature", 1, _F.TYPE_MESSAGE, False, "OpDef"),
                    ("node_def", 3, _F.TYPE_MESSAGE, True, "NodeDef")],
    "FunctionDefLibrary": [("function", 1, _F.TYPE_MESSAGE, True, "FunctionDef")],
    "GraphDef": [("node", 1, _F.TYPE_MESSAGE, True, "NodeDef"),
                 ("library", 2, _F.TYPE_MESSAGE, False, "FunctionDefLibrary")],
    "TensorInfo": [("name", 1, _F.TYPE_STRING, False, None)],
    "SignatureDef": [("outputs", 2, _F.TYPE_MESSAGE, True, "map:TensorInfo")],
    "MetaGraphDef": [("graph_def", 2, _F.TYPE_MESSAGE, False, "GraphDef"),
                     ("signature_def", 5, _F.TYPE_MESSAGE, True, "map:SignatureDef")],
    "SavedModel": [("meta_graphs", 2, _F.TYPE_MESSAGE, True, "MetaGraphDef")],
    # tensorflow_metadata.v0: a feature's type (1 BYTES, 2 INT, 3 FLOAT) and its string domain, inline
    # or named (`domain`, a schema-level StringDomain).
    "StringDomain": [("name", 1, _F.TYPE_STRING, False, None), ("value", 2, _F.TYPE_STRING, True, None)],
    "Feature": [("name", 1, _F.TYPE_STRING, False, None), ("type", 6, _F.TYPE_ENUM, False, "FeatureType"),
                ("domain", 7, _F.TYPE_STRING, False, None),
                ("string_domain", 11, _F.TYPE_MESSAGE, False, "StringDomain")],
    "Schema": [("feature", 1, _F.TYPE_MESSAGE, True, "Feature"),
               ("string_domain", 4, _F.TYPE_MESSAGE, True, "StringDomain")],
}
FEATURE_TYPES = ("TYPE_UNKNOWN", "BYTES", "INT", "FLOAT", "STRUCT")


def _classes() -> dict:
    file = descriptor_pb2.FileDescriptorProto(name="kfx_protos.proto", package=_PACKAGE, syntax="proto3")
    enum = file.enum_type.add(name="FeatureType")
    for number, name in enumerate(FEATURE_TYPES):
        enum.value.add(name=name, number=number)
    for name, fields in _MESSAGES.items():
        message = file.message_type.add(name=name)
        for field, number, kind, repeated, type_name in fields:
            label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
            if type_name and type_name.startswith("map:"):   # map<string, V>: a nested map-entry message
                entry = message.nested_type.add(name=f"{field.capitalize()}Entry")
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
                entry.field.add(name="value", number=2, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                                type_name=f".{_PACKAGE}.{type_name[4:]}")
                type_name = f"{name}.{entry.name}"
            message.field.add(name=field, number=number, type=kind, label=label,
                              **({"type_name": f".{_PACKAGE}.{type_name}"} if type_name else {}))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
            for name in _MESSAGES}


MESSAGES = _classes()
SERVING_SIGNATURE = "serving_default"


def _called(node) -> Iterable[str]:
    """The functions a node calls: through `func` attributes (PartitionedCall's `f`, If/While branches...)
    and by op name (a function called directly)."""
    yield node.op
    for value in node.attr.values():
        if value.func.name:
            yield value.func.name
        yield from (f.name for f in value.list.func)


def serving_graph(saved_model_dir: str, signature: str = SERVING_SIGNATURE):
    """A GraphDef (this module's) holding the functions `signature` of a SavedModel directory runs (its
    call nodes and every function reachable from them): what kfx_formats.features.spec_from_graph_def
    reads. A ValueError naming the directory when there is no such SavedModel or signature."""
    path = os.path.join(saved_model_dir, "saved_model.pb")
    if not os.path.isfile(path):
        raise ValueError(f"{saved_model_dir}: no saved_model.pb (not a SavedModel)")
    saved = MESSAGES["SavedModel"]()
    with open(path, "rb") as f:
        try:
            saved.ParseFromString(f.read())
        except message.DecodeError as err:
            raise ValueError(f"{path}: not a SavedModel proto ({err})") from None
    meta = next((m for m in saved.meta_graphs if signature in m.signature_def), None)
    if meta is None:
        raise ValueError(f"{saved_model_dir}: no {signature} signature")
    nodes = {n.name: n for n in meta.graph_def.node}
    library = {f.signature.name: f for f in meta.graph_def.library.function}
    starts = [nodes[name] for name in {t.name.split(":")[0]
                                       for t in meta.signature_def[signature].outputs.values()} if name in nodes]
    graph = MESSAGES["GraphDef"]()
    graph.node.extend(starts)
    todo = [name for n in starts for name in _called(n)]
    seen = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in library:
            continue
        seen.add(name)
        graph.library.function.append(library[name])
        todo += [callee for n in library[name].node_def for callee in _called(n)]
    return graph


def string_domains(schema_path: str) -> Dict[str, Tuple[str, List[str]]]:
    """{feature: (type BYTES|INT|FLOAT|..., its string domain's values)} of a TFDV schema.pbtxt."""
    schema = MESSAGES["Schema"]()
    with open(schema_path, encoding="utf-8") as f:
        text_format.Parse(f.read(), schema, allow_unknown_field=True)
    named = {d.name: list(d.value) for d in schema.string_domain}
    return {f.name: (FEATURE_TYPES[f.type] if f.type < len(FEATURE_TYPES) else str(f.type),
                     list(f.string_domain.value) or named.get(f.domain, []))
            for f in schema.feature}
