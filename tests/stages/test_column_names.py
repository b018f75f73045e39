"""Column names as they come (issue 20): the identifiers TF/Keras objects and files are named by
(components/common/names.py), and one table whose columns are keywords, punctuation, unicode,
leading digits, a 200-character name and case/punctuation twins going through ingest ->
transform -> model -> export -> reload, with both signatures called."""
import keyword
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from kfx_components.common import names

NASTY = ["class", "lambda", "self", "from", "in", "a-b", "a.b", "a_b", "a b", "A_B", "a__b", "x/y",
         'say "hi"', "[0]", "größe", "名前", "🙂 score", "2nd col", "1.5", "L" + "x" * 199, "Age", "age",
         "examples", "logits", "features", "dense_0", "quant_logits", "income", "income_missing"]
# One of each class for the model (the transform's time grows with the columns).
TABLE = ["class", "lambda", "self", "a-b", "a.b", "a b", "a_b", "x/y", "größe", "🙂 score", "2nd col",
         "L" + "x" * 199, "Age", "age", "logits", "dense_0", "income", "income_missing"]


def _is_safe(identifier: str) -> bool:
    """An ASCII identifier, no keyword, bounded; either kept as it is (then no name the model uses
    itself) or a stem and a hash (which no layer or signature name has)."""
    return (identifier.isascii() and identifier.isidentifier() and not keyword.iskeyword(identifier)
            and len(identifier) <= names.MAX_LENGTH
            and (names.is_kept(identifier) or bool(re.fullmatch(r"[a-z][a-z0-9_]*__[0-9a-f]{10}", identifier))))


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(st.lists(st.text(min_size=1, max_size=220), min_size=1, max_size=8, unique=True))
def test_safe_names_are_identifiers_unique_ignoring_case_and_deterministic(columns):
    mapped = names.safe_names(columns)
    assert sorted(mapped.values()) == sorted(columns)
    assert len({s.lower() for s in mapped}) == len(columns)
    assert all(_is_safe(s) for s in mapped)
    assert [names.safe_name(c) for c in columns] == [names.safe_name(c) for c in list(columns)]


def test_safe_names_of_the_classes_people_use():
    mapped = {c: names.safe_name(c) for c in NASTY}
    assert all(_is_safe(s) for s in mapped.values()), mapped
    assert len({s.lower() for s in mapped.values()}) == len(NASTY)
    # Plain lower-case identifiers are kept (existing models' signatures do not move); the rest
    # keep a readable stem.
    assert mapped["age"] == "age" and mapped["a_b"] == "a_b" and mapped["income_missing"] == "income_missing"
    # Pinned: the identifier is part of every exported model's transformed_logits signature.
    assert mapped["a-b"] == "a_b__34fafddda8" and mapped["class"].startswith("class__")
    assert mapped["2nd col"].startswith("c_2nd_col__")


def _schema(columns: dict, optional: set):
    """The schema validate would infer: each column's type, presence < 1 where cells are missing."""
    from tensorflow_metadata.proto.v0 import schema_pb2
    kinds = {"int64": schema_pb2.INT, "float": schema_pb2.FLOAT, "bytes": schema_pb2.BYTES}
    schema = schema_pb2.Schema()
    for name, kind in columns.items():
        feature = schema.feature.add(name=name, type=kinds[kind])
        feature.presence.min_fraction = 0.0 if name in optional else 1.0
        feature.presence.min_count = 1
    return schema


@pytest.fixture(scope="module")
def wild_model(tmp_path_factory):
    """(loaded SavedModel, transform output, transform facts, raw test examples) of a table of TABLE columns."""
    import tensorflow as tf
    from google.protobuf import text_format

    from kfx_components.common import model as M
    from kfx_components.ingest import executor as ingest
    from kfx_components.transform import executor as transform

    work = tmp_path_factory.mktemp("wild-names")
    rng = np.random.default_rng(3)
    rows = 120
    frame = pd.DataFrame({c: rng.normal(size=rows) for c in TABLE})
    frame["a b"] = rng.choice(["red", "green", "blue"], size=rows)
    frame["self"] = rng.integers(0, 4, size=rows)
    frame.loc[::5, ["a-b", "income", "größe"]] = np.nan   # missing indicators, one beside 'income_missing'
    frame["y"] = (frame["class"] + frame["lambda"] > 0).astype(int)
    frame.to_csv(work / "wild.csv", index=False)
    facts = ingest.run(data_path=str(work / "wild.csv"), examples_dir=str(work / "examples"), label="y",
                       problem_type="binary")
    (work / "schema").mkdir()
    (work / "schema" / "schema.pbtxt").write_text(text_format.MessageToString(
        _schema(facts["columns"], {"a-b", "income", "größe"})))
    t_facts = transform.run(examples_dir=str(work / "examples"), schema_dir=str(work / "schema"),
                            transform_graph_dir=str(work / "graph"), transformed_examples_dir=str(work / "data"),
                            label_key="y")
    to = M.load_transform_output(str(work / "graph"))
    model = M.build_model(to, "y", "binary", width=4, depth=1)
    M.export_serving_model(model, to, "y", "binary", str(work / "model"))
    raw = list(tf.data.TFRecordDataset(str(work / "examples/test/data.tfrecord.gz"), "GZIP").as_numpy_iterator())
    return tf.saved_model.load(str(work / "model")), to, t_facts, raw, work


def test_transform_keeps_the_names_and_makes_its_indicators_internal(wild_model):
    _, _, facts, _, _ = wild_model
    features = set(facts["transformed_features"])
    assert set(TABLE) <= features
    # 'income' has missing cells and the table has its own 'income_missing': both survive, distinct.
    assert "income_missing" in features and facts["missing_indicators"].count("income_missing") == 0
    assert len(facts["missing_indicators"]) == 3 and set(facts["missing_indicators"]) <= features


def test_both_signatures_answer_on_the_wild_names(wild_model):
    loaded, to, _, raw, _ = wild_model
    _check_signatures(loaded, to, raw)


def test_a_forest_takes_the_wild_names_too(wild_model):
    """TF-DF refuses names Keras could not give a layer (a space, '%', ','); kfx's forests keep them."""
    from kfx_components.common import forest, loading
    from kfx_components.common import model as M

    _, to, _, raw, work = wild_model
    trained, facts = forest.train_forest(str(work / "data"), to, "y", "binary", num_trees=10)
    M.export_serving_model(trained, to, "y", "binary", str(work / "forest"))
    _check_signatures(loading.load_model(str(work / "forest")), to, raw)
    assert facts["num_trees"] >= 1


def _check_signatures(loaded, to, raw):
    """serving_default answers probabilities; transformed_logits on the same rows agrees with it."""
    import tensorflow as tf

    from kfx_components.common import model as M

    probabilities = loaded.signatures["serving_default"](examples=tf.constant(raw))["probabilities"].numpy()
    assert probabilities.shape == (len(raw), 1) and ((probabilities >= 0) & (probabilities <= 1)).all()

    logits_fn = loaded.signatures["transformed_logits"]
    args = M.signature_args(M.feature_keys(to, "y"))
    assert sorted(logits_fn.structured_input_signature[1]) == sorted(args)
    # The same rows through the TFT graph, then transformed_logits: the two signatures agree.
    transformed = to.transform_features_layer()(tf.io.parse_example(raw, M.raw_feature_spec(to, "y")))
    logits = logits_fn(**{arg: transformed[feature] for arg, feature in args.items()})["logits"].numpy()
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), probabilities, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("header, where", [(",x,y", "column 1 of line 1 (the header) (the first one)"),
                                           ("x,  ,y", "column 2 of line 1 (the header) (after 'x')")])
def test_a_column_without_a_name_is_refused_in_ingest_in_one_line(tmp_path, header, where):
    from kfx_components.ingest import executor as ingest
    rows = "".join(f"{i},{i % 3},{i % 2}\n" for i in range(40))
    (tmp_path / "t.csv").write_text(header + "\n" + rows)
    with pytest.raises(ingest.IngestError) as err:
        ingest.run(data_path=str(tmp_path / "t.csv"), examples_dir=str(tmp_path / "out"), label="y",
                   problem_type="binary")
    assert where in str(err.value) and "has no name" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_a_parquet_column_named_blank_is_refused_and_odd_names_are_kept(tmp_path):
    from kfx_components.ingest import executor as ingest
    frame = pd.DataFrame({"lambda": range(40), "a.b": [0.5] * 40, "y": [0, 1] * 20})
    frame.to_parquet(tmp_path / "ok.parquet")
    facts = ingest.run(data_path=str(tmp_path / "ok.parquet"), examples_dir=str(tmp_path / "ok"), label="y",
                       problem_type="binary")
    assert set(facts["columns"]) == {"lambda", "a.b", "y"}
    frame.rename(columns={"a.b": " "}).to_parquet(tmp_path / "blank.parquet")
    with pytest.raises(ingest.IngestError, match=r"column 2 of the table \(after 'lambda'\) has no name"):
        ingest.run(data_path=str(tmp_path / "blank.parquet"), examples_dir=str(tmp_path / "out"), label="y",
                   problem_type="binary")
