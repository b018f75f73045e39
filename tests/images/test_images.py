"""The built stage images: non-root, labelled, credential-free, and able to run their stage.

Docker-marked: run after `make images` (the test command starts the engine with
scripts/docker-engine.sh). Skipped, with the reason, only when no engine answers.
The lock checks at the end need no engine.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

def _load_build():
    """images/build.py (the image names and stage list), loaded by path."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("kfx_images_build", REPO / "images" / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


images = _load_build()

# infra_validate adds the serving venv to the TF runtime (images/Dockerfile.infra-validate): not one code layer.
TF_STAGES = [s for s in images.STAGES if images.RUNTIME_OF[s] == "tf-runtime" and s not in images.STAGE_DOCKERFILES]
# What each stage's code needs at run time, beyond its own executor module.
HEAVY_IMPORTS = {
    "ingest": ["tensorflow", "pandas"],
    "validate": ["tensorflow_data_validation", "apache_beam", "tfx_bsl.public.tfxio",
                 "tensorflow_metadata.proto.v0.statistics_pb2"],
    "transform": ["tensorflow_transform", "tensorflow_transform.beam", "apache_beam"],
    "tune": ["keras_tuner", "tf_keras", "tensorflow_transform"],
    "distributed_train": ["tensorflow", "tf_keras", "tensorflow_transform"],
    "distill": ["tensorflow", "tf_keras", "tensorflow_transform"],
    "quantize": ["tensorflow", "tensorflow_transform", "tensorflow_model_optimization", "sklearn.metrics"],
    "evaluate": ["tensorflow_model_analysis", "tensorflow", "minio"],
    "push": ["minio", "yaml"],
    "resolve": ["minio"],
    "deploy": ["minio"],
    "notify": ["minio"],
    "infra_validate": ["tensorflow", "numpy"],
    "monitor": ["tensorflow_data_validation", "tensorflow_metadata.proto.v0.statistics_pb2", "pyarrow",
                "sklearn.metrics"],
}
# kfx_formats ships whole in every image (images/build.py formats_code).
FORMATS_MODULES = sorted(f"kfx_formats.{p.stem}" for p in (REPO / "formats").glob("*.py") if p.stem != "__init__")
OCI_LABELS = ["org.opencontainers.image.title", "org.opencontainers.image.version",
              "org.opencontainers.image.revision", "org.opencontainers.image.source",
              "org.opencontainers.image.description"]
PUSH_BUDGET = 300_000_000


def _docker(*args: str, timeout: int = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, timeout=timeout, **kw)


def _engine() -> str | None:
    try:
        res = _docker("info", timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"no docker client/engine ({err}); start one with scripts/docker-engine.sh"
    if res.returncode != 0:
        return "no Docker engine answers `docker info`; start one with scripts/docker-engine.sh"
    return None


_NO_ENGINE = _engine()


def needs_engine(test):
    """Docker-marked, and skipped (saying why) only when no engine answers."""
    return pytest.mark.docker(pytest.mark.skipif(_NO_ENGINE is not None, reason=_NO_ENGINE or "")(test))


@pytest.fixture(scope="module")
def inspected() -> dict:
    """Every stage image's `docker image inspect`; fails (not skips) with how to build them."""
    out = {}
    for stage in images.STAGES:
        ref = images.stage_image(stage)
        res = _docker("image", "inspect", ref)
        assert res.returncode == 0, f"{ref} is not built: run `make images` ({res.stderr.decode().strip()})"
        out[stage] = json.loads(res.stdout)[0]
    return out


def run_in(stage: str, script: str, timeout: int = 600, user: str | None = None) -> subprocess.CompletedProcess:
    """Runs `sh -c SCRIPT` in the stage image the way KFP does (no network needed)."""
    args = ["run", "--rm", "--network", "none"]
    if user:
        args += ["--user", user]
    args += [images.stage_image(stage), "sh", "-c", script]
    return _docker(*args, timeout=timeout, text=True)


# ---- identity: user, labels --------------------------------------------------------------

@pytest.mark.parametrize("stage", images.STAGES)
@needs_engine
def test_runs_as_non_root(stage, inspected):
    user = inspected[stage]["Config"].get("User", "")
    assert user and user.split(":")[0] not in ("0", "root"), f"{stage}: Config.User is {user!r}"
    res = run_in(stage, "id -u; id -g; echo $HOME; command -v python3")
    assert res.returncode == 0, res.stderr
    uid, gid, home, python = res.stdout.split()
    assert uid == "1000" and gid == "1000", res.stdout
    assert python == "/opt/venv/bin/python3", f"python3 resolves to {python}, not the venv"
    assert home == "/home/kfx"


@pytest.mark.parametrize("stage", images.STAGES)
@needs_engine
def test_oci_labels_and_env(stage, inspected):
    config = inspected[stage]["Config"]
    labels = config.get("Labels") or {}
    missing = [key for key in OCI_LABELS if not labels.get(key)]
    assert not missing, f"{stage}: OCI labels missing or empty: {missing}"
    assert labels["org.opencontainers.image.revision"] != "unknown", "built outside a git checkout?"
    assert labels["org.opencontainers.image.title"] == f"kfx-{stage}"
    assert labels["org.opencontainers.image.version"] == images.version()
    env = dict(e.split("=", 1) for e in config.get("Env", []))
    assert env.get("TF_USE_LEGACY_KERAS") == "1" and env.get("PYTHONUNBUFFERED") == "1"
    assert env["PATH"].startswith("/opt/venv/bin:"), env["PATH"]
    # The second tag names the content hash recorded in the labels.
    tags = inspected[stage].get("RepoTags", [])
    want = f"{images.stage_repo(stage)}:{images.version()}-{labels['io.kfx.content-hash']}"
    assert want in tags, f"{stage}: {want} not among {tags}"


# ---- no credentials ---------------------------------------------------------------------

SECRET_ENV = re.compile(r"^(AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN|MINIO_ROOT_USER|"
                        r"MINIO_ROOT_PASSWORD|MINIO_ACCESS_KEY|MINIO_SECRET_KEY|KFX_S3_ENDPOINT|.*PASSWORD.*|"
                        r".*SECRET.*|.*TOKEN.*)=", re.I)
SECRET_PATHS = re.compile(r"(^|/)(\.aws/(credentials|config)|\.docker/config\.json|\.netrc|\.pypirc|"
                          r"\.git-credentials|\.mc/config\.json|\.kube/config|id_rsa|id_ed25519|id_ecdsa)$")
# A PEM private key block with a body (a bare marker string in a parser is not a key).
PEM_KEY = re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----\s+[A-Za-z0-9+/=\s:,-]{64,}?-----END ")
# MinIO's well-known defaults as values (minio/minioadmin.py, the admin client module, is fine).
SECRET_TEXT = re.compile(rb"(minio123|['\"=:]minioadmin\b|\bAKIA[0-9A-Z]{16}\b|"
                         rb"aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{40})")
# Third-party test suites ship sample keys (pycryptodome's SelfTest...): not credentials of ours.
THIRD_PARTY_TESTS = re.compile(r"/site-packages/(?!kfx_components/)(.*/)?((tests?|testing|testdata|test_data|"
                               r"SelfTest)/|test_[^/]*\.py$|[^/]*_test\.py$)")
@pytest.mark.parametrize("stage", images.STAGES)
@needs_engine
def test_no_credentials_in_env(stage, inspected):
    env = inspected[stage]["Config"].get("Env", [])
    leaked = [e.split("=", 1)[0] for e in env if SECRET_ENV.match(e)]
    assert not leaked, f"{stage}: credential-like variables baked into the image: {leaked}"


def _exported_files(stage: str, ref: str | None = None):
    """(path, TarInfo, content) of every file in the image's filesystem (docker export)."""
    cid = _docker("create", ref or images.stage_image(stage), "true", text=True).stdout.strip()
    assert cid, f"docker create {ref or stage} failed"
    try:
        proc = subprocess.Popen(["docker", "export", cid], stdout=subprocess.PIPE)
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for m in tar:
                data = tar.extractfile(m).read(8_000_000) if m.isfile() and m.size else b""
                yield m.name, m, data
        assert proc.wait() == 0
    finally:
        _docker("rm", "-f", cid)


def scan(files) -> list[str]:
    found = []
    for name, member, data in files:
        if SECRET_PATHS.search(name):
            found.append(f"{name}: credential file")
        if not data or b"\0" in data[:8192] or THIRD_PARTY_TESTS.search("/" + name):
            continue  # empty, binary, or a vendored test suite
        for pattern, what in ((PEM_KEY, "private key"), (SECRET_TEXT, "secret-like text")):
            hit = pattern.search(data)
            if hit:
                found.append(f"{name}: {what} {hit.group(0)[:28]!r}")
    return found


def test_scan_catches_planted_credentials():
    """The scanner itself: planted secrets are found, parsers' marker strings are not."""
    body = b"MIIEowIBAAKCAQEA" + b"x" * 64 + b"\n"
    planted = [("home/kfx/.aws/credentials", b"[default]\n"),
               ("opt/app/key.pem", b"-----BEGIN RSA PRIVATE KEY-----\n" + body + b"-----END RSA PRIVATE KEY-----\n"),
               ("opt/app/settings.py", b"SECRET = 'minio123'\n"),
               ("opt/app/.env", b"MINIO_ROOT_PASSWORD=minioadmin\n"),
               ("opt/app/env", b"AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n")]
    benign = [("opt/venv/lib/python3.11/site-packages/rsa/pem.py", b"marker = b'-----BEGIN RSA PRIVATE KEY-----'\n"),
              ("opt/venv/lib/python3.11/site-packages/Crypto/SelfTest/k.py",
               b"-----BEGIN RSA PRIVATE KEY-----\n" + body + b"-----END RSA PRIVATE KEY-----\n"),
              ("opt/venv/lib/python3.11/site-packages/minio/__init__.py", b"from .minioadmin import MinioAdmin\n"),
              ("usr/lib/libx.so", b"\x7fELF\0\0AKIAISLANDISSHARITAL")]
    info = tarfile.TarInfo("f")
    info.type = tarfile.REGTYPE
    assert len(scan((n, info, d) for n, d in planted)) == len(planted)
    assert scan((n, info, d) for n, d in benign) == []


# The runtimes' filesystems are the same for all stages built on them: scan one
# TF stage and the push image in full; the stage code layer of every image is
# covered by test_no_credentials_in_home_and_code.
@pytest.mark.parametrize("stage", ["ingest", "push"])
@needs_engine
def test_no_credentials_in_filesystem(stage, inspected):
    found = scan(_exported_files(stage))
    assert not found, f"{stage}: possible credentials in the image:\n" + "\n".join(found[:50])


@pytest.mark.parametrize("stage", images.STAGES)
@needs_engine
def test_no_credentials_in_home_and_code(stage, inspected):
    """Credential files in the homes, secrets in our code (the full scan is above)."""
    res = run_in(stage, "for h in /home/kfx /root; do for f in .aws .docker/config.json .netrc .pypirc "
                        ".git-credentials .mc .ssh .kube/config; do [ -e $h/$f ] && echo FOUND $h/$f; done; done; "
                        "grep -rIlE 'minio123|minioadmin|AKIA[0-9A-Z]{16}|PRIVATE KEY-----' "
                        "/opt/venv/lib/python3.11/site-packages/kfx_components /opt/venv/lib/python3.11/site-packages/kfx_formats "
                        "/home/kfx /root /tmp "
                        "2>/dev/null | sed 's/^/FOUND /'; true", user="0")
    assert res.returncode == 0, res.stderr
    found = [line for line in res.stdout.splitlines() if line.startswith("FOUND")]
    assert not found, f"{stage}: {found}"


# ---- what each image can run --------------------------------------------------------------

@needs_engine
def test_push_image_has_no_tensorflow_and_fits(inspected):
    size = inspected["push"]["Size"]
    assert size <= PUSH_BUDGET, f"push image is {size / 1e6:.0f} MB > 300 MB"
    res = run_in("push", "python3 - <<'EOF'\n"
                 "import importlib.util as u\n"
                 "for m in ('tensorflow', 'tf_keras', 'keras', 'tensorflow_transform', 'apache_beam', 'jax', 'torch'):\n"
                 "    assert u.find_spec(m) is None, m + ' is importable in the push image'\n"
                 "import kfp, minio, yaml\n"
                 "import kfx_components.push.executor\n"
                 "import kfx_formats.registry\n"
                 "import sys; assert 'tensorflow' not in sys.modules\n"
                 "print('ok')\nEOF")
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stdout + res.stderr


@pytest.mark.parametrize("stage", images.STAGES)
@needs_engine
def test_stage_imports(stage, inspected):
    """The executor and the heavy libraries it uses import as the non-root user, under python3."""
    modules = [f"kfx_components.{stage}.executor", *HEAVY_IMPORTS[stage], *FORMATS_MODULES]
    script = ("python3 - <<'EOF'\n"
              "import importlib, importlib.metadata as md, sys\n"
              f"for m in {modules!r}:\n"
              "    importlib.import_module(m)\n"
              "assert sys.executable.startswith('/opt/venv/'), sys.executable\n"
              "print('kfx', md.version('kfx'))\n"
              "EOF")
    res = run_in(stage, script, timeout=900)
    assert res.returncode == 0, f"{stage}: {res.stdout}\n{res.stderr[-3000:]}"
    assert f"kfx {images.version()}" in res.stdout


@pytest.mark.parametrize("stage", images.STAGES)
@needs_engine
def test_kfp_executor_main_runs(stage, inspected):
    """The compiled IR runs `sh -ec '... python3 -m kfp.dsl.executor_main ...'`."""
    res = run_in(stage, "set -e; python3 -m kfp.dsl.executor_main --help >/tmp/help 2>&1; "
                        "grep -q -- --executor_input /tmp/help && echo ok")
    assert res.returncode == 0 and "ok" in res.stdout, res.stdout + res.stderr


@pytest.mark.parametrize("stage", images.STAGES)
@needs_engine
def test_only_its_own_stage_code(stage, inspected):
    res = run_in(stage, "ls /opt/venv/lib/python3.11/site-packages/kfx_components; "
                        "ls -d /opt/venv/lib/python3.11/site-packages/kfx /opt/venv/lib/python3.11/site-packages/kfx_pipelines 2>/dev/null; true")
    present = set(res.stdout.split())
    others = (set(images.STAGES) - {stage}) & present
    assert stage in present and not others, f"{stage}: stage folders {sorted(present)}"
    assert not any(p.endswith(("/kfx", "/kfx_pipelines")) for p in present), present


@needs_engine
def test_tf_runtime_carries_bytecode(inspected):
    """The TF venv ships .pyc (the user cannot write __pycache__; TF would compile on every step)."""
    res = run_in("evaluate", "ls /opt/venv/lib/python3.11/site-packages/tensorflow/__pycache__/__init__.cpython-311.pyc "
                             "/opt/venv/lib/python3.11/site-packages/tensorflow_model_analysis/__pycache__/")
    assert res.returncode == 0, res.stderr


@needs_engine
def test_tf_stages_share_one_runtime(inspected):
    """All TF stage images start from the same runtime layers (the budget depends on it)."""
    layer_sets = {s: inspected[s]["RootFS"]["Layers"] for s in TF_STAGES}
    runtime = min(layer_sets.values(), key=len)
    n = len(runtime) - 1  # all but the stage's own code layer
    prefix = runtime[:n]
    for s, layers in layer_sets.items():
        assert layers[:n] == prefix, f"{s} does not share the TF runtime layers"
        assert len(layers) == n + 1, f"{s}: {len(layers) - n} own layers, expected 1"
    assert inspected["push"]["RootFS"]["Layers"][0] == prefix[0], "push does not share the parent layer"


STAGE_SET_BUDGET = 4_100_000_000   # a third of one tensorflow/tfx 1.15.1 image (12.3 GB)


def _own_layer_bytes(ref: str) -> int:
    """Bytes of the image's newest non-empty layer (a stage image: its code layer)."""
    res = _docker("history", "--no-trunc", "--human=false", "--format", "{{.Size}}", ref, text=True)
    assert res.returncode == 0, res.stderr
    return next(int(size) for size in res.stdout.split() if int(size) > 0)


@needs_engine
def test_the_nine_stage_images_fit_the_budget(inspected):
    """Distinct layer bytes over every stage image <= 4.1 GB, as an upper bound cheap enough for every
    test run (`make images-sizes` measures exactly, with `docker save`: docs/images.md).

    The TF stages share all but their code layer (test above): their shared part once, each code
    layer, and the whole push image (its parent layer, shared with the TF runtime, counted twice).
    """
    first = TF_STAGES[0]
    shared = inspected[first]["Size"] - _own_layer_bytes(images.stage_image(first))
    code = sum(_own_layer_bytes(images.stage_image(s)) for s in TF_STAGES)
    bound = shared + code + inspected["push"]["Size"]
    assert 0 < code < 10_000_000, f"the TF stages' code layers add up to {code} bytes"
    assert bound <= STAGE_SET_BUDGET, f"stage images: up to {bound / 1e9:.2f} GB of distinct layers > 4.1 GB"


@needs_engine
def test_the_infra_validate_image_is_the_tf_runtime_plus_the_serving_runtime(inspected):
    """kfx-infra-validate carries two runtimes, so it is left out of the nine-stage budget above and held
    to its own: the TF runtime's layers shared with the other stages, then only the serve image's venv
    (the runtime it validates against) and its code. A cheaper image needs a lock of kserve + kfp."""
    tf_layers = inspected[TF_STAGES[0]]["RootFS"]["Layers"][:-1]
    layers = inspected["infra_validate"]["RootFS"]["Layers"]
    assert layers[:len(tf_layers)] == tf_layers, "infra_validate does not share the TF runtime layers"
    assert len(layers) == len(tf_layers) + 2, f"{len(layers) - len(tf_layers)} own layers, expected 2 (venv, code)"
    serve = json.loads(_docker("image", "inspect", images.serve_image()).stdout)[0]
    extra = inspected["infra_validate"]["Size"] - (inspected[TF_STAGES[0]]["Size"]
                                                   - _own_layer_bytes(images.stage_image(TF_STAGES[0])))
    assert extra <= serve["Size"], f"infra_validate adds {extra / 1e9:.2f} GB, more than the whole serve image"


# ---- kfx-cli: the platform image the chart's registration Job runs ----------------------------

# (the kubernetes client is there: kfp depends on it)
NOT_IN_CLI = ("tensorflow", "tf_keras", "keras", "tensorflow_transform", "apache_beam", "jax", "torch",
              "kfx_components", "kfx_pipelines", "ml_metadata", "docker")


@pytest.fixture(scope="module")
def cli_inspected() -> dict:
    ref = images.cli_image()
    res = _docker("image", "inspect", ref)
    assert res.returncode == 0, f"{ref} is not built: run `make images` ({res.stderr.decode().strip()})"
    return json.loads(res.stdout)[0]


def run_cli(script: str, user: str = "1000:1000", timeout: int = 300) -> subprocess.CompletedProcess:
    return _docker("run", "--rm", "--network", "none", "--user", user, images.cli_image(), "sh", "-c", script,
                   timeout=timeout, text=True)


@needs_engine
def test_cli_image_identity(cli_inspected):
    config = cli_inspected["Config"]
    assert config.get("User", "").split(":")[0] == "1000"
    labels = config.get("Labels") or {}
    missing = [key for key in OCI_LABELS if not labels.get(key)]
    assert not missing, f"kfx-cli: OCI labels missing or empty: {missing}"
    assert labels["org.opencontainers.image.title"] == "kfx-cli"
    assert labels["org.opencontainers.image.version"] == images.version()
    assert labels["org.opencontainers.image.revision"] != "unknown"
    want = f"{images.cli_repo()}:{images.version()}-{labels['io.kfx.content-hash']}"
    assert want in cli_inspected.get("RepoTags", []), f"{want} not among {cli_inspected.get('RepoTags')}"
    env = dict(e.split("=", 1) for e in config.get("Env", []))
    assert env["PATH"].startswith("/opt/venv/bin:"), env["PATH"]
    # same runtime as the push stage: the registry stores the venv layer once
    res = _docker("image", "inspect", images.stage_image("push"))
    if res.returncode == 0:
        push_layers = json.loads(res.stdout)[0]["RootFS"]["Layers"]
        assert cli_inspected["RootFS"]["Layers"][:-1] == push_layers[:-1]


@needs_engine
def test_cli_runs_kfx_submit_as_uid_1000(cli_inspected):
    res = run_cli("id -u; command -v python; python -m kfx.submit --help")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "1000" and lines[1] == "/opt/venv/bin/python", lines[:2]
    for flag in ("--host", "--ir", "--pipeline-name", "--version", "--cron", "--service-account", "--param"):
        assert flag in res.stdout, f"{flag} missing from `python -m kfx.submit --help`"


@needs_engine
def test_cli_holds_no_tensorflow_and_no_stage_code(cli_inspected):
    assert cli_inspected["Size"] <= PUSH_BUDGET, f"kfx-cli is {cli_inspected['Size'] / 1e6:.0f} MB"
    res = run_cli("python3 - <<'EOF'\n"
                  "import importlib.util as u, importlib.metadata as md, os, sys\n"
                  f"for m in {NOT_IN_CLI!r}:\n"
                  "    assert u.find_spec(m) is None, m + ' is importable in kfx-cli'\n"
                  "import kfx, kfx.submit, kfp, kfp_server_api, yaml\n"
                  f"for m in {FORMATS_MODULES!r}:\n"
                  "    __import__(m)\n"
                  "assert 'tensorflow' not in sys.modules\n"
                  "print(sorted(f for f in os.listdir(os.path.dirname(kfx.__file__)) if f.endswith('.py')))\n"
                  "print('kfx', md.version('kfx'))\n"
                  "EOF")
    assert res.returncode == 0, res.stdout + res.stderr
    top_level = sorted(p.name for p in images.cli_sources() if p.parent == REPO / "kfx")   # kfx.submit's closure
    assert str(top_level) in res.stdout, res.stdout
    assert f"kfx {images.version()}" in res.stdout


@needs_engine
def test_cli_has_no_credentials(cli_inspected):
    leaked = [e.split("=", 1)[0] for e in cli_inspected["Config"].get("Env", []) if SECRET_ENV.match(e)]
    assert not leaked, f"kfx-cli: credential-like variables baked into the image: {leaked}"
    found = scan(_exported_files("cli", images.cli_image()))
    assert not found, "kfx-cli: possible credentials in the image:\n" + "\n".join(found[:50])


TINY_PIPELINE = """
from kfp import compiler, dsl

@dsl.component(base_image="kfx/kfx-ingest:test")
def make(n: int, name: str) -> str:
    return f"{name}:{n}"

@dsl.pipeline(name="kfx-tiny")
def tiny(n: int = 2, name: str = "x"):
    make(n=n, name=name)

import sys
compiler.Compiler().compile(tiny, sys.argv[1])
"""


def _tiny_ir(path: Path) -> None:
    """A compiled one-step pipeline with typed parameters (what the Job registers). In a
    subprocess: this module's `from __future__ import annotations` would hide the types from kfp."""
    script = path.parent.parent / "tiny_pipeline.py"      # kfp reads the component's source file
    script.write_text(TINY_PIPELINE)
    res = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]


@needs_engine
def test_cli_runs_the_charts_registration_job(cli_inspected, tmp_path):
    """helm/kfx's registration Job, exactly as rendered (command, args, user, read-only root,
    HOME=/tmp, IR mounted), run in kfx-cli against the KFP API stand-in (tests/k8s/kfp_standin.py,
    which checks each request against the kfp_server_api models): twice, the second a no-op."""
    import yaml

    from tests.k8s.kfp_standin import KfpStandIn
    helm = REPO / ".tools" / "bin" / "helm"
    if not helm.exists():
        pytest.skip("helm not installed: run `make k8s-tools`")
    ir_dir = tmp_path / "ir"
    ir_dir.mkdir()
    _tiny_ir(ir_dir / "pipeline.yaml")
    ir_dir.chmod(0o755)
    (ir_dir / "pipeline.yaml").chmod(0o644)
    rendered = subprocess.run(
        [str(helm), "template", "kfx", str(REPO / "helm" / "kfx"), "-n", "kfx",
         "--set-file", f"pipeline.ir={ir_dir / 'pipeline.yaml'}", "--set", "pipeline.parameters=null",
         "--set", "pipeline.name=kfx-tiny", "--set", f"image.registry={images.registry()}",
         "--set", f"image.tag={images.image_tag()}"], check=True, capture_output=True, text=True).stdout
    job = next(d for d in yaml.safe_load_all(rendered)
               if d and d["kind"] == "Job" and d["metadata"]["name"] == "kfx-register-pipeline")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == images.cli_image()
    mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "ir")
    sec = {**pod["securityContext"], **container["securityContext"]}
    assert sec["readOnlyRootFilesystem"] and sec["runAsNonRoot"]
    standin = KfpStandIn()
    host = standin.start()
    try:
        args = [a for a in container["args"] if not a.startswith("--host=")] + [f"--host={host}"]
        cmd = ["run", "--rm", "--network", "host", "--user", f"{sec['runAsUser']}:{sec['runAsGroup']}",
               "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
               "-v", f"{ir_dir}:{mount}:ro"]
        for e in container["env"]:
            cmd += ["-e", f"{e['name']}={e['value']}"]
        cmd += ["--entrypoint", container["command"][0], container["image"], *container["command"][1:], *args]
        for attempt in (1, 2):
            res = _docker(*cmd, timeout=300, text=True)
            assert res.returncode == 0, f"attempt {attempt}: {res.stdout}\n{res.stderr[-3000:]}"
            out = json.loads(res.stdout)      # stdout is the ids alone (kfp's chatter goes to stderr)
            assert standin.errors == [], standin.errors
            assert len(standin.recurring) == 1
        assert out["version_reused"] is True and out["replaced_recurring_run_ids"] == []
        (rr,) = standin.recurring.values()
        assert rr["service_account"] == "kfx-pipeline-runner"
        assert rr["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    finally:
        standin.stop()


# ---- the locks (no engine needed) -----------------------------------------------------------

def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_gpu_lock_is_the_tf_lock_plus_cuda_wheels():
    """tf-runtime-gpu.lock (make images-gpu; not built here) = tf-runtime.lock + nvidia-* only."""
    cpu = _pins(REPO / "requirements" / "images" / "tf-runtime.lock")
    gpu = _pins(REPO / "requirements" / "images" / "tf-runtime-gpu.lock")
    assert {k: v for k, v in gpu.items() if k in cpu} == cpu
    extra = set(gpu) - set(cpu)
    assert extra and all(k.startswith("nvidia-") for k in extra), sorted(extra)
    assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12"} <= extra and gpu["tensorflow"] == "2.16.2"


@pytest.mark.parametrize("lock", ["push.lock", "tf-runtime.lock"])
def test_image_locks_pin_what_the_main_lock_pins(lock):
    main = _pins(REPO / "requirements" / "stack.lock")
    image = _pins(REPO / "requirements" / "images" / lock)
    assert image, lock
    differ = {k: (v, main.get(k)) for k, v in image.items() if main.get(k) != v}
    assert not differ, f"{lock} pins differ from stack.lock (image, main): {differ}"
    dev = {"moto", "pytest", "cfn-lint", "jupyterlab", "notebook", "jupyter-server", "debugpy", "libclang"}
    assert not dev & set(image), f"{lock} carries test/dev packages: {sorted(dev & set(image))}"
    if lock == "push.lock":
        assert not {"tensorflow", "tf-keras", "keras", "apache-beam"} & set(image)


@pytest.mark.parametrize("env", [{}, {"KFX_IMAGE_REGISTRY": "registry.example:5000/ml/", "KFX_IMAGE_TAG": "rc1"}])
def test_built_names_are_the_names_the_ir_uses(env, monkeypatch):
    """images/build.py tags exactly what components/images.py writes into the compiled IR."""
    from kfx_components.images import stage_image
    for key in ("KFX_IMAGE_REGISTRY", "KFX_IMAGE_TAG"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for stage in images.STAGES:
        assert images.stage_image(stage) == stage_image(stage)
