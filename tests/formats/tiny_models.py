"""Tiny real SavedModels with a kfx serving signature (serialized tf.Examples in, probabilities out), their
TFDV schemas, published as registry versions: the request-contract tests' models (no pipeline run)."""
import json
import os
import tempfile

from kfx_formats import contract, registry


def save_model(path: str, spec: dict, label: str = "label") -> str:
    """A SavedModel whose serving_default parses `spec` ({name: tf.io.*Feature}) and scores every parsed
    value; a second signature (transform_features, like TFT's) also parses `label`, which is no request field."""
    import tensorflow as tf

    def score(parsed):
        total = 0.0
        for value in parsed.values():
            if isinstance(value, tf.SparseTensor):
                value = tf.sparse.to_dense(value, default_value="" if value.dtype == tf.string else 0)
            if value.dtype == tf.string:
                value = tf.strings.length(value)
            total += tf.reduce_sum(tf.reshape(tf.cast(value, tf.float32), [tf.shape(value)[0], -1]), axis=1)
        return tf.sigmoid(total * 0.01)[:, None]

    class Model(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            return {"probabilities": score(tf.io.parse_example(examples, spec))}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def transform(self, examples):
            parsed = tf.io.parse_example(examples, {**spec, label: tf.io.FixedLenFeature([], tf.int64)})
            return {"label": parsed[label], "score": score({k: v for k, v in parsed.items() if k != label})}

    m = Model()
    tf.saved_model.save(m, path, signatures={"serving_default": m.serve, "transform_features": m.transform})
    return path


def write_schema(directory: str, features: dict) -> str:
    """A TFDV schema.pbtxt (real tensorflow_metadata) of {name: (BYTES|INT|FLOAT, [string domain values])}."""
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = schema_pb2.Schema()
    for name, (kind, values) in features.items():
        f = schema.feature.add(name=name, type=schema_pb2.FeatureType.Value(kind))
        if values:
            f.domain = name
            schema.string_domain.add(name=name, value=values)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "schema.pbtxt"), "w") as out:
        out.write(text_format.MessageToString(schema))
    return directory


def publish(registry_uri: str, name: str, spec: dict, schema: dict, with_contract: bool = True) -> registry.Version:
    """A registry version as push publishes it (saved_model/, schema/, model_card.json and, unless
    `with_contract` is false (a version pushed before contracts), contract.json)."""
    with tempfile.TemporaryDirectory() as tmp:
        model = save_model(os.path.join(tmp, "saved_model"), spec)
        schema_dir = write_schema(os.path.join(tmp, "schema"), {**schema, "label": ("INT", [])})
        files = {registry.CARD_JSON: json.dumps({"problem_type": "binary", "label_key": "label",
                                                 "label_vocabulary": ["0", "1"]}).encode()}
        if with_contract:
            files[registry.CONTRACT] = contract.dumps(contract.from_saved_model(
                model, os.path.join(schema_dir, "schema.pbtxt"), "label"))
        return registry.publish({registry.SAVED_MODEL: model, registry.SCHEMA_DIR: schema_dir}, files,
                                registry_uri, name)
