"""components/distributed_train/tfjob.py: the TFJob object, create/wait, failure reporting.

No Kubernetes API server can run on this machine: the CustomObjects/CoreV1 APIs are
replaced by in-memory fakes that return kubernetes-client objects. The object's
schema validation (Training Operator SDK models + Pod schema) is in check.py,
run by test_k8s_static.py and `make k8s-check`.
"""
import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from kfx_components.distributed_train import tfjob as T


def job(workers=2, **kw):
    return T.build_tfjob("kfx-train-1a2b", "kubeflow", "reg/kfx-distributed-train:1.0",
                         ["python", "-m", "trainer"], ["--epochs", "3"], workers=workers, **kw)


def test_build_tfjob_shape():
    j = job(workers=3, env={"EPOCHS": "3"}, node_selector={"kfx.dev/node-pool": "gpu"},
            tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            resources={"limits": {"nvidia.com/gpu": "1"}})
    assert (j["apiVersion"], j["kind"]) == ("kubeflow.org/v1", "TFJob")
    w = j["spec"]["tfReplicaSpecs"]["Worker"]
    assert list(j["spec"]["tfReplicaSpecs"]) == ["Worker"] and w["replicas"] == 3
    assert w["restartPolicy"] == "Never" and j["spec"]["runPolicy"]["backoffLimit"] == 0
    assert j["spec"]["successPolicy"] == "AllWorkers"
    pod = w["template"]["spec"]
    c = pod["containers"][0]
    assert c["name"] == "tensorflow" and c["ports"][0]["containerPort"] == 2222
    assert c["command"] == ["python", "-m", "trainer"] and c["args"] == ["--epochs", "3"]
    names = [e["name"] for e in c["env"]]
    assert "TF_CONFIG" not in names, "the Training Operator sets TF_CONFIG per replica"
    assert {"EPOCHS", "TF_USE_LEGACY_KERAS"} <= set(names)
    assert pod["nodeSelector"] == {"kfx.dev/node-pool": "gpu"} and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert c["securityContext"]["readOnlyRootFilesystem"] and pod["securityContext"]["runAsNonRoot"]
    assert w["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "kfx-tfjob-worker"


@pytest.mark.parametrize("bad", [dict(workers=0), dict(name="Bad_Name"), dict(command=[])])
def test_build_tfjob_rejects(bad):
    kw = dict(name="ok-name", namespace="ns", image="i", command=["x"], workers=2)
    kw.update(bad)
    with pytest.raises(ValueError):
        T.build_tfjob(**kw)


def test_job_name_is_dns_safe_and_stable():
    a = T.job_name("KFX Distributed_Train", "run-123/task-4")
    assert a == T.job_name("KFX Distributed_Train", "run-123/task-4")
    assert len(a) <= 50 and a.startswith("kfx-distributed-train-")


class FakeCustom:
    def __init__(self, states, exists=None):
        self.states = list(states)
        self.created, self.deleted = [], []
        self.exists = exists

    def create_namespaced_custom_object(self, group, version, ns, plural, body):
        assert (group, version, plural) == ("kubeflow.org", "v1", "tfjobs")
        if self.exists is not None:
            exc, self.exists = self.exists, None
            raise exc
        self.created.append(body)

    def get_namespaced_custom_object(self, group, version, ns, plural, name):
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        conds = []
        if state:
            conds = [{"type": "Created", "status": "True"}, {"type": "Running", "status": "False"},
                     {"type": state[0], "status": "True", "reason": state[1], "message": state[2]}]
        return {"metadata": {"name": name}, "status": {"conditions": conds}}

    def delete_namespaced_custom_object(self, group, version, ns, plural, name):
        self.deleted.append(name)


def pod(name, index, exit_code, reason="Completed", message=None):
    term = k8s.V1ContainerStateTerminated(exit_code=exit_code, reason=reason, message=message,
                                          finished_at=f"2026-01-01T00:00:0{index}Z")
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name, labels={T.REPLICA_TYPE_LABEL: "worker", T.REPLICA_INDEX_LABEL: str(index)}),
        status=k8s.V1PodStatus(phase="Failed" if exit_code else "Succeeded", container_statuses=[
            k8s.V1ContainerStatus(name="tensorflow", image="i", image_id="", ready=False, restart_count=0,
                                  state=k8s.V1ContainerState(terminated=term))]))


class FakeCore:
    def __init__(self, pods, log="Traceback...\nRuntimeError: NaN loss"):
        self.pods, self.log, self.selectors = pods, log, []

    def list_namespaced_pod(self, ns, label_selector=None):
        self.selectors.append(label_selector)
        return k8s.V1PodList(items=self.pods)

    def read_namespaced_pod_log(self, name, ns, container=None, tail_lines=None):
        assert container == "tensorflow"
        return self.log


RUNNING = ("Running", "", "")


def test_run_tfjob_succeeds():
    custom = FakeCustom([None, RUNNING, ("Succeeded", "TFJobSucceeded", "done")])
    sleeps = []
    out = T.run_tfjob(job(), custom, FakeCore([]), poll_seconds=5, sleep=sleeps.append)
    assert custom.created and out["status"]["conditions"][-1]["type"] == "Succeeded"
    assert sleeps == [5, 5]


def test_run_tfjob_surfaces_the_failing_worker():
    custom = FakeCustom([RUNNING, ("Failed", "TFJobFailed", "TFJob kfx-train-1a2b has failed because 1 Worker replica(s) failed.")])
    core = FakeCore([pod("kfx-train-1a2b-worker-0", 0, 0),
                     pod("kfx-train-1a2b-worker-1", 1, 137, "OOMKilled", "memory limit"),
                     pod("kfx-train-1a2b-worker-2", 2, 1, "Error")])
    with pytest.raises(T.TFJobFailed) as ei:
        T.run_tfjob(job(3), custom, core, poll_seconds=0, sleep=lambda s: None)
    msg = str(ei.value)
    assert ei.value.replica == "worker-1"
    assert "failing replica worker-1 (pod kfx-train-1a2b-worker-1): exit code 137, reason OOMKilled" in msg
    assert "memory limit" in msg and "RuntimeError: NaN loss" in msg and "1 Worker replica(s) failed" in msg
    assert core.selectors == ["training.kubeflow.org/job-name=kfx-train-1a2b"]


def test_run_tfjob_adopts_a_running_job_and_replaces_a_failed_one():
    custom = FakeCustom([RUNNING, ("Succeeded", "", "")], exists=ApiException(status=409, reason="AlreadyExists"))
    T.run_tfjob(job(), custom, FakeCore([]), poll_seconds=0, sleep=lambda s: None)
    assert custom.created == [] and custom.deleted == []
    custom = FakeCustom([("Failed", "old", "old"), ("Succeeded", "", "")],
                        exists=ApiException(status=409, reason="AlreadyExists"))
    T.run_tfjob(job(), custom, FakeCore([]), poll_seconds=0, sleep=lambda s: None)
    assert custom.deleted == ["kfx-train-1a2b"] and len(custom.created) == 1


@pytest.mark.parametrize("status,match", [(404, "Training Operator installed"), (403, "tfjobs.kubeflow.org"),
                                          (500, "HTTP 500")])
def test_run_tfjob_create_errors_are_specific(status, match):
    custom = FakeCustom([None], exists=ApiException(status=status, reason="x"))
    with pytest.raises(T.TFJobError, match=match):
        T.run_tfjob(job(), custom, FakeCore([]), poll_seconds=0, sleep=lambda s: None)


def test_run_tfjob_timeout_deletes_the_job():
    ticks = iter(range(0, 10_000, 100))
    custom = FakeCustom([RUNNING])
    with pytest.raises(T.TFJobTimeout, match="did not finish in 250s"):
        T.run_tfjob(job(), custom, FakeCore([]), timeout=250, poll_seconds=0, sleep=lambda s: None,
                    clock=lambda: next(ticks))
    assert custom.deleted == ["kfx-train-1a2b"]


def test_inherit_placement_copies_the_steps_pod():
    step = k8s.V1Pod(spec=k8s.V1PodSpec(
        service_account_name="kfx-pipeline-runner",
        node_selector={"kfx.dev/node-pool": "gpu"},
        tolerations=[k8s.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
        containers=[k8s.V1Container(
            name="main", image="i",
            resources=k8s.V1ResourceRequirements(limits={"nvidia.com/gpu": "1", "cpu": "4"}, requests={"cpu": "2"}),
            env=[k8s.V1EnvVar(name="AWS_ACCESS_KEY_ID", value_from=k8s.V1EnvVarSource(
                     secret_key_ref=k8s.V1SecretKeySelector(name="kfx-s3-credentials", key="AWS_ACCESS_KEY_ID"))),
                 k8s.V1EnvVar(name="KFX_S3_ENDPOINT", value_from=k8s.V1EnvVarSource(
                     config_map_key_ref=k8s.V1ConfigMapKeySelector(name="kfx-s3-config", key="KFX_S3_ENDPOINT"))),
                 k8s.V1EnvVar(name="PLAIN", value="x")])]))

    class Core:
        def read_namespaced_pod(self, name, ns):
            assert (name, ns) == ("step-pod", "kubeflow")
            return step

    kw = T.inherit_placement(Core(), "kubeflow", "step-pod")
    assert kw["node_selector"] == {"kfx.dev/node-pool": "gpu"}
    assert kw["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert kw["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert kw["service_account"] == "kfx-pipeline-runner"
    assert [e["name"] for e in kw["env_value_from"]] == ["AWS_ACCESS_KEY_ID", "KFX_S3_ENDPOINT"]
    j = job(**kw)
    env = j["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {
        "name": "kfx-s3-credentials", "key": "AWS_ACCESS_KEY_ID"}}} in env


def test_launch_from_step_reuses_the_steps_image_and_placement(monkeypatch):
    step = k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="kfx-tabular-abc-123", uid="u-1"),
        spec=k8s.V1PodSpec(node_selector={"kfx.dev/node-pool": "tpu"}, containers=[
            k8s.V1Container(name="main", image="reg/kfx-distributed-train:1.0",
                            resources=k8s.V1ResourceRequirements(limits={"google.com/tpu": "1"}))]))

    class Core(FakeCore):
        def read_namespaced_pod(self, name, ns):
            assert (name, ns) == ("kfx-tabular-abc-123", "team-a")
            return step

    monkeypatch.setenv("HOSTNAME", "kfx-tabular-abc-123")
    monkeypatch.setattr(T, "current_namespace", lambda default="kubeflow": "team-a")
    custom = FakeCustom([("Succeeded", "", "")])
    T.launch_from_step(["python", "-m", "w"], workers=4, custom_api=custom, core_api=Core([]), poll_seconds=0)
    created = custom.created[0]
    w = created["spec"]["tfReplicaSpecs"]["Worker"]
    assert w["replicas"] == 4 and w["template"]["spec"]["containers"][0]["image"] == "reg/kfx-distributed-train:1.0"
    assert w["template"]["spec"]["nodeSelector"] == {"kfx.dev/node-pool": "tpu"}
    assert created["metadata"]["namespace"] == "team-a"
    assert created["metadata"]["ownerReferences"][0] == {"apiVersion": "v1", "kind": "Pod",
                                                         "name": "kfx-tabular-abc-123", "uid": "u-1",
                                                         "controller": False, "blockOwnerDeletion": False}
