"""Configuration is input (issue 20, item 4): every setting kfx reads is taken in the forms people
write it, and anything else is refused in one `error:` line naming it, exit code 2, no traceback.

The S3 server is real (the session's moto server over HTTP); the pipeline is a one-step light one."""
import uuid

import pytest

from kfx import cli
from kfx_formats import s3 as stage_s3
from tests.light_pipelines import compile_write
from tests.reliability.common import BOUND, kfx_run


@pytest.fixture(scope="module")
def write_ir(tmp_path_factory):
    return compile_write(tmp_path_factory.mktemp("ir"))


def _bucket() -> str:
    return f"kfx-{uuid.uuid4().hex[:8]}"


def _refused(capsys, argv, *named) -> str:
    """`kfx ARGV` ends with exit code 2 and one `error:` line naming each of `named`. In-process:
    a traceback would be an exception escaping cli.main, and fail the test."""
    try:
        code = cli.main(argv)
    except SystemExit as exit_:     # argparse's own refusals
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for name in named:
        assert name in lines[0], err
    return lines[0]


@pytest.mark.s3
def test_an_endpoint_written_as_a_url_runs_with_the_s3_store(s3_server, write_ir, tmp_path):
    endpoint = f"http://{s3_server['KFX_S3_ENDPOINT']}"       # was: ValueError: path in endpoint is not allowed
    bucket = _bucket()
    proc = kfx_run(write_ir, tmp_path / "root", "--artifact-store", f"s3://{bucket}/root",
                   "--param", "text=ok", "--param", "times=1e1",        # a number written as people do
                   env={"KFX_S3_ENDPOINT": endpoint, "KFX_S3_SECURE": ""})
    out, err = proc.communicate(timeout=BOUND)
    assert proc.returncode == 0, out + err
    assert "Traceback" not in err
    objects = [o.object_name for o in stage_s3.client().list_objects(bucket, recursive=True)]
    written = [o for o in objects if o.endswith("write-text/out")]
    assert written, objects
    assert stage_s3.read(stage_s3.client(), bucket, written[0]) == b"ok" * 10 + b" 0.5"


@pytest.mark.s3
@pytest.mark.parametrize("form", ["http://{}", "http://{}/"])
def test_the_stages_client_takes_the_same_forms(s3_server, monkeypatch, form):
    monkeypatch.setenv("KFX_S3_ENDPOINT", form.format(s3_server["KFX_S3_ENDPOINT"]))
    monkeypatch.delenv("KFX_S3_SECURE", raising=False)
    client = stage_s3.client()
    bucket = _bucket()
    client.make_bucket(bucket)
    stage_s3.commit(client, bucket, "p", files={"a.txt": b"A"})
    assert stage_s3.committed(client, bucket, "p")["objects"] == {"a.txt": 1}


@pytest.mark.parametrize("url, secure, expected", [
    ("minio.example.com:9000", "", ("minio.example.com:9000", False)),
    ("https://minio.example.com/", "", ("minio.example.com", True)),
    ("https://10.0.0.5:9000", "no", ("10.0.0.5:9000", False)),
    ("http://[::1]:9000", "TRUE", ("[::1]:9000", True)),
])
def test_the_endpoint_forms_read_the_same_on_both_sides(monkeypatch, url, secure, expected):
    monkeypatch.setenv("KFX_S3_ENDPOINT", url)      # one parser (kfx_formats.s3) for platform and stages
    monkeypatch.setenv("KFX_S3_SECURE", secure)
    assert stage_s3.endpoint() == expected


BAD_SETTINGS = [pytest.param(name, value, id=f"{name}={value}") for name, value in [
    ("KFX_S3_ENDPOINT", "garbage endpoint"),
    ("KFX_S3_ENDPOINT", "http://{host}:{port}/minio"),      # a path in the URL
    ("KFX_S3_ENDPOINT", "{host}:notaport"),
    ("KFX_S3_SECURE", "maybe"),                              # today: silently "no"
    ("KFX_S3_CONNECT_TIMEOUT", "-1"),
    ("KFX_S3_ATTEMPTS", "0"),
    ("KFX_S3_ATTEMPTS", "2.5"),                              # today: 2
]]


@pytest.mark.s3
@pytest.mark.parametrize("name, value", BAD_SETTINGS)
def test_a_bad_s3_setting_is_one_line_naming_it(s3_server, write_ir, tmp_path, monkeypatch, capsys, name, value):
    host, port = s3_server["KFX_S3_ENDPOINT"].rsplit(":", 1)
    monkeypatch.setenv(name, value.format(host=host, port=port))
    _refused(capsys, ["run", "--ir", str(write_ir), "--root", str(tmp_path / "root"), "--preload", "",
                      "--artifact-store", f"s3://{_bucket()}/root"], name)


def test_a_bad_s3_setting_in_a_stage_is_one_line_naming_it(monkeypatch):
    monkeypatch.setenv("KFX_S3_ENDPOINT", "http://127.0.0.1:9000/bucket")
    with pytest.raises(ValueError, match=r"^KFX_S3_ENDPOINT='http://127.0.0.1:9000/bucket': a path \(/bucket\) is not allowed"):
        stage_s3.client()
    monkeypatch.setenv("KFX_S3_ENDPOINT", "127.0.0.1:9000")
    monkeypatch.setenv("KFX_S3_SECURE", "sometimes")
    with pytest.raises(ValueError, match="^KFX_S3_SECURE='sometimes' is not a boolean"):
        stage_s3.client()


@pytest.mark.s3
def test_a_bucket_name_s3_refuses_is_named(s3_server, write_ir, tmp_path, capsys):
    _refused(capsys, ["run", "--ir", str(write_ir), "--root", str(tmp_path / "root"), "--preload", "",
                      "--artifact-store", "s3://b1/root"], "s3://b1/root", "bucket name")


@pytest.mark.parametrize("param, named", [("times=two", "'times'"), ("loud=maybe", "'loud'"),
                                          ("rate=fast", "'rate'"), ("times=2.5", "'times'"),
                                          ("rate=.nan", "'rate'"), ("rate=.inf", "'rate'")])
def test_a_param_of_the_wrong_type_is_one_line_naming_it(write_ir, tmp_path, capsys, param, named):
    _refused(capsys, ["run", "--ir", str(write_ir), "--root", str(tmp_path / "root"), "--preload", "",
                      "--param", param], named)


def test_params_are_read_in_the_forms_people_write_them(write_ir):
    """YAML reads 1e-3 as text and 1 is no YAML boolean; both are what a person means."""
    from kfx.runner import ir
    values = ir.load(write_ir).resolve_parameters({"rate": "1e-3", "times": "1E1", "loud": 1})
    assert values == {"text": "hi", "rate": 0.001, "times": 10, "loud": True}


def test_a_bad_option_is_one_line_not_a_usage_block(write_ir, tmp_path, capsys):
    line = _refused(capsys, ["run", "--ir", str(write_ir), "--root", str(tmp_path), "--parallelism", "x"],
                    "--parallelism")
    assert "invalid int value: 'x'" in line


@pytest.mark.parametrize("argv, named", [
    (["serve", "reg/m/v1", "--port", "70000"], "--port"),
    (["rollout", "start", "reg/m", "--rps", "0"], "--rps"),                  # was a ZeroDivisionError mid-rollout
    (["rollout", "start", "reg/m", "--batch", "-1"], "--batch"),
    (["rollout", "start", "reg/m", "--steps", "10,x"], "--steps"),           # was a traceback
    (["rollout", "start", "reg/m", "--hold", "nan"], "--hold"),
    (["predict", "--model", "m", "--data", "d", "--out", "o", "--batch-size", "0"], "--batch-size"),
], ids=lambda v: v if isinstance(v, str) else " ".join(v[:2]))
def test_a_serving_option_out_of_range_is_one_line_naming_it(capsys, argv, named):
    _refused(capsys, argv, named)


@pytest.mark.s3
def test_the_payload_sink_takes_a_url_endpoint_and_names_a_bad_one(s3_server, monkeypatch):
    """The serving side (serving/kfx_serving/sink.py, stdlib + minio) reads the same settings."""
    from tests.reliability.common import REPO
    monkeypatch.syspath_prepend(str(REPO / "serving"))
    from kfx_serving.sink import Writer
    bucket = _bucket()
    stage_s3.client().make_bucket(bucket)
    monkeypatch.setenv("KFX_S3_ENDPOINT", f"http://{s3_server['KFX_S3_ENDPOINT']}/")
    writer = Writer(f"s3://{bucket}/payloads", flush_seconds=3600)
    writer.write({"model": "m", "model_version": "v1", "instances": [{"x": 1}]})
    writer.flush()
    writer.close()
    assert [o.object_name for o in stage_s3.client().list_objects(bucket, "payloads/m/v1/")]
    monkeypatch.setenv("KFX_S3_ENDPOINT", "http://127.0.0.1:9000/bucket")
    with pytest.raises(SystemExit, match=r"^sink: KFX_S3_ENDPOINT='http://127.0.0.1:9000/bucket': a path .*"
                                         r"expected host:port"):
        Writer(f"s3://{bucket}/payloads")


def test_a_bad_ingest_setting_is_one_line_naming_it(tmp_path, monkeypatch):
    """Read when ingest chooses its engine (it was read when the module was imported: a traceback)."""
    from kfx_components.ingest import executor
    csv = tmp_path / "t.csv"
    csv.write_text("x,y\n1,0\n2,1\n")
    monkeypatch.setenv("KFX_INGEST_BEAM_MIN_BYTES", "64MiB")
    with pytest.raises(executor.IngestError, match=r"^KFX_INGEST_BEAM_MIN_BYTES='64MiB' is not a whole number"):
        executor.run(data_path=str(csv), examples_dir=str(tmp_path / "ex"), label="y", problem_type="binary")
