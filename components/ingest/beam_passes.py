"""The Beam path's two passes over the rows: count (pass 1), then encode and cut (pass 2)."""
import collections
from typing import Dict, List, Optional

from kfx_components.common import io
from kfx_components.ingest.beam_reading import NA, canonical_text
from kfx_components.ingest.cells import FALSE_TEXT, TRUE_TEXT, canonical, digest, feature, number

HASH_BITS = 12
BUCKETS = 1 << HASH_BITS


def label_sort_key(text: str):
    if text in ("true", "false"):
        return (0, float(text == "true"), "")
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


class Labeler:
    """The label's canonical text per row (None when missing), from a column or an expression."""

    def __init__(self, names: List[str], label: str, label_key: str, numeric_columns: List[str],
                 problem_type: str):
        self.names, self.label, self.label_key = names, label, label_key
        self.numeric, self.problem_type = set(numeric_columns), problem_type
        self.column = names.index(label) if label in names else None

    def labels(self, rows) -> List[Optional[str]]:
        if self.column is not None:
            out = []
            for _, cells in rows:
                text = canonical_text(cells[self.column])
                out.append(text if text != "" else None)
            return out
        import pandas as pd
        if not rows:
            return []
        data = {}
        for j, name in enumerate(self.names):
            values = [None if c[j] in NA else c[j] for _, c in rows]
            data[name] = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce") \
                if name in self.numeric else pd.Series(values, dtype=object)
        values = pd.DataFrame(data).eval(self.label)
        return [canonical(v) or None for v in values.tolist()]   # missing (None, NaN) -> None


def _bucket(digest: int) -> int:
    return digest >> (64 - HASH_BITS)


class Stats:
    """Mergeable pass-1 counters."""

    def __init__(self, width: int):
        self.present = [0] * width
        self.ints = [0] * width
        self.nums = [0] * width
        self.bools = [0] * width
        self.whole = [True] * width       # every numeric cell integer-valued
        self.max_abs = [0.0] * width
        self.first_text: List[Optional[tuple]] = [None] * width   # ((range, local), value)
        self.classes: Dict[str, int] = collections.Counter()
        self.hist: Dict[str, list] = {}
        self.missing_label = 0
        self.first_missing: Optional[tuple] = None
        self.label_text = 0
        self.first_label_text: Optional[tuple] = None
        self.bad: List[tuple] = []       # the first few ((range, local), message)
        self.n_bad = 0
        self.lines: Dict[int, int] = {}

    def merge(self, other: "Stats") -> "Stats":
        for j in range(len(self.present)):
            self.present[j] += other.present[j]
            self.ints[j] += other.ints[j]
            self.nums[j] += other.nums[j]
            self.bools[j] += other.bools[j]
            self.whole[j] = self.whole[j] and other.whole[j]
            self.max_abs[j] = max(self.max_abs[j], other.max_abs[j])
            self.first_text[j] = _first(self.first_text[j], other.first_text[j])
        self.classes.update(other.classes)
        for k, h in other.hist.items():
            if k in self.hist:
                self.hist[k] = [a + b for a, b in zip(self.hist[k], h)]
            else:
                self.hist[k] = list(h)
        self.missing_label += other.missing_label
        self.first_missing = _first(self.first_missing, other.first_missing)
        self.label_text += other.label_text
        self.first_label_text = _first(self.first_label_text, other.first_label_text)
        self.bad = sorted(self.bad + other.bad)[:5]
        self.n_bad += other.n_bad
        self.lines.update(other.lines)
        return self


def _first(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def pass1_batch(element, names, labeler: Labeler, problem_type: str):
    index, rows, bad, n_lines = element
    width = len(names)
    s = Stats(width)
    if n_lines is not None:
        s.lines[index] = n_lines
    s.bad = [((index, local), msg) for local, msg in bad][:5]
    s.n_bad = len(bad)
    labels = labeler.labels(rows)
    hist = {}
    for (local, cells), label in zip(rows, labels):
        texts = []
        for j, cell in enumerate(cells):
            text = canonical_text(cell)
            texts.append(text)
            if cell in NA:
                continue
            s.present[j] += 1
            if cell in TRUE_TEXT or cell in FALSE_TEXT:
                s.bools[j] += 1
            parsed = number(cell)
            if parsed is None:
                if s.first_text[j] is None:
                    s.first_text[j] = ((index, local), cell)
                continue
            is_int, value = parsed
            s.nums[j] += 1
            s.ints[j] += is_int
            if not is_int and not value.is_integer():
                s.whole[j] = False
            if abs(value) > s.max_abs[j]:
                s.max_abs[j] = abs(value)
        if label is None:
            s.missing_label += 1
            if s.first_missing is None:
                s.first_missing = (index, local)
            continue
        if problem_type == "regression":
            if number(label) is None:
                s.label_text += 1
                if s.first_label_text is None:
                    s.first_label_text = ((index, local), label)
                continue
            stratum = ""
        else:
            stratum = label
        s.classes[stratum] += 1
        row_digest = digest("\x1f".join(texts))
        h = hist.get(stratum)
        if h is None:
            h = hist[stratum] = [0] * BUCKETS
        h[_bucket(row_digest)] += 1
    s.hist = hist
    yield s


def merge_all(stats_list):
    it = iter(stats_list)
    total = None
    for s in it:
        total = s if total is None else total.merge(s)
    return total


class Plan:
    """Per stratum: (n_test, n_eval, cut buckets, rows before each cut bucket), the encoding."""

    def __init__(self, names, types, feature_idx, label_key, label_type, vocabulary, cuts):
        self.names, self.types, self.feature_idx = names, types, feature_idx
        self.label_key, self.label_type, self.vocabulary = label_key, label_type, vocabulary
        self.index = {v: i for i, v in enumerate(vocabulary)}
        self.cuts = cuts   # stratum -> (r1, r2, b1, b2, before)   before: {bucket: rows in lower buckets}


def pass2_batch(element, plan: Plan, labeler: Labeler, problem_type: str):
    import apache_beam as beam
    import tensorflow as tf
    index, rows, _, _ = element
    labels = labeler.labels(rows)
    for (local, cells), label in zip(rows, labels):
        if label is None:
            continue
        if problem_type == "regression":
            if number(label) is None:
                continue
            stratum, encoded = "", float(label)
        else:
            stratum, encoded = label, plan.index[label]
        feats = {}
        for j in plan.feature_idx:
            cell = cells[j]
            if cell in NA:
                continue
            feats[plan.names[j]] = feature(cell, plan.types[plan.names[j]])
        feats[plan.label_key] = feature(encoded, plan.label_type)
        record = tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()
        r1, r2, b1, b2, _ = plan.cuts[stratum]
        if r2 == 0:
            yield beam.pvalue.TaggedOutput(io.TRAIN, record)
            continue
        text = "\x1f".join(canonical_text(c) for c in cells)
        row_digest = digest(text)
        b = _bucket(row_digest)
        if b == b1 or b == b2:
            yield beam.pvalue.TaggedOutput("cut", ((stratum, b), (row_digest, text, record)))
        elif b < b1:
            yield beam.pvalue.TaggedOutput(io.TEST, record)
        elif b < b2:
            yield beam.pvalue.TaggedOutput(io.EVAL, record)
        else:
            yield beam.pvalue.TaggedOutput(io.TRAIN, record)


def rank_cut(element, plan: Plan):
    import apache_beam as beam
    (stratum, b), members = element
    r1, r2, _, _, before = plan.cuts[stratum]
    for rank, (_, _, record) in enumerate(sorted(members, key=lambda m: (m[0], m[1])), start=before[b]):
        split = io.TEST if rank < r1 else io.EVAL if rank < r2 else io.TRAIN
        yield beam.pvalue.TaggedOutput(split, record)
