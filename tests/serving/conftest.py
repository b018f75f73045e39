"""Serving test fixtures: one pushed taxi model per session, made by the real pipeline.

v1 is a copy of the version the session's one full lifecycle run pushed (`taxi_run`,
tests/conftest.py, shared with tests/test_e2e.py: no training of its own here), copied into
this directory's own registry so that the aliases the rollouts move stay out of the e2e root;
then two candidate versions derived from it (tests/serving/make_versions.py): v2 works (shifted
decision), v3 is deliberately broken (fails every real request, but loads). Servers are real
KServe ModelServers in `.venv-serving`, the front is a real nginx; `make serving-test-deps`
installs both.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_runs import pushed_uri

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
            if "served_registry" in getattr(item, "fixturenames", ()):   # it waits for the whole lifecycle run
                item.add_marker(pytest.mark.e2e)


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
def served_registry(request, tmp_path_factory) -> dict:
    """{registry, model_dir, v1, v2 (good), v3 (broken)} under a temp root."""
    need_serving_env()
    root = tmp_path_factory.mktemp("serving-root")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    registry = root / "registry"
    # A pushed vN dir named in the environment skips the shared lifecycle run (iterating on serving alone).
    pushed = os.environ.get("KFX_SERVING_TEST_MODEL") or pushed_uri(request.getfixturevalue("taxi_run")[2])
    shutil.copytree(pushed, registry / MODEL / "v1")
    made = subprocess.run([sys.executable, str(Path(__file__).with_name("make_versions.py")), str(registry), MODEL],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
    model_dir = registry / MODEL
    assert sorted(p.name for p in model_dir.iterdir() if p.name.startswith("v")) == ["v1", "v2", "v3"]
    return {"registry": registry, "model_dir": model_dir, "v1": model_dir / "v1", "v2": model_dir / "v2",
            "v3": model_dir / "v3", "card": json.loads((model_dir / "v1" / "model_card.json").read_text())}

