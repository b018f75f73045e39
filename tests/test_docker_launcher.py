"""The Docker launcher against a real engine and a built stage image: what a step's
container actually gets (user, CPU and memory limits, environment, mounts), its log
streamed line by line, a step killed for its memory named as such, a step past its timeout stopped."""
import time

import pytest

from kfx.runner.launchers import Step
from tests import docker_engine

pytestmark = pytest.mark.docker

# Reads what the kernel enforces on this container (cgroup v1 or v2) and what it may write.
PROBE = r"""
import os, pathlib
def first(*paths):
    for p in paths:
        if os.path.exists(p):
            return pathlib.Path(p).read_text().strip()
print("uid", os.getuid(), "gid", os.getgid())
print("memory", first("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"))
print("swap", first("/sys/fs/cgroup/memory.swap.max", "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"))
cpu = first("/sys/fs/cgroup/cpu.max")
if cpu is None:
    cpu = first("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") + " " + first("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
print("cpu", cpu)
print("task", os.environ.get("KFX_TASK"), "secret", os.environ.get("AWS_SECRET_ACCESS_KEY", "-"))
pathlib.Path(os.environ["OUT"], "written").write_text("ok")
try:
    open(os.path.join(os.environ["IN"], "nope"), "w")
    print("input writable")
except OSError:
    print("input read-only")
"""


@pytest.fixture(scope="module")
def launcher():
    client = docker_engine.client()
    from kfx.runner.docker_launcher import DockerLauncher, image_exists
    from kfx_components.images import stage_image
    image = stage_image("push")   # the smallest stage image: Python without TensorFlow
    if not image_exists(client, image):
        pytest.fail(f"{image} is not built: run `make images`")
    return DockerLauncher(client), image


def _step(image, tmp_path, code, **kw):
    out, inp = tmp_path / "out", tmp_path / "in"
    inp.mkdir()
    return Step("probe", image, ["python3", "-c", code],
                {"KFX_TASK": "probe", "OUT": str(out), "IN": str(inp)}, tmp_path, [str(inp)], [str(out)], **kw)


def test_step_runs_as_non_root_with_the_tasks_limits(launcher, tmp_path, monkeypatch):
    dl, image = launcher
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-the-runner-env")   # passed at run time only
    lines = []
    code = dl.launch(_step(image, tmp_path, PROBE, cpu_limit=0.5, memory_limit="256Mi"),
                     tmp_path / "probe.log", lines.append)
    assert code == 0, lines
    facts = dict(line.split(" ", 1) for line in lines if " " in line)
    assert facts["uid"].startswith("1000 ") and facts["uid"].endswith("gid 1000")
    assert facts["memory"] == str(256 * 2**20)
    assert facts["swap"] in {str(256 * 2**20), "0"}          # v1: memory+swap == memory; v2: no swap
    quota, period = facts["cpu"].split()
    assert int(quota) / int(period) == pytest.approx(0.5)
    assert facts["task"] == "probe secret from-the-runner-env"
    assert "input read-only" in lines
    assert (tmp_path / "out" / "written").read_text() == "ok"
    assert (tmp_path / "probe.log").read_text().splitlines() == lines   # streamed line by line, all kept


def test_a_step_over_its_memory_limit_is_killed_and_named(launcher, tmp_path):
    dl, image = launcher
    hog = "x = bytearray(400 * 2**20); x[::4096] = b'1' * len(x[::4096]); print('survived')"
    lines = []
    code = dl.launch(_step(image, tmp_path, hog, memory_limit="128Mi"), tmp_path / "hog.log", lines.append)
    assert code == 137
    assert "survived" not in lines
    assert lines[-1] == "kfx: the container was killed for exceeding its memory limit (128Mi)"


def test_a_step_past_its_timeout_is_stopped(launcher, tmp_path):
    """A step's timeout (the IR's, or its stage's) under --executor docker: the runner's deadline
    stops the container, as it kills a process under the other launchers."""
    from kfx.runner.dispatch import _Deadline
    dl, image = launcher
    lines = []
    started = time.monotonic()
    with _Deadline(dl, "probe", 3) as deadline:
        code = dl.launch(_step(image, tmp_path, "import time; time.sleep(120); print('survived')"),
                         tmp_path / "sleep.log", lines.append)
    assert deadline.expired and code != 0 and "survived" not in lines
    assert time.monotonic() - started < 60 and dl.running == {}


def test_an_input_inside_a_writable_path_stays_writable(launcher, tmp_path):
    """deploy reads the pushed model (under the registry) and writes its record beside it."""
    dl, image = launcher
    registry = tmp_path / "registry"
    model = registry / "m" / "v1"
    model.mkdir(parents=True)
    (model / "saved_model.pb").write_text("model")
    code = ("import pathlib; d = pathlib.Path('%s') / 'deployments'; d.mkdir(); (d / 'r.json').write_text('{}'); "
            "print(open('%s').read())" % (registry / "m", model / "saved_model.pb"))
    lines = []
    step = Step("deploy", image, ["python3", "-c", code], {}, tmp_path, [str(registry / "m")], [str(registry)])
    assert dl.launch(step, tmp_path / "deploy.log", lines.append) == 0, lines
    assert lines == ["model"]
    assert (registry / "m" / "deployments" / "r.json").read_text() == "{}"
