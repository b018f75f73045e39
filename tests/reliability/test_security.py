"""Point 7: parameters never pass through a shell; no credential is written anywhere a run
writes; the stage images carry none; a step's container is non-root, without capabilities,
with a read-only root filesystem."""
import ast
import os
import re
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from kfp import compiler, dsl
from kfp.dsl import Dataset, Output

from kfx.runner.orchestrator import Runner

from kfx.runner.run_context import Workspace
from tests import docker_engine
from tests.reliability.common import REPO, kfx_run

HOSTILE = "x'; touch {canary}; echo \"$(touch {canary})\" `touch {canary}` $HOME && rm -rf / #"


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def echo_light(text: str, out: Output[Dataset]):
    with open(out.path, "w") as f:
        f.write(text)


@dsl.container_component
def echo_container(text: str, out: Output[Dataset]):
    return dsl.ContainerSpec(image="python:3.11", command=[
        "python3", "-c", "import sys; open(sys.argv[2], 'w').write(sys.argv[1])"], args=[text, out.path])


@dsl.pipeline(name="hostile")
def hostile(text: str):
    echo_light(text=text)
    echo_container(text=text)


@pytest.mark.parametrize("executor", ["process", "subprocess"])
def test_a_parameter_full_of_shell_reaches_the_step_as_data(executor, tmp_path):
    from kfx.runner.execute import make_launcher
    from kfx.runner import ir
    canary = tmp_path / "pwned"
    text = HOSTILE.format(canary=canary)
    ir_path = tmp_path / "hostile.yaml"
    compiler.Compiler().compile(hostile, str(ir_path))
    launcher = make_launcher(executor, ir.load(ir_path), "")
    result = Runner(Workspace(tmp_path / "root"), launcher=launcher, echo=lambda _: None).run(ir_path, {"text": text})
    assert result.state == "COMPLETE", result.error
    for task in ("echo-light", "echo-container"):
        assert Path(result.steps[task].outputs["out"].uri).read_text() == text
    assert not canary.exists()


def test_the_launchers_never_start_a_shell_of_their_own():
    """The only shell a step meets is the one its own IR command names (KFP's lightweight
    `sh -ec`, which passes the arguments on as "$@", unexpanded)."""
    for path in sorted((REPO / "kfx").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "shell":
                assert isinstance(node.value, ast.Constant) and node.value.value is False, f"{path}: shell={ast.unparse(node.value)}"
            if isinstance(node, ast.Attribute) and node.attr in ("system", "popen") and \
                    isinstance(node.value, ast.Name) and node.value.id == "os":
                pytest.fail(f"{path}:{node.lineno}: os.{node.attr}")


@pytest.mark.s3
def test_credentials_appear_in_nothing_a_run_writes(s3_server, tmp_path):
    key_id, secret = f"AKIA{secrets.token_hex(8).upper()}", f"kfx-secret-{secrets.token_hex(16)}"
    env = {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}
    ir_path = tmp_path / "toy.yaml"
    compile_ = subprocess.run([sys.executable, "-c", "import sys; from kfp import compiler; "
                               "from tests.light_pipelines import toy; compiler.Compiler().compile(toy, sys.argv[1])",
                               str(ir_path)], cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True)
    assert compile_.returncode == 0, compile_.stderr
    data = tmp_path / "data.csv"
    data.write_text("name,value\na,1\nb,5\n")
    root, bucket = tmp_path / "root", f"kfx-{uuid.uuid4().hex[:8]}"
    outputs = []
    for extra in ([], ["--param", "fail=true"], ["-v"]):     # a success, a failure (log tail in the report), cached
        proc = kfx_run(ir_path, root, "--artifact-store", f"s3://{bucket}/root", "--param", f"data_uri={data}",
                       *extra, env=env)
        out, err = proc.communicate(timeout=120)
        outputs.append(out + err)
        assert proc.returncode == (1 if extra[:1] == ["--param"] else 0), out + err
    written = [p for p in root.rglob("*") if p.is_file()]
    assert {"metadata.sqlite", "report.html", "run.json", "fit.log"} <= {p.name for p in written}
    from kfx.stores.s3 import S3Store
    store = S3Store(f"s3://{bucket}/root")      # the fixture's own credentials: moto takes any
    objects = list(store.client.list_objects(bucket, recursive=True))
    assert objects
    blobs = [(str(p), p.read_bytes()) for p in written] + [("IR", ir_path.read_bytes())] + \
            [(f"kfx run output {i}", o.encode()) for i, o in enumerate(outputs)]
    for o in objects:
        response = store.client.get_object(bucket, o.object_name)
        blobs.append((f"s3://{bucket}/{o.object_name}", response.read()))
        response.close()
        response.release_conn()
    for name, blob in blobs:
        for value in (secret, key_id):
            assert value.encode() not in blob, f"{value[:8]}... found in {name}"


# ------------------------------------------------------------------ containers
_CREDENTIAL = re.compile(r"(AWS_SECRET_ACCESS_KEY|AWS_ACCESS_KEY_ID|AWS_SESSION_TOKEN|MINIO_ROOT_PASSWORD|"
                         r"MINIO_SECRET_KEY|MINIO_ACCESS_KEY|KFX_S3_\w*|GOOGLE_APPLICATION_CREDENTIALS)\s*=")
_KNOWN_SECRETS = ("kfx-test-secret", "minioadmin", "minio123")


@pytest.mark.docker
def test_the_kfx_images_carry_no_credentials():
    client = docker_engine.client()
    images = [i for i in client.images.list() if any(t.startswith("kfx/") for t in i.tags)]
    assert images, "no kfx/ image is built: run `make images`"
    for image in images:
        config = image.attrs.get("Config") or {}
        texts = list(config.get("Env") or []) + [str(config.get("Labels") or {})] + \
            [h.get("CreatedBy", "") for h in image.history()]
        for text in texts:
            assert not _CREDENTIAL.search(text), f"{image.tags[0]}: {text[:200]}"
            assert not any(s in text for s in _KNOWN_SECRETS), f"{image.tags[0]}: {text[:200]}"


PROBE = r"""
import os, pathlib
status = dict(l.split(":\t", 1) for l in pathlib.Path("/proc/self/status").read_text().splitlines() if ":\t" in l)
print("uid", os.getuid(), "euid", os.geteuid())
print("CapEff", status["CapEff"].strip(), "CapPrm", status["CapPrm"].strip(), "CapBnd", status["CapBnd"].strip())
print("NoNewPrivs", status["NoNewPrivs"].strip())
for where in ("/", "/opt/venv", os.environ["HOME"], "/tmp", os.environ["OUT"]):
    try:
        pathlib.Path(where, "probe").write_text("x")
        print("writable", where)
    except OSError as e:
        print("refused", where, e.errno)
"""


@pytest.mark.docker
def test_a_step_container_is_non_root_without_capabilities_on_a_read_only_root(tmp_path):
    from kfx.runner.docker_launcher import DockerLauncher, image_exists
    from kfx.runner.launchers import Step
    from kfx_components.images import stage_image
    client = docker_engine.client()
    image = stage_image("push")
    assert image_exists(client, image), f"{image} is not built: run `make images`"
    out = tmp_path / "out"
    out.mkdir()
    log = tmp_path / "probe.log"
    code = DockerLauncher(client).launch(
        Step("probe", image, ["python3", "-c", PROBE], {"OUT": str(out)}, tmp_path, [], [str(out)]),
        log, lambda _: None)
    text = log.read_text()
    assert code == 0, text
    assert "uid 1000 euid 1000" in text
    assert "CapEff 0000000000000000 CapPrm 0000000000000000 CapBnd 0000000000000000" in text
    assert "NoNewPrivs 1" in text
    for where in ("/", "/opt/venv", "/home/kfx"):
        assert f"refused {where} 30" in text, text          # EROFS: the root filesystem is read-only
    assert "writable /tmp" in text and f"writable {out}" in text


@dsl.component(base_image="kfx/kfx-push:0.1.0", install_kfp_package=False)
def publish_in_push_image(registry_uri: str, note: Output[Dataset]) -> int:
    from kfx_formats import registry
    version = registry.publish({}, {"model.txt": b"weights"}, registry_uri, "ro-model")
    with open(note.path, "w") as f:
        f.write(version.uri)
    return version.number


@dsl.pipeline(name="ro-push")
def ro_push(registry_uri: str):
    publish_in_push_image(registry_uri=registry_uri)


@pytest.mark.docker
def test_the_push_image_works_on_a_read_only_root_through_the_runner(tmp_path):
    """The push stage's image runs a KFP step (kfp's executor, the registry's atomic publish)
    through the docker launcher's read-only root, non-root, capability-free container."""
    from kfx.runner.docker_launcher import DockerLauncher
    from kfx_components.images import stage_image
    client = docker_engine.client()
    assert stage_image("push") == "kfx/kfx-push:0.1.0"
    ir_path = tmp_path / "ro_push.yaml"
    compiler.Compiler().compile(ro_push, str(ir_path))
    root = tmp_path / "root"
    result = Runner(Workspace(root), launcher=DockerLauncher(client), echo=lambda _: None).run(
        ir_path, {"registry_uri": str(root / "registry")})
    assert result.state == "COMPLETE", result.error
    assert result.steps["publish-in-push-image"].parameters == {"Output": 1}
    assert (root / "registry" / "ro-model" / "v1" / "model.txt").read_bytes() == b"weights"
