"""The kfx CLI's contract: parameters are checked by name, compile carries a config's values,
and `kfx submit` talks to the KFP API (the loopback stand-in of tests/k8s/kfp_standin.py:
no KFP API server can run on this machine)."""
import json
import socket

import pytest
import yaml

from kfx.cli import main


@pytest.fixture()
def kfp_standin():
    from tests.k8s.kfp_standin import KfpStandIn
    standin = KfpStandIn()
    standin.host = standin.start()
    yield standin
    standin.stop()


def _ir_parameters(path):
    spec = next(yaml.safe_load_all(path.read_text()))
    return spec["root"]["inputDefinitions"]["parameters"]


def test_compile_writes_the_configs_values_as_defaults(repo, tmp_path, taxi_config):
    out = tmp_path / "pipeline.yaml"
    assert main(["compile", "--config", str(repo / "pipelines/configs/chicago_taxi.yaml"),
                 "--param", "max_trials=3", "-o", str(out)]) == 0
    params = _ir_parameters(out)
    assert params["label"]["defaultValue"] == taxi_config["label"]
    assert params["metric_threshold"]["defaultValue"] == taxi_config["metric_threshold"]
    assert params["drop_columns"]["defaultValue"] == taxi_config["drop_columns"]
    assert params["max_trials"]["defaultValue"] == 3
    assert params["data_uri"]["defaultValue"] == str(repo / "data/chicago_taxi/data.csv")
    # Without a config nothing data-set specific is baked in.
    bare = tmp_path / "bare.yaml"
    assert main(["compile", "-o", str(bare)]) == 0
    assert "defaultValue" not in _ir_parameters(bare)["label"]


@pytest.mark.parametrize("command", [["compile", "-o", "{tmp}/x.yaml"], ["run", "--root", "{tmp}/root"]])
def test_a_misspelt_parameter_is_an_error_naming_it(command, repo, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path) for a in command]
    code = main([*argv, "--config", str(repo / "pipelines/configs/chicago_taxi.yaml"), "--param", "max_trial=2"])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown pipeline parameter(s) ['max_trial']" in err and "max_trials" in err
    assert not (tmp_path / "root" / "runs").exists()   # nothing ran


def test_submit_uploads_the_real_pipeline_and_starts_a_run(repo, kfp_standin, capsys):
    code = main(["submit", "--host", kfp_standin.host, "--version", "0.1.0-test",
                 "--config", str(repo / "pipelines/configs/chicago_taxi.yaml"),
                 "--param", "data_uri=minio://kfx-artifacts/data/chicago_taxi/data.csv",
                 "--run-name", "taxi-1"])
    assert code == 0, capsys.readouterr().err
    ids = json.loads(capsys.readouterr().out)
    assert kfp_standin.errors == []
    run = kfp_standin.runs[ids["run_id"]]
    params = run["runtime_config"]["parameters"]
    assert params["label"] == "tips > 0.2 * fare" and params["data_uri"].startswith("minio://")
    assert run["service_account"] == "kfx-pipeline-runner"


def test_submit_to_an_unreachable_api_fails_with_a_message_not_a_traceback(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # closed once the block ends: nothing listens there
    code = main(["submit", "--host", f"http://127.0.0.1:{port}", "--version", "v1",
                 "--param", "data_uri=minio://b/d.csv", "--param", "label=y"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("kfx submit:") and f"127.0.0.1:{port}" in err and "Traceback" not in err
