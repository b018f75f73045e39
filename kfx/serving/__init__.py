"""The serving end of the lifecycle (docs/serving.md): the platform side of `kfx serve`, `kfx rollout`
and `kfx predict`. The commands themselves are kfx/commands/serving.py.

    registry.py    what serving needs of the model registry (over kfx_formats.registry)
    servers.py     one model server (kfx_serving in .venv-serving or the kfx-serve image), the payload sink
    front.py       the real nginx in front of two servers and its per-request access log
    rollout.py     a local canary / blue-green / shadow rollout, driven by a RolloutPolicy
    rollout_state.py  a local rollout's record on disk (state.json, events) and commands sent to it
    contract_check.py the request-contract check before a rollout (candidate vs production's clients)
    replay.py      replay before canary: logged requests scored offline by the candidate, judged vs the champion
    traffic.py     synthetic client traffic replayed through the front
    kubernetes.py  the same strategies on KServe / Istio, watched through Prometheus
    batch.py       batch scoring with Beam (and the in-process Scorer replay uses)

Platform code: imports no kfx_components (stage) module and no TensorFlow at import time.
"""
import sys


class ServingError(RuntimeError):
    """Serving could not do what was asked (no such version, a server that did not start...):
    the command prints it in one line and exits 1."""


def log(msg: str) -> None:
    print(f"[kfx serving] {msg}", file=sys.stderr, flush=True)
