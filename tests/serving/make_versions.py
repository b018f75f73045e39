"""Make candidate registry versions from a pushed version (run with the main venv: TensorFlow).

    python tests/serving/make_versions.py REGISTRY_URI MODEL_NAME

v2 = "good": v1's SavedModel with a shifted decision (logit + SHIFT): a different, working model.
v3 = "broken": v1's SavedModel that fails an assertion on every request carrying a fare (all
     real traffic) but loads and warms up: a deliberately broken candidate that passes readiness.
Both are published through the registry (kfx_formats.registry) with their own cards.
"""
import json
import os
import sys
import tempfile

import tensorflow as tf

from kfx_components.common import loading
from kfx_formats import registry

# v2's logit shift. Its answers differ from v1's by at most 2*sigmoid(SHIFT/2)-1 = 0.17 whatever v1 is,
# and on average by enough to see (test_rollout's shadow: above 0.01) even for a confident v1 such
# as the shared lifecycle run's (0.4 gave it 0.011 there, 0.7 gives 0.02).
SHIFT = 0.7


def wrap(src: str, dst: str, broken: bool) -> None:
    inner = loading.load_model(src)   # a forest too (its TF-DF ops registered first)

    class Candidate(tf.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            p = self.inner.signatures["serving_default"](examples=examples)["probabilities"]
            if broken:
                fare = tf.io.parse_example(examples, {"fare": tf.io.VarLenFeature(tf.float32)})["fare"]
                tf.debugging.assert_equal(tf.size(fare.values), 0, message="deliberately broken candidate")
                return {"probabilities": p}
            p = tf.clip_by_value(p, 1e-6, 1 - 1e-6)
            return {"probabilities": tf.sigmoid(tf.math.log(p / (1 - p)) + SHIFT)}

    m = Candidate()
    tf.saved_model.save(m, dst, signatures={"serving_default": m.serve})


def main(registry_uri: str, model_name: str) -> None:
    v1 = registry.versions(registry_uri, model_name)[0]
    card = json.loads(registry.read_file(v1, "model_card.json"))
    for kind in ("good", "broken"):
        with tempfile.TemporaryDirectory() as tmp:
            sm = os.path.join(tmp, "saved_model")
            wrap(os.path.join(v1.uri, "saved_model"), sm, broken=kind == "broken")
            v = registry.publish({"saved_model": sm}, {}, registry_uri, model_name, versioned_files=lambda n: {
                "model_card.json": json.dumps({**card, "version": n, "candidate_kind": kind}).encode()})
            print(kind, v.uri, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
