"""ingest: CSV/Parquet -> train/eval/test GZIP TFRecords, labels, types, stratified splits, errors.

Broken input files (one-line errors, end to end through `kfx run`) are in tests/test_bad_input.py.
"""
import collections
import math
import os

import numpy as np
import pandas as pd
import pytest

from kfx_components.common import io


def _records(root):
    return {split: list(io.read_records(io.split_file(root, split))) for split in io.SPLITS}


def _rows(root, split=None):
    splits = [split] if split else io.SPLITS
    return [r for s in splits for r in io.read_examples(io.split_file(root, s))]


def _run(tmp_path, data, name="out", **kw):
    from kfx_components.ingest import executor
    args = dict(label="y", problem_type="binary")
    args.update(kw)
    out = tmp_path / name
    return out, executor.run(data_path=str(data), examples_dir=str(out), **args)


def _half_up(x):
    return int(math.floor(x + 0.5))


def _label_counts(root, label_key, vocabulary):
    """{split: {class text: rows}} read back from the written records."""
    return {split: dict(collections.Counter(vocabulary[r[label_key][0]] for r in _rows(root, split)))
            for split in io.SPLITS}


def test_layout_and_counts(examples, sample_csv):
    m = examples.metadata
    records = _records(examples.path)
    assert sorted(os.listdir(examples.path)) == ["columns.json", "eval", "test", "train"]
    assert io.read_columns(examples.path) == m["columns"]
    assert [len(records[s]) for s in io.SPLITS] == [m["rows_train"], m["rows_eval"], m["rows_test"]]
    assert m["rows_train"] + m["rows_eval"] + m["rows_test"] == m["rows"] == \
        len(pd.read_csv(sample_csv)) - m["dropped_rows"]
    assert m["label_key"] == "label" and m["problem_type"] == "binary" and m["num_classes"] == 2
    assert m["label_vocabulary"] == ["false", "true"]
    assert m["source"] == sample_csv
    # class_counts are what the records hold, not a separate estimate.
    nonzero = {s: {c: n for c, n in counts.items() if n} for s, counts in m["class_counts"].items()}
    assert nonzero == _label_counts(examples.path, "label", m["label_vocabulary"])


def test_splits_are_stratified_by_label(examples, sample_csv, taxi_config):
    """Each class is cut in the asked proportions, so every split has the table's class balance."""
    m = examples.metadata
    df = pd.read_csv(sample_csv)
    overall = collections.Counter(df.eval(taxi_config["label"]).map({False: "false", True: "true"}))
    ratios = {"eval": 0.25, "test": 0.2}   # the fixture's eval_ratio, and the default test_ratio
    for split, ratio in ratios.items():
        assert m["class_counts"][split] == {c: _half_up(n * ratio) for c, n in overall.items()}
    for split in io.SPLITS:
        rows = sum(m["class_counts"][split].values())
        for cls, n in overall.items():   # within one row of the table's proportion
            assert abs(m["class_counts"][split][cls] - rows * n / len(df)) <= 1, (split, cls)


def test_split_ratio_and_determinism(examples, sample_csv, taxi_config, tmp_path):
    m = examples.metadata
    assert abs(m["rows_eval"] / m["rows"] - 0.25) < 0.01 and abs(m["rows_test"] / m["rows"] - 0.2) < 0.01
    out, again = _run(tmp_path, sample_csv, label=taxi_config["label"], eval_ratio=0.25,
                      drop_columns=taxi_config["drop_columns"])
    assert again == {**m, "source": sample_csv}
    for split in io.SPLITS:  # byte-identical files
        with open(io.split_file(examples.path, split), "rb") as a, open(io.split_file(out, split), "rb") as b:
            assert a.read() == b.read()


def test_split_follows_row_content_not_position(sample_csv, taxi_config, tmp_path):
    """The same row lands in the same split whatever the file order (a stable hash, not a counter)."""
    df = pd.read_csv(sample_csv)
    shuffled = tmp_path / "shuffled.csv"
    df.sample(frac=1.0, random_state=0).to_csv(shuffled, index=False)
    args = dict(label=taxi_config["label"], eval_ratio=0.25, drop_columns=taxi_config["drop_columns"])
    a, _ = _run(tmp_path, sample_csv, "a", **args)
    b, _ = _run(tmp_path, shuffled, "b", **args)
    for split in io.SPLITS:
        assert collections.Counter(io.read_records(io.split_file(a, split))) == \
            collections.Counter(io.read_records(io.split_file(b, split)))


def test_split_key_keeps_groups_together(sample_csv, taxi_config, tmp_path):
    out, m = _run(tmp_path, sample_csv, label=taxi_config["label"], eval_ratio=0.3,
                  drop_columns=["tips"], split_key="trip_start_timestamp")
    where = collections.defaultdict(set)
    for split in io.SPLITS:
        for row in _rows(out, split):
            where[row["trip_start_timestamp"][0]].add(split)
    assert all(len(s) == 1 for s in where.values())
    groups = pd.read_csv(sample_csv).groupby("trip_start_timestamp").size()
    assert (groups > 1).any()   # otherwise "never straddles" would hold trivially
    # Whole groups, so the ratios hold up to the size of the last group taken.
    assert abs(m["rows_test"] - 0.2 * m["rows"]) <= groups.max()
    assert abs(m["rows_eval"] - 0.3 * m["rows"]) <= groups.max()
    assert m["split_method"].startswith("grouped by split_key")


def test_full_data_ratio(repo, taxi_config, tmp_path):
    out, m = _run(tmp_path, repo / "pipelines/configs" / taxi_config["data"], label=taxi_config["label"],
                  eval_ratio=0.15, test_ratio=0.2, drop_columns=taxi_config["drop_columns"])
    assert m["rows"] == 15002
    # Stratified: each class rounds once, so a split is off its ratio by at most a row per class.
    assert abs(m["rows_eval"] - 0.15 * m["rows"]) <= m["num_classes"]
    assert abs(m["rows_test"] - 0.2 * m["rows"]) <= m["num_classes"]
    assert m["warnings"] == []


def test_column_types_and_missing_cells(examples, sample_csv, taxi_config):
    df = pd.read_csv(sample_csv)
    cols = examples.metadata["columns"]
    assert set(cols) == set(df.columns) - set(taxi_config["drop_columns"]) | {"label"}
    assert cols["trip_start_hour"] == "int64" and cols["fare"] == "float"
    assert cols["company"] == "bytes" and cols["label"] == "int64"
    # An integer-valued column with missing cells stays int64 (docs/design.md), so codes
    # above 2**24 keep every digit.
    assert cols["dropoff_community_area"] == "int64" and df["dropoff_community_area"].isna().any()
    tracts = {r["dropoff_census_tract"][0] for r in _rows(examples.path) if "dropoff_census_tract" in r}
    assert tracts == set(df["dropoff_census_tract"].dropna().astype("int64"))
    kinds = {"int64": int, "float": float, "bytes": str}
    rows = _rows(examples.path)
    for row in rows:
        assert "tips" not in row and "trip_start_timestamp" not in row
        for name, values in row.items():
            assert len(values) == 1 and isinstance(values[0], kinds[cols[name]]), name
    for name in ("dropoff_latitude", "company", "trip_seconds"):  # a missing cell is an absent feature
        assert sum(name not in r for r in rows) == df[name].isna().sum(), name


def test_expression_label_row_for_row(examples, sample_csv):
    df = pd.read_csv(sample_csv)
    expected = collections.Counter(zip(df["fare"].astype(np.float32).round(2), (df["tips"] > 0.2 * df["fare"]).astype(int)))
    got = collections.Counter((np.float32(r["fare"][0]).round(2), r["label"][0]) for r in _rows(examples.path))
    assert got == expected


def test_parquet_equals_csv(examples, sample_csv, taxi_config, tmp_path):
    parquet = tmp_path / "sample.parquet"
    pd.read_csv(sample_csv).to_parquet(parquet, index=False)
    out, m = _run(tmp_path, parquet, label=taxi_config["label"], eval_ratio=0.25,
                  drop_columns=taxi_config["drop_columns"])
    assert _records(out) == _records(examples.path)
    assert {**m, "source": sample_csv} == examples.metadata


@pytest.fixture(scope="module")
def iris_csv(tmp_path_factory):
    from sklearn.datasets import load_iris
    data = load_iris(as_frame=True)
    df = data.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    df["species"] = [data.target_names[t] for t in df.pop("target")]
    path = tmp_path_factory.mktemp("iris") / "iris.csv"
    df.to_csv(path, index=False)
    return path


def test_multiclass_string_label(iris_csv, tmp_path):
    out, m = _run(tmp_path, iris_csv, label="species", problem_type="multiclass", eval_ratio=0.3)
    assert m["label_vocabulary"] == ["setosa", "versicolor", "virginica"] and m["num_classes"] == 3
    assert m["label_key"] == "species" and m["columns"]["species"] == "int64"
    assert m["columns"]["sepal_length"] == "float"
    df = pd.read_csv(iris_csv)
    got = collections.Counter((round(r["petal_length"][0], 3), m["label_vocabulary"][r["species"][0]])
                              for r in _rows(out))
    assert got == collections.Counter(zip(df["petal_length"].round(3), df["species"]))


def test_numeric_classes_sort_numerically_and_missing_labels_drop(tmp_path):
    df = pd.DataFrame({"x": range(40), "y": [2, 10, 1, None] * 10})
    csv = tmp_path / "d.csv"
    df.to_csv(csv, index=False)
    out, m = _run(tmp_path, csv, problem_type="multiclass", eval_ratio=0.5)
    assert m["label_vocabulary"] == ["1", "2", "10"]  # not "1", "10", "2"
    assert m["dropped_rows"] == 10 and m["rows"] == 30
    # Named in the facts with the count and the first line (header = 1, first NaN is row 4 -> line 5).
    assert any("missing in 10 row(s)" in w and "line 5" in w for w in m["warnings"])
    assert {(r["x"][0], m["label_vocabulary"][r["y"][0]]) for r in _rows(out)} == \
        {(x, str(int(y))) for x, y in zip(df.x, df.y) if y == y}


def test_regression_label(tmp_path):
    from sklearn.datasets import load_diabetes
    df = load_diabetes(as_frame=True).frame
    csv = tmp_path / "diabetes.csv"
    df.to_csv(csv, index=False)
    out, m = _run(tmp_path, csv, label="target", problem_type="regression")
    assert m["num_classes"] == 0 and m["label_vocabulary"] == [] and m["columns"]["target"] == "float"
    assert "class_counts" not in m
    assert sorted(r["target"][0] for r in _rows(out)) == pytest.approx(sorted(df.target), rel=1e-6)
    # Stratified by label quantile: each split holds each quarter of the label's range in
    # proportion (a plain hash split of a 88-row test set misses this by ~0.05 often).
    quartiles = np.quantile(df.target, [0.25, 0.5, 0.75])
    for split in io.SPLITS:
        labels = np.array([r["target"][0] for r in _rows(out, split)])
        shares = np.bincount(np.searchsorted(quartiles, labels, side="right"), minlength=4) / len(labels)
        assert np.all(np.abs(shares - 0.25) < 0.04), (split, shares)


def test_small_classes_stay_in_train_and_are_named(tmp_path):
    """A class of 2 rows cannot reach three splits: train keeps it, the facts say so;
    a class of 3 rows gets one row in each split."""
    y = ["common"] * 60 + ["trio"] * 3 + ["pair"] * 2
    csv = tmp_path / "d.csv"
    pd.DataFrame({"x": range(len(y)), "y": y}).to_csv(csv, index=False)
    out, m = _run(tmp_path, csv, problem_type="multiclass")
    assert m["classes_only_in_train"] == ["pair"]
    assert any("'pair'" in w and "train split only" in w for w in m["warnings"])
    assert m["class_counts"]["train"]["pair"] == 2
    assert m["class_counts"]["eval"]["pair"] == m["class_counts"]["test"]["pair"] == 0
    assert [m["class_counts"][s]["trio"] for s in io.SPLITS] == [1, 1, 1]
    assert _label_counts(out, "y", m["label_vocabulary"])["test"] == \
        {c: n for c, n in m["class_counts"]["test"].items() if n}


def test_empty_feature_column_is_a_named_warning(tmp_path):
    csv = tmp_path / "d.csv"
    pd.DataFrame({"x": range(40), "blank": [None] * 40, "y": [0, 1] * 20}).to_csv(csv, index=False)
    out, m = _run(tmp_path, csv)
    assert any("'blank'" in w and "empty in every row" in w for w in m["warnings"])
    assert "blank" in m["columns"] and all("blank" not in r for r in _rows(out))


def test_binary_needs_two_classes(iris_csv, tmp_path):
    with pytest.raises(ValueError, match="species.*exactly 2"):
        _run(tmp_path, iris_csv, label="species", problem_type="binary")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case, kwargs, culprit", [
    ("missing file", dict(data="nope.csv"), "nope.csv"),
    ("unsupported type", dict(data="data.txt"), "data.txt"),
    ("unknown label column", dict(label="big_tipper"), "big_tipper"),
    ("expression with unknown column", dict(label="tips > 0.2 * fares"), "fares"),
    ("unknown drop column", dict(drop_columns=["tips", "nope_col"]), "nope_col"),
    ("unknown split key", dict(split_key="nope_key"), "nope_key"),
    ("eval_ratio zero", dict(eval_ratio=0.0), "eval_ratio"),
    ("eval_ratio one", dict(eval_ratio=1.0), "eval_ratio"),
    ("eval_ratio above one", dict(eval_ratio=1.5), "eval_ratio"),
    ("eval_ratio not a number", dict(eval_ratio="abc"), "eval_ratio 'abc'"),
    ("test_ratio zero", dict(test_ratio=0.0), "test_ratio"),
    ("ratios leave no train rows", dict(eval_ratio=0.5, test_ratio=0.5), "eval_ratio 0.5 \\+ test_ratio 0.5"),
    ("bad problem_type", dict(problem_type="ranking"), "problem_type"),
    ("empty data", dict(data="empty.csv"), "empty.csv"),
    ("regression on text", dict(label="company", problem_type="regression"), "company"),
])
def test_bad_input_names_culprit_and_writes_nothing(case, kwargs, culprit, sample_csv, taxi_config, tmp_path):
    pd.read_csv(sample_csv, nrows=0).to_csv(tmp_path / "empty.csv", index=False)
    (tmp_path / "data.txt").write_text("a,b\n1,2\n")
    args = dict(label=taxi_config["label"], problem_type="binary", drop_columns=["tips"])
    args.update(kwargs)
    data = args.pop("data", sample_csv)
    data = data if os.path.isabs(str(data)) else tmp_path / data
    with pytest.raises(ValueError, match=culprit) as raised:
        _run(tmp_path, data, **args)
    assert "\n" not in str(raised.value) and str(data) in str(raised.value)   # one line, naming the file
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ the streaming Beam engine
@pytest.fixture
def small_ranges(monkeypatch):
    """Byte ranges of 4 KiB, so a small file is read as many ranges (as a large one is)."""
    from kfx_components.ingest import beam_reading
    monkeypatch.setattr(beam_reading, "RANGE_BYTES", 4096)
    monkeypatch.setattr(beam_reading, "BATCH", 97)


def _taxi_args(taxi_config):
    return dict(label=taxi_config["label"], eval_ratio=0.25, drop_columns=taxi_config["drop_columns"])


def test_beam_engine_gives_the_pandas_split(examples, sample_csv, taxi_config, tmp_path, small_ranges):
    """The streaming engine cuts each class at the same ranks: the same records in each split, the same facts."""
    out, m = _run(tmp_path, sample_csv, engine="beam", **_taxi_args(taxi_config))
    assert m.pop("engine") == "beam"
    assert m == examples.metadata
    for split in io.SPLITS:
        assert collections.Counter(io.read_records(io.split_file(out, split))) == \
            collections.Counter(io.read_records(io.split_file(examples.path, split)))
    assert io.read_columns(out) == io.read_columns(examples.path)


def test_beam_engine_reads_parquet_row_groups(examples, sample_csv, taxi_config, tmp_path):
    path = tmp_path / "sample.parquet"
    pd.read_csv(sample_csv).to_parquet(path, row_group_size=700)
    out, m = _run(tmp_path, path, engine="beam", **_taxi_args(taxi_config))
    assert [m[f"rows_{s}"] for s in io.SPLITS] == [examples.metadata[f"rows_{s}"] for s in io.SPLITS]
    assert m["class_counts"] == examples.metadata["class_counts"]


def test_beam_engine_names_the_absolute_line(sample_csv, taxi_config, tmp_path, small_ranges):
    lines = open(sample_csv).read().splitlines()
    lines[2500] += ",extra"          # file line 2501, far past the first range
    bad = tmp_path / "ragged.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as err:
        _run(tmp_path, bad, engine="beam", **_taxi_args(taxi_config))
    message = str(err.value)
    assert "\n" not in message and "line 2501 has" in message and str(bad) in message
    assert not (tmp_path / "out").exists()


def test_beam_engine_stray_text_and_auto_threshold(sample_csv, taxi_config, tmp_path, monkeypatch):
    df = pd.read_csv(sample_csv)
    df.loc[1200, "trip_miles"] = "12 miles"
    path = tmp_path / "stray.csv"
    df.to_csv(path, index=False)
    from kfx_components.ingest import executor
    monkeypatch.setattr(executor, "BEAM_MIN_BYTES", 1)     # auto -> beam for any file
    with pytest.raises(ValueError, match=r"column 'trip_miles' is numeric except 1 cell\(s\), first at line 1202"):
        _run(tmp_path, path, **_taxi_args(taxi_config))
    with pytest.raises(ValueError, match="engine 'spark' is not one of"):
        _run(tmp_path, path, engine="spark", **_taxi_args(taxi_config))


def test_both_engines_type_columns_by_one_rule(tmp_path):
    """One typing rule (column_types.column_type) for both engines, on the columns where they once
    differed: a Parquet string column of digits stays text (its zeros kept), a boolean column with
    missing cells is int64 (0/1, missing cells absent), an integer column with missing cells is int64."""
    n = 240
    table = pd.DataFrame({"zip": [f"0{2100 + i % 40}" for i in range(n)],
                          "flag": [True, False, None] * (n // 3),
                          "count": [None if i % 7 == 0 else float(i) for i in range(n)],
                          "y": [i % 2 for i in range(n)]})
    path = tmp_path / "t.parquet"
    table.to_parquet(path)
    by_engine = {engine: _run(tmp_path, path, name=engine, engine=engine) for engine in ("pandas", "beam")}
    [pandas_columns, beam_columns] = [m["columns"] for _, m in by_engine.values()]
    assert pandas_columns == beam_columns
    assert {c: pandas_columns[c] for c in ("zip", "flag", "count")} == {"zip": "bytes", "flag": "int64", "count": "int64"}
    for out, _ in by_engine.values():
        rows = _rows(out)
        assert sorted({r["zip"][0] for r in rows})[0] == "02100"
        assert sorted({tuple(r.get("flag", ())) for r in rows}) == [(), (0,), (1,)]
