"""The Keras model shared by tune, distributed_train, distill, quantize and evaluate.

Data-set agnostic: every input comes from the TFT output (``transform_graph``)
and the transformed examples' layout in docs/design.md.

* ``load_transform_output(dir)`` -> ``tft.TFTransformOutput``
* ``make_dataset(transformed_examples_dir, split, transform_output, label_key, batch_size, ...)``
  -> ``tf.data.Dataset`` of ``(features: dict, label)`` from ``<dir>/<split>/*.tfrecord.gz``
* ``feature_inputs(transform_output, label_key)`` -> ``{name: tf.keras.Input(shape=(), dtype)}``
* ``build_model(transform_output, label_key, problem_type, num_classes, width, depth, learning_rate)``
  -> compiled ``tf.keras.Model`` (dict of transformed features -> LOGITS)
* ``export_serving_model(model, transform_output, label_key, problem_type, export_dir)``
  -> SavedModel with the ``serving_default`` and ``transformed_logits`` signatures
* ``transformed_logits_function(model, transform_output, label_key)`` -> that signature's concrete function
* ``fit_plan(rows, max_epochs)`` -> batch size, steps per epoch and epochs for a table's size
* ``label_stats(...)`` -> the train split's label mean/std (regression) or class priors
* ``fit_callbacks()`` -> early stopping on validation loss, best weights restored

Training budget: the batch size follows the table's size (about
``TARGET_BATCHES_PER_EPOCH`` batches per pass, between ``MIN_BATCH`` and
``MAX_BATCH``) and an "epoch" is at least ``MIN_STEPS_PER_EPOCH`` gradient steps
(several passes over a small table), so a 150-row table gets as many updates
per epoch as a large one. The ``epochs`` parameters of the stages are caps;
early stopping on the eval split's loss (``PATIENCE`` epochs) decides, and the
best epoch's weights are kept.

Regression: the network fits the standardized label; a fixed output layer
(the train split's label mean and standard deviation) maps it back, so every
signature returns predictions in the label's own units. Classification: the
output bias starts at the train split's class log-priors (the trivial
predictor), so training starts from "predict the prior", never below it.

Every model input is one dense scalar transformed feature (shape ``[batch]``):
``float32`` features feed the network directly, ``int64`` features with an
integer domain ``[0, n)`` in the transformed schema are embedded (``n + 1``
rows: row ``n`` catches out-of-vocabulary ``-1``; ``embedding_dim`` wide), all
of them by one lookup in one table (``FUSED_EMBEDDING``, see
``_fused_embedding``), other ``int64`` features are cast to ``float32``.

Import with ``TF_USE_LEGACY_KERAS=1`` set before TensorFlow is first imported
(tf.keras = tf-keras 2.16; Keras 3 breaks MultiWorkerMirroredStrategy, TFT
and keras-tuner 1.3.5). Importing the `kfx_components` package sets it.
"""
from __future__ import annotations

import glob
import json
import math
import os

import tensorflow as tf
import tensorflow_transform as tft

from kfx_components.common import names, problem


def _skip_autograph_for_tf_keras() -> None:
    """Treat tf-keras like TF's own `keras` package: do not autograph-convert its internals.

    TF 2.16's autograph skips modules named `keras` and `tensorflow` but not
    `tf_keras`, so every first `fit`/`predict` trace transpiled ~350 tf-keras
    functions (measured 18-35 s on the 2-core build machine, vs <1 s without).
    """
    from tensorflow.python.autograph.core import config
    if not any(getattr(rule, "_prefix", None) == "tf_keras" for rule in config.CONVERSION_RULES):
        config.CONVERSION_RULES = (config.DoNotConvert("tf_keras"),) + tuple(config.CONVERSION_RULES)


_skip_autograph_for_tf_keras()

SERVING_SIGNATURE, LOGITS_SIGNATURE = problem.SERVING_SIGNATURE, problem.LOGITS_SIGNATURE
HYPERPARAMETERS_FILE = "hyperparameters.json"
DEFAULT_HYPERPARAMETERS = {"width": 64, "depth": 2, "learning_rate": 1e-3}


MIN_BATCH, MAX_BATCH = 16, 256
TARGET_BATCHES_PER_EPOCH = 32
MIN_STEPS_PER_EPOCH = 50
MAX_STEPS_PER_EPOCH = 500  # a large table is checked against eval (early stopping) within a pass
MAX_TOTAL_STEPS = 5000     # bounds the time on a large table; early stopping usually ends sooner
PATIENCE = 5               # epochs without a better eval loss before training stops


def fit_plan(rows: int, max_epochs: int, replicas: int = 1) -> dict:
    """``{"batch_size", "steps_per_epoch", "epochs"}`` for ``rows`` training rows.

    ``batch_size`` is per replica (a power of two in [MIN_BATCH, MAX_BATCH] near
    rows / TARGET_BATCHES_PER_EPOCH); an epoch is one pass over the repeated data,
    held between MIN_STEPS_PER_EPOCH and MAX_STEPS_PER_EPOCH steps;
    ``epochs`` = min(max_epochs, MAX_TOTAL_STEPS / steps).
    """
    rows, max_epochs, replicas = int(rows), int(max_epochs), max(1, int(replicas))
    if rows < 1:
        raise ValueError(f"the train split is empty ({rows} rows)")
    if max_epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {max_epochs!r}")
    target = max(1.0, rows / TARGET_BATCHES_PER_EPOCH / replicas)
    batch = int(min(MAX_BATCH, max(MIN_BATCH, 2 ** round(math.log2(target)))))
    steps = min(max(math.ceil(rows / (batch * replicas)), MIN_STEPS_PER_EPOCH), MAX_STEPS_PER_EPOCH)
    epochs = max(1, min(max_epochs, MAX_TOTAL_STEPS // steps))
    return {"batch_size": batch, "steps_per_epoch": steps, "epochs": epochs}


def fit_callbacks(monitor: str = "val_loss") -> list:
    """Early stopping on the eval split's loss; the best epoch's weights are restored."""
    return [tf.keras.callbacks.EarlyStopping(monitor=monitor, mode="min", patience=PATIENCE,
                                             restore_best_weights=True)]


def history_summary(history) -> dict:
    """What a person wants to know about a fit: epochs run, the best epoch, and the loss curves."""
    logs = {k: [round(float(v), 6) for v in values] for k, values in history.history.items()}
    monitored = logs.get("val_loss") or logs.get("loss") or []
    best = int(min(range(len(monitored)), key=monitored.__getitem__)) + 1 if monitored else 0
    return {"epochs_run": len(monitored), "best_epoch": best, "curves": logs}


def metric_from_logits(problem_type: str, labels, logits) -> float:
    """The primary metric computed outside Keras (for TFLite and distillation checks):
    AUC (binary), accuracy (multiclass) or RMSE (regression), from logits."""
    import numpy as np

    problem.check_problem_type(problem_type)
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if problem_type == "binary":
        from sklearn.metrics import roc_auc_score
        return float(roc_auc_score(labels.astype(int), logits.reshape(-1)))
    if problem_type == "multiclass":
        return float(np.mean(np.argmax(logits, axis=-1) == labels))
    return float(np.sqrt(np.mean((logits.reshape(-1) - labels) ** 2)))


def split_metric(predict, transformed_examples_dir: str, transform_output, label_key: str,
                problem_type: str, split: str = "eval") -> float:
    """The primary metric of ``predict(features) -> logits`` on the eval split (``split`` another one)."""
    import numpy as np
    labels, logits = [], []
    for features, y in make_dataset(transformed_examples_dir, split, transform_output, label_key, 4096):
        logits.append(np.asarray(predict(features)))
        labels.append(y.numpy().reshape(-1))
    return metric_from_logits(problem_type, np.concatenate(labels), np.concatenate(logits))


def output_units(problem_type: str, num_classes: int) -> int:
    """Width of the logits layer: 1 for binary and regression, K for multiclass."""
    problem.check_problem_type(problem_type)
    if problem_type != "multiclass":
        return 1
    if not num_classes or int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2 for multiclass, got {num_classes!r}")
    return int(num_classes)


# --------------------------------------------------------------------------- TFT output

def load_transform_output(transform_graph_dir: str) -> tft.TFTransformOutput:
    """The ``tft.TFTransformOutput`` in ``transform_graph_dir`` (``transform_fn/``, ``transformed_metadata/``)."""
    for sub in ("transform_fn", "transformed_metadata"):
        if not tf.io.gfile.isdir(os.path.join(transform_graph_dir, sub)):
            raise ValueError(f"transform_graph_dir {transform_graph_dir!r} has no {sub}/ (not a TFT output)")
    return tft.TFTransformOutput(transform_graph_dir)


def transformed_feature_spec(transform_output: tft.TFTransformOutput, label_key: str) -> dict:
    """The transformed feature spec (label included); raises if the label is missing."""
    spec = dict(transform_output.transformed_feature_spec())
    if label_key not in spec:
        raise ValueError(f"label_key {label_key!r} is not a transformed feature (have {sorted(spec)})")
    return spec


def signature_args(features) -> dict:
    """{signature argument: feature}: a feature's argument in the ``transformed_logits`` signature
    (and its TFLite conversions) is ``names.safe_name(feature)``, so a column named 'lambda',
    'self', 'a-b' or 'größe' is passed as an identifier (see components/common/names.py)."""
    return names.safe_names(features)


def feature_keys(transform_output: tft.TFTransformOutput, label_key: str) -> list:
    """Sorted names of the model's input features: every transformed feature but the label."""
    return sorted(k for k in transformed_feature_spec(transform_output, label_key) if k != label_key)


MAX_EMBEDDING_BUCKETS = 100_000


def num_buckets(transform_output: tft.TFTransformOutput, name: str):
    """Bucket count ``max + 1`` of an int64 transformed feature with an integer domain, else None.

    Unlike ``TFTransformOutput.num_buckets_for_transformed_feature`` this accepts
    ``min == -1`` (TFT's out-of-vocabulary default value); domains wider than
    ``MAX_EMBEDDING_BUCKETS`` count as numeric.
    """
    from tensorflow_metadata.proto.v0 import schema_pb2
    domain = transform_output.transformed_domains().get(name)
    if not isinstance(domain, schema_pb2.IntDomain) or not domain.HasField("max") or domain.max < 0:
        return None
    if domain.HasField("min") and domain.min < -1:
        return None
    n = int(domain.max) + 1
    return n if n <= MAX_EMBEDDING_BUCKETS else None


def raw_feature_spec(transform_output: tft.TFTransformOutput, label_key: str | None = None) -> dict:
    """The RAW feature spec the serving signature parses, minus ``label_key``.

    Read from the raw metadata (``<transform_graph>/metadata``) when the
    transform stage wrote it, else derived from the transform graph's input
    signature (dense ``[batch]`` -> FixedLenFeature([]), sparse -> VarLenFeature).
    """
    try:
        spec = dict(transform_output.raw_feature_spec())
    except Exception:  # no raw metadata written: read the transform graph's inputs
        from tensorflow_transform.saved import saved_transform_io_v2
        loader = saved_transform_io_v2.SavedModelLoader(transform_output.transform_savedmodel_dir)
        spec = {}
        for name, t in loader._structured_inputs.items():  # pylint: disable=protected-access
            if isinstance(t, tf.SparseTensor):
                spec[name] = tf.io.VarLenFeature(t.dtype)
            elif isinstance(t, tf.RaggedTensor):
                spec[name] = tf.io.RaggedFeature(t.dtype)
            else:
                spec[name] = tf.io.FixedLenFeature(t.shape[1:].as_list(), t.dtype)
    if label_key is not None:
        spec.pop(label_key, None)
    return spec


# --------------------------------------------------------------------------- data

def split_files(transformed_examples_dir: str, split: str) -> list:
    files = sorted(glob.glob(os.path.join(transformed_examples_dir, split, "*.tfrecord.gz")))
    if not files:
        raise ValueError(f"no {split}/*.tfrecord.gz under transformed_examples_dir {transformed_examples_dir!r}")
    return files


def count_examples(transformed_examples_dir: str, split: str) -> int:
    """Number of records in a split (reads the files once)."""
    ds = tf.data.TFRecordDataset(split_files(transformed_examples_dir, split), compression_type="GZIP")
    return int(ds.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1).numpy())


IN_MEMORY_SPLIT_BYTES = 256 * 2**20   # a split whose parsed features fit is held in memory; a larger one streams


def _read_records(files: list) -> tf.data.Dataset:
    """The split's serialized examples in file order (parallel reads keep the order)."""
    return tf.data.TFRecordDataset(files, compression_type="GZIP",
                                   num_parallel_reads=min(len(files), 8) if len(files) > 1 else None)


def _parse_in_memory(files: list, spec: dict, limit_bytes: int) -> dict | None:
    """``{feature: tensor of every row}`` for the whole split, or None once it would exceed ``limit_bytes``."""
    import numpy as np

    columns: dict = {k: [] for k in spec}
    size = 0
    for batch in _read_records(files).batch(4096).map(lambda s: tf.io.parse_example(s, spec),
                                                      num_parallel_calls=tf.data.AUTOTUNE):
        for k, v in batch.items():
            a = v.numpy()
            columns[k].append(a)
            size += a.nbytes
        if size > limit_bytes:
            return None
    if not columns or not next(iter(columns.values())):
        return {k: tf.constant(np.zeros((0,), spec[k].dtype.as_numpy_dtype)) for k in spec}
    return {k: tf.constant(np.concatenate(v)) for k, v in columns.items()}


def make_dataset(transformed_examples_dir: str, split: str, transform_output: tft.TFTransformOutput,
                 label_key: str, batch_size: int = 256, shuffle: bool = False, repeat: bool = False,
                 seed: int | None = None, problem_type: str | None = None, drop_remainder: bool = False,
                 with_label: bool = True, in_memory_bytes: int = IN_MEMORY_SPLIT_BYTES) -> tf.data.Dataset:
    """Batches of ``(features, label)`` (or ``features`` alone when ``with_label=False``).

    ``features`` maps every name in ``feature_keys`` to a ``[batch]`` tensor.
    The label is reshaped for ``build_model``'s loss when ``problem_type`` is given:
    binary/regression -> ``float32 [batch, 1]``, multiclass -> ``int64 [batch]``;
    with ``problem_type=None`` it is the parsed ``[batch]`` tensor.

    A split whose parsed features fit in ``in_memory_bytes`` is parsed once and
    batches are gathered from memory (a full shuffle each pass, as Keras does
    with in-memory tensors): the input costs about what training on tensors
    costs (docs/benchmarks.md, training input). A larger split streams from its
    files (parallel reads, a 10,000-example shuffle buffer, parallel parsing),
    so memory stays bounded. Either way the order is a function of ``seed``.
    Auto-sharding is by DATA so one file per split works with multi-worker training.
    """
    spec = transformed_feature_spec(transform_output, label_key)
    files = split_files(transformed_examples_dir, split)

    def shaped(features):
        features = dict(features)
        label = features.pop(label_key)
        if not with_label:
            return features
        if problem_type in ("binary", "regression"):
            label = tf.reshape(tf.cast(label, tf.float32), [-1, 1])
        elif problem_type == "multiclass":
            label = tf.cast(label, tf.int64)
        return features, label

    columns = _parse_in_memory(files, spec, in_memory_bytes) if in_memory_bytes > 0 else None
    if columns is not None:
        rows = int(next(iter(columns.values())).shape[0])
        ds = tf.data.Dataset.range(rows)   # row indices: shuffling them is cheap, rows stay in place
        if shuffle:
            ds = ds.shuffle(max(rows, 1), seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = ds.batch(batch_size, drop_remainder=drop_remainder).map(
            lambda idx: shaped({k: tf.gather(v, idx) for k, v in columns.items()}),
            num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = _read_records(files)
        if shuffle:
            ds = ds.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = ds.batch(batch_size, drop_remainder=drop_remainder).map(
            lambda s: shaped(tf.io.parse_example(s, spec)), num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def label_stats(transformed_examples_dir: str, transform_output: tft.TFTransformOutput, label_key: str,
                problem_type: str, num_classes: int = 0) -> dict:
    """The train split's label: ``{"mean", "std"}`` (regression) or ``{"priors": [p_0..p_K-1]}``.

    One pass over the label column only.
    """
    import numpy as np

    spec = {label_key: transformed_feature_spec(transform_output, label_key)[label_key]}
    ds = tf.data.TFRecordDataset(split_files(transformed_examples_dir, "train"), compression_type="GZIP")
    ds = ds.batch(4096).map(lambda s: tf.io.parse_example(s, spec)[label_key])
    labels = np.concatenate([b.numpy().reshape(-1) for b in ds])
    if problem_type == "regression":
        std = float(np.std(labels))
        return {"mean": float(np.mean(labels)), "std": std if std > 0 else 1.0}
    k = output_units(problem_type, num_classes) if problem_type == "multiclass" else 2
    counts = np.bincount(labels.astype(np.int64), minlength=k)[:k].astype(np.float64)
    return {"priors": [float(c) for c in (counts + 0.5) / (counts.sum() + 0.5 * k)]}


def _output_layers(problem_type: str, units: int, stats: dict | None):
    """(logits Dense, optional fixed rescaling) starting from the trivial predictor; see the module doc."""
    import numpy as np

    stats = stats or {}
    bias = "zeros"
    if problem_type == "binary" and "priors" in stats:
        p1 = stats["priors"][1]
        bias = tf.keras.initializers.Constant(float(np.log(p1 / (1.0 - p1))))
    elif problem_type == "multiclass" and "priors" in stats:
        bias = tf.keras.initializers.Constant(np.log(np.asarray(stats["priors"])).tolist())
    rescale = problem_type == "regression" and "mean" in stats
    dense = tf.keras.layers.Dense(units, name="standardized" if rescale else "logits", bias_initializer=bias)
    if rescale:
        return dense, tf.keras.layers.Rescaling(scale=float(stats["std"]), offset=float(stats["mean"]),
                                                name="logits")
    return dense, None


# --------------------------------------------------------------------------- model

def feature_inputs(transform_output: tft.TFTransformOutput, label_key: str) -> dict:
    """``{name: tf.keras.Input(shape=(), dtype=...)}`` for every transformed feature but the label; each
    Input is named ``names.safe_name(name)`` (Keras and TF name their objects after it)."""
    spec = transformed_feature_spec(transform_output, label_key)
    inputs = {}
    for name in feature_keys(transform_output, label_key):
        s = spec[name]
        if not isinstance(s, tf.io.FixedLenFeature) or list(s.shape) not in ([], [1]):
            raise ValueError(f"transformed feature {name!r} must be a dense scalar, got {s}")
        if s.dtype == tf.string:
            raise ValueError(f"transformed feature {name!r} is a string; the transform must index it")
        inputs[name] = tf.keras.Input(shape=(), dtype=s.dtype, name=names.safe_name(name))
    return inputs


def embedding_dim(buckets: int) -> int:
    return int(min(16, max(2, math.ceil(1.6 * buckets ** 0.56))))


FUSED_EMBEDDING = "emb_categorical"


def _fused_embedding(transform_output, categorical: dict, max_embedding_dim: int | None) -> tf.Tensor:
    """``[batch, sum of widths]``: every integer-domain feature's embedding, by one lookup in one table.

    The same model as one ``Embedding(n_f + 1, d_f)`` per feature (same widths, parameters and
    initialization), laid out in one ``Embedding(units, g)`` with ``g`` the widths' greatest common
    divisor: feature ``f`` owns ``(n_f + 1) * d_f / g`` consecutive rows, and index ``i`` of ``f`` is
    rows ``start_f + i * d_f / g`` to ``+ d_f / g``. A TFLite graph then does all lookups in a handful
    of ops instead of two per feature; at one example each op costs about its dispatch, not its
    arithmetic (docs/analysis.md, quantization latency)."""
    import numpy as np

    buckets = [num_buckets(transform_output, name) + 1 for name in categorical]  # -1 (TFT's OOV) -> n
    widths = [embedding_dim(n) for n in buckets]
    if max_embedding_dim:   # a student: narrower embeddings, most of a model's parameters
        widths = [min(int(max_embedding_dim), d) for d in widths]
    unit = math.gcd(*widths)
    spans = [d // unit for d in widths]                     # table rows per index of each feature
    starts = np.cumsum([0] + [n * s for n, s in zip(buckets, spans)])
    ids = tf.math.floormod(tf.stack(list(categorical.values()), axis=1), np.asarray(buckets, np.int64))
    if max(spans) > 1:
        ids = ids * np.asarray(spans, np.int64)
    rows = ids + starts[:-1].astype(np.int64)               # [batch, features]: each index's first row
    if max(spans) > 1:   # a feature of span s looks up s consecutive rows
        owner = np.repeat(np.arange(len(spans)), spans)
        rows = tf.gather(rows, owner, axis=1) + np.concatenate([np.arange(s) for s in spans]).astype(np.int64)
    looked_up = tf.keras.layers.Embedding(int(starts[-1]), unit, name=FUSED_EMBEDDING)(rows)
    return tf.reshape(looked_up, (-1, sum(widths)))         # a constant shape: no shape ops in TFLite


def _encode(transform_output, inputs: dict, max_embedding_dim: int | None = None) -> tf.Tensor:
    """One ``[batch, d]`` float tensor: numeric features stacked, integer-domain features embedded."""
    numeric, categorical = [], {}
    for name, inp in inputs.items():
        if inp.dtype.is_integer:
            if num_buckets(transform_output, name) is not None:
                categorical[name] = inp
                continue
            inp = tf.cast(inp, tf.float32)
        numeric.append(inp)
    parts = []
    if numeric:
        parts.append(tf.stack(numeric, axis=1) if len(numeric) > 1 else tf.expand_dims(numeric[0], 1))
    if categorical:
        parts.append(_fused_embedding(transform_output, categorical, max_embedding_dim))
    if not parts:
        raise ValueError("the transformed data has no features besides the label")
    if len(parts) == 1:
        return parts[0]
    return tf.keras.layers.Concatenate(name="features")(parts)


def build_model(transform_output: tft.TFTransformOutput, label_key: str, problem_type: str,
                num_classes: int = 0, width: int = 64, depth: int = 2,
                learning_rate: float = 1e-3, label_stats: dict | None = None,
                max_embedding_dim: int | None = None) -> tf.keras.Model:
    """A compiled MLP: transformed features -> ``depth`` x Dense(width, relu) -> logits.

    Output is LOGITS (1 unit for binary/regression, ``num_classes`` for
    multiclass); for regression, predictions in the label's units.
    ``label_stats`` (from ``label_stats``) sets the starting point: class
    log-priors as the output bias, or the label's mean and std as a fixed
    output rescaling (see the module doc).
    Loss: BinaryCrossentropy(from_logits) / SparseCategoricalCrossentropy(from_logits) / MSE.
    Metrics: binary "auc", "accuracy"; multiclass "accuracy"; regression "rmse".
    """
    units = output_units(problem_type, num_classes)
    width, depth = int(width), int(depth)
    if width < 1 or depth < 0 or not learning_rate > 0:
        raise ValueError(f"bad hyperparameters width={width} depth={depth} learning_rate={learning_rate}")
    inputs = feature_inputs(transform_output, label_key)
    x = _encode(transform_output, inputs, max_embedding_dim)
    for i in range(depth):
        x = tf.keras.layers.Dense(width, activation="relu", name=f"dense_{i}")(x)
    dense, rescale = _output_layers(problem_type, units, label_stats)
    logits = dense(x)
    if rescale is not None:
        logits = rescale(logits)
    model = tf.keras.Model(inputs=inputs, outputs=logits)
    if problem_type == "binary":
        loss = tf.keras.losses.BinaryCrossentropy(from_logits=True)
        metrics = [tf.keras.metrics.AUC(from_logits=True, name="auc"),
                   tf.keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")]
    elif problem_type == "multiclass":
        loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metrics = [tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    else:
        loss = tf.keras.losses.MeanSquaredError()
        metrics = [tf.keras.metrics.RootMeanSquaredError(name="rmse")]
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=float(learning_rate)),
                  loss=loss, metrics=metrics)
    return model


def logits_to_outputs(logits: tf.Tensor, problem_type: str) -> dict:
    """Serving outputs from logits: {"probabilities": sigmoid/softmax} or {"predictions": identity}."""
    if problem_type == "binary":
        return {"probabilities": tf.sigmoid(logits)}
    if problem_type == "multiclass":
        return {"probabilities": tf.nn.softmax(logits, axis=-1)}
    return {"predictions": tf.identity(logits)}


def export_serving_model(model: tf.keras.Model, transform_output: tft.TFTransformOutput, label_key: str,
                         problem_type: str, export_dir: str) -> str:
    """Save ``model`` as a self-contained SavedModel at ``export_dir``; returns ``export_dir``.

    Signatures:
      * ``serving_default(examples: tf.string [None])``: parse raw tf.Examples with
        the raw feature spec minus the label, apply the TFT graph (tracked on the
        model as ``model.tft_layer``), return ``probabilities`` (binary ``[n,1]``,
        multiclass ``[n,K]``) or ``predictions`` (regression ``[n,1]``).
      * ``transformed_logits(**{arg: [None] tensor})``: one keyword per
        transformed feature (``feature_keys``; float32 or int64), named by
        ``signature_args``, returns ``logits``.
    The directory also loads with ``tf.keras.models.load_model`` (tf-keras).
    """
    problem.check_problem_type(problem_type)
    model.tft_layer = transform_output.transform_features_layer()
    raw_spec = raw_feature_spec(transform_output, label_key)
    keys = feature_keys(transform_output, label_key)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(examples):
        parsed = tf.io.parse_example(examples, raw_spec)
        transformed = model.tft_layer(parsed)
        logits = model({k: transformed[k] for k in keys}, training=False)
        return logits_to_outputs(logits, problem_type)

    signatures = {SERVING_SIGNATURE: serve.get_concrete_function(),
                  LOGITS_SIGNATURE: transformed_logits_function(model, transform_output, label_key)}
    model.save(export_dir, save_format="tf", signatures=signatures, include_optimizer=False)
    return export_dir


def transformed_logits_function(model: tf.keras.Model, transform_output: tft.TFTransformOutput, label_key: str):
    """The ``transformed_logits`` signature of ``model`` (a concrete function): one keyword per transformed
    feature, named by ``signature_args``, returning ``{"logits": ...}``."""
    tspec = transformed_feature_spec(transform_output, label_key)
    keys = feature_keys(transform_output, label_key)
    arg_of = {feature: arg for arg, feature in signature_args(keys).items()}

    @tf.function(input_signature=[{k: tf.TensorSpec([None], tspec[k].dtype, name=arg_of[k]) for k in keys}])
    def transformed_logits(features):
        return {"logits": model({k: features[k] for k in keys}, training=False)}

    return transformed_logits.get_concrete_function()


# --------------------------------------------------------------------------- hyperparameters

def write_hyperparameters(hyperparameters_dir: str, width: int, depth: int, learning_rate: float,
                          family: str = "network", forest: dict | None = None) -> str:
    """``hyperparameters.json``: the family distributed_train trains, the network's settings (the
    students and a network teacher use them) and, for a forest, its settings."""
    from kfx_formats import saved_model
    if family not in (saved_model.FAMILY_NETWORK, saved_model.FAMILY_FOREST):
        raise ValueError(f"family {family!r}: expected {saved_model.FAMILY_NETWORK} or {saved_model.FAMILY_FOREST}")
    if family == saved_model.FAMILY_FOREST and not forest:
        raise ValueError("a forest family needs its forest settings")
    os.makedirs(hyperparameters_dir, exist_ok=True)
    path = os.path.join(hyperparameters_dir, HYPERPARAMETERS_FILE)
    hps = {"family": family, "width": int(width), "depth": int(depth), "learning_rate": float(learning_rate)}
    if forest:
        hps["forest"] = dict(forest)
    with open(path, "w") as f:
        json.dump(hps, f, indent=2)
    return path


def read_hyperparameters(hyperparameters_dir: str) -> dict:
    """``{"family", "network": {"width", "depth", "learning_rate"}, "forest": dict | None}`` from
    ``hyperparameters.json`` (a file without a family is a network's)."""
    path = os.path.join(hyperparameters_dir, HYPERPARAMETERS_FILE)
    try:
        with open(path) as f:
            hp = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read hyperparameters file {path!r}: {e}") from e
    missing = [k for k in DEFAULT_HYPERPARAMETERS if k not in hp]
    if missing:
        raise ValueError(f"hyperparameters file {path!r} lacks {missing}")
    family = hp.get("family", "network")
    if family == "gradient_boosted_trees" and not isinstance(hp.get("forest"), dict):
        raise ValueError(f"hyperparameters file {path!r} names the forest family without its forest settings")
    return {"family": family,
            "network": {"width": int(hp["width"]), "depth": int(hp["depth"]),
                        "learning_rate": float(hp["learning_rate"])},
            "forest": hp.get("forest")}
