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
    # The job ends when the step stops waiting (15 min inside the step pod's 8 h deadline).
    assert created["spec"]["runPolicy"]["activeDeadlineSeconds"] == 8 * 3600 - 900


# ------------------------------------------------------------------ the step's handoff (train_with_tfjob)
# Kubernetes API: the in-memory fakes above (no API server can run here). S3: real, the
# moto server of the `s3_server` fixture (tests/conftest.py) on loopback.

import json  # noqa: E402

from kfx_components.distributed_train import worker as W  # noqa: E402

S3_REFS = [k8s.V1EnvVar(name=n, value_from=k8s.V1EnvVarSource(config_map_key_ref=k8s.V1ConfigMapKeySelector(
               name="kfx-s3-config", key=n))) for n in ("KFX_S3_ENDPOINT", "KFX_S3_SECURE", "AWS_REGION")] + \
          [k8s.V1EnvVar(name=n, value_from=k8s.V1EnvVarSource(secret_key_ref=k8s.V1SecretKeySelector(
               name="kfx-s3-credentials", key=n))) for n in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]


def step_pod(env=S3_REFS):
    return k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="kfx-tabular-xyz-dt", uid="u-9"),
                     spec=k8s.V1PodSpec(containers=[k8s.V1Container(
                         name="main", image="reg/kfx-distributed-train:1.0", env=list(env))]))


class StepCore(FakeCore):
    def __init__(self, pods=(), env=S3_REFS, **kw):
        super().__init__(list(pods), **kw)
        self.env = env

    def read_namespaced_pod(self, name, ns):
        assert name == "kfx-tabular-xyz-dt"
        return step_pod(self.env)


def _inputs(tmp_path):
    dirs = {}
    for name, files in {"transformed_examples": {"train/data.tfrecord.gz": b"t", "eval/data.tfrecord.gz": b"e"},
                        "transform_graph": {"transform_fn/saved_model.pb": b"g"},
                        "hyperparameters": {"hyperparameters.json": b'{"width": 8}'}}.items():
        for rel, data in files.items():
            p = tmp_path / "in" / name / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        dirs[f"{name}_dir" if name != "transformed_examples" else "transformed_examples_dir"] = str(tmp_path / "in" / name)
    return dirs


def _objects(uri):
    bucket, key = W.split_uri(uri)
    return sorted(o.object_name[len(key) + 1:] for o in W.s3_client().list_objects(bucket, prefix=key + "/", recursive=True))


def _handoff(tmp_path, custom, core, **kw):
    return T.train_with_tfjob(
        workers=2, model_dir=str(tmp_path / "out/model"), checkpoint_dir=str(tmp_path / "out/ckpt"),
        label_key="tips", problem_type="binary", num_classes=2, epochs=3,
        output_uri="minio://kfx-artifacts/pipeline-root/kfx-tabular/run-7/distributed-train/model",
        custom_api=custom, core_api=core, poll_seconds=0, sleep=lambda s: None, **_inputs(tmp_path), **kw)


@pytest.fixture()
def in_step_pod(monkeypatch):
    monkeypatch.setenv("HOSTNAME", "kfx-tabular-xyz-dt")
    monkeypatch.delenv("KFX_POD_NAME", raising=False)
    monkeypatch.delenv(T.STAGING_ENV, raising=False)
    monkeypatch.setattr(T, "current_namespace", lambda default="kubeflow": "team-a")


def test_staging_root_from_env_or_the_steps_output_folder():
    out = "minio://kfx-artifacts/pipeline-root/p/run-1/task/model"
    assert T.staging_root(out, {}) == "s3://kfx-artifacts/pipeline-root/p/run-1/task"
    assert T.staging_root(out, {T.STAGING_ENV: "s3://scratch/kfx/"}) == "s3://scratch/kfx"
    with pytest.raises(ValueError, match=T.STAGING_ENV):
        T.staging_root("/local/out/model", {})
    with pytest.raises(ValueError, match="not s3://"):
        T.staging_root(out, {T.STAGING_ENV: "gs://bucket/x"})


def test_workers_off_cluster_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ValueError, match=r"workers=3.*TF_CONFIG"):
        T.in_cluster_clients(3)


def test_launch_refuses_workers_without_s3_settings(monkeypatch, in_step_pod):
    custom = FakeCustom([("Succeeded", "", "")])
    with pytest.raises(T.TFJobError, match="AWS_SECRET_ACCESS_KEY"):
        T.launch_from_step(["python3"], workers=2, custom_api=custom, core_api=StepCore(env=S3_REFS[:4]),
                           require_env=T.S3_ENV_REQUIRED)
    assert custom.created == []


def test_handoff_stages_inputs_creates_the_job_and_fetches_the_chiefs_outputs(s3_server, tmp_path, in_step_pod):
    """The chief is simulated with worker.publish_outputs (the real two-worker run is in
    tests/stages/test_distributed_train.py)."""
    seen = {}

    class Operator(FakeCustom):
        def create_namespaced_custom_object(self, group, version, ns, plural, body):
            super().create_namespaced_custom_object(group, version, ns, plural, body)
            args = body["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["args"]
            uri = args[args.index("--staging-uri") + 1]
            seen["at_create"] = _objects(uri)  # inputs are complete before the job exists
            model, ckpt = tmp_path / "chief/model", tmp_path / "chief/ckpt"
            (model / "variables").mkdir(parents=True)
            (model / "assets").mkdir()
            (model / "saved_model.pb").write_bytes(b"pb")
            (model / "variables/variables.index").write_bytes(b"ix")
            ckpt.mkdir()
            (ckpt / "epoch-0003.ckpt.index").write_bytes(b"c")
            W.publish_outputs(uri, str(model), str(ckpt), {"strategy": "multi_worker_mirrored", "replicas": 2,
                                                           "epochs": 3, "checkpoints": 1, "is_chief": True})

    custom = Operator([("Running", "", ""), ("Succeeded", "TFJobSucceeded", "")])
    facts = _handoff(tmp_path, custom, StepCore())
    job = custom.created[0]
    w = job["spec"]["tfReplicaSpecs"]["Worker"]
    c = w["template"]["spec"]["containers"][0]
    assert w["replicas"] == 2 and c["command"] == ["python3", "-m", "kfx_components.distributed_train.worker"]
    staging = "s3://kfx-artifacts/pipeline-root/kfx-tabular/run-7/distributed-train/tfjobs/" + job["metadata"]["name"]
    assert c["args"][:4] == ["--staging-uri", staging, "--epochs", "3"]
    assert c["image"] == "reg/kfx-distributed-train:1.0" and job["metadata"]["namespace"] == "team-a"
    refs = {e["name"]: e.get("valueFrom") for e in c["env"]}
    assert refs["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "kfx-s3-credentials", "key": "AWS_SECRET_ACCESS_KEY"}}
    assert s3_server["AWS_SECRET_ACCESS_KEY"] not in json.dumps(job)  # never a literal credential
    assert seen["at_create"] == ["inputs/_COMPLETE", "inputs/hyperparameters/hyperparameters.json",
                                 "inputs/transform_graph/transform_fn/saved_model.pb",
                                 "inputs/transformed_examples/eval/data.tfrecord.gz",
                                 "inputs/transformed_examples/train/data.tfrecord.gz"]
    out = tmp_path / "out"
    assert (out / "model/saved_model.pb").read_bytes() == b"pb" and (out / "model/assets").is_dir()
    assert (out / "ckpt/epoch-0003.ckpt.index").exists()
    assert facts["workers"] == 2 and facts["strategy"] == "multi_worker_mirrored" and facts["replicas"] == 2
    assert facts["tfjob"] == "team-a/" + job["metadata"]["name"] and facts["staging_uri"] == staging
    assert _objects(staging) == []  # staging removed after success


def test_handoff_surfaces_the_failed_replica_and_keeps_the_staging(s3_server, tmp_path, in_step_pod):
    custom = FakeCustom([("Failed", "TFJobFailed", "1 Worker replica(s) failed.")])
    core = StepCore([pod("w-0", 0, 0), pod("w-1", 1, 1, "Error", "ValueError: hyperparameters file lacks ['depth']")])
    with pytest.raises(T.TFJobFailed, match=r"failing replica worker-1 .*exit code 1.*lacks \['depth'\]") as ei:
        _handoff(tmp_path, custom, core)
    assert ei.value.replica == "worker-1"
    assert not (tmp_path / "out/model").exists()
    staging = T.staging_root("minio://kfx-artifacts/pipeline-root/kfx-tabular/run-7/distributed-train/model")
    assert "inputs/_COMPLETE" in _objects(f"{staging}/tfjobs/{custom.created[0]['metadata']['name']}")


def test_handoff_without_the_chiefs_marker_fails(s3_server, tmp_path, in_step_pod):
    custom = FakeCustom([("Succeeded", "", "")])
    with pytest.raises(W.StagingError, match=r"outputs/_COMPLETE is missing.*chief"):
        _handoff(tmp_path, custom, StepCore())
