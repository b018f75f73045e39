"""Rollouts on Kubernetes: the same strategies on KServe InferenceServices and Istio VirtualServices
(canary by canaryTrafficPercent, blue-green and shadow by route patches), watched through Prometheus.
`api` is a kubernetes.client.CustomObjectsApi (tests pass a recording fake: no API server runs here)."""
from __future__ import annotations

import json
import math
import time
import urllib.parse
import urllib.request
from typing import Callable, Dict, Optional

from kfx.serving import ServingError, log
from kfx.serving.replay import REJECTED, replay_gate
from kfx.serving.rollout import RolloutPolicy, rollout_versions

ISVC = dict(group="serving.kserve.io", version="v1beta1", plural="inferenceservices")
VS = dict(group="networking.istio.io", version="v1beta1", plural="virtualservices")


def prometheus_query(base_url: str) -> Callable[[str], Optional[float]]:
    """A PromQL instant-query function against a Prometheus HTTP API (single scalar result)."""
    def query(promql: str) -> Optional[float]:
        url = f"{base_url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as r:
            data = json.loads(r.read())
        result = data.get("data", {}).get("result", [])
        if not result:
            return None
        v = float(result[0]["value"][1])
        return None if math.isnan(v) else v
    return query


def k8s_queries(namespace: str, isvc: str, revision_label: str = "candidate") -> Dict[str, str]:
    """PromQL the Kubernetes canary watches: Istio's request metrics of the predictor's latest revision."""
    sel = (f'destination_workload_namespace="{namespace}",'
           f'destination_service_name=~"{isvc}-predictor.*",destination_canonical_revision=~".*"')
    return {
        "requests": f'sum(increase(istio_requests_total{{{sel}}}[1m]))',
        "error_rate": (f'sum(rate(istio_requests_total{{{sel},response_code=~"5.."}}[1m])) / '
                       f'sum(rate(istio_requests_total{{{sel}}}[1m]))'),
        "p99_ms": (f'histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{{{sel}}}[1m])) '
                   f'by (le))'),
    }


def k8s_canary(api, namespace: str, name: str, storage_uri: str, policy: RolloutPolicy,
               metrics: Callable[[str], Optional[float]], sleep: Callable[[float], None] = time.sleep,
               on_event: Callable[..., None] = lambda *a, **k: None) -> dict:
    """Canary on KServe: point the predictor at the candidate with canaryTrafficPercent=step, raise it step by
    step while Prometheus shows the canary healthy; on a breach patch canaryTrafficPercent=0 (KServe sends all
    traffic back to the previous ready revision). `api` is a kubernetes.client.CustomObjectsApi."""
    kw = dict(ISVC, namespace=namespace, name=name)
    isvc = api.get_namespaced_custom_object(**kw)
    # The chart's predictor is a custom container (the kfx serving image): the model is its STORAGE_URI env.
    containers = json.loads(json.dumps(isvc["spec"]["predictor"]["containers"]))
    env = containers[0].setdefault("env", [])
    previous = next((e.get("value") for e in env if e["name"] == "STORAGE_URI"), None)
    env[:] = [e for e in env if e["name"] != "STORAGE_URI"] + [{"name": "STORAGE_URI", "value": storage_uri}]
    q = k8s_queries(namespace, name)
    for i, pct in enumerate(policy.steps):
        body = {"spec": {"predictor": {"canaryTrafficPercent": pct}}}
        if i == 0:   # a new predictor spec = a new revision; it gets pct, the previous one the rest
            body["spec"]["predictor"]["containers"] = containers
        api.patch_namespaced_custom_object(**kw, body=body)
        on_event("step", candidate_percent=pct)
        sleep(policy.hold_seconds)
        breaches = policy.limit_breaches(metrics(q["error_rate"]), metrics(q["p99_ms"]))
        if breaches:
            api.patch_namespaced_custom_object(**kw, body={"spec": {"predictor": {"canaryTrafficPercent": 0}}})
            on_event("rolled-back", at_percent=pct, breaches=breaches)
            return {"decision": "rolled-back", "at_percent": pct, "reason": "; ".join(breaches),
                    "previous_storage_uri": previous}
    # Promote: drop canaryTrafficPercent (JSON merge patch null) -> the latest revision takes 100%.
    api.patch_namespaced_custom_object(**kw, body={"spec": {"predictor": {"canaryTrafficPercent": None}}})
    on_event("promoted")
    return {"decision": "promoted", "storage_uri": storage_uri, "previous_storage_uri": previous}


def k8s_blue_green_switch(api, namespace: str, virtual_service: str, to: str, hosts: Dict[str, str]) -> dict:
    """Blue-green on Kubernetes: two InferenceServices (blue, green) behind one Istio VirtualService route;
    switch all traffic at once by patching the route weights (to = 'blue' or 'green')."""
    if to not in hosts:
        raise ServingError(f"switch to {to!r}: one of {sorted(hosts)}")
    vs = api.get_namespaced_custom_object(**VS, namespace=namespace, name=virtual_service)
    http = vs["spec"]["http"]
    for route in http:
        for dest in route.get("route", []):
            color = next((c for c, h in hosts.items() if dest["destination"]["host"] == h), None)
            if color is not None:
                dest["weight"] = 100 if color == to else 0
    api.patch_namespaced_custom_object(**VS, namespace=namespace, name=virtual_service, body={"spec": {"http": http}})
    return {"decision": "switched", "to": to}


def k8s_shadow(api, namespace: str, virtual_service: str, candidate_host: str, percent: float = 100.0) -> dict:
    """Shadow on Kubernetes: mirror the route's traffic to the candidate InferenceService (answers dropped)."""
    vs = api.get_namespaced_custom_object(**VS, namespace=namespace, name=virtual_service)
    http = vs["spec"]["http"]
    for route in http:
        route["mirror"] = {"host": candidate_host}
        route["mirrorPercentage"] = {"value": float(percent)}
    api.patch_namespaced_custom_object(**VS, namespace=namespace, name=virtual_service, body={"spec": {"http": http}})
    return {"decision": "shadowing", "mirror": candidate_host, "percent": percent}


def _custom_objects_api():
    from kubernetes import client, config
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def predictor_host(isvc: str, role: str, namespace: str) -> str:
    return f"{isvc}-{role}-predictor.{namespace}.svc.cluster.local"


def run_kubernetes_rollout(model_dir: str, candidate: int, policy: RolloutPolicy, namespace: str, isvc: str,
                           virtual_service: str = "", to: str = "", storage_uri: str = "",
                           prometheus: str = "http://prometheus.istio-system:9090", api=None,
                           labels: Optional[dict] = None, payload_log: str = "") -> dict:
    """`kfx rollout start --target kubernetes`: one strategy against the cluster; its decision. The logged
    requests are replayed through the candidate first (replay.py): rejected, the cluster is not touched."""
    replayed = replay_gate(rollout_versions(model_dir, candidate) if policy.replay else (None, None), policy,
                           labels or {}, payload_log, lambda kind, **data: log(f"{kind} {data.get('decision')}"))
    if replayed["decision"] == REJECTED:
        return {"decision": REJECTED, "reasons": replayed["reasons"], "replay": replayed}
    api = api or _custom_objects_api()
    if policy.strategy == "canary":
        storage = storage_uri or f"{model_dir.rstrip('/')}/v{candidate}/saved_model"
        res = k8s_canary(api, namespace, isvc, storage, policy, prometheus_query(prometheus),
                         on_event=lambda k, **d: log(f"{k} {d}"))
    elif policy.strategy == "blue-green":
        res = k8s_blue_green_switch(api, namespace, virtual_service, to or "green",
                                    {c: predictor_host(isvc, c, namespace) for c in ("blue", "green")})
    else:
        res = k8s_shadow(api, namespace, virtual_service, predictor_host(isvc, "candidate", namespace))
    return {**res, "replay": replayed}
