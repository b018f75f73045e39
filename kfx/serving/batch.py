"""`kfx predict`: batch scoring of a CSV with a registry version's SavedModel in a Beam pipeline, with
the same outputs as the server. TensorFlow and Beam are imported when scoring starts, not before."""
from __future__ import annotations

import csv
import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence

from kfx.serving import ServingError
from kfx.serving.registry import LocalVersion, local_version
from kfx_formats import features, registry, saved_model


def batch_predict(model_uri: str, data: str, out: str, key: Optional[str] = None, batch_size: int = 256,
                  runner: str = "DirectRunner") -> dict:
    """Score a CSV with the version's SavedModel in a Beam pipeline; write JSON lines {key, prediction} to `out`.

    Each record: {"key": <row number or the --key column>, "model_version": "vN", <outputs>} with the same
    outputs as the server (label + class probabilities, or a prediction in the label's units).
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    version = local_version(model_uri)
    os.makedirs(out, exist_ok=True)
    with open(data, newline="") as f:
        header = next(csv.reader(f))
    if key and key not in header:
        raise ServingError(f"--key {key!r} is not a column of {data}")

    class Score(beam.DoFn):
        def setup(self):
            self.scorer = Scorer(version)

        def process(self, batch):
            for (k, _), out in zip(batch, self.scorer.outputs([row for _, row in batch])):
                yield json.dumps({"key": k, "model_version": f"v{version.number}",
                                  **(out if isinstance(out, dict) else {"prediction": out})})

    def parse(line_and_no):
        no, line = line_and_no
        row = next(csv.reader([line]))
        rec = dict(zip(header, row))
        return (rec[key] if key else no, rec)

    opts = PipelineOptions(runner=runner, direct_num_workers=1)
    t0 = time.monotonic()
    with open(data, newline="") as f:
        lines = f.read().splitlines()[1:]
    with beam.Pipeline(options=opts) as p:
        (p | "rows" >> beam.Create(list(enumerate(lines)))
           | "parse" >> beam.Map(parse)
           | "batch" >> beam.BatchElements(min_batch_size=batch_size, max_batch_size=batch_size)
           | "score" >> beam.ParDo(Score())
           | "write" >> beam.io.WriteToText(os.path.join(out, "predictions"), file_name_suffix=".jsonl"))
    summary = {"model": version.uri, "rows": len(lines), "out": out,
               "seconds": round(time.monotonic() - t0, 2), "key": key or "row number"}
    registry.write_json(os.path.join(out, "summary.json"), summary)
    return summary


class Scorer:
    """A version's SavedModel loaded in this process, answering rows as the server does: classification
    {"label", "probabilities": {class: p}}, regression a number in the label's units (`kfx predict` scores
    with it in Beam workers, `kfx rollout`'s replay in the kfx process)."""

    def __init__(self, version: LocalVersion):
        import tensorflow as tf
        self.tf = tf
        card = version.model_card()
        path = os.path.join(version.path, registry.SAVED_MODEL)
        for library in saved_model.op_libraries(path):   # a forest's TF-DF ops
            tf.load_op_library(library)
        self.model = tf.saved_model.load(path)
        self.fn = self.model.signatures["serving_default"]
        self.out_key = "probabilities" if "probabilities" in self.fn.structured_outputs else "predictions"
        self.spec = features.spec_from_signature(self.fn)
        self.problem = card.get("problem_type") or ("regression" if self.out_key == "predictions" else "")
        self.vocab = [str(v) for v in card.get("label_vocabulary") or []]
        # what a request the model cannot answer raises (a missing required feature, a failing op)
        self.errors = (ServingError, ValueError, tf.errors.OpError)

    def outputs(self, rows: Sequence[Dict[str, str]]) -> List[Any]:
        examples = [to_example(self.tf, row, self.spec) for row in rows]
        values = self.fn(examples=self.tf.constant(examples, dtype=self.tf.string))[self.out_key].numpy()
        problem = self.problem or ("binary" if values.shape[-1] == 1 else "multiclass")
        out: List[Any] = []
        for v in values.tolist():
            if problem == "regression":
                out.append(float(v[0]))
                continue
            probs = [1 - v[0], v[0]] if problem == "binary" else v
            names = self.vocab if len(self.vocab) == len(probs) else [str(i) for i in range(len(probs))]
            out.append({"label": names[max(range(len(probs)), key=probs.__getitem__)],
                        "probabilities": dict(zip(names, map(float, probs)))})
        return out


def to_example(tf, row: Dict[str, str], spec: Dict[str, "features.Feature"]) -> bytes:
    """A CSV row (text values) as a serialized tf.Example of the model's raw features; '' is missing."""
    ex = tf.train.Example()
    for name, feature in spec.items():
        dtype, required = feature.dtype, feature.required
        v = (row.get(name) or "").strip()
        if v == "":
            if required:
                raise ServingError(f"row has no value for required feature {name!r}")
            continue
        feat = ex.features.feature[name]
        if dtype == "string":
            feat.bytes_list.value.append(v.encode())
        elif dtype == "int64":
            feat.int64_list.value.append(int(float(v)))
        else:
            feat.float_list.value.append(float(v))
    return ex.SerializeToString()
