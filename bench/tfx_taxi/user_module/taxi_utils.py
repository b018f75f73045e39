"""The user module of the TFX taxi pipeline (bench/tfx_taxi/pipeline.py): Transform's
`preprocessing_fn` and Trainer's `run_fn`, after TFX's native-Keras taxi example.

Alone in its folder on purpose: TFX hashes every .py file beside a module file into its cache
key and packages them for the executors.
"""
from typing import List

import tensorflow as tf
import tensorflow_transform as tft
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

NUMERIC = ["trip_miles", "fare", "trip_seconds"]
# Integer codes used as they are. Like TFX's example, only the three with a known range are
# one-hot encoded; the tracts and community areas are model inputs the model leaves unused.
CODED = ["trip_start_hour", "trip_start_day", "trip_start_month", "pickup_census_tract",
         "dropoff_census_tract", "pickup_community_area", "dropoff_community_area"]
CODE_RANGE = {"trip_start_hour": 24, "trip_start_day": 31, "trip_start_month": 13}
BUCKETIZED = ["pickup_latitude", "pickup_longitude", "dropoff_latitude", "dropoff_longitude"]
BUCKETS = 10
VOCABULARY = ["payment_type", "company"]
TOP_K, OOV = 1000, 10
LABEL = "tips"
FARE = "fare"


def xf(name: str) -> str:
    return name + "_xf"


def dense(x):
    """A rank-1 dense tensor from an optional (sparse) column: missing cells become 0 or ''."""
    if not isinstance(x, tf.sparse.SparseTensor):
        return x
    fill = "" if x.dtype == tf.string else 0
    return tf.squeeze(tf.sparse.to_dense(tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]), fill),
                      axis=1)


def preprocessing_fn(inputs):
    """z-scores, vocabularies, quantile buckets and the label: tips above 20% of the fare."""
    out = {xf(k): tft.scale_to_z_score(dense(inputs[k])) for k in NUMERIC}
    out.update({xf(k): tft.compute_and_apply_vocabulary(dense(inputs[k]), top_k=TOP_K, num_oov_buckets=OOV)
                for k in VOCABULARY})
    out.update({xf(k): tft.bucketize(dense(inputs[k]), BUCKETS) for k in BUCKETIZED})
    out.update({xf(k): dense(inputs[k]) for k in CODED})
    fare, tips = dense(inputs[FARE]), dense(inputs[LABEL])
    big_tipper = tf.cast(tf.greater(tips, tf.multiply(fare, tf.constant(0.2))), tf.int64)
    out[xf(LABEL)] = tf.where(tf.math.is_nan(fare), tf.zeros_like(big_tipper), big_tipper)
    return out


def _dataset(files: List[str], accessor, transform_output, batch_size: int) -> tf.data.Dataset:
    options = tfxio.TensorFlowDatasetOptions(batch_size=batch_size, label_key=xf(LABEL))
    return accessor.tf_dataset_factory(files, options, transform_output.transformed_metadata.schema).repeat()


def _model(hidden: List[int]) -> tf.keras.Model:
    """Wide and deep: normalized numbers through Dense layers beside one-hot codes."""
    numeric = {xf(k): tf.keras.layers.Input(name=xf(k), shape=(1,), dtype=tf.float32) for k in NUMERIC}
    widths = {**{xf(k): TOP_K + OOV for k in VOCABULARY}, **{xf(k): BUCKETS for k in BUCKETIZED},
              **{xf(k): n for k, n in CODE_RANGE.items()}}
    coded = {xf(k): tf.keras.layers.Input(name=xf(k), shape=(1,), dtype="int32")
             for k in [*VOCABULARY, *BUCKETIZED, *CODED]}
    deep = tf.keras.layers.concatenate([tf.keras.layers.Normalization()(x) for x in numeric.values()])
    for units in hidden:
        deep = tf.keras.layers.Dense(units)(deep)
    wide = tf.keras.layers.concatenate(
        [tf.keras.layers.CategoryEncoding(num_tokens=n, output_mode="one_hot")(coded[k]) for k, n in widths.items()])
    prob = tf.keras.layers.Dense(1, activation="sigmoid")(tf.keras.layers.concatenate([deep, wide]))
    model = tf.keras.Model(list(numeric.values()) + list(coded.values()), tf.keras.layers.Reshape((1,))(prob))
    model.compile(loss="binary_crossentropy", optimizer=tf.keras.optimizers.Adam(1e-3),
                  metrics=[tf.keras.metrics.BinaryAccuracy()])
    return model


def _signatures(model, transform_output):
    """serving_default (serialized tf.Examples without the label -> probability) and
    transform_features (what Evaluator applies to find the transformed label)."""
    model.tft_layer = transform_output.transform_features_layer()

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name="examples")])
    def serve(serialized):
        spec = transform_output.raw_feature_spec()
        spec.pop(LABEL)
        return {"outputs": model(model.tft_layer(tf.io.parse_example(serialized, spec)))}

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name="examples")])
    def transform_features(serialized):
        return model.tft_layer(tf.io.parse_example(serialized, transform_output.raw_feature_spec()))

    return {"serving_default": serve, "transform_features": transform_features}


def run_fn(fn_args: tfx.components.FnArgs):
    transform_output = tft.TFTransformOutput(fn_args.transform_output)
    train = _dataset(fn_args.train_files, fn_args.data_accessor, transform_output, 40)
    evaluation = _dataset(fn_args.eval_files, fn_args.data_accessor, transform_output, 40)
    with tf.distribute.MirroredStrategy().scope():
        model = _model([max(2, int(100 * 0.7 ** i)) for i in range(4)])
    model.fit(train, steps_per_epoch=fn_args.train_steps, validation_data=evaluation,
              validation_steps=fn_args.eval_steps,
              callbacks=[tf.keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir, update_freq="epoch")])
    tf.saved_model.save(model, fn_args.serving_model_dir, signatures=_signatures(model, transform_output))
