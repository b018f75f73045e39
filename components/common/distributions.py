"""Feature distributions out of TFDV statistics protos: comparable histograms, the thresholds of the
statistical gates at the samples' sizes, and side-by-side plots.

Shared by validate (train vs eval/test, span-to-span drift) and the monitor's skew and drift
checks. No TensorFlow import: plain protos, math, numpy and inline SVG.
"""
from __future__ import annotations

import functools
import html
import math
from typing import Any, Dict, List, Optional, Tuple


def presence(f) -> Tuple[int, int]:
    """(present, missing) counts of one feature's statistics."""
    which = f.WhichOneof("stats") if f is not None else None
    common = getattr(f, which).common_stats if which else None
    return (common.num_non_missing, common.num_missing) if common else (0, 0)


def feature_stats(stats) -> Dict[str, Any]:
    """{feature path: FeatureNameStatistics} of a statistics list's first data set."""
    return {".".join(f.path.step) or f.name: f for f in stats.datasets[0].features} if stats.datasets else {}


# TFDV's Jensen-Shannon comparator reads each side's STANDARD histogram: ten equal-width buckets
# between the minimum and the maximum. On heavy-tailed features (a taxi ride costing 700, a trip of
# 1,700 miles) nearly all the mass sits in the first bucket, and two random samples of the same
# data score 0.3-0.7 (measured on the bundled taxi data: the trip length scored 0.70 for 2,000 rows drawn
# from the training file itself). Before comparing, both sides' STANDARD histograms are therefore
# rebuilt on one set of buckets: the training data's deciles (its QUANTILES histogram), with an
# open bucket below the training minimum and one above its maximum. Each side's mass per bucket
# comes from its own QUANTILES histogram (uniform within a quantile bucket; a zero-width bucket is
# a point mass). TFDV's comparator then measures the divergence over the training deciles: the
# same 2,000 rows score 0.002, a sample of other trips at most 0.07, the trip length doubled 0.36.
_INF = float("inf")


def _quantiles(f):
    return next((h for h in f.num_stats.histograms if h.type == 1), None) \
        if f is not None and f.WhichOneof("stats") == "num_stats" else None


MIN_DECILE_EDGES = 5


def reference_edges(train_stats, min_edges: int = MIN_DECILE_EDGES) -> Dict[str, List[float]]:
    """{numeric feature: the distinct edges of its training QUANTILES histogram}."""
    out = {}
    for name, f in feature_stats(train_stats).items():
        q = _quantiles(f)
        if q is None or not q.buckets:
            continue
        edges = sorted({q.buckets[0].low_value} | {b.high_value for b in q.buckets})
        # A feature of a few values (a 0/1 label, a small count) keeps TFDV's own buckets: decile
        # buckets would smear its point masses (a 0/1 feature's deciles are just {0, 1}).
        if len(edges) >= min_edges and all(math.isfinite(e) for e in edges):
            out[name] = edges
    return out


def _masses(q, edges: List[float]) -> List[float]:
    """A QUANTILES histogram's sample counts on the buckets (-inf, e0), [e0, e1), ..., [e_m-1, e_m), [e_m, inf).

    A point mass goes to the bucket that starts at or below it, so each value of a discrete
    feature keeps a bucket of its own (a 0/1 label: [0, 1) and [1, inf)).
    """
    bins = [(-_INF, edges[0])] + [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)] + [(edges[-1], _INF)]
    counts = [0.0] * len(bins)
    for b in q.buckets:
        lo, hi, c = b.low_value, b.high_value, b.sample_count
        if hi <= lo:   # a point mass
            for i, (a, z) in enumerate(bins):
                if a <= lo < z:
                    counts[i] += c
                    break
            continue
        for i, (a, z) in enumerate(bins):
            overlap = min(hi, z) - max(lo, a)
            if overlap > 0:
                counts[i] += c * overlap / (hi - lo)
    return counts


def binned(stats, edges: Dict[str, List[float]]):
    """A copy of `stats` whose numeric features' STANDARD histograms lie on the reference buckets."""
    out = type(stats)()
    out.CopyFrom(stats)
    if not out.datasets:
        return out
    for f in out.datasets[0].features:
        name = ".".join(f.path.step) or f.name
        q = _quantiles(f)
        if name not in edges or q is None or not q.buckets:
            continue
        e = edges[name]
        span = max(e[-1] - e[0], 1.0)
        bounds = [e[0] - span] + e + [e[-1] + span]
        counts = _masses(q, e)
        standard = next((h for h in f.num_stats.histograms if h.type == 0), None)
        if standard is None:
            standard = f.num_stats.histograms.add()
        standard.ClearField("buckets")
        standard.num_nan = 0
        standard.num_undefined = 0
        for i, c in enumerate(counts):
            standard.buckets.add(low_value=bounds[i], high_value=bounds[i + 1], sample_count=c)
    return out


def distribution(stats, feature: str) -> Dict[str, float]:
    """{bucket or value: fraction} of one feature: its quantile histogram buckets or its top values."""
    f = feature_stats(stats).get(feature)
    if f is None:
        return {}
    which = f.WhichOneof("stats")
    if which == "num_stats":
        hist = next((h for h in f.num_stats.histograms if h.type == 0), None)   # STANDARD buckets
        total = sum(b.sample_count for b in hist.buckets) if hist else 0
        return {f"{b.low_value:.4g}..{b.high_value:.4g}": b.sample_count / total
                for b in hist.buckets} if total else {}
    if which == "string_stats":
        present = f.string_stats.common_stats.num_non_missing or 1
        return {v.value: v.frequency / present for v in f.string_stats.top_values[:12]}
    return {}


def pair(stats_a, stats_b, feature: str) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Both distributions of one feature (on the training deciles, for numeric features of binned statistics)."""
    return distribution(stats_a, feature), distribution(stats_b, feature)


def js_divergence(a: Dict[str, float], b: Dict[str, float]) -> float:
    """Jensen-Shannon divergence (base 2, 0 = same, 1 = disjoint) of two {bucket or value: fraction}
    distributions; what neither lists (values below a top-values cut) is one shared "other" bucket."""
    keys = set(a) | set(b)
    p = [a.get(k, 0.0) for k in keys] + [max(0.0, 1.0 - sum(a.values()))]
    q = [b.get(k, 0.0) for k in keys] + [max(0.0, 1.0 - sum(b.values()))]

    def kl(x, m):
        return sum(xi * math.log2(xi / mi) for xi, mi in zip(x, m) if xi > 0)

    m = [(pi + qi) / 2 for pi, qi in zip(p, q)]
    return max(0.0, 0.5 * kl(p, m) + 0.5 * kl(q, m))


def compared(stats_a, stats_b) -> List[Tuple[str, float, Dict[str, float], Dict[str, float]]]:
    """Every feature present in both: (name, JS divergence, distribution a, distribution b), most
    divergent first. Numeric features on a's quantile edges (a feature of few values keeps one bucket
    per value), categorical ones on their top values."""
    edges = reference_edges(stats_a, min_edges=2)
    a, b = binned(stats_a, edges), binned(stats_b, edges)
    out = []
    for name in feature_stats(a):
        da, db = pair(a, b, name)
        if da and db:
            out.append((name, js_divergence(da, db), da, db))
    return sorted(out, key=lambda r: (-r[1], r[0]))


def side_by_side(feature: str, before: Dict[str, float], after: Dict[str, float], names: Tuple[str, str]) -> str:
    """Two distributions of one feature as paired horizontal bars (inline SVG, no script, no fetch)."""
    keys = list(dict.fromkeys(list(before) + list(after)))[:16]
    if not keys:
        return f"<p>{html.escape(feature)}: no values to plot.</p>"
    width, bar, gap, left = 560, 7, 6, 200
    top = max([before.get(k, 0) for k in keys] + [after.get(k, 0) for k in keys]) or 1
    parts = []
    for i, k in enumerate(keys):
        y = 8 + i * (2 * bar + gap)
        for j, (dist, color) in enumerate(((before, "#9e9e9e"), (after, "#c62828"))):
            w = 300 * dist.get(k, 0) / top
            parts.append(f'<rect x="{left}" y="{y + j * bar}" width="{w:.1f}" height="{bar - 1}" fill="{color}">'
                         f'<title>{html.escape(names[j])}: {100 * dist.get(k, 0):.1f}%</title></rect>')
        parts.append(f'<text x="{left - 6}" y="{y + bar + 3}" font-size="10" text-anchor="end">'
                     f'{html.escape(str(k)[:30])}</text>')
    height = 16 + len(keys) * (2 * bar + gap)
    return (f'<figure><figcaption><b>{html.escape(feature)}</b>: '
            f'<span style="color:#757575">&#9632; {html.escape(names[0])}</span> vs '
            f'<span style="color:#c62828">&#9632; {html.escape(names[1])}</span></figcaption>'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="{html.escape(feature)} distributions">{"".join(parts)}</svg></figure>')


# ------------------------------------------------------------------ gates that know their sample size
# Every statistical gate (validate's train vs eval/test, check-drift's span vs baseline, the
# monitor's serving vs training and window vs window) compares two samples with a distance: the
# L-infinity distance of categorical features, the Jensen-Shannon divergence of numeric ones. A fixed
# threshold is crossed by chance alone when the samples are small (60 eval rows of a 3-valued column
# differ from train by more than 0.1 in a third of random splits). A gate's threshold per feature is
# therefore the larger of
#   * the practical threshold (the schema's comparator, or the default): a change smaller than that
#     does not matter, however sure it is;
#   * the distance two samples of these sizes, drawn from one distribution (the pooled histogram of
#     both), exceed with probability FALSE_ALARM_RATE / (number of features compared): Bonferroni, so
#     that a run in which nothing moved is flagged by a gate with probability at most FALSE_ALARM_RATE.
# The chance part is the (1 - rate) quantile of the distance between multinomial resamples of the
# pooled histogram (seeded: the same inputs give the same threshold), cached per histogram and sizes.
FALSE_ALARM_RATE = 0.01
# Resamples per threshold: enough for about 10 beyond the quantile, within these bounds (a validate
# step compares every feature of two splits: each threshold must cost a fraction of a second).
MIN_DRAWS, MAX_DRAWS, BEYOND = 2_000, 20_000, 10
# Values beyond the most frequent ones are pooled into one bucket in the resampling (a free-text column
# of thousands of values: their differences are far below the frequent values').
MAX_RESAMPLED_VALUES = 50
L_INFTY, JENSEN_SHANNON = "infinity_norm", "jensen_shannon_divergence"


def compared_counts(f) -> Dict[str, float]:
    """{value or bucket: count} of one feature as TFDV's comparators read it: a categorical
    feature's rank histogram (its top values without one), a numeric feature's STANDARD histogram
    (on the reference buckets, for `binned` statistics)."""
    which = f.WhichOneof("stats") if f is not None else None
    if which == "string_stats":
        s = f.string_stats
        if s.rank_histogram.buckets:
            return {b.label: float(b.sample_count) for b in s.rank_histogram.buckets}
        return {v.value: float(v.frequency) for v in s.top_values}
    if which == "num_stats":
        hist = next((h for h in f.num_stats.histograms if h.type == 0), None)
        return {f"{b.low_value:.9g}..{b.high_value:.9g}": float(b.sample_count) for b in hist.buckets} if hist else {}
    return {}


def _distances(measure: str, a, b):
    """Row-wise distance between count matrices a and b (one sample per row)."""
    import numpy as np
    p = a / np.maximum(a.sum(axis=1, keepdims=True), 1)
    q = b / np.maximum(b.sum(axis=1, keepdims=True), 1)
    if measure == L_INFTY:
        return np.abs(p - q).max(axis=1)
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=1)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum(axis=1)
    return np.maximum(0.0, 0.5 * kl_p + 0.5 * kl_q)


def _multinomial(rng, n: int, p, size: int):
    """`size` multinomial(n, p) draws as a (size, len(p)) matrix: one vectorized binomial per value
    (numpy's multinomial draws row by row, ten times slower)."""
    import numpy as np
    out = np.empty((size, len(p)), dtype=np.int64)
    left, mass = np.full(size, n, dtype=np.int64), 1.0
    for j, pj in enumerate(p[:-1]):
        out[:, j] = rng.binomial(left, pj / mass if mass > pj else 1.0)
        left -= out[:, j]
        mass -= pj
    out[:, -1] = left
    return out


@functools.lru_cache(maxsize=4096)
def _chance(measure: str, pooled: Tuple[float, ...], n_a: int, n_b: int, rate: float) -> float:
    import numpy as np
    p = np.asarray(pooled, dtype=float)
    p = p / p.sum()
    draws = int(min(MAX_DRAWS, max(MIN_DRAWS, math.ceil(BEYOND / rate))))
    rng = np.random.default_rng(20261206)
    out, chunk = [], max(1, 2_000_000 // len(p))
    for start in range(0, draws, chunk):
        size = min(chunk, draws - start)
        out.append(_distances(measure, _multinomial(rng, n_a, p, size), _multinomial(rng, n_b, p, size)))
    return float(np.quantile(np.concatenate(out), 1.0 - rate, method="higher"))


def chance_distance(measure: str, counts_a: Dict[str, float], counts_b: Dict[str, float], rate: float) -> float:
    """The distance (``L_INFTY`` or ``JENSEN_SHANNON``) that two samples of these sizes, drawn from their
    pooled distribution, exceed with probability ``rate``."""
    n_a, n_b = int(round(sum(counts_a.values()))), int(round(sum(counts_b.values())))
    pooled = sorted((counts_a.get(k, 0.0) + counts_b.get(k, 0.0) for k in set(counts_a) | set(counts_b)),
                    reverse=True)
    pooled = [c for c in pooled if c > 0]
    if n_a < 1 or n_b < 1 or len(pooled) < 2:
        return 0.0
    head, tail = pooled[:MAX_RESAMPLED_VALUES], sum(pooled[MAX_RESAMPLED_VALUES:])
    total = sum(pooled)
    # Probabilities to 0.005 (the threshold barely moves with them): the histograms of many samples
    # of one distribution share a cache entry.
    key = tuple(p for p in (round(200 * c / total) / 200 for c in head + ([tail] if tail else [])) if p > 0)
    if len(key) < 2:
        return 0.0
    return _chance(measure, key, n_a, n_b, rate)


def adapted_thresholds(schema, field: str, reference, current, rate: float = FALSE_ALARM_RATE,
                       measured: Optional[Dict[str, float]] = None):
    """(a copy of ``schema`` whose ``field`` comparators (``skew_comparator`` or ``drift_comparator``)
    hold the thresholds for these two samples, {feature: what the threshold is made of}).

    ``reference`` and ``current`` are the statistics TFDV compares (numeric features `binned` on one
    set of buckets). Each feature's threshold is max(its practical threshold, the distance expected by
    chance at the samples' sizes at rate / m), m the number of features compared.

    ``measured``: {feature: TFDV's distance at the practical thresholds} (``measured_distances``). A
    feature at or below its practical threshold passes whatever chance adds to it, so its chance part
    is not simulated (``chance`` None): the same verdicts, at a fraction of the cost on wide tables."""
    out = type(schema)()
    out.CopyFrom(schema)
    ref, cur = feature_stats(reference), feature_stats(current)
    compared = []
    for feature in out.feature:
        comparator = getattr(feature, field)
        measure = next((m for m in (L_INFTY, JENSEN_SHANNON) if comparator.HasField(m)), None)
        a, b = compared_counts(ref.get(feature.name)), compared_counts(cur.get(feature.name))
        if not (measure and a and b):
            continue
        if measure == JENSEN_SHANNON and set(a) != set(b):
            # A numeric feature of a few values keeps each side's own buckets (see reference_edges):
            # the chance part is then taken from the reference's histogram alone, at both sizes.
            n_b = sum(b.values())
            b = {k: v * n_b / sum(a.values()) for k, v in a.items()}
        compared.append((getattr(comparator, measure), measure, feature.name, (a, b)))
    made = {}
    per_feature = rate / max(len(compared), 1)
    for threshold, measure, name, (a, b) in compared:
        practical = float(threshold.threshold)
        below = measured is not None and name in measured and measured[name] <= practical
        chance = None if below else chance_distance(measure, a, b, per_feature)
        made[name] = {"measure": measure, "practical": practical, "chance": chance,
                      "threshold": practical if below else max(practical, chance), "rate": per_feature,
                      "run_rate": rate, "n": [int(round(sum(a.values()))), int(round(sum(b.values())))]}
        threshold.threshold = made[name]["threshold"]
    return out, made


def validate_at_adapted_thresholds(validate, schema, field: str, reference, current,
                                   names: Tuple[str, str] = ("reference", "current")):
    """TFDV's anomalies, ``validate(schema)``, with ``field``'s comparators at ``adapted_thresholds`` and
    each comparator finding annotated. A first pass at the practical thresholds measures every feature:
    those within them need no simulated chance part."""
    practical = validate(schema)
    adapted, thresholds = adapted_thresholds(schema, field, reference, current,
                                             measured=measured_distances(practical))
    found = validate(adapted)
    annotate(found, thresholds, names)
    return found


def measured_distances(anomalies) -> Dict[str, float]:
    """{feature: the distance TFDV measured} from an anomalies proto's drift_skew_info."""
    out: Dict[str, float] = {}
    for info in anomalies.drift_skew_info:
        for m in list(info.drift_measurements) + list(info.skew_measurements):
            name = ".".join(info.path.step)
            out[name] = max(out.get(name, 0.0), float(m.value))
    return out


def threshold_note(made: dict, names: Tuple[str, str] = ("reference", "current")) -> str:
    """Why a feature's threshold is what it is, in one sentence (appended to TFDV's message)."""
    if made["chance"] is None:
        return (f"Threshold {made['threshold']:.4g} (practical) for {made['n'][0]} {names[0]} vs {made['n'][1]} "
                f"{names[1]} values: the distance was within it, so chance was not simulated.")
    return (f"Threshold {made['threshold']:.4g} for {made['n'][0]} {names[0]} vs {made['n'][1]} {names[1]} values: "
            f"the larger of the practical {made['practical']:.4g} and {made['chance']:.4g}, the distance two "
            f"such samples of one distribution exceed with probability {made['rate']:.2g} "
            f"(false-alarm rate {made['run_rate']:.0%} over the features compared).")


def is_comparison(reason) -> bool:
    """An anomaly reason from a drift or skew comparator (two samples compared), not from the schema."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2
    return "COMPARATOR" in anomalies_pb2.AnomalyInfo.Type.Name(reason.type)


def annotate(anomalies, thresholds: Dict[str, dict], names: Tuple[str, str] = ("reference", "current")) -> None:
    """Adds each comparator finding's threshold_note to its description in the anomalies proto."""
    for name, info in anomalies.anomaly_info.items():
        if name not in thresholds:
            continue
        note = threshold_note(thresholds[name], names)
        touched = False
        for reason in info.reason:
            if is_comparison(reason):
                reason.description = f"{reason.description} {note}"
                touched = True
        if touched and info.description:
            info.description = f"{info.description} {note}"
