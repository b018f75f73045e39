"""The stages, defined once: the profiles, the image build, the benchmarks and the pipeline read this.

Each stage says which runtime image it builds on, whether it may go to an
accelerator pool, its default resources, whether KFP may cache it, its
retries and its timeout. Plain data (standard library only): images/build.py
loads this file without importing TensorFlow or KFP.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

TF_RUNTIME, PUSH_RUNTIME = "tf-runtime", "push-runtime"


@dataclass(frozen=True)
class Resources:
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str


@dataclass(frozen=True)
class Stage:
    name: str
    runtime: str                 # the image it builds on: TensorFlow's, or the small push runtime
    resources: Resources         # sized for the bundled data sets (tens of MB); raise for bigger tables
    timeout_seconds: int         # activeDeadlineSeconds of its pod
    accelerated: bool = False    # placed on the GPU/TPU pool by the gpu and tpu profiles
    cached: bool = True          # a pure function of its inputs: KFP may serve it from cache
    retries: int = 2             # transient node/pod failures (preemptible nodes included)


def _stages(*stages: Stage) -> Dict[str, Stage]:
    return {s.name: s for s in stages}


# In lifecycle order.
STAGES: Dict[str, Stage] = _stages(
    # resolve reads the registry, which changes between runs: it always runs (it is cheap).
    Stage("resolve", PUSH_RUNTIME, Resources("100m", "500m", "256Mi", "1Gi"), 300, cached=False),
    Stage("ingest", TF_RUNTIME, Resources("500m", "2", "1Gi", "4Gi"), 1800),
    Stage("validate", TF_RUNTIME, Resources("1", "2", "2Gi", "6Gi"), 1800),
    Stage("transform", TF_RUNTIME, Resources("1", "2", "2Gi", "6Gi"), 3600),
    Stage("tune", TF_RUNTIME, Resources("2", "4", "4Gi", "12Gi"), 4 * 3600, accelerated=True),
    Stage("distributed_train", TF_RUNTIME, Resources("2", "4", "4Gi", "12Gi"), 8 * 3600, accelerated=True),
    Stage("distill", TF_RUNTIME, Resources("2", "4", "4Gi", "12Gi"), 4 * 3600, accelerated=True),
    Stage("quantize", TF_RUNTIME, Resources("1", "2", "2Gi", "6Gi"), 3600),
    # evaluate is a pure function of its inputs (the baseline arrives from resolve as a URI).
    Stage("evaluate", TF_RUNTIME, Resources("1", "2", "2Gi", "8Gi"), 3600),
    # infra_validate serves the candidate with kfx_serving on 127.0.0.1 in its own pod (its image carries
    # the serving venv, components/infra_validate/component.py); a pure function of its inputs.
    Stage("infra_validate", TF_RUNTIME, Resources("1", "2", "2Gi", "6Gi"), 1200),
    # push writes a registry version (idempotently): it always runs.
    Stage("push", PUSH_RUNTIME, Resources("250m", "1", "512Mi", "2Gi"), 900, cached=False, retries=1),
    # deploy records the rollout a pushed model asks for (kfx serve / kfx rollout act on it).
    Stage("deploy", PUSH_RUNTIME, Resources("100m", "500m", "256Mi", "1Gi"), 300, cached=False, retries=1),
    # notify (the exit task of the lifecycle's dsl.ExitHandler) posts the run's outcome: it always runs.
    Stage("notify", PUSH_RUNTIME, Resources("50m", "200m", "64Mi", "256Mi"), 120, cached=False, retries=1),
    # monitor (its own pipeline, pipelines/monitor.py) judges a serving window: it always runs.
    Stage("monitor", TF_RUNTIME, Resources("500m", "2", "1Gi", "4Gi"), 1800, cached=False),
)
NAMES: Tuple[str, ...] = tuple(STAGES)
