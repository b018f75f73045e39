"""TFLite flatbuffers of a SavedModel's ``transformed_logits`` signature: the post-training conversions
(float32, dynamic range, float16, full int8 calibrated on representative data), running a file's
signature, and the facts read from a file (weight bytes, gzipped size, tensor dtypes)."""
from __future__ import annotations

from kfx_components.common import problem
from kfx_components.quantize import splits

SIGNATURE = problem.LOGITS_SIGNATURE
POST_TRAINING = ("float32", "dynamic_range", "float16", "int8")
EVAL_BATCH = 512


def _converter(model_dir: str, loaded):
    """What ``TFLiteConverter.from_saved_model(model_dir, [SIGNATURE])`` builds, given the SavedModel
    already loaded (``loaded = tf.saved_model.load(model_dir)``): ``from_saved_model`` loads it again on
    every call, seconds per variant for a model carrying the TFT graph; the files are byte-identical
    (tests/stages/test_quantize.py). Its classes are TF's own (tensorflow/lite/python/lite.py, TF 2.16)."""
    import tensorflow as tf
    from tensorflow.lite.python import conversion_metadata_schema_py_generated as conversion_metadata
    from tensorflow.lite.python import lite

    lite.TFLiteConverterBase._set_original_model_type(  # pylint: disable=protected-access
        conversion_metadata.ModelType.TF_SAVED_MODEL)
    return lite.TFLiteSavedModelConverterV2(model_dir, {tf.saved_model.SERVING}, [SIGNATURE], loaded)


def convert(model_dir: str, loaded, variant: str, representative=None) -> bytes:
    """TFLite flatbuffer of ``model_dir``'s transformed_logits signature (``loaded``: the SavedModel,
    loaded) for a post-training variant (``float32``, ``dynamic_range``, ``float16``, ``int8``)."""
    import tensorflow as tf

    converter = _converter(model_dir, loaded)
    if variant == "float32":
        return converter.convert()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        converter.representative_dataset = representative
        # Full integer only: a builtin op with no int8 kernel makes conversion fail
        # (no silent float fallback).
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif variant != "dynamic_range":
        raise ValueError(f"unknown variant {variant!r}")
    return converter.convert()


def convert_or_raise(model_dir: str, loaded, variant: str, representative, label: str = "") -> bytes:
    """``convert``, its failure told in one line naming the variant (``label``, else ``variant``)."""
    try:
        return convert(model_dir, loaded, variant, representative)
    except Exception as err:  # say precisely which variant could not be built and why
        raise RuntimeError(f"TFLite {label or variant} conversion of {model_dir} ({SIGNATURE}) failed: {err}") from err


def post_training(model_dir: str, loaded, representative) -> dict:
    """{variant: flatbuffer} of every post-training variant of the loaded SavedModel at ``model_dir``."""
    return {name: convert_or_raise(model_dir, loaded, name, representative if name == "int8" else None)
            for name in POST_TRAINING}


def quantize(value, detail):
    """Float -> the tensor's integer type with its (scale, zero_point)."""
    import numpy as np

    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    q = np.round(np.asarray(value, dtype=np.float64) / scale + zero)
    return np.clip(q, info.min, info.max).astype(detail["dtype"])


def feed(in_details: dict, batch: dict) -> dict:
    """A signature runner's inputs from float/int arrays: floats into an integer tensor are quantized."""
    import numpy as np

    out = {}
    for name, value in batch.items():
        d = in_details[name]
        if d["dtype"] in (np.int8, np.uint8, np.int16) and np.issubdtype(value.dtype, np.floating):
            out[name] = quantize(value, d)
        else:
            out[name] = value.astype(d["dtype"])
    return out


def logits(model_path: str, features: dict, n: int):
    """Run a .tflite file's signature over features; quantized ints are (de)quantized here."""
    import numpy as np
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=model_path)
    runner = interpreter.get_signature_runner(SIGNATURE)
    in_details = runner.get_input_details()
    out_detail = runner.get_output_details()["logits"]
    out = []
    for batch in splits.batches(features, n, EVAL_BATCH):
        res = runner(**feed(in_details, batch))["logits"]
        if out_detail["dtype"] in (np.int8, np.uint8, np.int16):
            scale, zero = out_detail["quantization"]
            res = (res.astype(np.float32) - zero) * scale
        out.append(np.asarray(res, dtype=np.float32))
    return np.concatenate(out)


def tensor_dtypes(model_path: str) -> dict:
    """Facts about a .tflite file's tensors: input/output dtypes and weight dtypes counted."""
    import numpy as np
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=model_path)
    runner = interpreter.get_signature_runner(SIGNATURE)
    inputs = {k: np.dtype(d["dtype"]).name for k, d in runner.get_input_details().items()}
    outputs = {k: np.dtype(d["dtype"]).name for k, d in runner.get_output_details().items()}
    counts: dict = {}
    try:
        ops = sorted({op["op_name"] for op in interpreter._get_ops_details()})  # pylint: disable=protected-access
    except Exception:  # private API; the op list is informative only
        ops = []
    for d in interpreter.get_tensor_details():
        counts[np.dtype(d["dtype"]).name] = counts.get(np.dtype(d["dtype"]).name, 0) + 1
    return {"inputs": inputs, "outputs": outputs, "tensor_dtype_counts": counts, "ops": ops}


def weight_bytes(blob: bytes) -> int:
    """Bytes of the constant buffers (weights, biases, quantization tables) in a TFLite flatbuffer."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(blob, 0)
    return int(sum(model.Buffers(i).DataLength() for i in range(model.BuffersLength())))


def gzip_bytes(blob: bytes) -> int:
    """Size of the file gzipped (level 9): what pruning's zeros save in transfer and storage."""
    import gzip

    return len(gzip.compress(blob, compresslevel=9, mtime=0))
