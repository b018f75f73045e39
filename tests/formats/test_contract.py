"""The request contract (kfx_formats.contract): read without TensorFlow from real SavedModels and TFDV
schemas (kfx_formats.protos), written into registry versions, and compared: each kind of difference,
both directions."""
import os

import pytest

from kfx_formats import contract, features, protos, registry
from tests.formats.tiny_models import publish, save_model, write_schema

C = contract.Contract


def _c(*fields, note=""):
    return C({f.name: f for f in fields}, note)


def F(name, type_="float", required=False, used=True, shape=(), categories=(), capped=False):
    return contract.Field(name, type_, required, used, tuple(shape), tuple(categories), capped)


def _kinds(diffs):
    return sorted((d.kind, d.field, d.breaking) for d in diffs)


# ------------------------------------------------------------------ compare, hand-made contracts
def test_a_field_the_candidate_reads_and_clients_do_not_send_is_breaking_with_or_without_a_default():
    prod = _c(F("fare"))
    for required in (True, False):   # a default does not help: the model would impute it on every request
        diffs = contract.compare(_c(F("fare"), F("tips", required=required)), prod)
        assert _kinds(diffs) == [("not-sent", "tips", True)]
        assert "'tips'" in diffs[0].text and "do not send" in diffs[0].text and "\n" not in diffs[0].text
    # the other direction: production read `tips`, the candidate refuses it (the server takes no unknown key)
    assert _kinds(contract.compare(prod, _c(F("fare"), F("tips")))) == [("removed-field", "tips", True)]


def test_the_payload_log_decides_what_clients_send():
    prod, cand = _c(F("fare"), F("company", "string")), _c(F("fare"), F("company", "string"))
    assert contract.compare(cand, prod) == []
    # clients send `company` always null: imputed by both (shown); a candidate requiring it refuses them
    assert _kinds(contract.compare(cand, prod, sent_fields={"fare"})) == [("imputed", "company", False)]
    required = _c(F("fare"), F("company", "string", required=True))
    assert _kinds(contract.compare(required, prod, sent_fields={"fare"})) == [("not-sent", "company", True)]
    assert _kinds(contract.compare(required, prod)) == [("now-required", "company", True)]
    # a new field clients already send a value for is shown, not blocked
    assert _kinds(contract.compare(_c(F("fare"), F("tips")), _c(F("fare")), sent_fields={"fare", "tips"})) == [
        ("new-field", "tips", False)]


def test_type_and_shape_changes_are_breaking_both_ways():
    for a, b in ((F("trips", "int"), F("trips", "float")), (F("pair", shape=(2,)), F("pair", shape=(3,)))):
        assert _kinds(contract.compare(_c(a), _c(b))) == [("type-changed", a.name, True)]
        assert _kinds(contract.compare(_c(b), _c(a))) == [("type-changed", a.name, True)]
    assert "int in production, float in the candidate" in contract.compare(
        _c(F("trips", "float")), _c(F("trips", "int")))[0].text


def test_required_becoming_optional_is_shown_and_the_reverse_is_breaking():
    req, opt = _c(F("fare", required=True)), _c(F("fare", required=False))
    assert _kinds(contract.compare(opt, req)) == [("now-optional", "fare", False)]
    assert _kinds(contract.compare(req, opt)) == [("now-required", "fare", True)]


def test_categories_gained_or_lost_and_ignored_fields_are_shown_not_blocking():
    prod = _c(F("payment", "string", categories=["Cash", "Card"]), F("fare"))
    cand = _c(F("payment", "string", categories=["Cash", "Card", "Mobile"]), F("fare"),
              F("tips", used=False))
    diffs = contract.compare(cand, prod)
    assert _kinds(diffs) == [("ignored-field", "tips", False), ("new-categories", "payment", False)]
    assert "1 new categories: 'Mobile'" in [d.text for d in diffs if d.kind == "new-categories"][0]
    back = contract.compare(_c(*prod.fields.values()), _c(*cand.fields.values()))
    assert _kinds(back) == [("dropped-categories", "payment", False)]
    capped = contract.compare(_c(F("payment", "string", categories=["Cash", "X"], capped=True), F("fare")), prod)
    assert [d.kind for d in capped] == ["new-categories", "dropped-categories"]
    assert "of the first 1000 known" in capped[0].text
    assert all(not d.breaking for d in diffs + back + capped)


def test_breaking_differences_come_first():
    diffs = contract.compare(_c(F("fare", required=False), F("new")), _c(F("fare", required=True)))
    assert [d.breaking for d in diffs] == [True, False] and diffs[0].kind == "not-sent"


# ------------------------------------------------------------------ from real SavedModels and schemas
@pytest.fixture(scope="module")
def tf():
    import tensorflow as tf
    return tf


def test_the_proto_subset_has_tensorflows_field_numbers(tf):
    from tensorflow.core.framework import (attr_value_pb2, function_pb2, graph_pb2, node_def_pb2, op_def_pb2,
                                           tensor_pb2, tensor_shape_pb2)
    from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
    from tensorflow_metadata.proto.v0 import schema_pb2
    real = {"TensorProto": tensor_pb2.TensorProto, "NodeDef": node_def_pb2.NodeDef,
            "AttrValue": attr_value_pb2.AttrValue,
            "ListValue": attr_value_pb2.AttrValue.ListValue, "FunctionDef": function_pb2.FunctionDef,
            "GraphDef": graph_pb2.GraphDef, "MetaGraphDef": meta_graph_pb2.MetaGraphDef,
            "SignatureDef": meta_graph_pb2.SignatureDef, "SavedModel": saved_model_pb2.SavedModel,
            "Schema": schema_pb2.Schema, "Feature": schema_pb2.Feature, "StringDomain": schema_pb2.StringDomain,
            "Dim": tensor_shape_pb2.TensorShapeProto.Dim, "TensorShapeProto": tensor_shape_pb2.TensorShapeProto,
            "NameAttrList": attr_value_pb2.NameAttrList, "OpDef": op_def_pb2.OpDef,
            "FunctionDefLibrary": function_pb2.FunctionDefLibrary, "TensorInfo": meta_graph_pb2.TensorInfo}
    assert set(real) == set(protos.MESSAGES)
    for name, message in real.items():
        for field in protos.MESSAGES[name].DESCRIPTOR.fields:
            assert message.DESCRIPTOR.fields_by_name[field.name].number == field.number, (name, field.name)
    assert list(protos.FEATURE_TYPES) == [n for n, _ in sorted(schema_pb2.FeatureType.items(), key=lambda i: i[1])]


def _spec(tf):
    return {"trips": tf.io.FixedLenFeature([], tf.int64),
            "fare": tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
            "pair": tf.io.FixedLenFeature([2], tf.float32),
            "company": tf.io.VarLenFeature(tf.string)}


def test_the_contract_of_a_saved_model_is_its_serving_signatures_spec_read_without_tensorflow(tf, tmp_path):
    path = save_model(str(tmp_path / "m"), _spec(tf))
    loaded = tf.saved_model.load(path)
    assert features.spec_from_graph_def(protos.serving_graph(path)) == features.spec_from_signature(
        loaded.signatures["serving_default"])   # the label, parsed by transform_features only, is left out
    schema = write_schema(str(tmp_path / "schema"), {"company": ("BYTES", [f"c{i}" for i in range(1200)]),
                                                     "trips": ("INT", []), "label": ("INT", []),
                                                     "comment": ("BYTES", ["a", "b"])})
    got = contract.from_saved_model(path, os.path.join(schema, "schema.pbtxt"), "label")
    assert [(f.name, f.type, f.required, f.used, f.shape) for f in got.fields.values()] == [
        ("comment", "string", False, False, ()), ("company", "string", False, True, ()),
        ("fare", "float", False, True, ()), ("pair", "float", True, True, (2,)), ("trips", "int", True, True, ())]
    company = got.fields["company"]
    assert len(company.categories) == contract.MAX_CATEGORIES and company.categories_capped
    assert company.categories[:2] == ("c0", "c1")
    with pytest.raises(ValueError, match="m: no nope signature"):
        protos.serving_graph(path, "nope")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "saved_model.pb").write_bytes(b"\xff\xff\xff")
    with pytest.raises(ValueError, match="not a SavedModel proto"):
        protos.serving_graph(str(tmp_path / "bad"))


def test_contracts_of_two_real_versions_compare_through_the_registry(tf, tmp_path):
    reg = str(tmp_path / "registry")
    v1 = publish(reg, "m", {"fare": tf.io.VarLenFeature(tf.float32), "payment": tf.io.VarLenFeature(tf.string)},
                 {"fare": ("FLOAT", []), "payment": ("BYTES", ["Cash", "Card"])})
    v2 = publish(reg, "m", {"fare": tf.io.VarLenFeature(tf.float32), "payment": tf.io.VarLenFeature(tf.string),
                            "tips": tf.io.FixedLenFeature([], tf.float32, default_value=0.0)},
                 {"fare": ("FLOAT", []), "payment": ("BYTES", ["Cash", "Card", "Mobile"]), "tips": ("FLOAT", [])})
    one, two = contract.read(v1), contract.read(v2)
    assert os.path.isfile(os.path.join(v1.uri, registry.CONTRACT)) and list(one.fields) == ["fare", "payment"]
    assert contract.from_json(one.to_json()) == one
    assert _kinds(contract.compare(two, one)) == [("new-categories", "payment", False), ("not-sent", "tips", True)]
    assert _kinds(contract.compare(one, two)) == [("dropped-categories", "payment", False),
                                                  ("removed-field", "tips", True)]
    assert contract.read(registry.Version(9, str(tmp_path / "none"))) is None
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / registry.CONTRACT).write_text('{"fields": 3}')
    with pytest.raises(ValueError, match=r"junk/contract.json: not a request contract"):
        contract.read(registry.Version(9, str(tmp_path / "junk")))
