"""`kfx run` on a failed step: one `error:` line naming the step, the error the step raised and
its log; no traceback unless -v; exit 1. CLI mistakes: one `error:` line and exit 2."""
import json

import pytest
from kfp import compiler, dsl

from kfx.cli import main
from kfx.runner.dispatch import raised_error


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def check(path: str) -> int:
    import os
    if not os.path.exists(path):
        print("checking", path)
        raise ValueError(f"data_path {path}: file not found\nsecond line of the message")
    return 1


@dsl.pipeline(name="errors")
def errors(path: str):
    check(path=path)


@pytest.fixture()
def ir_path(tmp_path):
    path = tmp_path / "errors.yaml"
    compiler.Compiler().compile(errors, str(path))
    return path


def _run(ir_path, root, *extra):
    return main(["run", "--ir", str(ir_path), "--root", str(root), "--preload", "", *extra])


def test_a_step_that_raises_is_one_error_line_with_its_message_and_log(ir_path, tmp_path, capsys):
    missing = tmp_path / "a.csv"
    assert _run(ir_path, tmp_path / "root", "--param", f"path={missing}") == 1
    err = capsys.readouterr().err
    [run_dir] = (tmp_path / "root" / "runs").iterdir()
    log = run_dir / "logs" / "check.log"
    assert err == f"error: check: data_path {missing}: file not found (log: {log})\n"
    assert "Traceback" in log.read_text()
    summary = json.loads((run_dir / "run.json").read_text())
    assert summary["state"] == "FAILED" and summary["steps"]["check"]["state"] == "FAILED"
    assert summary["error_line"] == err.removeprefix("error: ").strip()
    assert "Traceback" in summary["error"]          # the full story stays in run.json and the report
    assert "file not found" in (run_dir / "report.html").read_text()


def test_verbose_adds_the_log_tail(ir_path, tmp_path, capsys):
    assert _run(ir_path, tmp_path / "root", "--param", f"path={tmp_path / 'a.csv'}", "-v") == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1].startswith("error: check: data_path ")


@pytest.mark.parametrize("args, named", [
    (["--param", "nope=1"], "unknown pipeline parameter(s) ['nope']"),
    (["--config", "{tmp}/missing.yaml"], "--config {tmp}/missing.yaml"),
    (["--config", "{tmp}/list.yaml"], "expected a mapping"),
    (["--data", "{tmp}/missing.csv"], "--data {tmp}/missing.csv: no such file"),
])
def test_cli_mistakes_are_one_error_line_and_exit_2(args, named, ir_path, tmp_path, capsys):
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    argv = [a.format(tmp=tmp_path) for a in args]
    assert _run(ir_path, tmp_path / "root", "--param", "path=x", *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and named.format(tmp=tmp_path) in err
    assert not (tmp_path / "root" / "runs").exists()


@pytest.mark.parametrize("last, expected", [
    ("ValueError: data_path a.csv: file not found", "data_path a.csv: file not found"),
    ("kfx_components.ingest.executor.IngestError: a.csv: line 3 has 2 fields",
     "IngestError: a.csv: line 3 has 2 fields"),
    ("KeyError: 'label'", "KeyError: 'label'"),
    ("pkg.mod.Stopped", "Stopped"),
])
def test_the_error_line_names_the_exception_by_its_class_not_its_module(last, expected, tmp_path):
    log = tmp_path / "step.log"
    log.write_text(f'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n    run()\n{last}\n')
    assert raised_error(log) == expected
