"""Transform: a schema-driven TensorFlow Transform graph, fitted on train, applied to train and eval."""
import functools
import os
import shutil
import time
import uuid
from typing import Sequence

from kfx_components.common import beam_files, io

VOCAB_TOP_K = 1000        # caps a vocabulary (and so an embedding) on free-text features
VOCABULARIES_FILE = "vocabularies"   # one asset, every feature's vocabulary; unseen values share index = size
MISSING_TOKEN = "__missing__"  # a missing categorical value is a category of its own
MISSING_SUFFIX = "_missing"
SCHEMA_FILE = "schema.pbtxt"
# Rows per batch read: fixed, so the analyzers' float sums are the same run to run (tfx_bsl's
# default batches by elapsed time); 1000 is that default's cap.
BATCH_ROWS = 1000


def _load_schema(schema_dir: str):
    from tensorflow_metadata.proto.v0 import schema_pb2
    from google.protobuf import text_format
    path = os.path.join(schema_dir, SCHEMA_FILE) if os.path.isdir(schema_dir) else schema_dir
    if not os.path.isfile(path):
        raise ValueError(f"schema_dir {schema_dir}: {SCHEMA_FILE} not found")
    with open(path, encoding="utf-8") as f:
        return text_format.Parse(f.read(), schema_pb2.Schema())


def _plan(schema, label_key: str, categorical_features: Sequence[str], bucketize_features: Sequence[str],
          num_buckets: int, columns: Sequence[str] = ()) -> dict:
    """Decide each feature's treatment from the schema; bad names -> ValueError.

    `columns`: the source columns ingest saw. One of them missing from the schema
    never had a value in train: it is skipped (listed as absent), not an error.
    """
    from tensorflow_metadata.proto.v0 import schema_pb2
    types = {f.name: f.type for f in schema.feature}
    if label_key not in types:
        raise ValueError(f"label_key {label_key!r}: not in the schema")
    absent = []
    for param, listed in (("categorical_features", categorical_features), ("bucketize_features", bucketize_features)):
        unknown = [n for n in listed if n not in types and n not in columns]
        if unknown:
            raise ValueError(f"{param}: unknown feature(s) {', '.join(map(repr, unknown))} "
                             f"(not in the schema nor the examples' columns)")
        absent += [n for n in listed if n not in types]
        if label_key in listed:
            raise ValueError(f"{param}: {label_key!r} is the label")
    both = sorted(set(categorical_features) & set(bucketize_features))
    if both:
        raise ValueError(f"categorical_features and bucketize_features both name {', '.join(map(repr, both))}")
    not_numeric = [n for n in bucketize_features if n in types and types[n] not in (schema_pb2.INT, schema_pb2.FLOAT)]
    if not_numeric:
        raise ValueError(f"bucketize_features: {', '.join(map(repr, not_numeric))} not numeric")
    if int(num_buckets) < 2:
        raise ValueError(f"num_buckets {num_buckets}: must be at least 2")

    plan = {"numeric": [], "categorical": [], "bucketized": [], "missing_indicators": [], "skipped": [],
            "absent": sorted(absent), "indicator_of": {}}
    taken = set(types)
    for f in schema.feature:
        name = f.name
        if name == label_key:
            continue
        if f.type not in (schema_pb2.INT, schema_pb2.FLOAT, schema_pb2.BYTES):
            plan["skipped"].append(name)  # STRUCT and unset types carry no scalar value
        elif f.type == schema_pb2.BYTES or name in categorical_features:
            plan["categorical"].append(name)
        elif name in bucketize_features:
            plan["bucketized"].append(name)
        else:
            plan["numeric"].append(name)
        # Categoricals encode "missing" as a category; numerics get an indicator
        # unless the schema says the feature is always present.
        if name in plan["numeric"] + plan["bucketized"] and f.presence.min_fraction < 1.0:
            plan["indicator_of"][name] = _indicator_key(name, taken)
            taken.add(plan["indicator_of"][name])
    plan["missing_indicators"] = list(plan["indicator_of"].values())
    return plan


def _indicator_key(name: str, taken: set) -> str:
    """``<name>_missing``, or with ``_`` appended until no column (nor other indicator) has that name:
    a table may hold both ``income`` and its own ``income_missing``. Distinct features get distinct
    keys (a key ends in ``missing`` followed only by the underscores added)."""
    key = name + MISSING_SUFFIX
    while key in taken:
        key += "_"
    return key


def _raw_schema(schema):
    """The schema TFT parses with: no fixed shapes, so every raw feature (the label
    in a serving request too) may be absent without failing the parse."""
    from tensorflow_metadata.proto.v0 import schema_pb2
    raw = schema_pb2.Schema()
    raw.CopyFrom(schema)
    for f in raw.feature:
        f.ClearField("shape")
    return raw


def _sparse(x):
    """A raw feature as a [batch, values] SparseTensor (ragged and dense ones too)."""
    import tensorflow as tf
    if isinstance(x, tf.RaggedTensor):
        return x.to_sparse()
    if isinstance(x, tf.SparseTensor):
        return x
    x = tf.reshape(x, [tf.shape(x)[0], -1])
    every = tf.where(tf.ones_like(x, tf.bool))
    return tf.SparseTensor(every, tf.gather_nd(x, every), tf.shape(x, out_type=tf.int64))


def _first_values(xs, default):
    """The first value of each row of each raw feature in `xs` (one dtype; ingest writes scalars):
    ([batch, n] SparseTensor of the present ones, [batch, n] dense with `default` where absent,
    [batch, n] float 1.0-if-present). Stacked so that what follows costs a few graph ops for
    all n features, not per feature: TFT traces this graph five times."""
    import tensorflow as tf
    sparse = [_sparse(x) for x in xs]
    batch = sparse[0].dense_shape[0]
    size, one = tf.stack([batch, 1]), tf.constant(1, tf.int64)
    firsts = []
    for x in sparse:
        first = tf.sparse.slice(x, [0, 0], size)
        # A batch without any value has width 0: every part must be one column wide.
        firsts.append(tf.SparseTensor(first.indices, first.values, tf.stack([batch, one])))
    stacked = firsts[0] if len(firsts) == 1 else tf.sparse.concat(1, firsts)
    # A static width, which the per-column analyzers (reduce_instance_dims=False) need.
    stacked = tf.SparseTensor(stacked.indices, stacked.values,
                              tf.stack([batch, tf.constant(len(xs), tf.int64)]))
    values = tf.sparse.to_dense(stacked, default_value=default)
    present = tf.sparse.to_dense(
        tf.SparseTensor(stacked.indices, tf.ones_like(stacked.values, tf.float32), stacked.dense_shape))
    return stacked, values, present


def _scalar(x, default):
    """(dense [batch] values, [batch] float 1.0-if-present) of one raw feature."""
    _, values, present = _first_values([x], default)
    return values[:, 0], present[:, 0]


def _columns(matrix, n: int):
    import tensorflow as tf
    return tf.unstack(matrix, num=n, axis=1)


def _preprocess(inputs, plan: dict, label_key: str, num_buckets: int):
    """The preprocessing_fn, bound to a plan with functools.partial (Beam pickles it
    by reference: module-level functions, no closures)."""
    import tensorflow as tf
    import tensorflow_transform as tft
    from kfx_components.transform import graph_walks, vocabularies

    graph_walks.install()   # a Beam worker tracing this function gets the linear walks too
    out = {}
    numeric = plan["numeric"]
    if numeric:
        # Every numeric feature at once: per-column mean and variance of the present
        # values (NaN/inf ignored) in one analyzer each; a missing value becomes the
        # mean, i.e. z-score 0. Never present in train -> 0 and 1.
        present_values, value, present = _first_values([tf.cast(inputs[n], tf.float32) for n in numeric], 0.0)
        mean = tft.mean(present_values, reduce_instance_dims=False)
        var = tft.var(present_values, reduce_instance_dims=False)
        mean = tf.where(tf.math.is_finite(mean), mean, 0.0)
        std = tf.sqrt(var)
        std = tf.where(tf.math.is_finite(std) & (std > 0), std, 1.0)
        z = (tf.where(present > 0, value, mean) - mean) / std
        missing = _columns(1.0 - present, len(numeric))
        for j, (name, column) in enumerate(zip(numeric, _columns(z, len(numeric)))):
            out[name] = column
            if name in plan["indicator_of"]:
                out[plan["indicator_of"][name]] = missing[j]
    for name in plan["bucketized"]:
        x = tf.cast(inputs[name], tf.float32)
        values = _sparse(x).values
        # tft.bucketize, split in its two halves so that the quantiles come from
        # the present values and are computed in the same analyzer pass as the
        # mean (tft.bucketize on the mean-filled values would need a second pass).
        mean = tft.mean(values)
        mean = tf.where(tf.math.is_finite(mean), mean, 0.0)
        boundaries = tft.quantiles(values, num_buckets, epsilon=min(1.0 / num_buckets, 0.01))
        value, present = _scalar(x, 0.0)
        out[name] = tft.apply_buckets(tf.where(present > 0, value, mean), boundaries)
        if name in plan["indicator_of"]:
            out[plan["indicator_of"][name]] = 1.0 - present
    strings = [n for n in plan["categorical"] if inputs[n].dtype == tf.string]
    texts = {}
    if strings:
        # A missing categorical value is the category MISSING_TOKEN.
        _, text, _ = _first_values([inputs[n] for n in strings], MISSING_TOKEN)
        texts.update(zip(strings, _columns(text, len(strings))))
    for name in plan["categorical"]:
        if name in texts:
            continue
        value, present = _scalar(inputs[name], tf.zeros([], inputs[name].dtype))
        if value.dtype.is_floating:
            # A float here is usually an integer code in a column with missing
            # cells: print integral values as integers ("8", not "8.000000";
            # as_string(shortest=True) would print "1.70311e+10" and merge codes).
            integral = tf.equal(value, tf.round(value)) & (tf.abs(value) < 2.0 ** 62)
            text = tf.where(integral, tf.strings.as_string(tf.cast(value, tf.int64)),
                            tf.strings.as_string(value, precision=6))
        else:
            text = tf.strings.as_string(value)
        texts[name] = tf.where(present > 0, text, MISSING_TOKEN)
    # One analyzer for every vocabulary: TFT's own costs ~15 Beam stages per feature.
    indices = vocabularies.compute_and_apply([texts[n] for n in plan["categorical"]], VOCABULARIES_FILE,
                                             top_k=VOCAB_TOP_K)
    out.update(zip(plan["categorical"], indices))
    label = inputs[label_key]
    default = tf.constant(-1 if label.dtype.is_integer else float("nan"), label.dtype)
    out[label_key], _ = _scalar(label, default)  # unchanged; -1/NaN only where absent (serving)
    return out


def run(examples_dir: str, schema_dir: str, transform_graph_dir: str, transformed_examples_dir: str,
        label_key: str, categorical_features: Sequence[str] = (), bucketize_features: Sequence[str] = (),
        num_buckets: int = 10, beam_pipeline_args: Sequence[str] = ()) -> dict:
    """Fit the transform on train with tft_beam, write the graph and transformed train/eval/test."""
    start = time.time()
    categorical_features, bucketize_features = list(categorical_features or ()), list(bucketize_features or ())
    io.require_examples(examples_dir)
    schema = _load_schema(schema_dir)
    plan = _plan(schema, label_key, categorical_features, bucketize_features, num_buckets,
                 columns=list(io.read_columns(examples_dir)))

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io
    from tfx_bsl.coders.example_coder import RecordBatchToExamples
    from tfx_bsl.public import tfxio
    from kfx_components.transform import graph_walks

    graph_walks.install()
    raw_schema = _raw_schema(schema)
    preprocessing_fn = functools.partial(_preprocess, plan=plan, label_key=label_key, num_buckets=int(num_buckets))
    options = PipelineOptions(list(beam_pipeline_args or ()))
    parts_root = os.path.join(beam_files.scratch(options), f"kfx-transform-parts-{uuid.uuid4().hex}")
    with io.Staging() as stage:
        graph_staging = stage.dir(transform_graph_dir)
        data_staging = stage.dir(transformed_examples_dir)
        tmp = os.path.join(graph_staging, "tmp")

        def source(split):
            return tfxio.TFExampleRecord(file_pattern=io.split_file(examples_dir, split), schema=raw_schema,
                                         telemetry_descriptors=["kfx", "transform"])

        # Memory must not grow with the data, so nothing holds a split: the graph is
        # fitted on one read of train (the analyzers combine as the batches stream),
        # then every split, train included, is read again and transformed in the stage
        # that reads it (transforming the analysed PCollection would make the
        # DirectRunner keep all of train until the analysis ends), and each bundle
        # writes its own part file (a sharded writer would group every record).
        try:
            with beam.Pipeline(options=options) as p:
                with tft_beam.Context(temp_dir=tmp):
                    sources = {split: source(split) for split in io.SPLITS}
                    adapter = sources[io.TRAIN].TensorAdapterConfig()
                    transform_fn = ((p | "Read[analyze]" >> sources[io.TRAIN].BeamSource(BATCH_ROWS), adapter)
                                    | tft_beam.AnalyzeDataset(preprocessing_fn))
                    for split, src in sources.items():
                        transformed, _ = (((p | f"Read[{split}]" >> src.BeamSource(BATCH_ROWS), adapter), transform_fn)
                                          | f"Transform[{split}]" >> tft_beam.TransformDataset(
                                              output_record_batches=True))
                        _ = (transformed
                             | f"Encode[{split}]" >> beam.FlatMapTuple(lambda batch, _: RecordBatchToExamples(batch))
                             | f"Write[{split}]" >> beam.ParDo(
                                 beam_files.PartWriter(os.path.join(parts_root, split))))
                    _ = transform_fn | tft_beam.WriteTransformFn(graph_staging)
            for split in io.SPLITS:
                beam_files.concatenate(os.path.join(parts_root, split), io.split_file(data_staging, split))
        finally:
            beam_files.remove_tree(parts_root)
        shutil.rmtree(tmp, ignore_errors=True)
        # The raw schema too (metadata/), so TFTransformOutput.raw_feature_spec()
        # can parse serving requests.
        metadata_io.write_metadata(dataset_metadata.DatasetMetadata(raw_schema),
                                   os.path.join(graph_staging, tft.TFTransformOutput.RAW_METADATA_DIR))
        output = tft.TFTransformOutput(graph_staging)
        num_buckets_by_feature = {name: output.num_buckets_for_transformed_feature(name)
                                  for name in plan["categorical"] + plan["bucketized"]}
        transformed = sorted(output.transformed_feature_spec())

    return {
        "label_key": label_key,
        "numeric_features": plan["numeric"],
        "categorical_features": plan["categorical"],
        "bucketized_features": plan["bucketized"],
        "missing_indicators": plan["missing_indicators"],
        "skipped_features": plan["skipped"],
        "absent_features": plan["absent"],  # named in the arguments, never present in train
        "transformed_features": transformed,
        "num_buckets": num_buckets_by_feature,
        "seconds": round(time.time() - start, 2),
    }
