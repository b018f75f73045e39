"""Local rollouts through the real CLI path (`python -m kfx.cli rollout start`): KServe model
servers in .venv-serving, a real nginx front (split_clients / mirror), synthetic client traffic over
real HTTP, a kfx payload sink. v2 is a working candidate, v3 a deliberately broken one."""
import json
import subprocess
import sys

import pytest

from kfx_formats import registry
from tests.serving.conftest import REPO

COMMON = ["--hold", "5", "--min-requests", "5", "--rps", "12", "--max-p99-ms", "5000", "--skip-replay"]


def rollout(served_registry, taxi_csv, *args, expect_rc):
    p = subprocess.run([sys.executable, "-m", "kfx.cli", "rollout", "start", str(served_registry["model_dir"]),
                        "--traffic", str(taxi_csv), *COMMON, *args], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == expect_rc, p.stdout[-2000:] + p.stderr[-4000:]
    return json.loads(p.stdout)


@pytest.fixture(scope="module")
def reg(served_registry):
    registry.set_alias(str(served_registry["model_dir"]), "production", 1, by="test")
    return served_registry


def test_canary_broken_candidate_rolls_back(reg, taxi_csv):
    out = rollout(reg, taxi_csv, "--candidate", "v3", "--strategy", "canary", "--steps", "25,100", expect_rc=1)
    assert out["status"] == "rolled-back" and out["result"]["at_percent"] == 25
    assert "error rate" in out["result"]["reason"]
    assert registry.aliases(str(reg["model_dir"]))["production"]["version"] == 1   # untouched
    events = [json.loads(l)["event"] for l in open(f"{out['dir']}/events.jsonl")]
    assert events[-1] == "rolled-back" and "promoted" not in events
    conf = open(f"{out['dir']}/nginx/nginx.conf").read()
    assert 'default "current"' in conf            # traffic was put back on the current version


def test_canary_good_candidate_is_promoted(reg, taxi_csv):
    out = rollout(reg, taxi_csv, "--candidate", "v2", "--strategy", "canary", "--steps", "30,100", expect_rc=0)
    assert out["status"] == "promoted"
    state = json.load(open(f"{out['dir']}/state.json"))
    steps = state["steps"]
    assert [s["candidate_percent"] for s in steps] == [30, 100]
    assert steps[0]["stats"]["requests"] >= 5 and steps[0]["stats"]["server_errors"] == 0
    assert steps[0]["baseline"]["requests"] > 0          # the split really sent traffic to both
    assert steps[1]["baseline"]["requests"] == 0 or steps[1]["stats"]["requests"] > steps[1]["baseline"]["requests"]
    al = registry.aliases(str(reg["model_dir"]))
    assert al["production"]["version"] == 2 and al["staging"]["version"] == 2
    registry.set_alias(str(reg["model_dir"]), "production", 1, by="test reset")


def test_shadow_reports_prediction_difference(reg, taxi_csv):
    out = rollout(reg, taxi_csv, "--candidate", "v2", "--current", "v1", "--strategy", "shadow", expect_rc=0)
    res = out["result"]
    assert res["decision"] == "shadowed" and res["healthy"] is True
    diff = res["difference"]
    assert diff["requests_compared"] >= 5
    # v2 shifts the decision (logit + make_versions.SHIFT): a real, bounded difference the report must see
    assert 0.01 < diff["mean_abs_diff"] < 0.2 and diff["max_abs_diff"] < 0.2
    assert res["shadow"]["server_errors"] == 0
    # the shadow did not answer: production alias unchanged, staging moved
    al = registry.aliases(str(reg["model_dir"]))
    assert al["production"]["version"] == 1 and al["staging"]["version"] == 2


def test_blue_green_broken_switches_back(reg, taxi_csv):
    out = rollout(reg, taxi_csv, "--candidate", "v3", "--strategy", "blue-green", expect_rc=1)
    assert out["status"] == "switched-back" and "error rate" in out["result"]["reason"]
    assert registry.aliases(str(reg["model_dir"]))["production"]["version"] == 1
