"""The S3 artifact store against a real S3 server over HTTP (moto on loopback)."""
import uuid
from pathlib import Path

import pytest
from kfp import compiler

from kfx.stores import lineage
from kfx.runner.orchestrator import Runner
from kfx.runner.run_context import Workspace
from kfx.stores.s3 import COMMIT_SUFFIX, S3Store
from tests.light_pipelines import toy

pytestmark = pytest.mark.s3


@pytest.fixture()
def store(s3_server):
    return S3Store(f"s3://kfx-{uuid.uuid4().hex[:8]}/pipeline-root")


def test_directory_and_file_artifacts_round_trip(store, tmp_path):
    staged = tmp_path / "model"
    (staged / "variables").mkdir(parents=True)
    (staged / "saved_model.pb").write_bytes(b"graph")
    (staged / "variables" / "v.data").write_bytes(b"x" * 100_000)
    uri = store.output_uri("p", "run1", "train", "model")
    assert uri == f"{store.root_uri}/p/run1/train/model"
    assert not store.exists(uri)
    assert store.commit(staged, uri)
    assert store.exists(uri)
    local = Path(store.local_path(uri, tmp_path / "down"))
    assert (local / "saved_model.pb").read_bytes() == b"graph"
    assert (local / "variables" / "v.data").stat().st_size == 100_000

    page = tmp_path / "report.html"
    page.write_text("<html/>")
    page_uri = store.output_uri("p", "run1", "validate", "report")
    store.commit(page, page_uri)
    assert Path(store.local_path(page_uri, tmp_path / "page.html")).read_text() == "<html/>"
    assert not store.commit(tmp_path / "never-written", store.output_uri("p", "run1", "x", "y"))


def test_crash_mid_upload_leaves_nothing_usable(store, tmp_path):
    staged = tmp_path / "examples"
    staged.mkdir()
    for i in range(3):
        (staged / f"part-{i}").write_bytes(b"data")
    uri = store.output_uri("p", "run1", "ingest", "examples")
    real_put, calls = store.client.fput_object, []

    def crash_on_second(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise ConnectionError("network gone")
        return real_put(*args, **kwargs)

    store.client.fput_object = crash_on_second
    with pytest.raises(ConnectionError):
        store.commit(staged, uri)
    store.client.fput_object = real_put
    assert not store.exists(uri)
    with pytest.raises(FileNotFoundError, match=COMMIT_SUFFIX):
        store.local_path(uri, tmp_path / "down")


def test_runner_with_s3_store_records_s3_uris_and_caches(store, tmp_path):
    ir_path = tmp_path / "toy.yaml"
    compiler.Compiler().compile(toy, str(ir_path))
    data = tmp_path / "data.csv"
    data.write_text("name,value\na,1\nb,5\n")
    runner = Runner(Workspace(tmp_path / "root"), store=store, echo=lambda _: None)
    first = runner.run(ir_path, {"data_uri": str(data)})
    assert first.state == "COMPLETE", first.error
    model = first.steps["fit"].outputs["model"]
    assert model.uri.startswith(store.root_uri + "/toy/")
    assert Path(store.local_path(model.uri, tmp_path / "m")).read_text() == "3.0"
    tree = lineage.trace(runner.md, model.uri)
    assert [n.task for n in tree.walk()] == ["fit", "count-rows", "importer"]
    second = runner.run(ir_path, {"data_uri": str(data)})
    assert [s.state for s in second.steps.values()] == ["IMPORTED", "CACHED", "CACHED"]


def _put(store, key, body: bytes):
    import io
    store.client.put_object(store.bucket, key, io.BytesIO(body), len(body))
    return f"s3://{store.bucket}/{key}"


def test_data_already_in_s3_is_imported_fingerprinted_and_read(store, tmp_path):
    """An uploaded CSV (no commit marker, outside the pipeline root) feeds the pipeline as it is."""
    ir_path = tmp_path / "toy.yaml"
    compiler.Compiler().compile(toy, str(ir_path))
    data_uri = _put(store, "datasets/values.csv", b"name,value\na,1\nb,5\n")
    runner = Runner(Workspace(tmp_path / "root"), store=store, echo=lambda _: None)
    first = runner.run(ir_path, {"data_uri": data_uri})
    assert first.state == "COMPLETE", first.error
    model = first.steps["fit"].outputs["model"]
    assert Path(store.local_path(model.uri, tmp_path / "m")).read_text() == "3.0"
    # Every URI lineage knows is in S3, the imported data included.
    assert [n.uri for n in lineage.trace(runner.md, model.uri).walk()][-1] == data_uri
    assert all(a.uri.startswith("s3://") for a in runner.md.store.get_artifacts())
    cached = runner.run(ir_path, {"data_uri": data_uri})
    assert [s.state for s in cached.steps.values()] == ["IMPORTED", "CACHED", "CACHED"]
    # New content at the same key is new data: the steps run again.
    _put(store, "datasets/values.csv", b"name,value\na,1\nb,5\nc,9\n")
    changed = runner.run(ir_path, {"data_uri": data_uri})
    assert [s.state for s in changed.steps.values()] == ["IMPORTED", "COMPLETE", "COMPLETE"]
    assert Path(store.local_path(changed.steps["fit"].outputs["model"].uri, tmp_path / "m2")).read_text() == "5.0"


def test_s3_imports_are_named_when_missing_or_inside_the_pipeline_root(store, tmp_path):
    ir_path = tmp_path / "toy.yaml"
    compiler.Compiler().compile(toy, str(ir_path))
    runner = Runner(Workspace(tmp_path / "root"), store=store, echo=lambda _: None)
    missing = runner.run(ir_path, {"data_uri": f"s3://{store.bucket}/datasets/nope.csv"})
    assert missing.state == "FAILED" and "datasets/nope.csv (no such object or prefix)" in missing.error
    inside = _put(store, "pipeline-root/stray.csv", b"name,value\na,1\n")
    refused = runner.run(ir_path, {"data_uri": inside})
    assert refused.state == "FAILED" and "must live outside the pipeline root" in refused.error
    local = Runner(Workspace(tmp_path / "local"), echo=lambda _: None).run(ir_path, {"data_uri": inside})
    assert local.state == "FAILED" and "--artifact-store s3://" in local.error
