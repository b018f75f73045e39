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
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 50:
        raise ValueError(f"TFJob name {name!r} is not a DNS-1123 label of at most 50 characters")
    if not command:
        raise ValueError("command must not be empty")
    env = {"TF_USE_LEGACY_KERAS": "1", **dict(env or {})}
    env_list: List[Dict[str, Any]] = [{"name": k, "value": str(v)} for k, v in sorted(env.items())]
    env_list += [dict(e) for e in env_value_from if e.get("name") not in env]
    pod_labels = {"app.kubernetes.io/part-of": "kfx", "app.kubernetes.io/component": "kfx-tfjob-worker",
                  "kfx.dev/stage": "distributed-train", **dict(labels or {})}
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
    run_policy: Dict[str, Any] = {"cleanPodPolicy": "None", "backoffLimit": 0,
                                  "ttlSecondsAfterFinished": ttl_seconds_after_finished}
    if active_deadline_seconds:
        run_policy["activeDeadlineSeconds"] = int(active_deadline_seconds)
    metadata: Dict[str, Any] = {"name": name, "namespace": namespace,
                                "labels": {"app.kubernetes.io/part-of": "kfx", "app.kubernetes.io/managed-by": "kfx"}}
    if owner_pod:
        metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": owner_pod["name"],
                                        "uid": owner_pod["uid"], "controller": False,
                                        "blockOwnerDeletion": False}]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": metadata,
        "spec": {
            "runPolicy": run_policy,
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


def launch_from_step(command: Sequence[str], args: Sequence[str] = (), workers: int = 2,
                     env: Optional[Mapping[str, str]] = None, name_prefix: str = "kfx-train",
                     timeout: float = 8 * 3600, poll_seconds: float = 10.0,
                     custom_api=None, core_api=None) -> Dict[str, Any]:
    """From inside a KFP step pod: run ``command args`` as ``workers`` TFJob workers and wait.

    The workers use the step's own image, node pool, tolerations, resources and S3 env
    references (so the compile profile decides where training runs) and are owned by
    the step's pod. The job name is derived from the pod, so a retried pod starts a
    fresh job. Inputs and outputs must travel through object storage (artifact URIs),
    since the workers do not share the step's local files.
    """
    if custom_api is None or core_api is None:
        custom_api, core_api = _api_clients()
    namespace = current_namespace()
    pod_name = os.environ.get("KFX_POD_NAME") or os.environ.get("HOSTNAME") or ""
    if not pod_name:
        raise TFJobError("cannot tell the step's pod name (HOSTNAME/KFX_POD_NAME unset)")
    pod = core_api.read_namespaced_pod(pod_name, namespace)
    containers = _get(pod, "spec", "containers") or []
    main = next((c for c in containers if _get(c, "name") == "main"), containers[0] if containers else None)
    image = _get(main, "image")
    if not image:
        raise TFJobError(f"pod {namespace}/{pod_name} has no container image to reuse")
    placement = inherit_placement(core_api, namespace, pod_name, pod=pod)
    job = build_tfjob(job_name(name_prefix, f"{namespace}/{pod_name}"), namespace, image, command, args,
                      workers=workers, env=env,
                      owner_pod={"name": pod_name, "uid": _get(pod, "metadata", "uid")}
                      if _get(pod, "metadata", "uid") else None,
                      **placement)
    return run_tfjob(job, custom_api, core_api, timeout=timeout, poll_seconds=poll_seconds)
