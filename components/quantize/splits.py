"""The transformed splits as numpy arrays keyed by the ``transformed_logits`` signature's inputs: what
every variant and the SavedModel are run on, and the int8 calibration data."""
from __future__ import annotations

from kfx_components.common import problem

SIGNATURE = problem.LOGITS_SIGNATURE
REPRESENTATIVE_SAMPLES = 300


def signature_input_spec(signature) -> dict:
    """{name: tf.TensorSpec} of a loaded signature's keyword inputs."""
    args, kwargs = signature.structured_input_signature
    if args or not kwargs:
        raise ValueError(f"signature {SIGNATURE!r} must take named transformed-feature tensors")
    return dict(kwargs)


def load_split(transformed_examples_dir: str, split: str, transform_output, input_spec: dict,
               label_key: str, limit: int | None = None):
    """(features {name: np.ndarray}, labels np.ndarray) of one split, keyed by the signature's inputs."""
    import numpy as np

    from kfx_components.common import model as M

    ds = M.make_dataset(transformed_examples_dir, split, transform_output, label_key, batch_size=1024)
    cols: dict = {k: [] for k in input_spec}
    labels, n = [], 0
    for features, label in ds:
        by_arg = M.signature_args(features)
        missing = sorted(set(input_spec) - set(by_arg))
        if missing:
            raise ValueError(f"signature {SIGNATURE!r} wants features {missing} that the transformed "
                             f"examples in {transformed_examples_dir!r} do not hold")
        for k in input_spec:
            cols[k].append(features[by_arg[k]].numpy())
        labels.append(label.numpy().reshape(-1))
        n += len(labels[-1])
        if limit and n >= limit:
            break
    features = {}
    for name, spec in input_spec.items():
        value = np.concatenate(cols[name])[:limit]
        features[name] = value.astype(spec.dtype.as_numpy_dtype)
    return features, np.concatenate(labels)[:limit]


def batches(features: dict, n: int, size: int):
    """The first ``n`` rows of ``features`` in slices of ``size``."""
    for start in range(0, n, size):
        yield {k: v[start:start + size] for k, v in features.items()}


def representative(transformed_examples_dir: str, transform_output, input_spec: dict, label_key: str):
    """(int8 calibration generator over the first train examples, how many examples it yields)."""
    rep_x, _ = load_split(transformed_examples_dir, "train", transform_output, input_spec, label_key,
                          limit=REPRESENTATIVE_SAMPLES)
    n_rep = len(next(iter(rep_x.values())))

    def examples():
        for i in range(n_rep):
            yield {k: v[i:i + 1] for k, v in rep_x.items()}

    return examples, n_rep
