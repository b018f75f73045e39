"""`kfx predict`: batch scoring of a CSV with a registry version's SavedModel in a Beam pipeline, with
the same outputs as the server. TensorFlow and Beam are imported when scoring starts, not before."""
from __future__ import annotations

import csv
import json
import os
import time
from typing import Dict, Optional

from kfx.serving import ServingError
from kfx.serving.registry import local_version
from kfx_formats import features, registry


def batch_predict(model_uri: str, data: str, out: str, key: Optional[str] = None, batch_size: int = 256,
                  runner: str = "DirectRunner") -> dict:
    """Score a CSV with the version's SavedModel in a Beam pipeline; write JSON lines {key, prediction} to `out`.

    Each record: {"key": <row number or the --key column>, "model_version": "vN", <outputs>} with the same
    outputs as the server (label + class probabilities, or a prediction in the label's units).
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    version = local_version(model_uri)
    vdir, card = version.path, version.model_card()
    os.makedirs(out, exist_ok=True)
    with open(data, newline="") as f:
        header = next(csv.reader(f))
    if key and key not in header:
        raise ServingError(f"--key {key!r} is not a column of {data}")

    class Score(beam.DoFn):
        def setup(self):
            import tensorflow as tf
            self.tf = tf
            self.fn = tf.saved_model.load(os.path.join(vdir, registry.SAVED_MODEL)).signatures["serving_default"]
            self.out_key = "probabilities" if "probabilities" in self.fn.structured_outputs else "predictions"
            self.spec = features.spec_from_signature(self.fn)

        def process(self, batch):
            examples = [to_example(self.tf, row, self.spec) for _, row in batch]
            values = self.fn(examples=self.tf.constant(examples, dtype=self.tf.string))[self.out_key].numpy()
            problem = card.get("problem_type") or ("regression" if self.out_key == "predictions" else
                                                    ("binary" if values.shape[-1] == 1 else "multiclass"))
            vocab = [str(v) for v in card.get("label_vocabulary") or []]
            for (k, _), v in zip(batch, values.tolist()):
                rec = {"key": k, "model_version": f"v{version.number}"}
                if problem == "regression":
                    rec["prediction"] = float(v[0])
                else:
                    probs = [1 - v[0], v[0]] if problem == "binary" else v
                    names = vocab if len(vocab) == len(probs) else [str(i) for i in range(len(probs))]
                    rec["probabilities"] = dict(zip(names, map(float, probs)))
                    rec["label"] = names[max(range(len(probs)), key=probs.__getitem__)]
                yield json.dumps(rec)

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
