"""Serving test fixtures: one small pushed taxi model per session, made by the real pipeline.

`kfx run` on 1,500 taxi rows with one tuning trial and two epochs (~90 s), then two candidate
versions derived from it (tests/serving/make_versions.py): v2 works (shifted decision), v3 is
deliberately broken (fails every real request, but loads). Servers are real KServe ModelServers
in `.venv-serving`, the front is a real nginx; `make serving-test-deps` installs both.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TAXI = REPO.parent / "shared" / "data" / "chicago_taxi" / "data.csv"
MODEL = "chicago-taxi-big-tipper"
SERVING_PY = REPO / ".venv-serving" / "bin" / "python"


def pytest_configure(config):
    config.addinivalue_line("markers", "serving: the serving runtime, rollouts and batch scoring (tests/serving)")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/serving" in str(item.fspath):
            item.add_marker(pytest.mark.serving)


def need_serving_env():
    if not SERVING_PY.exists():
        pytest.skip("no .venv-serving (make serving-venv)")
    if not (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")):
        pytest.skip("no nginx (make serving-nginx)")


@pytest.fixture(scope="session")
def taxi_csv(tmp_path_factory) -> Path:
    src = TAXI if TAXI.exists() else REPO / "data" / "chicago_taxi" / "data.csv"
    out = tmp_path_factory.mktemp("serving-data") / "taxi.csv"
    with open(src) as f, open(out, "w") as g:
        for i, line in enumerate(f):
            if i > 1500:
                break
            g.write(line)
    return out


@pytest.fixture(scope="session")
def served_registry(tmp_path_factory, taxi_csv) -> dict:
    """{registry, model_dir, v1, v2 (good), v3 (broken)} under a temp root."""
    need_serving_env()
    root = tmp_path_factory.mktemp("serving-root")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    registry = root / "registry"
    reuse = os.environ.get("KFX_SERVING_TEST_MODEL")   # a pushed vN dir: skips the ~90 s pipeline run
    if reuse:
        shutil.copytree(reuse, registry / MODEL / "v1")
    else:
        _run_pipeline(root, taxi_csv, env)
    made = subprocess.run([sys.executable, str(Path(__file__).with_name("make_versions.py")), str(registry), MODEL],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
    model_dir = registry / MODEL
    assert sorted(p.name for p in model_dir.iterdir() if p.name.startswith("v")) == ["v1", "v2", "v3"]
    return {"registry": registry, "model_dir": model_dir, "v1": model_dir / "v1", "v2": model_dir / "v2",
            "v3": model_dir / "v3", "card": json.loads((model_dir / "v1" / "model_card.json").read_text())}


def _run_pipeline(root, taxi_csv, env):
    run = subprocess.run(
        [sys.executable, "-m", "kfx.cli", "run", "--config", str(REPO / "pipelines/configs/chicago_taxi.yaml"),
         "--data", str(taxi_csv), "--root", str(root), "--param", "max_trials=1", "--param", "tune_epochs=1",
         "--param", "train_epochs=2", "--param", "distill_epochs=2", "--param", "metric_threshold=0.0"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
