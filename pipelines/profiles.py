"""Where each step runs: compile profiles for the tabular pipeline.

``kfx compile --profile P`` builds the pipeline and calls :func:`place` on every
task. A profile decides, per stage:

* CPU/memory requests and limits (set on the container in the IR),
* accelerator type and count (``set_accelerator_type``/``set_accelerator_limit``),
* node selector and tolerations for the node pool (``kfp.kubernetes``),
* retries, caching, a timeout (``activeDeadlineSeconds``) and pod labels that the
  NetworkPolicies in manifests/ and helm/ select on,
* object-store settings: endpoint from the ``kfx-s3-config`` ConfigMap and
  credentials from the ``kfx-s3-credentials`` Secret, both in the namespace the
  runs go to. The IR never carries a credential or an endpoint.

Profiles
--------
``local``  no Kubernetes settings but the stage's timeout (``kfx run`` on this machine
           applies it); resources and caching. ``pipeline_root`` is None.
``cpu``    every step on the CPU pool.
``gpu``    tune, distributed_train and distill on the GPU pool with
           ``nvidia.com/gpu`` x1, the rest on the CPU pool.
``tpu``    the same three stages on a TPU pool (``google.com/tpu``, GKE TPU v5e
           single-host slice) with ``TPU_NAME=local``, the rest on the CPU pool.
``flink``  placed as ``cpu``; the data stages' Beam pipelines (ingest, validate,
           transform, evaluate) go to a Flink session cluster through Beam's job
           server (manifests/flink, chart value ``flink.enabled``):
           :func:`beam_pipeline_args` gives their ``beam_pipeline_args``
           (docs/scale.md). Training scales out through the TFJob path as before.

Accelerators are used, not only held: on a GKE TPU VM node the chips are local to the
VM, and ``TPUClusterResolver(tpu="local")`` is how TensorFlow finds them; the
distributed_train executor builds a ``TPUStrategy`` only when ``TPU_NAME`` (or the
legacy ``KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS``) is set, so the TPU pool sets it on every step
it places. The image must also carry TensorFlow's TPU runtime (libtpu), and GPUs need a
CUDA build of TensorFlow (``make images-gpu``); the default tf-runtime has neither
(docs/deploy.md, "What runs where").

The node pool labels and taints below are the contract with the cluster: the
chart's ``nodePools`` values and docs/deploy.md label and taint the pools the
same way. Change them together.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from kfx_components.stages import NAMES as STAGES
from kfx_components.stages import STAGES as STAGE_SPECS

PROFILES: Tuple[str, ...] = ("cpu", "gpu", "tpu", "flink")
LOCAL = "local"

ACCELERATED_STAGES: Tuple[str, ...] = tuple(s.name for s in STAGE_SPECS.values() if s.accelerated)

# Object storage: names of the Kubernetes objects every step reads its S3 settings from
# (created by manifests/ or helm/; the Secret out of band, see docs/deploy.md).
S3_SECRET = "kfx-s3-credentials"
S3_SECRET_KEYS: Dict[str, str] = {          # secret key -> env var
    "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
}
S3_CONFIGMAP = "kfx-s3-config"
S3_CONFIGMAP_KEYS: Dict[str, str] = {       # configmap key -> env var
    "KFX_S3_ENDPOINT": "KFX_S3_ENDPOINT",
    "KFX_S3_SECURE": "KFX_S3_SECURE",
    "AWS_REGION": "AWS_REGION",
}
# The lifecycle's notify step (exit handler) posts to the webhook URL in this Secret: a webhook URL
# is a credential (whoever has it can post), so it never appears in the IR.
NOTIFY_SECRET = "kfx-notify"
NOTIFY_SECRET_KEYS: Dict[str, str] = {"url": "KFX_NOTIFY_URL"}   # secret key -> env var
ARTIFACT_BUCKET = "kfx-artifacts"
PIPELINE_ROOT = f"minio://{ARTIFACT_BUCKET}/pipeline-root"

# Pod labels (NetworkPolicies select on these).
PART_OF_LABEL = ("app.kubernetes.io/part-of", "kfx")
STAGE_LABEL = "kfx.dev/stage"
POOL_LABEL = "kfx.dev/node-pool"


@dataclass(frozen=True)
class Toleration:
    key: str
    operator: str = "Exists"
    effect: str = "NoSchedule"
    value: Optional[str] = None


@dataclass(frozen=True)
class NodePool:
    name: str
    node_selector: Dict[str, str]
    tolerations: Tuple[Toleration, ...] = ()
    accelerator_type: Optional[str] = None   # extended resource name
    accelerator_count: int = 0
    env: Dict[str, str] = field(default_factory=dict)   # set on every step placed here


NODE_POOLS: Dict[str, NodePool] = {
    "cpu": NodePool("cpu", {POOL_LABEL: "cpu"}),
    "gpu": NodePool(
        "gpu", {POOL_LABEL: "gpu"},
        (Toleration("nvidia.com/gpu"),),
        accelerator_type="nvidia.com/gpu", accelerator_count=1,
    ),
    "tpu": NodePool(
        "tpu",
        {
            POOL_LABEL: "tpu",
            # GKE schedules TPU pods by these two labels (single-host v5e slice, 1 chip).
            "cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
            "cloud.google.com/gke-tpu-topology": "1x1",
        },
        (Toleration("google.com/tpu"),),
        accelerator_type="google.com/tpu", accelerator_count=1,
        # GKE TPU VMs: the chips are attached to the node's VM; "local" makes
        # TPUClusterResolver use them (components/distributed_train/executor.py).
        env={"TPU_NAME": "local"},
    ),
}


RETRY_BACKOFF = ("30s", 2.0, "10m")         # duration, factor, max duration

# The stages whose work is a Beam pipeline (they take beam_pipeline_args).
BEAM_STAGES: Tuple[str, ...] = ("ingest", "validate", "transform", "evaluate")
# Beam's Flink job server and the SDK worker pool beside each TaskManager (manifests/flink,
# helm/kfx templates/flink.yaml): the names are the contract with those manifests.
FLINK_JOB_SERVER = "kfx-beam-jobserver"
FLINK_BEAM_ARGS: Tuple[str, ...] = (
    "--runner=PortableRunner",
    f"--job_endpoint={FLINK_JOB_SERVER}:8099",
    f"--artifact_endpoint={FLINK_JOB_SERVER}:8098",
    "--environment_type=EXTERNAL",
    "--environment_config=localhost:50000",
    "--parallelism=8",
    f"--temp_location=s3://{ARTIFACT_BUCKET}/beam-temp",
    "--s3_endpoint_url=http://kfx-minio:9000",   # the chart's MinIO Service (minio.enabled)
)
LOCAL_BEAM_ARGS: Tuple[str, ...] = ("--runner=DirectRunner",)


def beam_pipeline_args(profile: Optional[str]) -> List[str]:
    """The data stages' beam_pipeline_args under a profile: Flink's portable runner for
    ``flink``, the DirectRunner (in this pod / on this machine) for every other profile."""
    profile = profile or LOCAL
    if profile != LOCAL and profile not in PROFILES:
        raise ValueError(
            f"unknown compile profile {profile!r}; expected one of {', '.join((LOCAL,) + PROFILES)}")
    return list(FLINK_BEAM_ARGS if profile == "flink" else LOCAL_BEAM_ARGS)

def _check(stage: str, profile: Optional[str]) -> str:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    profile = profile or LOCAL
    if profile != LOCAL and profile not in PROFILES:
        raise ValueError(
            f"unknown compile profile {profile!r}; expected one of {', '.join((LOCAL,) + PROFILES)}")
    return profile


def node_pool(stage: str, profile: Optional[str]) -> Optional[NodePool]:
    """The node pool a stage runs on under a profile (None for ``local``)."""
    profile = _check(stage, profile)
    if profile == LOCAL:
        return None
    if profile in ("gpu", "tpu") and stage in ACCELERATED_STAGES:
        return NODE_POOLS[profile]
    return NODE_POOLS["cpu"]


def pipeline_root(profile: Optional[str]) -> Optional[str]:
    """The pipeline root for a profile: None for local runs, MinIO on a cluster."""
    profile = profile or LOCAL
    if profile == LOCAL:
        return None
    if profile not in PROFILES:
        raise ValueError(
            f"unknown compile profile {profile!r}; expected one of {', '.join((LOCAL,) + PROFILES)}")
    return PIPELINE_ROOT


def kfx_pipeline(name: str, doc: str, profile: Optional[str]):
    """The @dsl.pipeline decorator of a kfx pipeline: its name, the first line of its doc as the
    description, and the profile's pipeline root."""
    from kfp import dsl
    return dsl.pipeline(name=name, description=doc.splitlines()[0], pipeline_root=pipeline_root(profile))


def place(task, stage: str, profile: Optional[str]):
    """Apply the profile's placement to one pipeline task and return the task."""
    profile = _check(stage, profile)
    spec = STAGE_SPECS[stage]
    res = spec.resources
    task.set_cpu_request(res.cpu_request).set_cpu_limit(res.cpu_limit)
    task.set_memory_request(res.memory_request).set_memory_limit(res.memory_limit)
    task.set_caching_options(enable_caching=spec.cached)
    from kfp import kubernetes  # kfp-kubernetes

    # The stage's timeout, locally too: the one Kubernetes setting the local runner applies.
    kubernetes.set_timeout(task, spec.timeout_seconds)
    if profile == LOCAL:
        return task

    duration, factor, max_duration = RETRY_BACKOFF
    task.set_retry(num_retries=spec.retries, backoff_duration=duration,
                   backoff_factor=factor, backoff_max_duration=max_duration)
    pool = node_pool(stage, profile)
    if pool.accelerator_type:
        task.set_accelerator_type(pool.accelerator_type)
        task.set_accelerator_limit(pool.accelerator_count)
    for name, value in sorted(pool.env.items()):
        task.set_env_variable(name, value)
    for key, value in pool.node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for tol in pool.tolerations:
        kubernetes.add_toleration(task, key=tol.key, operator=tol.operator,
                                  value=tol.value, effect=tol.effect)
    kubernetes.add_pod_label(task, PART_OF_LABEL[0], PART_OF_LABEL[1])
    kubernetes.add_pod_label(task, STAGE_LABEL, stage.replace("_", "-"))
    kubernetes.add_pod_label(task, POOL_LABEL, pool.name)
    kubernetes.set_image_pull_policy(task, "IfNotPresent")
    kubernetes.use_secret_as_env(task, secret_name=S3_SECRET, secret_key_to_env=dict(S3_SECRET_KEYS))
    kubernetes.use_config_map_as_env(task, config_map_name=S3_CONFIGMAP,
                                      config_map_key_to_env=dict(S3_CONFIGMAP_KEYS))
    if stage == "notify":
        kubernetes.use_secret_as_env(task, secret_name=NOTIFY_SECRET, secret_key_to_env=dict(NOTIFY_SECRET_KEYS))
    return task


def describe(profile: str) -> List[dict]:
    """One row per stage: where it runs and with what (for docs and `kfx compile` output)."""
    rows = []
    for stage in STAGES:
        pool = node_pool(stage, profile)
        res = STAGE_SPECS[stage].resources
        rows.append({
            "stage": stage,
            "pool": pool.name if pool else LOCAL,
            "accelerator": (f"{pool.accelerator_type} x{pool.accelerator_count}"
                            if pool and pool.accelerator_type else ""),
            "cpu": f"{res.cpu_request}/{res.cpu_limit}",
            "memory": f"{res.memory_request}/{res.memory_limit}",
            "cached": STAGE_SPECS[stage].cached,
            "env": dict(pool.env) if pool else {},
        })
    return rows
