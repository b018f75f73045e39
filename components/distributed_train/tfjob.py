"""Multi-worker training on the cluster: a Kubeflow Training Operator TFJob.

The distributed_train step, when asked for N > 1 workers on a cluster, does not
train in its own pod: it creates a ``TFJob`` (``kubeflow.org/v1``) whose N
``Worker`` replicas run the same image and command, waits for the job to reach
``Succeeded`` or ``Failed``, and on failure raises :class:`TFJobFailed` naming the
failing replica, its exit code and reason, and the tail of its log.

``TF_CONFIG`` is not set here: the Training Operator writes it into every replica
(``{"cluster": {"worker": ["<job>-worker-0.<ns>.svc:2222", ...]}, "task":
{"type": "worker", "index": i}}``) and creates the headless Services the
addresses resolve to; ``MultiWorkerMirroredStrategy`` reads it (worker 0 is the
chief). The same code path runs on one machine with two processes on loopback
ports (tests/stages/test_distributed_train.py).

The Kubernetes API calls go through the official ``kubernetes`` client; no API
server can run on the build machine, so tests drive :func:`run_tfjob` with a mocked
client and validate :func:`build_tfjob`'s object against the Training Operator SDK
models and the Kubernetes Pod schema (tests/k8s/test_tfjob.py).

The step side of the handoff (staging inputs on S3, creating the job, fetching the
chief's outputs) is :func:`train_with_tfjob`; the worker side and the staging layout
are in worker.py. Staging root: ``KFX_TFJOB_STAGING_URI`` or the step's output folder.

This module imports no TensorFlow and no KFP.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "tfjobs", "TFJob"
CONTAINER_NAME = "tensorflow"   # the Training Operator's default container name for TFJob
PORT_NAME, PORT = "tfjob-port", 2222
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class TFJobError(RuntimeError):
    """Creating or watching the TFJob failed."""


class TFJobFailed(TFJobError):
    """The TFJob ended Failed; ``replica`` names the failing worker when one was found."""

    def __init__(self, message: str, replica: Optional[str] = None):
        super().__init__(message)
        self.replica = replica


class TFJobTimeout(TFJobError):
    """The TFJob did not finish within the timeout."""


def job_name(prefix: str, unique: str) -> str:
    """A DNS-1123 name (<= 50 chars, leaving room for the operator's "-worker-N" suffix)."""
    base = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:32] or "kfx-train"
    digest = hashlib.sha256(unique.encode()).hexdigest()[:10]
    return f"{base}-{digest}"


def build_tfjob(
    name: str,
    namespace: str,
    image: str,
    command: Sequence[str],
    args: Sequence[str] = (),
    workers: int = 2,
    env: Optional[Mapping[str, str]] = None,
    env_value_from: Sequence[Mapping[str, Any]] = (),
    env_from_secrets: Sequence[str] = (),
    env_from_config_maps: Sequence[str] = (),
    resources: Optional[Dict[str, Dict[str, str]]] = None,
    node_selector: Optional[Mapping[str, str]] = None,
    tolerations: Sequence[Mapping[str, Any]] = (),
    service_account: Optional[str] = None,
    labels: Optional[Mapping[str, str]] = None,
    active_deadline_seconds: Optional[int] = None,
    ttl_seconds_after_finished: int = 3600,
    image_pull_policy: str = "IfNotPresent",
    scratch_volume_size: str = "10Gi",
    owner_pod: Optional[Mapping[str, str]] = None,
) -> Dict[str, Any]:
    """The TFJob object (a plain dict, ready for ``create_namespaced_custom_object``).

    ``owner_pod`` (``{"name", "uid"}`` of the step's pod) makes the TFJob a dependent
    of that pod, so deleting the run's pods garbage-collects the job and its workers.

    ``env_value_from`` takes env entries with ``valueFrom`` (secret/config map keys)
    as they appear on the step's own pod (see :func:`inherit_placement`), so no
    credential value ever passes through this process.

    All ``workers`` replicas run ``command`` + ``args`` in ``image``. Failure
    policy: a worker is not restarted (``restartPolicy: Never``) and the job gets no
    retry (``backoffLimit: 0``) - a collective all-reduce cannot carry on without a
    member; the KFP step's own retry policy re-runs the whole step instead.
    """
    _check_job(name, workers, command)
    container = _worker_container(image, command, args, env, env_value_from, env_from_secrets,
                                  env_from_config_maps, resources, image_pull_policy)
    pod_spec = _worker_pod_spec(container, node_selector, tolerations, service_account, scratch_volume_size)
    pod_labels = {"app.kubernetes.io/part-of": "kfx", "app.kubernetes.io/component": "kfx-tfjob-worker",
                  "kfx.dev/stage": "distributed-train", **dict(labels or {})}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": _job_metadata(name, namespace, owner_pod),
        "spec": {
            "runPolicy": _run_policy(active_deadline_seconds, ttl_seconds_after_finished),
            # the job succeeds when every worker has succeeded (not only worker 0)
            "successPolicy": "AllWorkers",
            "tfReplicaSpecs": {
                "Worker": {
                    "replicas": workers,
                    "restartPolicy": "Never",
                    "template": {
                        "metadata": {"labels": pod_labels,
                                     "annotations": {"sidecar.istio.io/inject": "false"}},
                        "spec": pod_spec,
                    },
                },
            },
        },
    }


def _check_job(name: str, workers: int, command: Sequence[str]) -> None:
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 50:
        raise ValueError(f"TFJob name {name!r} is not a DNS-1123 label of at most 50 characters")
    if not command:
        raise ValueError("command must not be empty")


def _worker_container(image, command, args, env, env_value_from, env_from_secrets, env_from_config_maps,
                      resources, image_pull_policy) -> Dict[str, Any]:
    """The worker's one container: non-root, read-only root, /tmp on a scratch volume; literal env
    values first, then ``valueFrom`` entries the literals do not override."""
    env = {"TF_USE_LEGACY_KERAS": "1", **dict(env or {})}
    env_list: List[Dict[str, Any]] = [{"name": k, "value": str(v)} for k, v in sorted(env.items())]
    env_list += [dict(e) for e in env_value_from if e.get("name") not in env]
    container: Dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "command": list(command),
        "args": list(args),
        "ports": [{"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"}],
        "env": env_list,
        "resources": resources or {"requests": {"cpu": "2", "memory": "4Gi"},
                                   "limits": {"cpu": "4", "memory": "12Gi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],
    }
    env_from = [{"secretRef": {"name": s}} for s in env_from_secrets]
    env_from += [{"configMapRef": {"name": c}} for c in env_from_config_maps]
    if env_from:
        container["envFrom"] = env_from
    return container


def _worker_pod_spec(container, node_selector, tolerations, service_account,
                     scratch_volume_size: str) -> Dict[str, Any]:
    """The worker pod: uid/gid 1000, RuntimeDefault seccomp, no API token, placed as the step was."""
    pod_spec: Dict[str, Any] = {
        "containers": [container],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "automountServiceAccountToken": False,
        "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": scratch_volume_size}}],
    }
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod_spec["tolerations"] = [dict(t) for t in tolerations]
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    return pod_spec


def _run_policy(active_deadline_seconds: Optional[int], ttl_seconds_after_finished: int) -> Dict[str, Any]:
    """No retry and no restart (see build_tfjob); pods kept for their logs; the job gone after the TTL."""
    run_policy: Dict[str, Any] = {"cleanPodPolicy": "None", "backoffLimit": 0,
                                  "ttlSecondsAfterFinished": ttl_seconds_after_finished}
    if active_deadline_seconds:
        run_policy["activeDeadlineSeconds"] = int(active_deadline_seconds)
    return run_policy


def _job_metadata(name: str, namespace: str, owner_pod: Optional[Mapping[str, str]]) -> Dict[str, Any]:
    metadata: Dict[str, Any] = {"name": name, "namespace": namespace,
                                "labels": {"app.kubernetes.io/part-of": "kfx", "app.kubernetes.io/managed-by": "kfx"}}
    if owner_pod:
        metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": owner_pod["name"],
                                        "uid": owner_pod["uid"], "controller": False,
                                        "blockOwnerDeletion": False}]
    return metadata


def inherit_placement(core_api, namespace: str, pod_name: str, pod=None) -> Dict[str, Any]:
    """``build_tfjob`` keyword arguments copied from the step's own pod.

    The compile profile (pipelines/profiles.py) placed the step: its node selector,
    tolerations, container resources (GPU/TPU included), service account and the
    env entries read from Secrets/ConfigMaps. The workers get the same, so one
    ``--profile`` decides where the whole training runs.
    """
    pod = pod if pod is not None else core_api.read_namespaced_pod(pod_name, namespace)
    spec = _get(pod, "spec")
    containers = _get(spec, "containers") or []
    main = next((c for c in containers if _get(c, "name") == "main"), containers[0] if containers else None)
    out: Dict[str, Any] = {}
    if _get(spec, "node_selector"):
        out["node_selector"] = dict(_get(spec, "node_selector"))
    tols = []
    for t in _get(spec, "tolerations") or []:
        tol = {k: _get(t, a) for k, a in (("key", "key"), ("operator", "operator"), ("value", "value"),
                                           ("effect", "effect"), ("tolerationSeconds", "toleration_seconds"))}
        tols.append({k: v for k, v in tol.items() if v is not None})
    if tols:
        out["tolerations"] = tols
    res = _get(main, "resources")
    if res is not None and (_get(res, "limits") or _get(res, "requests")):
        out["resources"] = {k: dict(_get(res, k)) for k in ("requests", "limits") if _get(res, k)}
    if _get(spec, "service_account_name"):
        out["service_account"] = _get(spec, "service_account_name")
    value_from = []
    for e in _get(main, "env") or []:
        skr = _get(e, "value_from", "secret_key_ref")
        ckr = _get(e, "value_from", "config_map_key_ref")
        if skr is not None:
            value_from.append({"name": _get(e, "name"), "valueFrom": {"secretKeyRef": {
                "name": _get(skr, "name"), "key": _get(skr, "key")}}})
        elif ckr is not None:
            value_from.append({"name": _get(e, "name"), "valueFrom": {"configMapKeyRef": {
                "name": _get(ckr, "name"), "key": _get(ckr, "key")}}})
    if value_from:
        out["env_value_from"] = value_from
    return out


def _condition(job: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The terminal condition (Succeeded/Failed with status True), if any."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Succeeded", "Failed") and str(cond.get("status")) == "True":
            return cond
    return None


def _get(obj: Any, *path: str) -> Any:
    for p in path:
        if obj is None:
            return None
        obj = obj.get(p) if isinstance(obj, dict) else getattr(obj, p, None)
    return obj


def describe_failed_replica(core_api, name: str, namespace: str, log_lines: int = 20) -> Optional[Dict[str, Any]]:
    """Find the worker pod that failed first and what it said."""
    pods = core_api.list_namespaced_pod(namespace, label_selector=f"{JOB_NAME_LABEL}={name}").items
    failed = []
    for pod in pods:
        for cs in _get(pod, "status", "container_statuses") or []:
            term = _get(cs, "state", "terminated") or _get(cs, "last_state", "terminated")
            if term is not None and (_get(term, "exit_code") or 0) != 0:
                failed.append((_get(term, "finished_at") or "", pod, term))
        if not failed and _get(pod, "status", "phase") == "Failed":
            failed.append(("", pod, None))
    if not failed:
        return None
    failed.sort(key=lambda t: str(t[0]))
    _, pod, term = failed[0]
    pod_name = _get(pod, "metadata", "name")
    labels = _get(pod, "metadata", "labels") or {}
    out = {
        "pod": pod_name,
        "replica": f"{labels.get(REPLICA_TYPE_LABEL, 'worker')}-{labels.get(REPLICA_INDEX_LABEL, '?')}",
        "exit_code": _get(term, "exit_code"),
        "reason": _get(term, "reason") or _get(pod, "status", "reason"),
        "message": _get(term, "message") or _get(pod, "status", "message"),
        "log_tail": "",
    }
    try:
        out["log_tail"] = core_api.read_namespaced_pod_log(pod_name, namespace, container=CONTAINER_NAME,
                                                           tail_lines=log_lines) or ""
    except Exception as exc:  # noqa: BLE001 - the log is a courtesy; the failure is reported anyway
        out["log_tail"] = f"(log unavailable: {exc})"
    return out


def wait_for_tfjob(custom_api, core_api, name: str, namespace: str, timeout: float = 8 * 3600,
                   poll_seconds: float = 10.0, sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> Dict[str, Any]:
    """Poll the TFJob until Succeeded (returned) or Failed (TFJobFailed raised)."""
    deadline = clock() + timeout
    last_state = None
    while True:
        job = custom_api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        cond = _condition(job)
        conds = (job.get("status") or {}).get("conditions") or []
        state = conds[-1].get("type") if conds else "Pending"
        if state != last_state:
            log.info("TFJob %s/%s: %s", namespace, name, state)
            last_state = state
        if cond and cond["type"] == "Succeeded":
            return job
        if cond and cond["type"] == "Failed":
            detail = describe_failed_replica(core_api, name, namespace)
            msg = f"TFJob {namespace}/{name} failed: {cond.get('reason', '')}: {cond.get('message', '')}".rstrip(": ")
            if detail:
                msg += (f"\nfailing replica {detail['replica']} (pod {detail['pod']}): exit code "
                        f"{detail['exit_code']}, reason {detail['reason']}")
                if detail["message"]:
                    msg += f", message: {detail['message']}"
                if detail["log_tail"]:
                    msg += f"\nlast log lines:\n{detail['log_tail']}"
            raise TFJobFailed(msg, replica=detail["replica"] if detail else None)
        if clock() >= deadline:
            raise TFJobTimeout(f"TFJob {namespace}/{name} did not finish in {timeout:.0f}s (last state {state})")
        sleep(poll_seconds)


def _api_clients():
    from kubernetes import client, config
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi(), client.CoreV1Api()


def current_namespace(default: str = "kubeflow") -> str:
    try:
        with open(SA_NAMESPACE_FILE, encoding="utf-8") as fh:
            return fh.read().strip() or default
    except OSError:
        return os.environ.get("KFX_NAMESPACE", default)


def run_tfjob(job: Dict[str, Any], custom_api=None, core_api=None, timeout: float = 8 * 3600,
              poll_seconds: float = 10.0, delete_on_timeout: bool = True, **wait_kwargs) -> Dict[str, Any]:
    """Create ``job`` (from :func:`build_tfjob`) and wait for it; returns the final object.

    An existing TFJob of the same name (a retried step) is adopted rather than
    created again, so a KFP retry does not start a second job beside the first.
    """
    from kubernetes.client.exceptions import ApiException

    if custom_api is None or core_api is None:
        custom_api, core_api = _api_clients()
    name, ns = job["metadata"]["name"], job["metadata"]["namespace"]
    try:
        custom_api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, job)
        log.info("created TFJob %s/%s with %d workers", ns, name,
                 job["spec"]["tfReplicaSpecs"]["Worker"]["replicas"])
    except ApiException as exc:
        if exc.status == 409:
            existing = custom_api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
            cond = _condition(existing)
            if cond and cond["type"] == "Failed":
                # a failed job from an earlier attempt: replace it
                custom_api.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
                custom_api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, job)
            else:
                log.info("adopting existing TFJob %s/%s", ns, name)
        elif exc.status == 404:
            raise TFJobError(f"the TFJob kind is not served in {ns}: is the Kubeflow Training Operator "
                             f"installed? ({exc.reason})") from exc
        elif exc.status == 403:
            raise TFJobError(f"not allowed to create TFJobs in {ns}: the step's service account needs "
                             f"create/get/delete on tfjobs.kubeflow.org ({exc.reason})") from exc
        else:
            raise TFJobError(f"creating TFJob {ns}/{name} failed: HTTP {exc.status} {exc.reason}") from exc
    try:
        return wait_for_tfjob(custom_api, core_api, name, ns, timeout=timeout,
                              poll_seconds=poll_seconds, **wait_kwargs)
    except TFJobTimeout:
        if delete_on_timeout:
            custom_api.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        raise


def step_pod_name() -> str:
    """The step's own pod name (``KFX_POD_NAME``, else ``HOSTNAME``, which Kubernetes sets to it)."""
    pod_name = os.environ.get("KFX_POD_NAME") or os.environ.get("HOSTNAME") or ""
    if not pod_name:
        raise TFJobError("cannot tell the step's pod name (HOSTNAME/KFX_POD_NAME unset)")
    return pod_name


def launch_from_step(command: Sequence[str], args: Sequence[str] = (), workers: int = 2,
                     env: Optional[Mapping[str, str]] = None, name_prefix: str = "kfx-train",
                     timeout: float = 8 * 3600 - 900, poll_seconds: float = 10.0,
                     custom_api=None, core_api=None, name: Optional[str] = None,
                     require_env: Sequence[str] = (), **wait_kwargs) -> Dict[str, Any]:
    """From inside a KFP step pod: run ``command args`` as ``workers`` TFJob workers and wait.

    The workers use the step's own image, node pool, tolerations, resources and S3 env
    references (so the compile profile decides where training runs) and are owned by
    the step's pod. The job name is derived from the pod, so a retried pod starts a
    fresh job. Inputs and outputs must travel through object storage (artifact URIs),
    since the workers do not share the step's local files.

    ``name`` overrides the derived job name; ``require_env`` names env variables the
    workers must get (from ``env`` or the step pod's Secret/ConfigMap references): a
    missing one fails here rather than in every worker later.
    """
    if custom_api is None or core_api is None:
        custom_api, core_api = _api_clients()
    namespace = current_namespace()
    pod_name = step_pod_name()
    pod = core_api.read_namespaced_pod(pod_name, namespace)
    containers = _get(pod, "spec", "containers") or []
    main = next((c for c in containers if _get(c, "name") == "main"), containers[0] if containers else None)
    image = _get(main, "image")
    if not image:
        raise TFJobError(f"pod {namespace}/{pod_name} has no container image to reuse")
    placement = inherit_placement(core_api, namespace, pod_name, pod=pod)
    given = set(env or {}) | {e["name"] for e in placement.get("env_value_from", [])}
    missing = [v for v in require_env if v not in given]
    if missing:
        raise TFJobError(f"the TFJob workers would not get {', '.join(missing)}: pod {namespace}/{pod_name} "
                         "reads it from no Secret/ConfigMap (compile with a cluster profile, which adds "
                         "the kfx-s3-config/kfx-s3-credentials references)")
    job = build_tfjob(name or job_name(name_prefix, f"{namespace}/{pod_name}"), namespace, image, command, args,
                      workers=workers, env=env,
                      owner_pod={"name": pod_name, "uid": _get(pod, "metadata", "uid")}
                      if _get(pod, "metadata", "uid") else None,
                      # The job ends by itself when the step stops waiting: workers (and their GPUs)
                      # never outlive a step that timed out or was killed.
                      active_deadline_seconds=int(timeout), **placement)
    return run_tfjob(job, custom_api, core_api, timeout=timeout, poll_seconds=poll_seconds, **wait_kwargs)


# ------------------------------------------------------------------ the step's multi-worker handoff

WORKER_COMMAND = ("python3", "-m", "kfx_components.distributed_train.worker")
STAGING_ENV = "KFX_TFJOB_STAGING_URI"
S3_ENV_REQUIRED = ("KFX_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def in_cluster_clients(workers: int):
    """``(CustomObjectsApi, CoreV1Api)`` from the pod's in-cluster config; ValueError off-cluster."""
    from kubernetes import client, config
    try:
        config.load_incluster_config()
    except config.ConfigException as exc:
        raise ValueError(
            f"workers={workers}: more than one worker means a Kubeflow Training Operator TFJob, which the "
            f"step creates from inside a Kubernetes pod, but there is no in-cluster config here ({exc}). "
            "Use workers=1 off-cluster; to train with several workers on one machine, start one process "
            "per worker running executor.run with TF_CONFIG set (the cluster's addresses plus its own "
            "task index), as tests/stages/test_distributed_train.py's loopback test does.") from exc
    return client.CustomObjectsApi(), client.CoreV1Api()


def staging_root(output_uri: str = "", environ: Optional[Mapping[str, str]] = None) -> str:
    """Where the step stages a TFJob's inputs/outputs (``<root>/tfjobs/<job-name>/...``).

    ``KFX_TFJOB_STAGING_URI`` (``s3://bucket/prefix``) when set; otherwise the folder of
    the step's own output artifact (``output_uri``'s parent, below the pipeline root,
    hence run-scoped), when that is ``s3://`` or ``minio://``.
    """
    environ = os.environ if environ is None else environ
    root = (environ.get(STAGING_ENV) or "").strip()
    if not root:
        if not output_uri.startswith(("s3://", "minio://")):
            raise ValueError(f"{STAGING_ENV} is not set and the step's output URI {output_uri!r} is not on "
                             "S3/MinIO: multi-worker training needs an S3 prefix the worker pods can reach")
        root = output_uri.rstrip("/").rsplit("/", 1)[0]
    from kfx_components.distributed_train import worker
    bucket, key = worker.split_uri(root)
    return f"s3://{bucket}/{key}".rstrip("/")


def train_with_tfjob(workers: int, transformed_examples_dir: str, transform_graph_dir: str,
                     hyperparameters_dir: str, model_dir: str, checkpoint_dir: str, label_key: str,
                     problem_type: str, num_classes: int, epochs: int = 100, seed: int = 42, output_uri: str = "", custom_api=None, core_api=None, s3=None,
                     timeout: float = 8 * 3600 - 900, poll_seconds: float = 15.0, keep_staging: bool = False,
                     **wait_kwargs) -> Dict[str, Any]:
    """The distributed_train step with ``workers`` > 1: train as a TFJob instead of in this pod.

    ``timeout`` (default: 15 min inside the step's 8 h deadline, for staging and download) is
    also the TFJob's ``activeDeadlineSeconds``.

    1. in-cluster Kubernetes clients (off-cluster: ValueError naming ``workers``);
    2. the job name (from this pod, as :func:`launch_from_step` derives it) and the staging
       URI ``<staging_root>/tfjobs/<job-name>``;
    3. upload the three input directories there (``worker.stage_inputs``, marker last);
    4. create the TFJob: ``workers`` replicas of ``python3 -m kfx_components.distributed_train.worker
       --staging-uri ... --epochs ...`` in this pod's image and placement; wait. A failed
       worker raises :class:`TFJobFailed` with its replica, exit code, message and log tail;
    5. download the chief's model and checkpoints into ``model_dir``/``checkpoint_dir``;
       return the chief's facts plus ``workers``, ``tfjob`` and ``staging_uri``;
    6. delete the staging prefix (kept after a failure, for inspection, or with ``keep_staging``).
    """
    from kfx_components.distributed_train import worker

    workers = int(workers)
    if workers < 2:
        raise ValueError(f"workers must be >= 2 for a TFJob, got {workers}")
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs!r}")
    if custom_api is None or core_api is None:
        custom_api, core_api = in_cluster_clients(workers)
    root = staging_root(output_uri)
    namespace = current_namespace()
    name = job_name("kfx-train", f"{namespace}/{step_pod_name()}")
    staging_uri = f"{root}/tfjobs/{name}"
    s3 = s3 or worker.s3_client()
    log.info("staging the inputs of TFJob %s at %s", name, staging_uri)
    worker.stage_inputs(staging_uri, {"transformed_examples": transformed_examples_dir,
                                      "transform_graph": transform_graph_dir,
                                      "hyperparameters": hyperparameters_dir}, s3)
    args = worker.worker_args(staging_uri, epochs, label_key, problem_type, num_classes, seed)
    launch_from_step(list(WORKER_COMMAND), args, workers=workers, env={"PYTHONUNBUFFERED": "1"},
                           timeout=timeout, poll_seconds=poll_seconds, custom_api=custom_api,
                           core_api=core_api, name=name, require_env=S3_ENV_REQUIRED, **wait_kwargs)
    facts = worker.fetch_outputs(staging_uri, model_dir, checkpoint_dir, s3)
    if not keep_staging:
        worker.delete_staging(staging_uri, s3)
    facts.update({"workers": workers, "tfjob": f"{namespace}/{name}", "staging_uri": staging_uri})
    return facts
