"""Spans: a data pattern resolves to the newest span (or the one asked for) before anything is
imported; `kfx history` lists the runs of a root (the lifecycle's history is tested end to end in
tests/test_e2e.py)."""
import subprocess
import sys

import pytest

from kfx.runner import spans


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("a,b\n1,2\n")
    return path


def test_newest_span_and_version_or_the_one_asked_for(tmp_path):
    for span, version in ((1, 1), (2, 1), (2, 3), (10, 1)):
        _touch(tmp_path / f"incoming/span-{span}/v{version}.csv")
    pattern = str(tmp_path / "incoming/span-{SPAN}/v{VERSION}.csv")
    newest = spans.resolve(pattern)
    assert (newest.span, newest.version) == (10, 1)   # numbers, not text: 10 > 2
    assert newest.path.endswith("span-10/v1.csv")
    two = spans.resolve(pattern, span=2)
    assert (two.span, two.version) == (2, 3) and two.path.endswith("span-2/v3.csv")
    with pytest.raises(spans.SpanError, match=r"no span 7 \(spans found: 1, 2, 10\)"):
        spans.resolve(pattern, span=7)


def test_a_pattern_that_matches_nothing_or_too_much_is_one_clear_error(tmp_path):
    with pytest.raises(spans.SpanError, match="no file matches"):
        spans.resolve(str(tmp_path / "nothing/span-{SPAN}.csv"))
    _touch(tmp_path / "d/span-1/a.csv")
    _touch(tmp_path / "d/span-1/b.csv")
    with pytest.raises(spans.SpanError, match="span 1 has 2 files"):
        spans.resolve(str(tmp_path / "d/span-{SPAN}/*.csv"))
    proc = subprocess.run([sys.executable, "-m", "kfx.cli", "run", "--data", str(tmp_path / "x/span-{SPAN}.csv"),
                           "--label", "b", "--task", "binary", "--root", str(tmp_path / "root")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --data ") and "no file matches" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- windows of spans

def _span_files(root, n_spans=3, rows=300, columns_of=None):
    """n_spans CSV spans of `rows` rows each; column `day` holds the span's number, so every record
    says which span it came from; columns_of(span) -> extra column names, to make a span differ."""
    import numpy as np
    import pandas as pd
    for span in range(1, n_spans + 1):
        rng = np.random.default_rng(span)
        x = rng.normal(size=rows)
        frame = pd.DataFrame({"day": span, "x": x, "c": rng.choice(["a", "b", "c"], size=rows),
                              "y": (x + rng.normal(scale=0.5, size=rows) > 0).astype(int)})
        for extra in (columns_of(span) if columns_of else ()):
            frame[extra] = 1.0
        path = root / f"incoming/span-{span}/data.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
    return str(root / "incoming/span-{SPAN}/data.csv")


def _ingest_window(tmp_path, pattern, train_spans, backtest=True):
    """Resolve the window as kfx run does, then run ingest's component body (the executor behind
    it) on the parameters the pipeline passes it: the imported newest span, the window's files."""
    from kfp import dsl

    from kfx_components.ingest.component import ingest
    params = spans.window(pattern, train_spans, backtest).parameters()
    examples = dsl.Dataset(name="examples", uri=str(tmp_path / "examples"), metadata={})
    ingest.python_func(data=dsl.Dataset(name="data", uri=params["data_uri"], metadata={}), label="y",
                       problem_type="binary", eval_ratio=0.15, test_ratio=0.2, drop_columns=[], split_key="",
                       examples=examples, **{k: params[k] for k in ("span_uris", "spans", "backtest_uri",
                                                                    "backtest_span", "span_fingerprint")})
    return params, examples.metadata, tmp_path / "examples"


def _days(out, split):
    from kfx_components.common import io
    return sorted({row["day"][0] for row in io.read_examples(io.split_file(str(out), split))})


def test_a_window_of_two_spans_trains_on_them_and_holds_the_newest_out(tmp_path):
    from kfx_components.common import io
    pattern = _span_files(tmp_path)
    params, facts, out = _ingest_window(tmp_path, pattern, 2)
    assert (params["spans"], params["backtest_span"], params["span"]) == ([1, 2], 3, 3)
    assert params["data_uri"].endswith("span-3/data.csv") and params["backtest_uri"] == params["data_uri"]
    assert [u.rsplit("/", 2)[1] for u in params["span_uris"]] == ["span-1", "span-2"]
    assert facts["rows_per_span"] == {"1": 300, "2": 300, "3": 300}
    assert facts["rows_train"] + facts["rows_eval"] + facts["rows_test"] == 600 and facts["rows_backtest"] == 300
    assert (facts["spans"], facts["backtest_span"]) == ([1, 2], 3)
    for split in io.SPLITS:   # every train/eval/test record from the window, both spans in each
        assert _days(out, split) == [1, 2]
    assert _days(out, io.BACKTEST) == [3]
    assert len(io.read_examples(io.split_file(str(out), io.BACKTEST))) == 300


def test_without_backtest_the_window_is_the_newest_spans(tmp_path):
    from kfx_components.common import io
    pattern = _span_files(tmp_path)
    params, facts, out = _ingest_window(tmp_path, pattern, 2, backtest=False)
    assert (params["spans"], params["backtest_span"], params["backtest_uri"]) == ([2, 3], 0, "")
    assert params["data_uri"] == params["span_uris"][-1]
    assert facts["rows_per_span"] == {"2": 300, "3": 300} and "rows_backtest" not in facts
    assert _days(out, io.TRAIN) == [2, 3]
    assert not (out / io.BACKTEST).exists()


def test_a_span_with_other_columns_fails_in_ingest_in_one_line(tmp_path):
    from kfx_components.ingest import executor
    pattern = _span_files(tmp_path, columns_of=lambda span: ["tip"] if span == 2 else [])
    with pytest.raises(executor.IngestError) as err:
        _ingest_window(tmp_path, pattern, 2)
    message = str(err.value)
    assert "span 2 has column 'tip', which span 1 lacks" in message and "span-2/data.csv" in message
    assert "\n" not in message


def test_too_few_spans_is_one_line_naming_what_was_found(tmp_path):
    pattern = _span_files(tmp_path)
    with pytest.raises(spans.SpanError, match=r"train_spans=3 needs 4 spans .* found 3: 1, 2, 3; fewer"):
        spans.window(pattern, 3)
    assert spans.window(pattern, 3, backtest=False).spans[0].span == 1   # without a backtest 3 suffice
    with pytest.raises(spans.SpanError, match=r"found 2 up to span 2: 1, 2"):
        spans.window(pattern, 2, span=2)


def test_a_span_file_changed_in_place_is_a_new_input(tmp_path):
    pattern = _span_files(tmp_path)
    before = spans.window(pattern, 2).parameters()["span_fingerprint"]
    with open(tmp_path / "incoming/span-1/data.csv", "a") as f:   # an older span of the window
        f.write("1,0.5,a,1\n")
    assert spans.window(pattern, 2).parameters()["span_fingerprint"] != before


def test_kfx_compile_resolves_the_window_into_parameters_and_too_few_fails_before_running(tmp_path):
    import yaml
    pattern = _span_files(tmp_path)
    ir_path = tmp_path / "pipeline.yaml"
    proc = subprocess.run([sys.executable, "-m", "kfx.cli", "compile", "--data", pattern, "--label", "y",
                           "--task", "binary", "--train-spans", "2", "-o", str(ir_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    inputs = next(yaml.safe_load_all(ir_path.read_text()))["root"]["inputDefinitions"]["parameters"]
    defaults = {name: spec.get("defaultValue") for name, spec in inputs.items()}
    assert (defaults["spans"], defaults["backtest_span"], defaults["span"], defaults["train_spans"]) == \
        ([1, 2], 3, 3, 2)
    assert defaults["data_uri"].endswith("span-3/data.csv") and defaults["backtest_uri"] == defaults["data_uri"]
    assert len(defaults["span_fingerprint"]) == 64
    proc = subprocess.run([sys.executable, "-m", "kfx.cli", "run", "--data", pattern, "--label", "y",
                           "--task", "binary", "--train-spans", "3", "--root", str(tmp_path / "root")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "train_spans=3 needs 4 spans" in proc.stderr and "found 3: 1, 2, 3" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "root").exists()


def test_history_shows_the_window_and_its_backtest_span():
    row = {"run": "r1", "span": 3, "rows": 600, "drift": "none", "metric": None, "outcome": "", "state": "COMPLETE"}
    table = spans.render([{**row, "spans": [1, 2], "backtest_span": 3}, {**row, "run": "r2", "spans": []}])
    assert table.splitlines()[1].split()[:3] == ["r1", "1,2", "bt"] and "1,2 bt 3" in table
    assert table.splitlines()[2].split()[:2] == ["r2", "3"]


def test_a_config_sets_the_window_and_train_spans_needs_a_pattern(tmp_path):
    from kfx.errors import UsageError
    from kfx.runner.params import run_parameters
    pattern = _span_files(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(f"data: {pattern}\nlabel: y\ntrain_spans: 2\ntemporal_backtest: false\n")
    params = run_parameters(str(config))
    assert (params["spans"], params["backtest_span"], params["span"]) == ([2, 3], 0, 3)
    assert run_parameters(str(config), backtest=True)["spans"] == [1, 2]   # the command line wins
    with pytest.raises(UsageError, match=r"train_spans=2: a window of spans needs --data with \{SPAN\}"):
        run_parameters(data=str(tmp_path / "incoming/span-1/data.csv"), train_spans=2)
