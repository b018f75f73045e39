"""Validate: TFDV statistics per split, a schema, anomalies, drift against the previous span, reports.

Two entry points, three comparisons, each with TFDV:
* ``run``: every split against the schema (inferred from train, or curated),
  and eval and test against train with the drift comparators (skew between
  the splits). The splits are a random split of one file: a difference between
  them is chance or a bad split, never a reason to stop, so it is a warning; so
  is a text value eval or test hold and train does not (a rare category, dates
  as text) when the schema was inferred from train;
* ``check_drift``: this span's train statistics against the statistics of the
  data the model in production was trained on (resolve finds them in the
  registry). ``drift_action`` decides whether drift blocks the run or only
  warns. A step of its own, so that a new baseline re-runs this check and not
  everything downstream of the schema.

Both compare with Jensen-Shannon divergence for numeric features (on the
reference's deciles) and L-infinity distance for categorical ones, each at the
threshold for the two samples' sizes (common/distributions.py,
``adapted_thresholds``): the schema's practical threshold, raised to what chance
alone reaches at these sizes, so a comparison of unchanged data raises a false
alarm with probability at most ``distributions.FALSE_ALARM_RATE`` whatever the
sizes.
"""
import html
import os
import time
from typing import Callable, List, Optional, Sequence

from kfx_components.common import distributions, io
from kfx_formats import choices

STATS_FILE = "FeatureStats.pb"
SCHEMA_FILE = "schema.pbtxt"
ANOMALIES_FILE = "anomalies.pbtxt"

# Free-text and long-tail string features (e.g. business names) show a few
# never-seen values in every fresh sample; TFDV's default min_domain_mass of 1.0
# flags any single one (bundled taxi sample: 0.25% of its free-text column's
# eval values are unseen rare names). Up to 1% of a split's values outside the training domain is
# sampling noise; more is a real shift (or a broken feed) and is flagged.
MIN_DOMAIN_MASS = 0.99
# The practical thresholds of the drift comparators (the smallest change that matters): L-infinity
# distance of categorical features' value distributions (a change of mix of 10 points), Jensen-Shannon
# divergence of numeric features' histograms on the reference's deciles. Small samples get a higher
# threshold, what chance reaches at their sizes (see the module's docstring).
DRIFT_LINF_THRESHOLD = 0.1
DRIFT_JS_THRESHOLD = 0.1
PREVIOUS = "previous span"
# A nearly empty column can, by chance, have all its few values land in eval:
# TFDV would call it a "New column". Such a feature (present in at most this
# fraction of eval rows, absent from train) joins the schema as optional; a
# column with more presence than that, unseen in train, is still flagged.
MAX_EVAL_ONLY_FRACTION = 0.01
TRAINING, SERVING = "TRAINING", "SERVING"


class AnomaliesFoundError(ValueError):
    """Data validation found anomalies; `.anomalies` lists them as dicts."""

    def __init__(self, anomalies: List[dict]):
        self.anomalies = anomalies
        # One line (it becomes the run's one `error:` line): the features first, then what is wrong.
        features = ", ".join(dict.fromkeys(a["feature"] for a in anomalies))
        found = "; ".join(f"[{a['split']}] {a['feature']}: {a['description']}" for a in anomalies)
        super().__init__(f"data validation found {len(anomalies)} anomal{'y' if len(anomalies) == 1 else 'ies'} "
                         f"in {features} (the report shows them): {found}")


def _load_schema(path: str, what: str = "curated_schema_path"):
    import tensorflow_data_validation as tfdv
    file = os.path.join(path, SCHEMA_FILE) if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise ValueError(f"{what} {path}: no schema file ({SCHEMA_FILE}) found")
    try:
        return tfdv.load_schema_text(file)
    except Exception as e:  # a text-format parse error
        raise ValueError(f"{what} {file}: not a valid Schema text proto: {e}") from e


def _statistics(examples_dir: str, out_dir: str, beam_pipeline_args: Sequence[str], schema) -> dict:
    """Both splits' statistics in one Beam pipeline (what generate_statistics_from_tfrecord
    runs per file, without paying the pipeline start-up twice)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    import tensorflow_data_validation as tfdv
    from tfx_bsl.public import tfxio

    options = tfdv.StatsOptions(schema=schema) if schema is not None else tfdv.StatsOptions()
    paths = {split: os.path.join(out_dir, split, STATS_FILE) for split in io.SPLITS}
    for path in paths.values():
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with beam.Pipeline(options=PipelineOptions(list(beam_pipeline_args or ()))) as p:
        for split in io.SPLITS:
            source = tfxio.TFExampleRecord(file_pattern=io.split_file(examples_dir, split),
                                           telemetry_descriptors=["kfx", "validate"])
            _ = (p
                 | f"Read[{split}]" >> source.BeamSource()
                 | f"Statistics[{split}]" >> tfdv.GenerateStatistics(options)
                 | f"Write[{split}]" >> tfdv.WriteStatisticsToBinaryFile(paths[split]))
    return {split: tfdv.load_stats_binary(path) for split, path in paths.items()}


def _check_label(examples_dir: str, label_key: str, sample: int = 1000) -> None:
    """Fail fast (before a Beam pipeline) when the first records lack the label."""
    import tensorflow as tf
    path = io.split_file(examples_dir, io.TRAIN)
    for i, record in enumerate(io.read_records(path)):
        if label_key in tf.train.Example.FromString(record).features.feature:
            return
        if i + 1 >= sample:
            break
    raise ValueError(f"label_key {label_key!r}: no such feature in the first records of {path}")


def _add_sparse_eval_only(schema, eval_stats) -> None:
    import tensorflow_data_validation as tfdv
    known = {f.name for f in schema.feature}
    num_examples = eval_stats.datasets[0].num_examples or 1
    sparse = []
    for name, f in distributions.feature_stats(eval_stats).items():
        which = f.WhichOneof("stats")
        present = getattr(f, which).common_stats.num_non_missing if which else 0
        if name not in known and present / num_examples <= MAX_EVAL_ONLY_FRACTION:
            sparse.append((name, present))
    if not sparse:
        return
    eval_schema = tfdv.infer_schema(eval_stats, infer_feature_shape=False)
    for name, present in sparse:
        feature = schema.feature.add()
        feature.CopyFrom(tfdv.get_feature(eval_schema, name))
        feature.ClearField("domain")  # a domain learned from a few eval rows means nothing
        feature.presence.min_count = 0
        feature.presence.min_fraction = 0.0
        feature.annotation.comment.append(
            f"kfx: absent from train, in {present} eval rows: optional")


def _infer_schema(stats: dict, label_key: str):
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import schema_pb2
    # No inferred shapes: a fixed shape would make every feature (the label
    # too) mandatory when a serving request is parsed.
    schema = tfdv.infer_schema(stats[io.TRAIN], infer_feature_shape=False)
    for feature in schema.feature:
        # TFDV calls an integer column boolean when train holds only 0 and 1; a rare value in a
        # count (a pixel intensity, a number of children) is then an anomaly in eval. Integers
        # stay integers (and a 0/1 label is compared as one for drift).
        if feature.HasField("bool_domain") and feature.type == schema_pb2.INT:
            feature.ClearField("bool_domain")
        if feature.HasField("domain") or feature.HasField("string_domain"):
            feature.distribution_constraints.min_domain_mass = MIN_DOMAIN_MASS
            feature.drift_comparator.infinity_norm.threshold = DRIFT_LINF_THRESHOLD
    for split in io.SPLITS[1:]:
        _add_sparse_eval_only(schema, stats[split])
    # The label is needed for training, not in a serving request.
    schema.default_environment.extend([TRAINING, SERVING])
    tfdv.get_feature(schema, label_key).not_in_environment.append(SERVING)
    return schema


def _unseen_in_train(reason) -> bool:
    """A value train never held, found in eval or test: with a schema inferred from train, that is
    what a random split of rare values does (transform maps them to its out-of-vocabulary bucket)."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2
    return reason.type == anomalies_pb2.AnomalyInfo.ENUM_TYPE_UNEXPECTED_STRING_VALUES


def _anomaly_list(anomalies, split: str, comparisons: Optional[bool] = None,
                  warning: Callable = distributions.is_comparison) -> List[dict]:
    """The anomalies as dicts; only the warnings (comparisons=True: by default the comparator
    findings), only the others (False), or all (None)."""
    out = []
    for name, info in sorted(anomalies.anomaly_info.items()):
        reasons = [r for r in info.reason if comparisons is None or bool(warning(r)) == comparisons]
        if comparisons is not None and not reasons:
            continue
        every = len(reasons) == len(info.reason)
        description = (info.description if every and info.description else
                       "; ".join(r.description for r in reasons))
        short = info.short_description if every else "; ".join(r.short_description for r in reasons)
        out.append({"split": split, "feature": name, "severity": info.Severity.Name(info.severity),
                    "short": short, "description": description})
    if comparisons is not True and anomalies.HasField("dataset_anomaly_info"):
        info = anomalies.dataset_anomaly_info
        out.append({"split": split, "feature": "(dataset)", "severity": info.Severity.Name(info.severity),
                    "short": info.short_description, "description": info.description})
    return out


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _split_table(stats) -> str:
    from tensorflow_metadata.proto.v0 import statistics_pb2
    ds = stats.datasets[0]
    rows = []
    for name, f in sorted(distributions.feature_stats(stats).items()):
        kind = statistics_pb2.FeatureNameStatistics.Type.Name(f.type)
        which = f.WhichOneof("stats")
        s = getattr(f, which) if which else None
        present, missing = distributions.presence(f)
        total = present + missing
        missing_pct = 100.0 * missing / total if total else 0.0
        if which == "num_stats":
            detail = [_fmt(s.mean), _fmt(s.std_dev), _fmt(s.min), _fmt(s.max), "", ""]
        elif which == "string_stats":
            top = ", ".join(f"{v.value} ({int(v.frequency)})" for v in s.top_values[:5])
            detail = ["", "", "", "", str(s.unique), top]
        else:
            detail = [""] * 6
        shown = "<0.1%" if 0 < missing_pct < 0.05 else f"{missing_pct:.1f}%"
        cells = [name, kind, str(present), shown] + detail
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in
                   ("feature", "type", "count", "missing", "mean", "std", "min", "max", "unique", "top values"))
    return (f"<p>{ds.num_examples} examples, {len(ds.features)} features</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _drift_section(drift: List[dict], current, baseline) -> str:
    if baseline is None:
        return "<p>No previous span to compare with (first run, or no baseline statistics).</p>"
    if not drift:
        return '<p class="ok">No drift against the previous span.</p>'
    return ("<ul>" + "".join(f"<li><b>{html.escape(a['feature'])}</b> ({a['action']}): "
                             f"{html.escape(a['description'])}</li>" for a in drift) + "</ul>"
            + "".join(distributions.side_by_side(a["feature"], *distributions.pair(baseline, current, a["feature"]),
                                                 ("previous span", "this span")) for a in drift))


_STYLE = """<style>
body { font-family: sans-serif; margin: 1.5em; max-width: 1200px; }
table { border-collapse: collapse; margin-bottom: 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
td:last-child { overflow-wrap: anywhere; }
th { background: #eee; } .ok { color: #070; } h1 .bad { color: #a00; } .muted { color: #777; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; } figure { margin: 0; } svg { max-width: 100%; height: auto; }
</style>"""

# Train vs eval plots on the page: the most divergent features, the rest in a table (a wide table
# would otherwise make a page of hundreds of charts).
PLOTTED_FEATURES = 8


def _drift_report(drift: List[dict], current, baseline, baseline_source: str) -> str:
    verdict = f'<span class="bad">({len(drift)} features drifted)</span>' if drift else ""
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>kfx drift</title>{_STYLE}</head><body>'
            f"<h1>Drift against the previous span {verdict}</h1>"
            f"<p>Previous span: {html.escape(baseline_source or 'none')}</p>"
            f"{_drift_section(drift, current, baseline)}</body></html>")


def _split_distributions(train, other, other_name: str) -> str:
    """Train vs ``other`` per feature: paired bars for the ``PLOTTED_FEATURES`` most divergent,
    the Jensen-Shannon divergence of every other feature in a table."""
    ranked = distributions.compared(train, other)
    if not ranked:
        return "<p>No feature has values in both splits.</p>"
    shown, rest = ranked[:PLOTTED_FEATURES], ranked[PLOTTED_FEATURES:]
    charts = "".join(distributions.side_by_side(f"{name} (JS {js:.3f})", a, b, (io.TRAIN, other_name))
                     for name, js, a, b in shown)
    table = ""
    if rest:
        rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{js:.4f}</td></tr>" for name, js, _, _ in rest)
        table = (f"<p>The other {len(rest)} features, less divergent:</p>"
                 f"<table><thead><tr><th>feature</th><th>JS divergence</th></tr></thead><tbody>{rows}</tbody></table>")
    return (f'<p class="muted">Jensen-Shannon divergence (base 2: 0 same, 1 disjoint) of each feature\'s '
            f"distribution in {html.escape(other_name)} against train: numeric features on the train split's "
            f"deciles, categorical ones on their most frequent values. The {len(shown)} most divergent of "
            f"{len(ranked)} are drawn.</p><div class=\"charts\">{charts}</div>{table}")


def _skew_section(split_skew: List[dict]) -> str:
    if not split_skew:
        return '<p class="ok">eval and test match train.</p>'
    return ('<p class="muted">Warnings, not anomalies: the splits are a random split of one file.</p><ul>'
            + "".join(f"<li>[{html.escape(a['split'])}] <b>{html.escape(a['feature'])}</b>: "
                      f"{html.escape(a['description'])}</li>" for a in split_skew) + "</ul>")


def _report(stats: dict, anomalies: List[dict], split_skew: List[dict], schema_source: str) -> str:
    if anomalies:
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(a[k]))}</td>" for k in
                                         ("split", "feature", "severity", "short", "description")) + "</tr>"
                       for a in anomalies)
        anomaly_html = ("<table><thead><tr><th>split</th><th>feature</th><th>severity</th><th>anomaly</th>"
                        f"<th>description</th></tr></thead><tbody>{rows}</tbody></table>")
    else:
        anomaly_html = '<p class="ok">No anomalies.</p>'
    splits = "".join(f'<section id="split-{html.escape(split)}"><h2>Split: {html.escape(split)}</h2>'
                     f"{_split_table(s)}</section>" for split, s in stats.items())
    distributions_html = (f'<section id="distributions"><h2>Feature distributions: train vs {io.EVAL}</h2>'
                          f"{_split_distributions(stats[io.TRAIN], stats[io.EVAL], io.EVAL)}</section>")
    # Inline CSS only: the report must render with no network access.
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>kfx data validation</title>
{_STYLE}</head><body>
<h1>Data validation {'<span class="bad">(' + str(len(anomalies)) + ' anomalies)</span>' if anomalies else ''}</h1>
<p>Schema: {html.escape(schema_source)}</p>
<section id="anomalies"><h2>Anomalies</h2>{anomaly_html}</section>
<section id="split-skew"><h2>Skew between the splits</h2>{_skew_section(split_skew)}</section>
{distributions_html}
{splits}
</body></html>
"""


def _load_train_statistics(path: str, what: str):
    import tensorflow_data_validation as tfdv
    file = os.path.join(path, io.TRAIN, STATS_FILE) if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise ValueError(f"{what} {path}: no statistics file ({io.TRAIN}/{STATS_FILE})")
    return tfdv.load_stats_binary(file)


def _drift_schema(schema):
    """The schema for span-to-span drift: numeric features get a Jensen-Shannon comparator
    unless the (curated) schema already sets one."""
    from tensorflow_metadata.proto.v0 import schema_pb2
    drift = type(schema)()
    drift.CopyFrom(schema)
    for feature in drift.feature:
        comparator = feature.drift_comparator
        if (feature.type in (schema_pb2.INT, schema_pb2.FLOAT) and not comparator.HasField("infinity_norm")
                and not comparator.HasField("jensen_shannon_divergence")):
            comparator.jensen_shannon_divergence.threshold = DRIFT_JS_THRESHOLD
    return drift


def _validated(stats, schema, environment: Optional[str], reference=None, names=(io.TRAIN, "split")):
    """(TFDV's anomalies of ``stats``, the current and reference statistics as compared): against the
    schema and, with a ``reference``, against it with the drift comparators at the thresholds for the
    two samples' sizes (numeric features on the reference's deciles: see common/distributions.py)."""
    import tensorflow_data_validation as tfdv
    if reference is None:
        return tfdv.validate_statistics(stats, schema, environment=environment), stats, None
    edges = distributions.reference_edges(reference)
    current, reference = distributions.binned(stats, edges), distributions.binned(reference, edges)
    found = distributions.validate_at_adapted_thresholds(
        lambda s: tfdv.validate_statistics(current, s, environment=environment, previous_statistics=reference),
        schema, "drift_comparator", reference, current, names)
    return found, current, reference


def run(examples_dir: str, statistics_dir: str, schema_dir: str, anomalies_dir: str, report_path: str,
        label_key: str, curated_schema_path: str = "", stop_on_anomalies: bool = True,
        beam_pipeline_args: Sequence[str] = ()) -> dict:
    """Statistics per split, schema (inferred from train or curated), anomalies, report."""
    start = time.time()
    io.require_examples(examples_dir)
    curated = _load_schema(curated_schema_path) if curated_schema_path else None
    _check_label(examples_dir, label_key)
    import tensorflow_data_validation as tfdv

    stage = io.Staging()
    try:
        stats_dir = stage.dir(statistics_dir)
        t = time.time()
        stats = _statistics(examples_dir, stats_dir, beam_pipeline_args, curated)
        stats_seconds = time.time() - t
        if label_key not in distributions.feature_stats(stats[io.TRAIN]):
            raise ValueError(f"label_key {label_key!r}: no such feature in {io.split_file(examples_dir, io.TRAIN)}")

        schema = _drift_schema(curated if curated is not None else _infer_schema(stats, label_key))
        environment = TRAINING if TRAINING in schema.default_environment else None
        # eval and test are also checked against train (skew between the splits).
        found = {split: _validated(stats[split], schema, environment,
                                   None if split == io.TRAIN else stats[io.TRAIN], (io.TRAIN, split))[0]
                 for split in io.SPLITS}
        # Skew between random splits of one file is a warning (see the module's docstring), and so
        # is a value of eval or test that the split kept out of train, unless a curated schema says no.
        warning = {split: (lambda r: distributions.is_comparison(r) or (curated is None and _unseen_in_train(r)))
                   if split != io.TRAIN else distributions.is_comparison for split in io.SPLITS}
        anomalies = [a for split in io.SPLITS
                     for a in _anomaly_list(found[split], split, comparisons=False, warning=warning[split])]
        split_skew = [{**a, "action": "warn"} for split in io.SPLITS[1:]
                      for a in _anomaly_list(found[split], split, comparisons=True, warning=warning[split])]

        schema_staging = stage.dir(schema_dir)
        tfdv.write_schema_text(schema, os.path.join(schema_staging, SCHEMA_FILE))
        anomalies_staging = stage.dir(anomalies_dir)
        for split, anomaly_proto in found.items():
            os.makedirs(os.path.join(anomalies_staging, split))
            tfdv.write_anomalies_text(anomaly_proto, os.path.join(anomalies_staging, split, ANOMALIES_FILE))
        schema_source = f"curated ({curated_schema_path})" if curated is not None else "inferred from the train split"
        with open(stage.file(report_path), "w", encoding="utf-8") as f:
            f.write(_report(stats, anomalies, split_skew, schema_source))
        stage.commit()
    except BaseException:
        stage.abort()
        raise
    if anomalies and stop_on_anomalies:
        # Raised after the (complete) statistics, anomalies and report are written: they are what
        # a person reads to see why the run stopped. A runner never registers a failed step's outputs.
        raise AnomaliesFoundError(anomalies)

    return {
        "num_features": len(schema.feature),
        "features": [f.name for f in schema.feature],
        "schema_source": "curated" if curated is not None else "inferred",
        "num_anomalies": len(anomalies),
        **{f"anomalies_{split}": sum(a["split"] == split for a in anomalies) for split in io.SPLITS},
        "anomalies": anomalies,
        "split_skew": split_skew,
        "statistics_seconds": round(stats_seconds, 2),
        "seconds": round(time.time() - start, 2),
    }


def check_drift(statistics_dir: str, schema_dir: str, baseline_statistics_path: str, drift_dir: str,
                report_path: str, drift_action: str = "block") -> dict:
    """This span's train statistics against the previous span's (``baseline_statistics_path``, ""
    on a first run); writes the drift anomalies and a report, then raises AnomaliesFoundError when
    ``drift_action`` is "block" and a feature drifted."""
    start = time.time()
    choices.check("drift_action", drift_action, choices.DRIFT_ACTIONS)
    import tensorflow_data_validation as tfdv

    current = _load_train_statistics(statistics_dir, "statistics_dir")
    schema = _load_schema(schema_dir, "schema_dir")
    baseline = (_load_train_statistics(baseline_statistics_path, "baseline_statistics_path")
                if baseline_statistics_path else None)
    drift, found = [], None
    if baseline is not None:
        environment = TRAINING if TRAINING in schema.default_environment else None
        found, current, baseline = _validated(current, _drift_schema(schema), environment, baseline,
                                              (PREVIOUS, "this span"))
        drift = [{**a, "action": drift_action} for a in _anomaly_list(found, PREVIOUS, comparisons=True)]
    with io.Staging() as stage:
        out = stage.dir(drift_dir)
        if found is not None:
            tfdv.write_anomalies_text(found, os.path.join(out, ANOMALIES_FILE))
        with open(stage.file(report_path), "w", encoding="utf-8") as f:
            f.write(_drift_report(drift, current, baseline, baseline_statistics_path))
    if drift and drift_action == "block":
        raise AnomaliesFoundError(drift)
    return {"drift_checked": baseline is not None, "drift": drift, "drift_action": drift_action,
            "drifted_features": sorted({a["feature"] for a in drift}),
            "baseline_statistics": baseline_statistics_path, "seconds": round(time.time() - start, 2)}
