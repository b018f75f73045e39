"""validate: TFDV statistics per split, schema, anomalies (curated schema, drift), HTML report."""
import os
import re
import shutil

import pytest

from kfx_components.common import io


def _run(examples_dir, out, **kw):
    from kfx_components.validate import executor
    args = dict(label_key="label")
    args.update(kw)
    return executor.run(examples_dir=str(examples_dir), statistics_dir=str(out / "statistics"),
                        schema_dir=str(out / "schema"), anomalies_dir=str(out / "anomalies"),
                        report_path=str(out / "report.html"), **args)


def _outputs(out):
    return [p for p in ("statistics", "schema", "anomalies", "report.html") if (out / p).exists()]


def _schema(path):
    import tensorflow_data_validation as tfdv
    return tfdv.load_schema_text(os.path.join(path, "schema.pbtxt"))


def test_statistics_per_split(validated, examples):
    import tensorflow_data_validation as tfdv
    m = examples.metadata
    for split, rows in (("train", m["rows_train"]), ("eval", m["rows_eval"]), ("test", m["rows_test"])):
        stats = tfdv.load_stats_binary(os.path.join(validated.statistics.path, split, "FeatureStats.pb"))
        assert stats.datasets[0].num_examples == rows
        names = {f.path.step[0] for f in stats.datasets[0].features}
        assert {"fare", "company", "label"} <= names
    assert validated.facts["statistics_seconds"] > 0 and validated.facts["seconds"] >= validated.facts["statistics_seconds"]


def test_schema_has_the_features(validated, examples):
    from tensorflow_metadata.proto.v0 import schema_pb2
    schema = _schema(validated.schema.path)
    features = {f.name: f for f in schema.feature}
    present = {name for r in io.read_examples(io.split_file(examples.path, "train")) for name in r}
    assert present <= set(features) and validated.facts["num_features"] == len(features)
    assert features["fare"].type == schema_pb2.FLOAT and features["company"].type == schema_pb2.BYTES
    assert features["trip_start_hour"].type == schema_pb2.INT
    assert "SERVING" in features["label"].not_in_environment  # a serving request carries no label
    assert features["fare"].presence.min_fraction == 1.0  # never missing in train: required
    assert features["dropoff_latitude"].presence.min_fraction < 1.0  # missing cells in train


def test_sample_passes_and_anomaly_files_written(validated):
    assert validated.facts["num_anomalies"] == 0 and validated.facts["anomalies"] == []
    for split in io.SPLITS:
        assert os.path.isfile(os.path.join(validated.anomalies.path, split, "anomalies.pbtxt"))


def test_report_is_self_contained(validated, examples):
    text = open(validated.report).read()
    for name in ("fare", "company", "payment_type", "trip_start_hour"):
        assert name in text
    assert "Split: train" in text and "Split: eval" in text and "No anomalies" in text
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert not re.search(r"@import|url\(", text, re.I)


def test_report_draws_train_vs_eval_for_the_most_divergent_features(validated):
    from kfx_components.validate import executor
    text = open(validated.report).read()
    section = text[text.index('<section id="distributions">'):]
    section = section[:section.index("</section>")]
    drawn = re.findall(r'aria-label="([^"]+) \(JS ([0-9.]+)\) distributions"', section)
    listed = re.findall(r"<tr><td>([^<]+)</td><td>([0-9.]+)</td></tr>", section)
    assert len(drawn) == executor.PLOTTED_FEATURES and listed   # bounded: the rest is a table
    divergences = [float(js) for _, js in drawn] + [float(js) for _, js in listed]
    assert divergences == sorted(divergences, reverse=True)      # most divergent drawn first
    assert {"fare", "company", "trip_miles"} <= {name for name, _ in drawn + listed}
    assert section.count("&#9632; train</span> vs") == len(drawn) and "&#9632; eval</span>" in section


def test_js_divergence_separates_same_from_shifted():
    from kfx_components.common import distributions as d
    same = d.js_divergence({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5})
    shifted = d.js_divergence({"a": 0.9, "b": 0.1}, {"a": 0.1, "b": 0.9})
    disjoint = d.js_divergence({"a": 1.0}, {"b": 1.0})
    assert same == 0.0 and 0.3 < shifted < 1.0 and abs(disjoint - 1.0) < 1e-9
    # top values that do not cover a split share one "other" bucket
    assert d.js_divergence({"a": 0.5}, {"a": 0.5}) == 0.0


@pytest.fixture(scope="module")
def tightened_schema(validated, tmp_path_factory):
    """The inferred schema with `company`'s domain cut to its first few values."""
    from google.protobuf import text_format
    schema = _schema(validated.schema.path)
    domain = next(d for d in schema.string_domain if d.name == "company")
    kept = list(domain.value)[:3]
    del domain.value[:]
    domain.value.extend(kept)
    out = tmp_path_factory.mktemp("curated")
    (out / "schema.pbtxt").write_text(text_format.MessageToString(schema))
    return out


def test_curated_schema_anomaly_stops_with_a_complete_report(examples, tightened_schema, tmp_path):
    from kfx_components.validate.executor import AnomaliesFoundError
    with pytest.raises(AnomaliesFoundError) as err:
        _run(examples.path, tmp_path, curated_schema_path=str(tightened_schema / "schema.pbtxt"))
    assert isinstance(err.value, ValueError)
    assert re.search(r"\[train\] company: .*(schema|domain)", str(err.value))
    assert {a["feature"] for a in err.value.anomalies} == {"company"}
    # Whole outputs (the report names the anomaly) and no staging leftovers.
    assert _outputs(tmp_path) == ["statistics", "schema", "anomalies", "report.html"]
    assert "company" in (tmp_path / "report.html").read_text()
    assert not [p for p in tmp_path.rglob("*") if "partial" in p.name]


def test_curated_schema_without_stop_reports_and_catches_drift(examples, tightened_schema, tmp_path):
    """Curated schema given as a directory; eval rewritten so payment_type is all "Cash": skew between
    the splits, reported as a warning (a random split of one file never stops a run), not an anomaly."""
    import tensorflow as tf
    data = tmp_path / "examples"
    shutil.copytree(examples.path, data)
    records = []
    for r in io.read_records(io.split_file(examples.path, "eval")):
        ex = tf.train.Example.FromString(r)
        ex.features.feature["payment_type"].bytes_list.value[:] = [b"Cash"]
        records.append(ex.SerializeToString())
    os.remove(io.split_file(data, "eval"))
    io.write_records(io.split_file(data, "eval"), records)

    out = tmp_path / "out"
    facts = _run(data, out, curated_schema_path=str(tightened_schema), stop_on_anomalies=False)
    found = {(a["split"], a["feature"]): a["description"] for a in facts["anomalies"]}
    assert ("train", "company") in found and ("eval", "company") in found
    assert not any(feature == "payment_type" for _, feature in found)
    skew = {(a["split"], a["feature"]): a for a in facts["split_skew"]}
    assert re.search(r"Linfty", skew[("eval", "payment_type")]["description"])
    assert skew[("eval", "payment_type")]["action"] == "warn"
    assert facts["num_anomalies"] == len(found) and facts["schema_source"] == "curated"
    assert sorted(_outputs(out)) == ["anomalies", "report.html", "schema", "statistics"]
    assert _schema(out / "schema") == _schema(tightened_schema)  # used as given
    assert "payment_type" in (out / "anomalies" / "eval" / "anomalies.pbtxt").read_text()
    report = (out / "report.html").read_text()
    assert "company" in report and "Linfty" in report


def test_full_data_passes_by_default(repo, taxi_config, tmp_path):
    """The whole bundled CSV, split 80/20, validates with no anomalies (inference tuned for it)."""
    from kfx_components.ingest import executor
    examples = tmp_path / "examples"
    executor.run(data_path=str(repo / "pipelines/configs" / taxi_config["data"]), examples_dir=str(examples),
                 label=taxi_config["label"], problem_type=taxi_config["problem_type"], eval_ratio=0.2,
                 drop_columns=taxi_config["drop_columns"])
    facts = _run(examples, tmp_path / "out")
    assert facts["num_anomalies"] == 0, facts["anomalies"]


@pytest.mark.parametrize("kwargs, culprit", [
    (dict(label_key="big_tipper"), "big_tipper"),
    (dict(curated_schema_path="/nonexistent/schema.pbtxt"), "curated_schema_path"),
])
def test_bad_input_names_culprit_and_writes_nothing(examples, tmp_path, kwargs, culprit):
    with pytest.raises(ValueError, match=culprit):
        _run(examples.path, tmp_path, **kwargs)
    assert _outputs(tmp_path) == []


def test_missing_examples_named(tmp_path):
    with pytest.raises(ValueError, match="examples_dir"):
        _run(tmp_path / "nothing", tmp_path)
    assert _outputs(tmp_path) == []


# ---------------------------------------------------------------- drift against the previous span
def _shifted_copy(examples, dest, feature: str, shift=None) -> str:
    """The examples with one feature changed (or, with no shift, removed) in every split: a new
    span whose data moved."""
    import tensorflow as tf
    shutil.copytree(examples.path, dest)
    for split in io.SPLITS:
        records = []
        for r in io.read_records(io.split_file(examples.path, split)):
            ex = tf.train.Example.FromString(r)
            if feature in ex.features.feature:
                if shift is None:
                    del ex.features.feature[feature]
                else:
                    shift(ex.features.feature[feature])
            records.append(ex.SerializeToString())
        os.remove(io.split_file(str(dest), split))
        io.write_records(io.split_file(str(dest), split), records)
    return str(dest)


def _check_drift(statistics_dir, schema_dir, baseline, out, **kw):
    from kfx_components.validate import executor
    return executor.check_drift(statistics_dir=str(statistics_dir), schema_dir=str(schema_dir),
                                baseline_statistics_path=str(baseline), drift_dir=str(out / "drift"),
                                report_path=str(out / "drift.html"), **kw)


def _span_statistics(span, out):
    """validate's statistics and schema of a new span."""
    _run(span, out, stop_on_anomalies=False)
    return out / "statistics", out / "schema"


def test_the_same_data_has_no_drift_against_its_own_statistics(validated, tmp_path):
    facts = _check_drift(validated.statistics.path, validated.schema.path, validated.statistics.path, tmp_path)
    assert facts["drift_checked"] is True and facts["drift"] == []
    assert "No drift against the previous span" in (tmp_path / "drift.html").read_text()
    first = _check_drift(validated.statistics.path, validated.schema.path, "", tmp_path / "first")
    assert first["drift_checked"] is False and "No previous span" in (tmp_path / "first" / "drift.html").read_text()


def test_a_shifted_numeric_feature_blocks_the_run_naming_it(examples, validated, tmp_path):
    from kfx_components.validate import executor

    def triple_and_more(feature):
        feature.float_list.value[:] = [v * 3 + 10 for v in feature.float_list.value]
    span = _shifted_copy(examples, tmp_path / "span", "trip_miles", triple_and_more)
    stats, schema = _span_statistics(span, tmp_path / "validated")
    with pytest.raises(executor.AnomaliesFoundError, match=r"previous span\] trip_miles") as err:
        _check_drift(stats, schema, validated.statistics.path, tmp_path / "out")
    assert [a["feature"] for a in err.value.anomalies] == ["trip_miles"]
    report = (tmp_path / "out" / "drift.html").read_text()   # written before the run stops
    assert "trip_miles" in report and 'aria-label="trip_miles distributions"' in report


def test_drift_can_warn_instead_of_blocking(examples, validated, tmp_path):
    def all_cash(feature):
        feature.bytes_list.value[:] = [b"Cash"]
    span = _shifted_copy(examples, tmp_path / "span", "payment_type", all_cash)
    stats, schema = _span_statistics(span, tmp_path / "validated")
    facts = _check_drift(stats, schema, validated.statistics.path, tmp_path / "out", drift_action="warn")
    assert facts["drifted_features"] == ["payment_type"] and facts["drift"][0]["action"] == "warn"
    with pytest.raises(ValueError, match="drift_action"):
        _check_drift(stats, schema, validated.statistics.path, tmp_path / "bad", drift_action="ignore")


def test_a_dropped_feature_is_caught_by_name(examples, validated, tmp_path):
    """Span 2 without one feature: validate against the schema the first span settled names it."""
    from kfx_components.validate import executor
    gone = _shifted_copy(examples, tmp_path / "dropped", "trip_seconds")
    with pytest.raises(executor.AnomaliesFoundError, match="trip_seconds"):
        _run(gone, tmp_path / "dropped-out", curated_schema_path=validated.schema.path)
