"""Feature distributions out of TFDV statistics protos: comparable histograms and side-by-side plots.

Shared by validate's span-to-span drift check and the monitor's skew and drift
checks. No TensorFlow import: plain protos, math and inline SVG.
"""
from __future__ import annotations

import html
import math
from typing import Any, Dict, List, Tuple


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
