"""Broken input through `kfx run`: one `error:` line naming the culprit, nothing half-written.

The corpus is tests/bad_inputs/ (written by its make_corpus.py). Each case runs
the real CLI on the real pipeline, compiled once for the module, and asserts
the contract a person relies on: a non-zero exit; exactly one line on stderr,
starting `error:`, that names the file and the line, column or parameter at
fault; no traceback; no artifact of the failed step; no pushed model.
"""
import pathlib

import pytest

from tests.cli_runs import assert_one_clear_error, kfx_run
from tests.webhook import Webhook

CORPUS = pathlib.Path(__file__).resolve().parent / "bad_inputs"


def _case(name, data, label, must_name, *extra, task="binary"):
    return pytest.param(data, label, task, list(extra), must_name, id=name)


# (data file in the corpus, --label, fragments the error line must hold, extra CLI args)
CASES = [
    _case("empty file", "empty.csv", "target", ["empty.csv", "empty"]),
    _case("header only", "header_only.csv", "target", ["header_only.csv", "no data rows"]),
    _case("semicolon delimiter", "semicolon.csv", "target", ["semicolon.csv", "delimiter looks like ';'"]),
    _case("missing label column", "no_target.csv", "target", ["no_target.csv", "'target' not found", "outcome"]),
    _case("label expression does not parse", "good.csv", "a >", ["good.csv", "'a >'", "parses"]),
    _case("latin-1 bytes", "latin1.csv", "target", ["latin1.csv", "line 4", "not UTF-8"]),
    _case("UTF-16 file", "utf16.csv", "target", ["utf16.csv", "UTF-16"]),
    _case("row with a field missing", "ragged_short.csv", "target",
          ["ragged_short.csv", "line 4", "2 fields", "header has 3"]),
    _case("row with an extra field", "ragged_long.csv", "target", ["ragged_long.csv", "line 3", "4 fields"]),
    _case("single class for binary", "single_class.csv", "target", ["single_class.csv", "only one class", "'yes'"]),
    _case("label empty in every row", "label_all_null.csv", "target",
          ["label_all_null.csv", "'target'", "missing in every row"]),
    _case("text in a numeric column", "text_in_numeric.csv", "target",
          ["text_in_numeric.csv", "column 'b'", "line 6", "'abc'"]),
    _case("duplicated column names", "duplicate_columns.csv", "target",
          ["duplicate_columns.csv", "'a'", "positions 1, 3"]),
    _case("three rows: empty splits", "three_rows.csv", "target",
          ["three_rows.csv", "eval and test splits would be empty", "eval_ratio/test_ratio"]),
    _case("CSV renamed .parquet", "not_parquet.parquet", "target", ["not_parquet.parquet", "not a Parquet file"]),
    _case("plain text named .csv.gz", "not_gzip.csv.gz", "target", ["not_gzip.csv.gz", "gzip"]),
    _case("unsupported extension", "table.txt", "target", ["table.txt", "unsupported file type .txt"]),
    _case("directory with two CSVs", "two_csvs", "target", ["two_csvs", "2 CSV/Parquet files", "part1.csv"]),
    _case("file that does not exist", "nosuch.csv", "target", ["nosuch.csv"]),
    _case("expression names an unknown column", "good.csv", "a > 0.2 * nosuch_col",
          ["good.csv", "'nosuch_col'"]),
    _case("expression reaches for attributes", "good.csv", "a.__class__ == 1", ["good.csv", "Attribute"]),
    _case("regression on a text label", "good.csv", "target", ["good.csv", "'target'", "not numeric"],
          task="regression"),
    _case("ill-typed parameter", "good.csv", "target", ["eval_ratio", "abc"], "--param", "eval_ratio=abc"),
    _case("unknown parameter", "good.csv", "target", ["nosuch_param"], "--param", "nosuch_param=1"),
    _case("ratios leave no train rows", "good.csv", "target", ["good.csv", "eval_ratio 0.5 + test_ratio 0.6"],
          "--param", "eval_ratio=0.5", "--param", "test_ratio=0.6"),
    # Words a later stage reads are checked before anything runs (formats/choices.py), not minutes in.
    _case("unknown finetune_when", "good.csv", "target", ["finetune_when 'auto'", "int8_rejected, always"],
          "--param", "finetune_when=auto"),
    _case("unknown rollout", "good.csv", "target", ["rollout 'linear'", "canary"], "--param", "rollout=linear"),
    _case("unknown tuner", "good.csv", "target", ["tuner 'grid'", "hyperband"], "--param", "tuner=grid"),
    _case("unknown split_key", "good.csv", "target", ["good.csv", "split_key 'nosuch_key'"],
          "--param", "split_key=nosuch_key"),
]


@pytest.mark.parametrize("data, label, task, extra, must_name", CASES)
def test_bad_input_gives_one_error_line(data, label, task, extra, must_name, lifecycle_ir, tmp_path):
    root = tmp_path / "root"
    done = kfx_run(lifecycle_ir, root, CORPUS / data, label, task, extra)
    assert_one_clear_error(done, root, must_name)


@pytest.mark.parametrize("label", ["$(touch {marker})", "`touch {marker}`", "; touch {marker}",
                                   "a > 1; rm -rf {victim}", "__import__('os').system('touch {marker}')"])
def test_label_injection_executes_nothing(label, lifecycle_ir, tmp_path):
    """A label is data: it never reaches a shell or Python's eval."""
    marker, victim = tmp_path / "pwned", tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("still here")
    root = tmp_path / "root"
    done = kfx_run(lifecycle_ir, root, CORPUS / "good.csv", label.format(marker=marker, victim=victim), "binary", [])
    assert_one_clear_error(done, root, ["good.csv", "label"])
    assert not marker.exists() and (victim / "keep.txt").is_file()


def test_data_path_injection_executes_nothing(lifecycle_ir, tmp_path):
    marker = tmp_path / "pwned"
    root = tmp_path / "root"
    data = f"{CORPUS / 'good.csv'}; touch {marker}"
    done = kfx_run(lifecycle_ir, root, data, "target", "binary", [])
    assert_one_clear_error(done, root, ["good.csv; touch"])
    assert not marker.exists()


def test_default_launcher_gives_the_same_line(lifecycle_ir, tmp_path):
    """The fork server with the TF stack preloaded (what `kfx run` does by default) reports alike."""
    root = tmp_path / "root"
    with Webhook() as hook:   # the exit handler's notify task still runs, and names the failing step
        done = kfx_run(lifecycle_ir, root, CORPUS / "ragged_short.csv", "target", "binary",
                       ["--param", f"notify_url={hook.url}"], preload=True)
    line = assert_one_clear_error(done, root, ["ragged_short.csv", "line 4"])
    assert "(log: " in line
    [posted] = hook.posts
    assert posted["kfx"]["state"] == "FAILED" and posted["kfx"]["failed_step"] == "ingest"
    assert "ragged_short.csv" in posted["kfx"]["error"] and "line 4" in posted["text"]


def test_a_run_failing_in_transform_notifies_its_step_and_error(lifecycle_ir, tmp_path):
    """After ingest and validate have run, a failing step still reaches the exit handler's notify task,
    which names it (issue 21: notifications the KFP way)."""
    root = tmp_path / "root"
    with Webhook() as hook:
        done = kfx_run(lifecycle_ir, root, CORPUS / "good.csv", "target", "binary",
                       ["--param", "categorical_features=[nosuch]", "--param", f"notify_url={hook.url}"],
                       preload=True)
    assert done.returncode != 0 and "Traceback" not in done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: transform:") and "'nosuch'" in line, line
    [posted] = hook.posts
    assert posted["kfx"]["state"] == "FAILED" and posted["kfx"]["failed_step"] == "transform", posted
    assert "'nosuch'" in posted["kfx"]["error"] and "transform" in posted["text"]


def test_corpus_is_what_make_corpus_writes_and_every_file_is_used():
    """The checked-in bytes are the documented ones, and no file sits unused."""
    import runpy
    corpus = runpy.run_path(str(CORPUS / "make_corpus.py"))["CORPUS"]   # not __main__: writes nothing
    for name, data in corpus.items():
        assert (CORPUS / name).read_bytes() == data, name
    used = {p.values[0] for p in CASES} | {"good.csv"}
    tops = {name.split("/")[0] for name in corpus}
    assert tops <= used, sorted(tops - used)
    assert len(CASES) >= 20


# ---- problems that are warnings, not errors: named in the facts and in the step log
def _ingest(tmp_path, csv_text, **kw):
    from kfx_components.ingest import executor
    data = tmp_path / "data.csv"
    data.write_text(csv_text)
    return executor.run(data_path=str(data), examples_dir=str(tmp_path / "out"), label="target",
                        problem_type="binary", **kw)


def test_all_null_column_is_a_named_warning(tmp_path, capfd):
    rows = "".join(f"{i},,{'yes' if i % 2 else 'no'}\n" for i in range(40))
    facts = _ingest(tmp_path, "a,blank,target\n" + rows)
    assert [w for w in facts["warnings"] if "'blank'" in w and "empty in every row" in w]
    assert "warning:" in capfd.readouterr().err and "'blank'" in facts["warnings"][0]


def test_label_nan_rows_are_dropped_with_a_count(tmp_path, capfd):
    rows = "".join(f"{i},{'' if i % 10 == 3 else ('yes' if i % 2 else 'no')}\n" for i in range(60))
    facts = _ingest(tmp_path, "a,target\n" + rows)
    assert facts["dropped_rows"] == 6 and facts["rows"] == 54
    # The first dropped row is data row 4 (i == 3): line 5 with the header as line 1.
    warning = next(w for w in facts["warnings"] if "missing in 6 row(s)" in w)
    assert "line 5" in warning and "dropped" in warning
    assert "missing in 6 row(s)" in capfd.readouterr().err


def test_stray_text_in_a_numeric_label_is_a_named_warning(tmp_path):
    """A rare text class among numeric ones may be real (so not an error), but is named."""
    rows = "".join(f"{i},{'x' if i == 7 else i % 3}\n" for i in range(60))
    from kfx_components.ingest import executor
    data = tmp_path / "data.csv"
    data.write_text("a,target\n" + rows)
    facts = executor.run(data_path=str(data), examples_dir=str(tmp_path / "out"), label="target",
                         problem_type="multiclass")
    assert facts["label_vocabulary"] == ["0", "1", "2", "x"]
    assert any("line 9" in w and "'x'" in w for w in facts["warnings"])   # row i == 7 is line 9
