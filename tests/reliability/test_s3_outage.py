"""Point 4: the S3 server becomes unreachable mid-run (a TCP proxy in front of the real moto
server is cut while a step's output is being uploaded).

Bounded retries with backoff, then one error line naming the endpoint; the half-uploaded
artifact is not visible (no commit marker) and nothing of it is in MLMD; once the network is
back the rerun takes the steps that had committed from the cache and completes."""
import uuid
from pathlib import Path

import pytest
from kfp import compiler, dsl
from kfp.dsl import Dataset, Input, Output

from kfx.stores.metadata import MetadataStore, State, prop
from kfx.runner.orchestrator import Runner
from kfx.runner.run_context import Workspace
from kfx.stores.s3 import COMMIT_SUFFIX, S3Store
from tests.reliability.proxy import CuttableProxy

pytestmark = pytest.mark.s3

BIG = 3 * 1024 * 1024


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def summarize(data: Input[Dataset], summary: Output[Dataset]):
    with open(summary.path, "w") as f:
        f.write(str(len(open(data.path).read().splitlines())))


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def expand(summary: Input[Dataset], size: int, blob: Output[Dataset]):
    import os
    os.makedirs(blob.path)
    with open(os.path.join(blob.path, "a-header.txt"), "w") as f:
        f.write(open(summary.path).read())
    with open(os.path.join(blob.path, "b-payload.bin"), "wb") as f:
        f.write(os.urandom(size))


@dsl.pipeline(name="outage")
def outage(data_uri: str, size: int = BIG):
    data = dsl.importer(artifact_uri=data_uri, artifact_class=Dataset, reimport=False)
    expand(summary=summarize(data=data.output).outputs["summary"], size=size)


@pytest.fixture()
def proxy(s3_server, monkeypatch):
    upstream = int(s3_server["KFX_S3_ENDPOINT"].rsplit(":", 1)[1])
    proxy = CuttableProxy(upstream)
    monkeypatch.setenv("KFX_S3_ENDPOINT", proxy.endpoint)
    monkeypatch.setenv("KFX_S3_ATTEMPTS", "4")
    monkeypatch.setenv("KFX_S3_BACKOFF", "0.05")
    monkeypatch.setenv("KFX_S3_READ_TIMEOUT", "10")
    yield proxy
    proxy.close()


def test_an_upload_cut_off_by_an_outage_is_invisible_and_the_rerun_completes_from_cache(
        proxy, s3_server, tmp_path, monkeypatch):
    ir_path = tmp_path / "outage.yaml"
    compiler.Compiler().compile(outage, str(ir_path))
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n3,4\n")
    root_uri = f"s3://kfx-{uuid.uuid4().hex[:8]}/root"
    runner = Runner(Workspace(tmp_path / "root"), store=S3Store(root_uri), echo=lambda _: None)

    proxy.cut_when_uploading(BIG // 3)       # only the big payload is that large: cut mid-upload
    failed = runner.run(ir_path, {"data_uri": str(data)})
    assert proxy.cuts == 1 and proxy.refused >= 3   # the retries met a network that was down
    assert failed.state == "FAILED"
    assert failed.steps["summarize"].state == "COMPLETE"
    line = failed.error_line
    assert "\n" not in line and line.startswith("expand: cannot commit its outputs: ")
    assert f"S3 endpoint http://{proxy.endpoint} unreachable" in line
    assert "failed 4 times" in line and "b-payload.bin" in line

    # Seen from the server directly: the first object of the artifact arrived, its marker did not,
    # so the artifact does not exist for any reader.
    monkeypatch.setenv("KFX_S3_ENDPOINT", s3_server["KFX_S3_ENDPOINT"])
    direct = S3Store(root_uri)
    uri = direct.output_uri("outage", failed.run_id, "expand", "blob")
    bucket, key = direct.bucket, uri.split(f"s3://{direct.bucket}/", 1)[1]
    names = {o.object_name for o in direct.client.list_objects(bucket, prefix=key, recursive=True)}
    assert f"{key}/a-header.txt" in names and key + COMMIT_SUFFIX not in names
    assert not direct.exists(uri)
    with pytest.raises(FileNotFoundError, match=COMMIT_SUFFIX):
        direct.local_path(uri, tmp_path / "down")
    md = MetadataStore(str(runner.ws.metadata_path))
    assert not [a for a in md.store.get_artifacts() if "/expand/" in a.uri]
    [expand_exec] = [e for e in md.store.get_executions() if prop(e, "task_name") == "expand"]
    assert expand_exec.last_known_state == State.FAILED

    # The network is back: the rerun reuses what had committed and completes.
    monkeypatch.setenv("KFX_S3_ENDPOINT", proxy.endpoint)
    proxy.restore()
    rerun = runner.run(ir_path, {"data_uri": str(data)})
    assert rerun.state == "COMPLETE", rerun.error
    assert [s.state for s in rerun.steps.values()] == ["IMPORTED", "CACHED", "COMPLETE"]
    blob = Path(direct.local_path(rerun.steps["expand"].outputs["blob"].uri, tmp_path / "blob"))
    assert (blob / "a-header.txt").read_text() == "3" and (blob / "b-payload.bin").stat().st_size == BIG
    again = runner.run(ir_path, {"data_uri": str(data)})
    assert [s.state for s in again.steps.values()] == ["IMPORTED", "CACHED", "CACHED"]


def test_a_server_that_is_down_from_the_start_is_one_line_naming_it(proxy, tmp_path):
    ir_path = tmp_path / "outage.yaml"
    compiler.Compiler().compile(outage, str(ir_path))
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    store = S3Store(f"s3://kfx-{uuid.uuid4().hex[:8]}/root")
    proxy.cut()
    result = Runner(Workspace(tmp_path / "root"), store=store, echo=lambda _: None).run(
        ir_path, {"data_uri": str(data), "size": 10})
    assert result.state == "FAILED"
    # The first step to touch the store (its commit: a new root has no cache entry to check).
    assert result.error_line.startswith(
        f"summarize: cannot commit its outputs: S3 endpoint http://{proxy.endpoint} unreachable: ")
    assert "\n" not in result.error_line and "failed 4 times" in result.error_line
