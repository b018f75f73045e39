"""evaluate: real TFMA on the raw test split of the shared fixtures (student/teacher SavedModels)."""
import json
import os
import re
import subprocess
import sys

import pytest

from kfx_components.evaluate import executor

# TFMA 0.47 with NumPy >= 1.25 warns once per example (calibration histogram); keep the output readable.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::RuntimeWarning")


def slicing(taxi_config) -> dict:
    """The configured slice features and crossed pairs (an older config names one ``slice_feature``)."""
    features = list(taxi_config.get("slice_features") or [taxi_config["slice_feature"]])
    crossed = list(taxi_config.get("crossed_slices") or [f"payment_type,{features[0]}"])
    return dict(slice_features=features, crossed_slices=crossed)


def specs(taxi_config) -> set:
    """The slicing specs as sets of columns (TFMA may order a crossed slice's columns its own way)."""
    s = slicing(taxi_config)
    return {frozenset([f]) for f in s["slice_features"]} | {frozenset(c.split(",")) for c in s["crossed_slices"]}


def spec_of(slice_name: str) -> frozenset:
    return frozenset(part.split("=", 1)[0] for part in slice_name.split(", "))


def _args(examples, out, **kw):
    m = examples.metadata
    return dict(examples_dir=examples.path, evaluation_dir=str(out / "evaluation"),
                report_path=str(out / "report.html"), label_key=m["label_key"],
                problem_type=m["problem_type"], num_classes=m["num_classes"], **kw)


@pytest.fixture(scope="module")
def strict(examples, student, taxi_config, tmp_path_factory):
    """The student against itself as baseline with an unreachable AUC bound, a demand of
    +0.1 AUC over the baseline (tolerance -0.1) and a 0.01 fairness gap: all three gates must fail."""
    out = tmp_path_factory.mktemp("evaluate_strict")
    facts = executor.run(model_dir=student.path, **slicing(taxi_config), explain_rows=0, max_fairness_gap=0.01,
                         metric_threshold=0.999, baseline_model_dir=student.path,
                         baseline_tolerance=-0.1, **_args(examples, out))
    return facts, out


def test_student_overall_and_per_slice(strict, examples, taxi_config):
    facts, out = strict
    feature = slicing(taxi_config)["slice_features"][0]
    overall = facts["overall"]
    assert overall["auc"] > 0.5, overall
    assert overall["example_count"] == examples.metadata["rows_test"]  # judged on test, not eval
    assert 0.0 <= overall["accuracy"] <= 1.0
    for name in ("precision", "recall"):  # None (undefined) when nothing is predicted positive
        assert overall[name] is None or 0.0 <= overall[name] <= 1.0
    assert facts["per_slice"] and facts["num_slices"] >= 2
    groups = {}
    for name, m in facts["per_slice"].items():
        groups.setdefault(spec_of(name), {})[name] = m
    assert set(groups) == specs(taxi_config), groups.keys()
    assert any(s.startswith(f"{feature}=") for s in facts["per_slice"])
    assert all("auc" in m and m["example_count"] >= 1 for m in facts["per_slice"].values())
    # AUC is undefined where a slice holds one class only: tips paid in cash are not recorded, so the
    # cash slice has no positive (TFMA reports 0 there; the facts say None, the page "n/a")
    if "payment_type=Cash" in facts["per_slice"]:
        assert facts["per_slice"]["payment_type=Cash"]["auc"] is None
    assert all(m["auc"] is None or 0.0 <= m["auc"] <= 1.0 for m in facts["per_slice"].values())
    # every test row is in exactly one slice of each spec (when no slice was left out of the facts)
    for group in groups.values():
        spec = executor.fairness.spec_name(next(iter(group)))
        if len(group) == facts["slices_per_spec"][spec]:
            assert sum(m["example_count"] for m in group.values()) == overall["example_count"]
    # ROC points and the confusion matrix at 0.5.
    roc = facts["roc"]
    assert len(roc["fpr"]) == len(roc["tpr"]) == len(roc["thresholds"]) > 10
    assert min(roc["fpr"]) == 0.0 and max(roc["fpr"]) == 1.0 and max(roc["tpr"]) == 1.0
    cm = facts["confusion_matrix"]
    assert len(cm) == 2 and sum(map(sum, cm)) == overall["example_count"]
    assert facts["seconds"] > 0
    # TFMA's own output is there and the facts are JSON.
    assert os.path.exists(out / "evaluation" / "eval_config.json")
    json.dumps(facts, allow_nan=False)


def test_the_model_is_compared_with_the_trivial_predictor_and_a_classical_reference(strict, examples):
    facts, out = strict
    t = facts["trust"]
    assert t["test_rows"] == examples.metadata["rows_test"] and t["metric"] == "auc"
    assert t["trivial"]["metric"] == pytest.approx(0.5)  # a constant score ranks nothing
    assert "prior" in t["trivial"]["predictor"]
    linear, boosting = t["references"]["linear"], t["references"]["boosting"]
    assert linear["estimator"] == "LogisticRegression" and 0.6 < linear["metric"] <= 1.0
    assert 0.6 < boosting["metric"] <= 1.0
    low, high = t["model"]["ci"]
    assert low <= facts["overall"]["auc"] + 1e-3 and t["model"]["metric"] <= high
    assert high - low < 0.2  # ~600 test rows: a usable interval
    assert t["vs_trivial_ci"][0] > 0  # this model beats guessing, with confidence
    # the paired difference to the boosting reference holds the point difference and is narrower than
    # the two models' own intervals side by side
    gap_low, gap_high = t["vs_boosting_ci"]
    assert gap_low <= t["model"]["metric"] - boosting["metric"] <= gap_high
    assert gap_high - gap_low < (high - low) + (boosting["ci"][1] - boosting["ci"][0])
    page = (out / "report.html").read_text()
    assert "Against simple models" in page and "LogisticRegression" in page
    assert "against the boosting reference" in page


def test_bootstrap_auc_matches_sklearn_and_covers_the_truth():
    import numpy as np
    from sklearn.metrics import roc_auc_score
    from kfx_components.evaluate import trust

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 400).astype(float)
    scores = labels * 0.8 + rng.normal(0, 0.7, 400)   # a real but imperfect signal
    outputs = {"model": scores[:, None], "trivial": np.full((400, 1), 0.3)}
    assert trust.metric("binary", labels, outputs["model"]) == pytest.approx(roc_auc_score(labels, scores))
    samples = trust.bootstrap("binary", labels, outputs, resamples=400)
    low, high = trust.interval(samples["model"])
    assert low < roc_auc_score(labels, scores) < high and np.allclose(samples["trivial"], 0.5)
    noise = {"model": rng.normal(size=(400, 1)), "trivial": np.full((400, 1), 0.5)}
    low, high = trust.interval(trust.bootstrap("binary", labels, noise, resamples=400)["model"])
    assert low < 0.5 < high  # random scores: the interval straddles the trivial AUC, no blessing


def _example(**cells) -> bytes:
    import tensorflow as tf

    def feature(v):
        if isinstance(v, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
        if isinstance(v, float):
            return tf.train.Feature(float_list=tf.train.FloatList(value=[v]))
        if isinstance(v, int):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[]))   # []: an int64 feature with no value
    return tf.train.Example(features=tf.train.Features(
        feature={k: feature(v) for k, v in cells.items()})).SerializeToString()


def test_split_rows_are_the_records_cells_at_an_even_stride(tmp_path):
    """The vectorized reader gives what parsing each tf.Example gives: a cell's first value, text
    decoded (invalid UTF-8 replaced), NaN where a record lacks the feature or it has no value."""
    import numpy as np
    import tensorflow as tf
    from kfx_components.common import io
    from kfx_components.evaluate import trust

    records = [_example(label=i % 2, x=i / 4, t=b"\xff" if i == 4 else f"v{i % 2}".encode(),
                        **({} if i == 6 else {"n": i if i % 3 else []}))   # row 6 lacks n, 0, 3, 9 have none
               for i in range(10)]
    io.write_records(io.split_file(str(tmp_path), io.TEST), records)
    columns = {"label": "int64", "n": "int64", "x": "float", "t": "bytes", "never": "float"}
    split = trust.read_split(str(tmp_path), io.TEST, "label", columns, max_rows=4)   # stride ceil(10 / 4) = 3
    assert split.records == records[::3]
    assert split.labels.tolist() == [0.0, 1.0, 0.0, 1.0]
    table = split.table
    assert list(table.columns) == ["n", "x", "t", "never"]
    assert np.isnan(table["n"]).all()                  # rows 0, 3, 6, 9: no value or no feature
    assert table["x"].tolist() == [float(np.float32(i / 4)) for i in (0, 3, 6, 9)]
    assert table["t"].tolist() == ["v0", "v1", "v0", "v1"] and table["never"].isna().all()
    every = trust.read_split(str(tmp_path), io.TEST, "label", columns).table
    assert every["t"][4] == b"\xff".decode("utf-8", "replace")
    assert every["n"].dtype == np.float64 and every["n"][[1, 2, 4]].tolist() == [1, 2, 4]
    assert np.isnan(every["n"][[0, 3, 6, 9]]).all()
    parsed = tf.train.Example.FromString(records[5]).features.feature
    assert every["x"][5] == parsed["x"].float_list.value[0] and every["n"][5] == parsed["n"].int64_list.value[0]


def test_explanation_rows_serialize_as_tf_examples():
    """SHAP's rows, joined column by column, parse to the cells they encode (NaN: absent)."""
    import numpy as np
    import pandas as pd
    import tensorflow as tf
    from kfx_components.evaluate import explain

    table = pd.DataFrame({"n": [1, 2, 3], "x": [0.5, np.nan, -2.25], "t": ["a", "b" * 200, np.nan]})
    codec = explain._Codec(table, {"n": "int64", "x": "float", "t": "bytes"})
    rows = np.vstack([codec.encode(table)] * 70)        # the long text: an Example over 127 bytes
    rows[::2, 1] = 1e30
    records = codec.serialize(rows)
    assert len(records) == len(rows)
    for row, record in zip(rows, records):
        feature = tf.train.Example.FromString(record).features.feature
        assert feature["n"].int64_list.value == [int(row[0])]
        assert list(feature["x"].float_list.value) == ([] if np.isnan(row[1]) else [np.float32(row[1])])
        assert [v.decode() for v in feature["t"].bytes_list.value] == ([] if np.isnan(row[2]) else
                                                                        [codec.vocab["t"][int(row[2])]])


def test_explanation_budget_shrinks_the_sample_then_skips():
    from kfx_components.evaluate import explain

    assert explain.sample_size(16, 200, 25) == (200, 25, "")                    # taxi-sized: as asked
    rows, bg, note = explain.sample_size(100, 200, 25)
    assert (rows, bg) == (39, 25) and "100 features" in note                    # rows first
    assert rows * (2 * 100 + 1) * bg * 100 <= explain.MAX_CELLS < (rows + 1) * (2 * 100 + 1) * bg * 100
    rows, bg, _ = explain.sample_size(200, 200, 25)
    assert bg == explain.SMALL_BACKGROUND and rows >= explain.MIN_ROWS          # then the background
    rows, bg, note = explain.sample_size(1000, 200, 25)
    assert rows == 0 and note.startswith("skipped: 1000 features")


def test_a_wide_table_is_explained_on_a_smaller_sample_or_skipped(monkeypatch):
    """A model that is a known function of its features: the reduced sample still ranks the heavy
    feature first and adds up; a table past the budget is skipped before the model is called."""
    import numpy as np
    import pandas as pd
    import tensorflow as tf
    from kfx_components.evaluate import explain

    n_features, rng = 20, np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(300, n_features)), columns=[f"c{j}" for j in range(n_features)])
    weights = np.full(n_features, 0.1)
    weights[7] = 3.0
    spec = {c: tf.io.FixedLenFeature([], tf.float32, default_value=0.0) for c in table.columns}

    def serve(examples):
        parsed = tf.io.parse_example(examples, spec)
        z = tf.add_n([parsed[c] * float(w) for c, w in zip(table.columns, weights)])
        return {"probabilities": tf.sigmoid(z)[:, None]}

    columns = dict.fromkeys(table.columns, "float")
    monkeypatch.setattr(explain, "MAX_CELLS", 200_000)
    e = explain.explain(serve, table, columns, "binary", 2, rows=200)
    assert (e["rows"], e["background_rows"]) == (explain.sample_size(n_features, 200, 25)[:2])
    assert e["rows"] < 200 and e["background_rows"] == explain.SMALL_BACKGROUND and "20 features" in e["sample_note"]
    assert e["importance"][0]["feature"] == "c7" and e["additivity_max_error"] < 1e-4
    assert "Sample: " in explain.section(e)

    monkeypatch.setattr(explain, "MAX_CELLS", 1_000)
    skipped = explain.explain(None, table, columns, "binary", 2, rows=200)   # None: never called
    assert skipped == {"skipped": skipped["skipped"], "features": n_features}
    assert "Explanation skipped: 20 features need" in explain.section(skipped)


def test_strict_threshold_is_not_blessed(strict):
    facts, _ = strict
    assert facts["blessed"] is False
    assert any("auc" in r and "0.999" in r for r in facts["reasons"]), facts["reasons"]


def test_better_baseline_fails_change_threshold(strict):
    """Demanding +0.1 AUC over the baseline cannot pass against the same model."""
    facts, _ = strict
    assert facts["baseline_used"] is True
    assert any("auc" in r and "baseline" in r for r in facts["reasons"]), facts["reasons"]
    assert abs(facts["diff_overall"]["auc"]) < 1e-6
    assert facts["baseline_overall"]["auc"] == facts["overall"]["auc"]


def test_fairness_rates_per_slice_and_their_gaps(strict, taxi_config):
    """Fairness Indicators from TFMA: the overall rates at 0.5 agree with the confusion matrix, every slice
    of each spec has FPR/FNR/TPR at each threshold, gaps are slice - overall, and the largest gap is the
    largest |gap| over slices of at least MIN_SLICE_ROWS rows."""
    from kfx_components.evaluate import fairness
    facts, _ = strict
    fair = facts["fairness"]
    (tn, fp), (fn, tp) = facts["confusion_matrix"]
    overall = fair["overall"]["0.5"]
    assert overall["false_positive_rate"] == pytest.approx(fp / (fp + tn), abs=1e-4)
    assert overall["false_negative_rate"] == pytest.approx(fn / (fn + tp), abs=1e-4)
    assert overall["true_positive_rate"] == pytest.approx(tp / (fn + tp), abs=1e-4)
    assert {frozenset(spec.split(" x ")) for spec in fair["slices"]} == specs(taxi_config)
    eligible = []
    for spec, slices in fair["slices"].items():
        for s in slices:
            assert set(s["rates"]) == {"0.25", "0.5", "0.75"}
            for t in s["rates"]:
                for rate in fairness.RATES:
                    value, gap = s["rates"][t][rate], s["gaps"][t][rate]
                    if value is not None:
                        assert gap == pytest.approx(value - fair["overall"][t][rate], abs=1e-5)
            # a higher threshold predicts fewer positives: FPR cannot rise
            fprs = [s["rates"][t]["false_positive_rate"] for t in ("0.25", "0.5", "0.75")]
            if None not in fprs:
                assert fprs[0] >= fprs[1] >= fprs[2]
            if s["example_count"] >= fair["min_slice_rows"]:
                eligible += [abs(s["gaps"]["0.5"][r]) for r in fairness.GATED_RATES if s["gaps"]["0.5"][r] is not None]
    assert abs(fair["largest_gap"]["gap"]) == pytest.approx(max(eligible))


def test_fairness_gate_blocks_a_large_gap(strict):
    """The gate (off by default): max_fairness_gap 0.01 is below the largest gap, so the model is not
    blessed and the reason names the slice and the numbers."""
    facts, _ = strict
    worst = facts["fairness"]["largest_gap"]
    assert abs(worst["gap"]) > 0.01 and facts["max_fairness_gap"] == 0.01
    reason = [r for r in facts["reasons"] if r.startswith("fairness:")]
    assert facts["blessed"] is False and len(reason) == 1
    assert worst["slice"] in reason[0] and f"{worst['gap']:+.4f}" in reason[0] and "0.01" in reason[0]


def test_fairness_summary_gates_only_slices_large_enough():
    """A tiny slice with a huge gap is reported, not gated; the gated gap is the largest of the rest."""
    from kfx_components.evaluate import fairness

    def rates(fpr, fnr, n):
        out = {"example_count": n}
        for t in fairness.THRESHOLDS:
            out.update({f"false_positive_rate@{t:g}": fpr, f"false_negative_rate@{t:g}": fnr,
                        f"true_positive_rate@{t:g}": 1 - fnr})
        return out
    by_slice = {"Overall": rates(0.1, 0.2, 1000), "g=a": rates(0.15, 0.2, 500), "g=b": rates(0.05, 0.35, 480),
                "g=c": rates(0.9, 0.9, 5)}
    off = fairness.summarize(by_slice)
    assert off["reasons"] == [] and off["largest_gap"]["slice"] == "g=b"
    assert off["largest_gap"]["gap"] == pytest.approx(0.15) and off["largest_gap"]["rate"] == "false_negative_rate"
    assert [s["slice"] for s in off["slices"]["g"]] == ["g=a", "g=b", "g=c"]  # reported, largest first
    on = fairness.summarize(by_slice, max_gap=0.1)
    assert len(on["reasons"]) == 1 and "g=b" in on["reasons"][0] and "+0.1500" in on["reasons"][0]
    assert fairness.summarize(by_slice, max_gap=0.2)["reasons"] == []


def test_report_is_self_contained(strict, taxi_config):
    _, out = strict
    page = (out / "report.html").read_text()
    assert "NOT BLESSED" in page and "auc" in page and slicing(taxi_config)["slice_features"][0] in page
    assert "Fairness Indicators" in page and "<svg" in page
    assert "baseline" in page and "0.999" in page
    assert not re.search(r"https?://|<script|<link|<img|@import|src=", page, re.I)


def _run_component(examples, student, taxi_config, baseline_model_uri, out, explain_rows=0):
    from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Metrics, Model
    from kfx_components.evaluate.component import evaluate

    arts = dict(evaluation=Artifact(name="evaluation", uri=str(out / "evaluation")),
                blessing=Artifact(name="blessing", uri=str(out / "blessing")),
                metrics=Metrics(name="metrics", uri=str(out / "metrics")),
                classification_metrics=ClassificationMetrics(name="cm", uri=str(out / "cm")),
                report=HTML(name="report", uri=str(out / "report.html")),
                explanation=HTML(name="explanation", uri=str(out / "explanation.html")))
    evaluate.python_func(model=Model(name="1", uri=student.path, metadata={}),
                         examples=Dataset(name="2", uri=examples.path, metadata=dict(examples.metadata)),
                         metric_threshold=0.0, baseline_tolerance=0.01, min_vs_reference=0.85,
                         baseline_model_uri=baseline_model_uri, explain_rows=explain_rows,
                         **slicing(taxi_config), **arts)
    return arts


def test_component_first_run_then_same_model_baseline(examples, student, taxi_config, tmp_path):
    """First run: no baseline (resolve found none), no threshold -> blessed. Once v1 is in the
    registry, resolve's URI of it is the baseline, and the same model passes the change threshold."""
    from kfx_formats import registry
    from kfx_components.resolve import executor as resolve

    reg = str(tmp_path / "registry")
    first = _run_component(examples, student, taxi_config, "", tmp_path / "first", explain_rows=40)
    meta = first["blessing"].metadata
    # what the model card reads: the fairness summary and the explanation travel in the metadata
    assert meta["fairness"]["largest_gap"] and 20 <= meta["explanation"]["rows"] <= 40
    assert meta["slice_features"] == slicing(taxi_config)["slice_features"]
    assert "Explanation" in (tmp_path / "first" / "explanation.html").read_text()
    assert first["explanation"].metadata["rows"] == meta["explanation"]["rows"]
    assert meta["blessed"] is True, meta["reasons"]
    assert meta["baseline_used"] is False and meta["baseline_uri"] == ""
    assert os.path.exists(tmp_path / "first" / "blessing" / "BLESSED")
    assert first["metrics"].metadata["auc"] > 0.5
    assert first["metrics"].metadata["auc_ci_low"] > first["metrics"].metadata["auc_trivial"] == 0.5
    cm = first["classification_metrics"].metadata
    assert len(cm["confidenceMetrics"]) > 10
    assert [a["displayName"] for a in cm["confusionMatrix"]["annotationSpecs"]] == \
        examples.metadata["label_vocabulary"]
    assert "BLESSED" in (tmp_path / "first" / "report.html").read_text()

    registry.publish({"saved_model": student.path}, {"model_card.md": b"# v1"}, reg, taxi_config["model_name"])
    baseline = resolve.run(reg, taxi_config["model_name"])["model_uri"]
    second = _run_component(examples, student, taxi_config, baseline, tmp_path / "second")
    meta = second["blessing"].metadata
    assert meta["blessed"] is True, meta["reasons"]
    assert meta["baseline_used"] is True and meta["baseline_uri"] == baseline and baseline.endswith("v1/saved_model")
    assert "baseline" in (tmp_path / "second" / "report.html").read_text()


def test_unknown_slice_feature_raises(examples, student, tmp_path):
    with pytest.raises(ValueError, match="slice_features: 'no_such_feature'"):
        executor.run(model_dir=student.path, slice_features=["no_such_feature"], **_args(examples, tmp_path))
    with pytest.raises(ValueError, match="crossed_slices: 'nope'"):
        executor.run(model_dir=student.path, crossed_slices=["payment_type,nope"], **_args(examples, tmp_path))
    with pytest.raises(ValueError, match="crossed_slices entry 'payment_type'"):
        executor.run(model_dir=student.path, crossed_slices=["payment_type"], **_args(examples, tmp_path))
    with pytest.raises(ValueError, match="max_fairness_gap"):
        executor.run(model_dir=student.path, max_fairness_gap=-0.1, **_args(examples, tmp_path))


def test_bad_inputs_raise(examples, student, tmp_path):
    with pytest.raises(ValueError, match="problem_type"):
        executor.run(model_dir=student.path, **{**_args(examples, tmp_path), "problem_type": "ranking"})
    with pytest.raises(ValueError, match="baseline_model_dir"):
        executor.run(model_dir=student.path, baseline_model_dir=str(tmp_path / "nope"),
                     **_args(examples, tmp_path))


def test_component_compiles_without_tensorflow(tmp_path):
    code = ("import sys; from kfp import compiler; "
            "from kfx_components.evaluate.component import evaluate; "
            f"compiler.Compiler().compile(evaluate, {str(tmp_path / 'e.yaml')!r}); "
            "assert 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert "kfx-evaluate" in (tmp_path / "e.yaml").read_text()
