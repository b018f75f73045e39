"""transform: schema-driven TFT graph; transformed specs, z-scores, vocabularies, label, missing values."""
import os
import types

import numpy as np
import pandas as pd
import pytest

from kfx_components.common import io


def _frame(path):
    return pd.DataFrame([{k: v[0] for k, v in r.items()} for r in io.read_examples(path)])


def _output(graph_dir):
    import tensorflow_transform as tft
    return tft.TFTransformOutput(graph_dir)


def test_layout(transformed):
    graph = transformed.graph.path
    assert {"transform_fn", "transformed_metadata", "metadata"} <= set(os.listdir(graph))
    assert not any(name.startswith(".") or name == "tmp" for name in os.listdir(graph))
    for split in io.SPLITS:
        assert os.path.isfile(io.split_file(transformed.examples.path, split))


def test_transformed_feature_specs(transformed, validated, taxi_config):
    import tensorflow as tf
    m = transformed.examples.metadata
    spec = _output(transformed.graph.path).transformed_feature_spec()
    assert m["label_key"] == "label" and m["num_classes"] == 2 and m["label_vocabulary"] == ["false", "true"]
    assert all(isinstance(s, tf.io.FixedLenFeature) and list(s.shape) == [] for s in spec.values())
    assert spec["label"].dtype == tf.int64
    for name in m["numeric_features"] + m["missing_indicators"]:
        assert spec[name].dtype == tf.float32, name
    for name in m["categorical_features"] + m["bucketized_features"]:
        assert spec[name].dtype == tf.int64, name
    # A column with no value in the 3000-row sample is skipped, not an error.
    assert m["absent_features"] == ["pickup_census_tract"]
    assert set(m["categorical_features"]) == set(taxi_config["categorical_features"]) - {"pickup_census_tract"} \
        | {"payment_type", "company"}
    assert {"payment_type", "company"} <= set(m["categorical_features"])  # strings are categorical
    assert set(m["bucketized_features"]) == set(taxi_config["bucketize_features"])
    assert {"fare", "trip_miles"} <= set(m["numeric_features"])
    # A missing indicator exactly where the schema allows missing values.
    import tensorflow_data_validation as tfdv
    schema = tfdv.load_schema_text(os.path.join(validated.schema.path, "schema.pbtxt"))
    optional = {f.name for f in schema.feature if f.presence.min_fraction < 1.0}
    assert {n for n in spec if n.endswith("_missing")} == \
        {n + "_missing" for n in m["numeric_features"] + m["bucketized_features"] if n in optional}
    assert "fare_missing" not in spec and "dropoff_latitude_missing" in spec
    assert set(spec) == set(m["transformed_features"])


def test_categorical_domains(transformed):
    m = transformed.examples.metadata
    out = _output(transformed.graph.path)
    df = _frame(io.split_file(transformed.examples.path, "train"))
    for name in m["categorical_features"] + m["bucketized_features"]:
        n = out.num_buckets_for_transformed_feature(name)
        assert n == m["num_buckets"][name] >= 2, name
        assert df[name].min() >= 0 and df[name].max() < n, name
    for name in m["bucketized_features"]:
        assert m["num_buckets"][name] <= 10
    # 7 weekdays (plus the OOV bucket); a string vocabulary covers the values seen in train
    assert m["num_buckets"]["trip_start_day"] == 8
    # one table: every vocabulary in one file, keyed by the feature's position
    lines = open(out.vocabulary_file_by_name("vocabularies"), "rb").read().splitlines()
    position = m["categorical_features"].index("payment_type")
    mine = [line for line in lines if line.startswith(b"%d:" % position)]
    assert 0 < len(mine) == m["num_buckets"]["payment_type"] - 1   # the OOV bucket is the last index


def test_the_one_table_indexes_every_token_as_tfts_own_vocabulary(tmp_path):
    """vocabularies.compute_and_apply against tft.compute_and_apply_vocabulary(num_oov_buckets=1) on
    tokens a hand-made table would not hold: ties, tabs, newlines, the empty string, bytes that are not
    UTF-8, a feature with nothing left (all empty), top_k cutting a tie, unseen values at transform."""
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils
    from kfx_components.transform import vocabularies

    rng = np.random.default_rng(3)
    pool = [b"a", b"b", b"tab\there", b"line\nbreak", b"", b"\xff\xfe", "é".encode(), b"x" * 300, b"0", b"1:ab"]
    train = [{"f": rng.choice(pool), "g": b"", "h": rng.choice([b"k1", b"k2", b"k3", b"k4"])} for _ in range(300)]
    unseen = [{"f": b"never", "g": b"seen", "h": b"k9"}, {"f": b"a", "g": b"", "h": b"k1"}]
    spec = {k: tf.io.FixedLenFeature([], tf.string) for k in "fgh"}
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))

    def ours(inputs):
        out = vocabularies.compute_and_apply([inputs[k] for k in "fgh"], "vocabularies", top_k=3)
        return {f"ours_{k}": v for k, v in zip("fgh", out)}

    def theirs(inputs):
        return {f"theirs_{k}": tft.compute_and_apply_vocabulary(inputs[k], top_k=3, num_oov_buckets=1)
                for k in "fgh"}

    def both(inputs):
        return {**ours(inputs), **theirs(inputs)}

    with tft_beam.Context(temp_dir=str(tmp_path / "tft")):
        transform_fn = (train, metadata) | tft_beam.AnalyzeDataset(both)
        rows, _ = ((train + unseen, metadata), transform_fn) | tft_beam.TransformDataset()
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp_path / "graph"))
    for k in "fgh":
        assert [r[f"ours_{k}"] for r in rows] == [r[f"theirs_{k}"] for r in rows], k
    output = tft.TFTransformOutput(str(tmp_path / "graph"))
    buckets = {k: output.num_buckets_for_transformed_feature(k) for k in output.transformed_feature_spec()}
    for k in "fgh":
        assert buckets[f"ours_{k}"] == buckets[f"theirs_{k}"], (k, buckets)
    assert buckets["ours_h"] == 4 and buckets["ours_g"] == 2    # top 3 + OOV; the dummy token + OOV
    assert rows[-2]["ours_h"] == 3 and sorted({r["ours_h"] for r in rows[:-2]}) == [0, 1, 2, 3]  # OOV; top 3
    # the graph as the model stages load it gives the same indices
    again = output.transform_raw_features({k: tf.constant([r[k] for r in unseen]) for k in "fgh"})
    assert again["ours_h"].numpy().tolist() == [r["ours_h"] for r in rows[-2:]]
    assert again["ours_f"].numpy().tolist()[0] == buckets["ours_f"] - 1


def test_numerics_z_scored_on_train(transformed):
    m = transformed.examples.metadata
    train = _frame(io.split_file(transformed.examples.path, "train"))
    for name in m["numeric_features"]:
        assert abs(train[name].mean()) < 1e-3, name
        assert abs(train[name].std() - 1.0) < 0.05, name  # ~1 (a filled mean lowers it a little)
    for name in m["missing_indicators"]:
        assert set(train[name].unique()) <= {0.0, 1.0}


def test_label_and_values_unchanged_row_for_row(transformed, examples):
    """Each transformed row still pairs its label with its own fare (order need not be kept)."""
    for split in io.SPLITS:
        raw = _frame(io.split_file(examples.path, split))
        out = _frame(io.split_file(transformed.examples.path, split))
        assert len(out) == len(raw)
        train = _frame(io.split_file(examples.path, "train"))
        mean, std = train.fare.mean(), train.fare.std(ddof=0)
        expected = sorted(zip(raw.label, (raw.fare - mean) / std))
        got = sorted(zip(out.label, out.fare))
        assert [label for label, _ in got] == [label for label, _ in expected]
        assert [z for _, z in got] == pytest.approx([z for _, z in expected], abs=1e-4)


def test_missing_values_filled(transformed, examples):
    raw = _frame(io.split_file(examples.path, "train"))
    out = _frame(io.split_file(transformed.examples.path, "train"))
    assert not out.isna().any().any()
    missing = raw.dropoff_latitude.isna()
    assert missing.any()
    assert sorted(out.dropoff_latitude_missing) == sorted(missing.astype(float))
    # A missing numeric becomes the mean, i.e. exactly z-score 0.
    if raw.trip_seconds.isna().any():
        assert (out.trip_seconds[out.trip_seconds_missing == 1.0] == 0.0).all()


def test_graph_applies_to_raw_examples_without_label(transformed, examples):
    """The serving path: raw examples (label absent) through the transform graph."""
    import tensorflow as tf
    out = _output(transformed.graph.path)
    spec = dict(out.raw_feature_spec())
    spec.pop("label")
    records = [r for _, r in zip(range(5), io.read_records(io.split_file(examples.path, "eval")))]
    stripped = []
    for r in records:
        ex = tf.train.Example.FromString(r)
        del ex.features.feature["label"]
        stripped.append(ex.SerializeToString())
    raw = tf.io.parse_example(tf.constant(stripped), spec)
    result = out.transform_features_layer()(raw)
    assert result["fare"].shape == (5,) and result["company"].dtype == tf.int64


@pytest.mark.parametrize("kwargs, culprit", [
    (dict(categorical_features=["nope_cat"]), "nope_cat"),
    (dict(bucketize_features=["fare", "nope_bucket"]), "nope_bucket"),
    (dict(bucketize_features=["company"]), "company"),
    (dict(categorical_features=["label"]), "label"),
    (dict(categorical_features=["fare"], bucketize_features=["fare"]), "fare"),
])
def test_bad_names_raise_and_write_nothing(examples, validated, tmp_path, kwargs, culprit):
    from kfx_components.transform import executor
    with pytest.raises(ValueError, match=culprit):
        executor.run(examples_dir=examples.path, schema_dir=validated.schema.path,
                     transform_graph_dir=str(tmp_path / "graph"), transformed_examples_dir=str(tmp_path / "data"),
                     label_key="label", **kwargs)
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------- not the taxi data

def _chain(tmp, frame, label, problem_type, **transform_args):
    from kfx_components.ingest import executor as ingest
    from kfx_components.transform import executor as transform
    from kfx_components.validate import executor as validate
    csv = tmp / "data.csv"
    frame.to_csv(csv, index=False)
    ex = ingest.run(data_path=str(csv), examples_dir=str(tmp / "examples"), label=label,
                    problem_type=problem_type, eval_ratio=0.3)
    val = validate.run(examples_dir=str(tmp / "examples"), statistics_dir=str(tmp / "statistics"),
                       schema_dir=str(tmp / "schema"), anomalies_dir=str(tmp / "anomalies"),
                       report_path=str(tmp / "report.html"), label_key=ex["label_key"])
    tr = transform.run(examples_dir=str(tmp / "examples"), schema_dir=str(tmp / "schema"),
                       transform_graph_dir=str(tmp / "graph"), transformed_examples_dir=str(tmp / "data"),
                       label_key=ex["label_key"], **transform_args)
    return types.SimpleNamespace(ingest=ex, validate=val, transform=tr, dir=tmp)


def test_diabetes_regression(tmp_path):
    """A non-taxi data set (sklearn diabetes, regression) with missing cells: no name is special."""
    import tensorflow as tf
    from sklearn.datasets import load_diabetes
    df = load_diabetes(as_frame=True).frame
    df.loc[::7, "s1"] = np.nan
    run = _chain(tmp_path, df, "target", "regression", categorical_features=["sex"],
                 bucketize_features=["bmi"], num_buckets=4)
    assert run.ingest["num_classes"] == 0 and run.validate["num_anomalies"] == 0
    m = run.transform
    assert sorted(m["numeric_features"]) == sorted(set(df.columns) - {"target", "sex", "bmi"})
    assert m["categorical_features"] == ["sex"] and m["bucketized_features"] == ["bmi"]
    assert m["missing_indicators"] == ["s1_missing"]
    assert m["num_buckets"]["sex"] == 3 and 2 <= m["num_buckets"]["bmi"] <= 4  # two values + OOV; quartiles
    spec = _output(str(tmp_path / "graph")).transformed_feature_spec()
    assert spec["target"].dtype == tf.float32 and spec["sex"].dtype == tf.int64 and spec["bmi"].dtype == tf.int64
    train = _frame(io.split_file(str(tmp_path / "data"), "train"))
    raw = _frame(io.split_file(str(tmp_path / "examples"), "train"))
    assert abs(train.s1.mean()) < 1e-3 and abs(train.age.mean()) < 1e-3
    assert train.s1_missing.sum() == raw.s1.isna().sum() > 0
    assert (train.s1[train.s1_missing == 1.0] == 0.0).all()
    assert set(train.sex) <= {0, 1, 2} and set(train.bmi) <= {0, 1, 2, 3}
    for split in io.SPLITS:  # the label passes through unchanged
        out = _frame(io.split_file(str(tmp_path / "data"), split))
        raw = _frame(io.split_file(str(tmp_path / "examples"), split))
        assert sorted(out.target) == pytest.approx(sorted(raw.target))


def test_the_linear_graph_walks_return_what_tfts_own_return(transformed, validated, examples, taxi_config):
    """graph_walks replaces two of TFT's graph walks: on the taxi graph (numeric, bucketized,
    categorical; sparse raw inputs) each returns exactly what TFT's own function returns."""
    import functools
    import tensorflow as tf
    from tensorflow_transform import graph_tools, impl_helper
    from tensorflow_transform.saved import saved_transform_io_v2 as io_v2
    from tensorflow_transform.tf_metadata import schema_utils
    from kfx_components.transform import executor, graph_walks

    assert graph_walks.install()   # the executor ran: already in place, TFT's own kept aside
    own = graph_walks._ORIGINAL
    assert io_v2._get_output_to_inputs_map is graph_walks.output_to_inputs_map

    # The fitted transform graph as every TransformDataset loads it.
    imported = tf.saved_model.load(os.path.join(transformed.graph.path, "transform_fn"))
    fn = imported.transform_fn.concrete_functions[0] if hasattr(imported.transform_fn, "concrete_functions") \
        else imported.transform_fn
    outputs = tf.nest.pack_sequence_as(fn.graph.structured_outputs, fn.graph.outputs, expand_composites=True)
    ours, theirs = graph_walks.output_to_inputs_map(outputs), own["output_to_inputs_map"](outputs)
    assert ours.keys() == theirs.keys() and len(ours) > 10
    for name in ours:
        assert set(map(id, ours[name])) == set(map(id, theirs[name])), name
    assert sum(len(v) for v in ours.values()) > len(ours)   # the stacked numerics: outputs share inputs

    # The analyzers' fingerprint of the traced preprocessing_fn, source keys per analyzer.
    schema = executor._raw_schema(executor._load_schema(validated.schema.path))
    label = examples.metadata["label_key"]
    plan = executor._plan(schema, label, taxi_config["categorical_features"], taxi_config["bucketize_features"], 10,
                          columns=list(io.read_columns(examples.path)))
    specs = impl_helper.get_type_specs_from_feature_specs(schema_utils.schema_as_feature_spec(schema).feature_spec)
    graph, inputs, _ = impl_helper.trace_preprocessing_function(
        functools.partial(executor._preprocess, plan=plan, label_key=label, num_buckets=10), specs,
        use_tf_compat_v1=False)
    with graph.as_default():
        fingerprints = {}
        for walk in (graph_walks.retrieve_source_keys, own["retrieve_source_keys"]):
            graph_tools._retrieve_source_keys = walk
            fingerprints[walk] = graph_tools.get_analyzers_fingerprint(graph, inputs)
        graph_tools._retrieve_source_keys = graph_walks.retrieve_source_keys
    ours, theirs = fingerprints.values()
    assert ours.keys() == theirs.keys() and len(ours) >= 3
    assert {k: v.source_keys for k, v in ours.items()} == {k: v.source_keys for k, v in theirs.items()}
    assert any(len(v.source_keys) > 1 for v in ours.values())
