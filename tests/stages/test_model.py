"""components/common/model.py: build, train, export and serve, on any data set.

Binary runs on the taxi fixtures (the real transform stage); multiclass (iris)
and regression (diabetes) run through a tiny TFT made here, so the model code
is shown not to depend on the taxi columns.
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest


def _raw_records(examples_dir, split, n):
    import tensorflow as tf
    files = sorted(glob.glob(os.path.join(examples_dir, split, "*.tfrecord.gz")))
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").take(n)
    return [r.numpy() for r in ds]


def _write_examples(df, path):
    import tensorflow as tf
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path, options="GZIP") as w:
        for row in df.to_dict("records"):
            f = {}
            for k, v in row.items():
                if isinstance(v, float) and np.isnan(v):
                    continue  # a missing cell is an absent feature
                if isinstance(v, (int, np.integer)):
                    f[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))
                elif isinstance(v, (float, np.floating)):
                    f[k] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(v)]))
                else:
                    f[k] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(v).encode()]))
            w.write(tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString())


def tiny_tft(df, label, out):
    """Contract-shaped examples/, transform_graph/ and transformed_examples/ for a small frame.

    Numeric -> z-score (+ `<name>_missing` when cells are missing), strings -> vocabulary index.
    """
    import apache_beam as beam
    import pandas as pd
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    ex_dir, graph, data = (os.path.join(out, n) for n in ("examples", "transform_graph", "transformed_examples"))
    idx = np.random.RandomState(0).permutation(len(df))
    cut = int(len(df) * 0.75)
    splits = {"train": df.iloc[idx[:cut]], "eval": df.iloc[idx[cut:]]}
    spec = {}
    for c in df.columns:
        dt = tf.string if df[c].dtype == object else tf.int64 if pd.api.types.is_integer_dtype(df[c]) else tf.float32
        spec[c] = tf.io.VarLenFeature(dt) if df[c].isna().any() else tf.io.FixedLenFeature([], dt)
    for name, part in splits.items():
        _write_examples(part, os.path.join(ex_dir, name, "data.tfrecord.gz"))
    raw_meta = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))

    def instances(part):
        rows = []
        for r in part.to_dict("records"):
            rows.append({k: ([] if isinstance(v, float) and np.isnan(v) else [v])
                         if isinstance(spec[k], tf.io.VarLenFeature) else v for k, v in r.items()})
        return rows

    def preprocessing_fn(inputs):
        out = {}
        for k, v in inputs.items():
            if k == label:
                out[k] = v
                continue
            if isinstance(v, tf.SparseTensor):
                shape = tf.stack([v.dense_shape[0], 1])
                present = tf.reshape(tf.sparse.to_dense(
                    tf.SparseTensor(v.indices, tf.ones_like(v.values, tf.float32), shape)), [-1])
                v = tf.reshape(tf.sparse.to_dense(tf.SparseTensor(v.indices, v.values, shape)), [-1])
                out[k + "_missing"] = 1.0 - present
            if v.dtype == tf.string:
                out[k] = tft.compute_and_apply_vocabulary(v)
            else:
                out[k] = tft.scale_to_z_score(tf.cast(v, tf.float32))
        return out

    tmp = tempfile.mkdtemp()
    gz = beam.io.filesystem.CompressionTypes.GZIP
    with beam.Pipeline() as p, tft_beam.Context(temp_dir=tmp):
        train = p | "CreateTrain" >> beam.Create(instances(splits["train"]))
        ev = p | "CreateEval" >> beam.Create(instances(splits["eval"]))
        (train_t, meta_t), fn = (train, raw_meta) | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)
        ev_t, _ = ((ev, raw_meta), fn) | tft_beam.TransformDataset()
        _ = fn | tft_beam.WriteTransformFn(graph)
        coder = tft.coders.ExampleProtoCoder(meta_t.dataset_metadata.schema)
        for name, pc in (("train", train_t), ("eval", ev_t)):
            _ = (pc | f"Encode{name}" >> beam.Map(coder.encode)
                 | f"Write{name}" >> beam.io.WriteToTFRecord(os.path.join(data, name, "data"), file_name_suffix=".tfrecord.gz",
                                                             shard_name_template="", compression_type=gz))
    shutil.rmtree(tmp, ignore_errors=True)
    return ex_dir, graph, data


def sklearn_frame(problem_type):
    """iris (multiclass, with a string feature and missing cells) or diabetes (regression)."""
    from sklearn.datasets import load_diabetes, load_iris
    if problem_type == "multiclass":
        df = load_iris(as_frame=True).frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
        df["target"] = df["target"].astype("int64")
        df["petal_size"] = np.where(df["petal_length"] > 4.0, "long", "short")  # a string -> embedding
        df.loc[::9, "sepal_width"] = np.nan  # missing cells -> VarLen raw feature + _missing indicator
        return df, 3
    df = load_diabetes(as_frame=True, scaled=False).frame
    df["target"] = df["target"].astype("float64")
    return df, 0


@pytest.fixture(scope="module")
def sklearn_sets(tmp_path_factory):
    """{problem_type: (examples, graph, transformed, label, num_classes)} for iris and diabetes.

    Beam + TFT run in a child process: in this process they left objects whose
    garbage collection at interpreter exit segfaulted (TF 2.16 / TFT 1.16).
    """
    base = tmp_path_factory.mktemp("tiny_tft")
    script = textwrap.dedent(f"""
        import os, sys
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        import test_model as t
        for problem in ("multiclass", "regression"):
            df, _ = t.sklearn_frame(problem)
            t.tiny_tft(df, "target", os.path.join({str(base)!r}, problem))
        sys.stdout.flush()
        os._exit(0)  # skip interpreter teardown (see the fixture's docstring)
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    sets = {}
    for problem in ("multiclass", "regression"):
        out = base / problem
        sets[problem] = (str(out / "examples"), str(out / "transform_graph"), str(out / "transformed_examples"),
                         "target", sklearn_frame(problem)[1])
    return sets


def _fit_export(problem_type, graph, data, label, k, out, epochs=15):
    from kfx_components.common import model as M
    to = M.load_transform_output(graph)
    mdl = M.build_model(to, label, problem_type, k, width=32, depth=2, learning_rate=0.01)
    train = M.make_dataset(data, "train", to, label, 32, shuffle=True, seed=1, problem_type=problem_type)
    hist = mdl.fit(train, epochs=epochs, verbose=0)
    results = mdl.evaluate(M.make_dataset(data, "eval", to, label, 64, problem_type=problem_type),
                           return_dict=True, verbose=0)
    M.export_serving_model(mdl, to, label, problem_type, out)
    return mdl, hist, results


def test_primary_metric_and_bad_problem_type():
    from kfx_components.common import model as M
    from kfx_components.common import problem
    assert [problem.primary_metric(p) for p in problem.PROBLEM_TYPES] == ["auc", "accuracy", "rmse"]
    assert problem.higher_is_better("regression") is False and problem.higher_is_better("binary") is True
    assert problem.worse_by_more_than(0.90, 0.95, "binary", 0.02) and not problem.worse_by_more_than(
        0.94, 0.95, "binary", 0.02)
    assert problem.worse_by_more_than(1.05, 1.0, "regression", 0.02)
    with pytest.raises(ValueError, match="problem_type"):
        problem.primary_metric("ranking")
    with pytest.raises(ValueError, match="num_classes"):
        M.output_units("multiclass", 1)


@pytest.mark.parametrize("problem_type", ["multiclass", "regression"])
def test_builds_trains_and_serves_generic_data(problem_type, sklearn_sets, tmp_path):
    import tensorflow as tf
    from kfx_components.common import model as M
    examples, graph, data, label, k = sklearn_sets[problem_type]
    to = M.load_transform_output(graph)
    out = str(tmp_path / "model")
    mdl, hist, results = _fit_export(problem_type, graph, data, label, k, out)
    units = k if problem_type == "multiclass" else 1
    assert mdl.output_shape == (None, units)
    assert mdl.get_layer("logits").activation is tf.keras.activations.linear  # logits
    from kfx_components.common.problem import primary_metric
    metric = primary_metric(problem_type)
    if problem_type == "multiclass":
        # the string feature is indexed and embedded, in the one table
        assert mdl.get_layer(M.FUSED_EMBEDDING).count_params() == \
            (M.num_buckets(to, "petal_size") + 1) * M.embedding_dim(M.num_buckets(to, "petal_size") + 1)
        assert results[metric] > 0.7  # iris; majority class is ~0.33
    else:
        assert hist.history["loss"][-1] < hist.history["loss"][0]
        assert results[metric] < 70.0  # diabetes target sd ~77

    loaded = tf.saved_model.load(out)
    raw = _raw_records(examples, "eval", 20)
    served = loaded.signatures["serving_default"](examples=tf.constant(raw))
    key = "probabilities" if problem_type == "multiclass" else "predictions"
    assert list(served) == [key]
    values = served[key].numpy()
    assert values.shape == (len(raw), units)
    if problem_type == "multiclass":
        np.testing.assert_allclose(values.sum(axis=1), 1.0, rtol=1e-5)
    # the same rows through TFT (independently of the model) and transformed_logits
    parsed = tf.io.parse_example(tf.constant(raw), M.raw_feature_spec(to, label))
    transformed = to.transform_raw_features(parsed)
    keys = M.feature_keys(to, label)
    logits = loaded.signatures["transformed_logits"](**{f: transformed[f] for f in keys})["logits"]
    expect = tf.nn.softmax(logits).numpy() if problem_type == "multiclass" else logits.numpy()
    np.testing.assert_allclose(values, expect, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def taxi_model(transformed, tmp_path_factory):
    """A binary model on the taxi fixture, exported against a copy of the transform graph
    that is deleted afterwards: the SavedModel must not need it."""
    base = tmp_path_factory.mktemp("taxi_model")
    graph_copy = str(base / "graph_copy")
    shutil.copytree(transformed.graph.path, graph_copy)
    m = transformed.examples.metadata
    out = str(base / "model")
    _, hist, results = _fit_export("binary", graph_copy, transformed.examples.path, m["label_key"],
                                   m["num_classes"], out, epochs=2)
    shutil.rmtree(graph_copy)
    return out, results


def test_binary_serving_matches_transformed_logits(taxi_model, examples, transformed):
    import tensorflow as tf
    from kfx_components.common import model as M
    out, results = taxi_model
    assert 0.0 <= results["auc"] <= 1.0
    label = transformed.examples.metadata["label_key"]
    to = M.load_transform_output(transformed.graph.path)
    loaded = tf.saved_model.load(out)
    assert {"serving_default", "transformed_logits"} <= set(loaded.signatures)
    sig = loaded.signatures["transformed_logits"]
    assert sorted(sig.structured_input_signature[1]) == M.feature_keys(to, label)
    raw = _raw_records(examples.path, "eval", 64)
    probs = loaded.signatures["serving_default"](examples=tf.constant(raw))["probabilities"].numpy()
    assert probs.shape == (len(raw), 1)
    assert np.all((probs >= 0) & (probs <= 1))
    # the label is not needed at serving time: strip it from the records
    stripped = []
    for r in raw:
        ex = tf.train.Example.FromString(r)
        del ex.features.feature[label]
        stripped.append(ex.SerializeToString())
    probs2 = loaded.signatures["serving_default"](examples=tf.constant(stripped))["probabilities"].numpy()
    np.testing.assert_allclose(probs, probs2, rtol=1e-6)
    parsed = tf.io.parse_example(tf.constant(raw), M.raw_feature_spec(to, label))
    transformed_rows = to.transform_raw_features(parsed)
    logits = sig(**{k: transformed_rows[k] for k in M.feature_keys(to, label)})["logits"]
    np.testing.assert_allclose(probs, tf.sigmoid(logits).numpy(), rtol=1e-4, atol=1e-6)


def test_exported_model_serves_in_a_fresh_process(taxi_model, examples, tmp_path):
    """Plain TensorFlow in a new process (no kfx import, transform graph deleted) serves raw examples."""
    import tensorflow as tf
    out, _ = taxi_model
    moved = str(tmp_path / "moved_model")
    shutil.copytree(out, moved)
    raw = _raw_records(examples.path, "eval", 16)
    expect = tf.saved_model.load(out).signatures["serving_default"](examples=tf.constant(raw))["probabilities"]
    np.save(tmp_path / "expect.npy", expect.numpy())
    with open(tmp_path / "raw.bin", "wb") as f:
        np.save(f, np.array(raw, dtype=object), allow_pickle=True)
    script = textwrap.dedent(f"""
        import os, sys
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import numpy as np, tensorflow as tf
        raw = list(np.load({str(tmp_path / 'raw.bin')!r}, allow_pickle=True))
        f = tf.saved_model.load({moved!r}).signatures["serving_default"]
        got = f(examples=tf.constant(raw))["probabilities"].numpy()
        np.testing.assert_allclose(got, np.load({str(tmp_path / 'expect.npy')!r}), rtol=1e-5)
        assert "kfx_components" not in sys.modules
        print("SERVED", got.shape)
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SERVED (16, 1)" in proc.stdout


@pytest.mark.parametrize("max_embedding_dim", [None, 2])
def test_one_embedding_table_gives_each_feature_its_own_rows(transformed, max_embedding_dim):
    """The fused table is the per-feature embeddings laid end to end: its size is the sum of
    (buckets + 1) x width, and changing one feature's index changes exactly that feature's columns."""
    import tensorflow as tf
    from kfx_components.common import model as M
    to = M.load_transform_output(transformed.graph.path)
    label = transformed.examples.metadata["label_key"]
    mdl = M.build_model(to, label, "binary", max_embedding_dim=max_embedding_dim)
    keys = M.feature_keys(to, label)
    categorical = [k for k in keys if M.num_buckets(to, k) is not None]
    widths = {}
    for k in categorical:
        d = M.embedding_dim(M.num_buckets(to, k) + 1)
        widths[k] = min(d, max_embedding_dim) if max_embedding_dim else d
    assert len(set(widths.values())) > (1 if max_embedding_dim is None else 0)
    assert mdl.get_layer(M.FUSED_EMBEDDING).count_params() == \
        sum((M.num_buckets(to, k) + 1) * widths[k] for k in categorical)
    encoder = tf.keras.Model(mdl.inputs, mdl.get_layer("features").output)
    n_numeric = len(keys) - len(categorical)
    base = {k: tf.constant([0], tf.int64 if k in widths else mdl.input[k].dtype) for k in keys}
    before = encoder(base).numpy()[0]
    start = n_numeric
    for k in categorical:
        for other in (1, -1):   # another bucket; TFT's out-of-vocabulary value (the last row)
            after = encoder({**base, k: tf.constant([other], tf.int64)}).numpy()[0]
            changed = np.flatnonzero(after != before)
            assert changed.tolist() == list(range(start, start + widths[k])), (k, other, changed)
        start += widths[k]
    assert start == before.shape[0]


def test_make_dataset_shapes_and_errors(transformed, tmp_path):
    from kfx_components.common import model as M
    m = transformed.examples.metadata
    to = M.load_transform_output(transformed.graph.path)
    x, y = next(iter(M.make_dataset(transformed.examples.path, "train", to, m["label_key"], 8,
                                    problem_type="binary")))
    assert sorted(x) == M.feature_keys(to, m["label_key"])
    assert y.shape == (8, 1) and y.dtype.name == "float32"
    assert all(v.shape == (8,) for v in x.values())
    with pytest.raises(ValueError, match="transformed_examples_dir"):
        M.make_dataset(str(tmp_path), "train", to, m["label_key"], 8)
    with pytest.raises(ValueError, match="label_key"):
        M.make_dataset(transformed.examples.path, "train", to, "no_such_label", 8)
    with pytest.raises(ValueError, match="transform_graph_dir"):
        M.load_transform_output(str(tmp_path))
