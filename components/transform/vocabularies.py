"""Every categorical feature's vocabulary from ONE analyzer, looked up in ONE table.

`tft.compute_and_apply_vocabulary` gives each feature its own chain of about fifteen Beam
stages (count, merge, prune, order, write) and its own nodes in TFT's analysis graph, so a
table's transform cost grew by seconds per text column (docs/benchmarks.md, columns block).
Here one `tft.experimental.ptransform_analyzer` counts the tokens of all the features in
one CombineGlobally and writes one file in one step.

Each feature's vocabulary is what tft.vocabulary would write (frequency only): tokens ordered
by (count, token) descending, the first `top_k` kept, the empty token and tokens holding a
newline left out (they map to the OOV bucket), TFT's dummy token when nothing is left. A token's
index is its rank; a token outside the vocabulary gets the vocabulary's size (the one OOV
bucket), as StaticVocabularyTable(num_oov_buckets=1) gives it, and each output carries the
int domain [0, size] in the transformed schema, as tft.apply_vocabulary annotates it.

The lookup is one hash table for all features (key ``<feature index>:<token, URL-safe base64>``,
value the rank): a table per feature costs three restored functions each time the graph is
loaded (transform, every training stage, evaluate, serving), 18 s a load at 100 text columns.
"""
import base64
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


def _ranked(counts: Dict[bytes, int], top_k: int) -> List[bytes]:
    ranked = sorted(((k, t) for t, k in counts.items() if _kept(t)), reverse=True)[:top_k]
    return [t for _, t in ranked] or [EMPTY_VOCABULARY_TOKEN]


def key(feature: int, token: bytes) -> bytes:
    """The table's key of `token` in the `feature`-th vocabulary (what the graph computes)."""
    return b"%d:%s" % (feature, base64.urlsafe_b64encode(token).rstrip(b"="))


def size_key(feature: int) -> bytes:
    """The key holding the `feature`-th vocabulary's size (no token's key: those have a colon)."""
    return b"%d#" % feature


def _write(counts_by_feature: List[Dict[bytes, int]], directory: str, filename: str, top_k: int) -> bytes:
    """The file's path; lines ``key<TAB>rank`` for every token, ``size_key<TAB>size`` per feature."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, filename)
    with tf.io.gfile.GFile(path, "wb") as f:
        for i, counts in enumerate(counts_by_feature):
            tokens = _ranked(counts, top_k)
            f.write(b"".join(b"%s\t%d\n" % (key(i, t), rank) for rank, t in enumerate(tokens)))
            f.write(b"%s\t%d\n" % (size_key(i), len(tokens)))
    return path.encode("utf-8")


class _Vocabularies(tft_beam_experimental.PTransformAnalyzer):
    """Batches of (tokens, counts) per feature -> the vocabularies' file path."""

    def __init__(self, features: int, filename: str, top_k: int):
        super().__init__()
        self._features, self._filename, self._top_k = int(features), filename, int(top_k)

    def expand(self, batches):
        return (batches
                | "CountTokens" >> beam.CombineGlobally(_CountTokens(self._features))
                | "WriteFile" >> beam.Map(_write, self.base_temp_dir, self._filename, self._top_k))


def compute_and_apply(texts: Sequence[tf.Tensor], vocab_filename: str, top_k: int) -> List[tf.Tensor]:
    """`tft.compute_and_apply_vocabulary(text, top_k, num_oov_buckets=1)` for each of `texts`
    (dense [batch] strings), the analysis of all of them fused into one, one table for the lookups."""
    from tensorflow_transform import schema_inference, tf_utils
    if not texts:
        return []
    inputs = []
    for text in texts:
        # Each batch is reduced in the graph: the analyzer sees distinct tokens, not rows.
        tokens, _, counts = tf.unique_with_counts(text, out_idx=tf.int64)
        inputs += [tokens, counts]
    n = len(texts)
    [path] = tft.experimental.ptransform_analyzer(
        inputs, _Vocabularies(n, analyzers.sanitized_vocab_filename(filename=vocab_filename), top_k),
        output_dtypes=[tf.string], output_shapes=[[]],
        # what the table reads while the graph is traced, before the analysis wrote the file
        output_asset_default_values=[b"".join(b"%s\t1\n" % size_key(i) for i in range(n))], name="vocabularies")
    tables = []

    def table(asset_path):
        initializer = tf.lookup.TextFileInitializer(asset_path, tf.string, 0, tf.int64, 1, delimiter="\t")
        tables.append(tf.lookup.StaticHashTable(initializer, default_value=-1))
        return tables[-1]

    matrix = tf.stack(list(texts), axis=1)                       # [batch, n]
    prefixes = tf.constant([b"%d:" % i for i in range(n)])
    keys = tf.strings.join([tf.broadcast_to(prefixes, tf.shape(matrix)), tf.io.encode_base64(matrix)])
    # TFT's own construction (tft.apply_vocabulary's): the table is created once, outside the traced
    # function, and the lookup is tied to the analyzer that writes its file.
    ids, _ = tf_utils.construct_and_lookup_table(table, path, tf.reshape(keys, [-1]))
    sizes = tables[0].lookup(tf.constant([size_key(i) for i in range(n)]))
    ids = tf.reshape(ids, tf.shape(matrix))
    ids = tf.where(ids < 0, tf.broadcast_to(sizes, tf.shape(ids)), ids)   # the OOV bucket: index = size
    out = []
    for i, column in enumerate(tf.unstack(ids, num=n, axis=1)):
        schema_inference.set_tensor_schema_override(column, tf.constant(0, tf.int64), sizes[i])
        out.append(column)
    return out
