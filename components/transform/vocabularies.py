"""Every categorical feature's vocabulary from ONE analyzer: one Beam pass, one combiner.

`tft.compute_and_apply_vocabulary` gives each feature its own chain of about fifteen Beam
stages (count, merge, prune, order, write) and its own nodes in TFT's analysis graph, so a
table's transform cost grew by seconds per text column (docs/benchmarks.md, columns block).
Here one `tft.experimental.ptransform_analyzer` counts the tokens of all the features in
one CombineGlobally and writes every file in one step; each feature is then looked up with
`tft.apply_vocabulary`, exactly what compute_and_apply_vocabulary does after its analysis.

The files are the ones tft.vocabulary writes (text format, frequency only): tokens
ordered by (count, token) descending, the first `top_k` kept, the empty token and tokens
holding a newline left out (they map to the OOV bucket), TFT's dummy token when nothing is
left; same names (sanitized `vocab_filename`), so the assets, the lookup tables, the
int domains (num_buckets) and the serving graph are what they were.
"""
import os
from typing import Dict, List, Sequence

import apache_beam as beam
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_transform import analyzers
from tensorflow_transform.beam import experimental as tft_beam_experimental

EMPTY_VOCABULARY_TOKEN = analyzers.get_empy_vocabulary_dummy_value(tf.string)[1]


def _kept(token: bytes) -> bool:
    """tft.vocabulary's text-format filter (regex ``^$|\\C*[\\n\\r]\\C*``)."""
    return bool(token) and b"\n" not in token and b"\r" not in token


class _CountTokens(beam.CombineFn):
    """Per feature {token: count}; an input is one batch: [tokens_0, counts_0, tokens_1, counts_1, ...]."""

    def __init__(self, features: int):
        self._features = features

    def create_accumulator(self) -> List[Dict[bytes, int]]:
        return [{} for _ in range(self._features)]

    def add_input(self, accumulator, batch):
        for counts, (tokens, n) in zip(accumulator, zip(batch[0::2], batch[1::2])):
            for token, k in zip(tokens.tolist(), n.tolist()):
                counts[token] = counts.get(token, 0) + k
        return accumulator

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for other in accumulators:
            for counts, more in zip(merged, other):
                for token, k in more.items():
                    counts[token] = counts.get(token, 0) + k
        return merged

    def extract_output(self, accumulator):
        return accumulator


def _write(counts_by_feature: List[Dict[bytes, int]], directory: str, filenames: Sequence[str],
           top_k: int) -> List[bytes]:
    os.makedirs(directory, exist_ok=True)
    paths = []
    for counts, filename in zip(counts_by_feature, filenames):
        ranked = sorted(((k, t) for t, k in counts.items() if _kept(t)), reverse=True)[:top_k]
        tokens = [t for _, t in ranked] or [EMPTY_VOCABULARY_TOKEN]
        path = os.path.join(directory, filename)
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(b"".join(t + b"\n" for t in tokens))
        paths.append(path.encode("utf-8"))
    return paths


class _Vocabularies(tft_beam_experimental.PTransformAnalyzer):
    """Batches of (tokens, counts) per feature -> one PCollection per feature holding its file's path."""

    def __init__(self, filenames: Sequence[str], top_k: int):
        super().__init__()
        self._filenames, self._top_k = list(filenames), int(top_k)

    def expand(self, batches):
        paths = (batches
                 | "CountTokens" >> beam.CombineGlobally(_CountTokens(len(self._filenames)))
                 | "WriteFiles" >> beam.Map(_write, self.base_temp_dir, self._filenames, self._top_k))
        return tuple(paths | f"Path[{i}]" >> beam.Map(lambda p, i=i: p[i]) for i in range(len(self._filenames)))


def compute_and_apply(texts: Sequence[tf.Tensor], vocab_filenames: Sequence[str], top_k: int,
                      num_oov_buckets: int) -> List[tf.Tensor]:
    """`tft.compute_and_apply_vocabulary(text, top_k, num_oov_buckets, vocab_filename)` for each of
    `texts` (dense [batch] strings), with the analysis of all of them fused into one."""
    if not texts:
        return []
    inputs = []
    for text in texts:
        # Each batch is reduced in the graph: the analyzer sees distinct tokens, not rows.
        tokens, _, counts = tf.unique_with_counts(text, out_idx=tf.int64)
        inputs += [tokens, counts]
    filenames = [analyzers.sanitized_vocab_filename(filename=f) for f in vocab_filenames]
    paths = tft.experimental.ptransform_analyzer(
        inputs, _Vocabularies(filenames, top_k), output_dtypes=[tf.string] * len(texts),
        output_shapes=[[]] * len(texts), output_asset_default_values=[EMPTY_VOCABULARY_TOKEN] * len(texts),
        name="vocabularies")
    return [tft.apply_vocabulary(text, path, num_oov_buckets=num_oov_buckets)
            for text, path in zip(texts, paths)]
