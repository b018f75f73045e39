"""kfx.submit against a loopback stand-in of the KFP API (tests/k8s/kfp_standin.py).

No KFP API server can run on this machine; the stand-in validates every request
body against the kfp_server_api models and the stored IR, and records the calls.
"""
import json
import socket
import urllib.error
import urllib.request

import pytest

from kfx import submit as S


def _paths(standin):
    return [(c["method"], c["path"]) for c in standin.calls]


def test_submit_uploads_version_and_starts_run(tiny_ir, kfp_standin):
    out = S.submit(tiny_ir, kfp_standin.host, "kfx-tiny", "v1", "kfx", "run-1", {"n": 3, "name": "a"})
    assert kfp_standin.errors == []
    assert set(out) >= {"pipeline_id", "version_id", "experiment_id", "run_id"}
    assert out["version_reused"] is False
    paths = _paths(kfp_standin)
    assert ("POST", "/apis/v2beta1/pipelines/upload") in paths
    assert ("POST", "/apis/v2beta1/pipelines/upload_version") in paths
    assert ("POST", "/apis/v2beta1/experiments") in paths
    run = kfp_standin.runs[out["run_id"]]
    assert run["pipeline_version_reference"] == {"pipeline_id": out["pipeline_id"],
                                                 "pipeline_version_id": out["version_id"]}
    assert run["runtime_config"]["parameters"] == {"n": 3, "name": "a"}
    # second submission: pipeline and experiment reused, version reused by name, new run
    out2 = S.submit(tiny_ir, kfp_standin.host, "kfx-tiny", "v1", "kfx", "run-2", {})
    assert (out2["pipeline_id"], out2["version_id"], out2["experiment_id"]) == (
        out["pipeline_id"], out["version_id"], out["experiment_id"])
    assert out2["version_reused"] is True and out2["run_id"] != out["run_id"]
    assert len(kfp_standin.experiments) == 1 and kfp_standin.errors == []


def test_recurring_run_is_moved_to_the_new_version(tiny_ir, kfp_standin):
    cron = "0 0 3 * * *"
    a = S.submit(tiny_ir, kfp_standin.host, "kfx-tiny", "v1", "kfx", "nightly", {}, recurring_cron=cron)
    assert "recurring_run_id" in a and a["replaced_recurring_run_ids"] == []
    same = S.submit(tiny_ir, kfp_standin.host, "kfx-tiny", "v1", "kfx", "nightly", {}, recurring_cron=cron)
    assert same["recurring_run_id"] == a["recurring_run_id"] and same["replaced_recurring_run_ids"] == []
    b = S.submit(tiny_ir, kfp_standin.host, "kfx-tiny", "v2", "kfx", "nightly", {"scale": 2.0},
                 recurring_cron=cron)
    assert b["replaced_recurring_run_ids"] == [a["recurring_run_id"]]
    assert list(kfp_standin.recurring) == [b["recurring_run_id"]]
    rr = kfp_standin.recurring[b["recurring_run_id"]]
    assert rr["pipeline_version_reference"]["pipeline_version_id"] == b["version_id"]
    assert rr["trigger"]["cron_schedule"]["cron"] == cron and rr["mode"] == "ENABLE"
    assert rr["max_concurrency"] in (1, "1") and rr["no_catchup"] is True
    assert kfp_standin.errors == []


def test_bad_parameters_are_rejected_before_any_call(tiny_ir, kfp_standin):
    with pytest.raises(S.ParameterError, match=r"unknown pipeline parameter\(s\) \['epochs'\].*'n', 'name', 'scale'"):
        S.submit(tiny_ir, kfp_standin.host, "kfx-tiny", "v1", "kfx", "r", {"epochs": 3})
    with pytest.raises(S.ParameterError, match="NUMBER_INTEGER"):
        S.submit(tiny_ir, kfp_standin.host, "kfx-tiny", "v1", "kfx", "r", {"n": "three"})
    assert kfp_standin.calls == []


def test_parse_params_types():
    from kfx.runner.params import parse_params
    assert parse_params(["n=3", "scale=1.5", "name=abc", "flag=true", "l=[a, b]", "e="]) == {
        "n": 3, "scale": 1.5, "name": "abc", "flag": True, "l": ["a", "b"], "e": ""}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_params(["novalue"])


def test_missing_or_invalid_ir(tmp_path, kfp_standin):
    with pytest.raises(S.PipelineFileError, match="does not exist"):
        S.submit(str(tmp_path / "nope.yaml"), kfp_standin.host, "p", "v", "e", "r", {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Deployment\n")
    with pytest.raises(S.PipelineFileError, match="not a compiled KFP pipeline"):
        S.submit(str(bad), kfp_standin.host, "p", "v", "e", "r", {})


def test_unreachable_host_is_a_specific_error(tiny_ir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(S.KfpApiError, match=f"cannot reach the KFP API at http://127.0.0.1:{port}"):
        S.submit(tiny_ir, f"http://127.0.0.1:{port}", "kfx-tiny", "v1", "kfx", "r", {})


def test_api_error_names_the_step(tiny_ir, kfp_standin, monkeypatch):
    S.submit(tiny_ir, kfp_standin.host, "kfx-tiny", "v1", "kfx", "r", {})
    # make the stand-in refuse the next version upload: a duplicate name the lookup cannot see
    monkeypatch.setattr(S, "_find_version", lambda *a, **k: None)
    with pytest.raises(S.KfpApiError, match="uploading version 'v1'.*HTTP 400.*already exists") as ei:
        S.submit(tiny_ir, kfp_standin.host, "kfx-tiny", "v1", "kfx", "r", {})
    assert ei.value.status == 400


def test_standin_rejects_bodies_that_do_not_match_the_models(kfp_standin):
    def post(path, body):
        req = urllib.request.Request(kfp_standin.host + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            urllib.request.urlopen(req)
            return 200
        except urllib.error.HTTPError as e:
            return e.code
    assert post("/apis/v2beta1/experiments", {"display_name": "e", "bogus": 1}) == 400
    assert post("/apis/v2beta1/experiments", {"display_name": 5}) == 400
    assert post("/apis/v2beta1/runs", {"display_name": "r", "pipeline_version_reference":
                                        {"pipeline_id": "x", "pipeline_version_id": "y"}}) == 400
    assert post("/apis/v2beta1/experiments", {"display_name": "ok"}) == 200
    assert len(kfp_standin.errors) == 3


def test_module_main_prints_ids(tiny_ir, kfp_standin, capsys):
    rc = S.main(["--host", kfp_standin.host, "--ir", tiny_ir, "--pipeline-name", "kfx-tiny",
                 "--version", "v9", "--run-name", "cli", "--param", "n=5"])
    assert rc == 0
    stdout = capsys.readouterr().out
    ids = json.loads(stdout[stdout.index("{"):])
    assert ids["run_id"] in kfp_standin.runs
    assert kfp_standin.errors == [] and len(kfp_standin.runs) == 1
    rc = S.main(["--host", kfp_standin.host, "--ir", tiny_ir, "--pipeline-name", "kfx-tiny",
                 "--version", "v9", "--run-name", "cli", "--param", "zzz=5"])
    assert rc == 2


def test_module_main_takes_string_parameters_verbatim(tiny_ir, kfp_standin):
    """The chart's registration Job passes --param as `kfx run` does: a STRING keeps its spaces and
    its digits; the other types are read as YAML."""
    rc = S.main(["--host", kfp_standin.host, "--ir", tiny_ir, "--pipeline-name", "kfx-tiny",
                 "--version", "v9", "--run-name", "cli", "--param", "name= 007 ", "--param", "n=5"])
    assert rc == 0 and kfp_standin.errors == []
    [run] = kfp_standin.runs.values()
    assert run["runtime_config"]["parameters"] == {"name": " 007 ", "n": 5}


def test_kfp_cli_commands_from_the_docs(tiny_ir, kfp_standin):
    """The kfp CLI sequence docs/deploy.md shows, against the stand-in (string params only:
    the CLI sends every ARG as a string)."""
    import warnings

    from click.testing import CliRunner
    from kfp.cli.cli import cli as kfp_cli

    base = ["--endpoint", kfp_standin.host, "--output", "json"]

    def cli(*args):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = CliRunner().invoke(kfp_cli, base + list(args), obj={}, catch_exceptions=False)
        assert res.exit_code == 0, res.output
        out = res.output  # "... details: URL" lines, then the JSON object
        return json.JSONDecoder().raw_decode(out[out.index("{"):])[0]

    pid = cli("pipeline", "create", "-p", "kfx-tiny", tiny_ir)["pipeline_id"]
    vid = cli("pipeline", "create-version", "-p", pid, "-v", "0.1.0-abc", tiny_ir)["pipeline_version_id"]
    cli("experiment", "create", "kfx")
    run = cli("run", "create", "-e", "kfx", "-r", "first-run", "-p", pid, "-v", vid, "name=taxi")
    rr = cli("recurring-run", "create", "--experiment-name", "kfx", "--job-name", "kfx-tiny-nightly",
             "--cron-expression", "0 0 3 * * *", "--max-concurrency", "1", "--no-catchup",
             "--pipeline-id", pid, "--version-id", vid, "name=taxi")
    assert kfp_standin.errors == []
    assert run["run_id"] in kfp_standin.runs and rr["recurring_run_id"] in kfp_standin.recurring


def test_stdout_is_only_the_ids(tiny_ir, kfp_standin, capsys):
    """kfp.Client's "... details: URL" lines go to stderr: `python -m kfx.submit | jq` works."""
    rc = S.main(["--host", kfp_standin.host, "--ir", tiny_ir, "--pipeline-name", "kfx-tiny",
                 "--version", "v10", "--run-name", "jq"])
    assert rc == 0
    captured = capsys.readouterr()
    ids = json.loads(captured.out)
    assert ids["run_id"] in kfp_standin.runs
    assert "details:" in captured.err


def _first_json(text: str):
    """`jq -s '.[0]'`: the first JSON value of a stream (`kfp run get` prints the run, then its id)."""
    return json.JSONDecoder().raw_decode(text[text.index("{"):])[0]


@pytest.mark.parametrize("final", ["SUCCEEDED", "FAILED"])
def test_waiting_for_a_run_as_the_docs_show(tiny_ir, kfp_standin, final, capsys):
    """docs/deploy.md step 9 against the stand-in: `kfp run get --watch` returns at a final
    state, `--output json run get | jq -rs '.[0].state'` reads it, and `make k8s-wait`
    exits 0 only for SUCCEEDED."""
    import subprocess
    import warnings

    from click.testing import CliRunner
    from kfp.cli.cli import cli as kfp_cli

    from tests.k8s.conftest import REPO
    assert S.main(["--host", kfp_standin.host, "--ir", tiny_ir, "--pipeline-name", "kfx-tiny",
                   "--version", "v-wait", "--run-name", "wait"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    kfp_standin.runs[run_id]["state"] = final

    def kfp(*args):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = CliRunner().invoke(kfp_cli, ["--endpoint", kfp_standin.host, *args], obj={},
                                     catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res.output

    assert f"Run is finished with state {final}." in kfp("run", "get", "--watch", run_id)
    assert _first_json(kfp("--output", "json", "run", "get", run_id))["state"] == final
    res = subprocess.run(["make", "-s", "-f", "deploy/k8s.mk", "k8s-wait", f"RUN_ID={run_id}",
                          f"KFP_HOST={kfp_standin.host}", "K8S_WAIT_SECONDS=60"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == (0 if final == "SUCCEEDED" else 2), res.stdout + res.stderr
    assert f"run {run_id}: {final}" in res.stdout
