"""distributed_train: strategy selection, checkpoints, export, and two real workers over loopback."""
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from kfx_components.distributed_train import executor


def _tf_config(n, index=0):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{2000 + i}" for i in range(n)]},
                       "task": {"type": "worker", "index": index}})


def test_strategy_kind_from_environment():
    assert executor.strategy_kind({}, gpus=0) == "default"
    assert executor.strategy_kind({"TF_CONFIG": _tf_config(1)}, gpus=0) == "default"
    assert executor.strategy_kind({"TF_CONFIG": _tf_config(2)}, gpus=0) == "multi_worker_mirrored"
    assert executor.strategy_kind({}, gpus=2) == "mirrored"
    assert executor.strategy_kind({"TPU_NAME": "my-tpu", "TF_CONFIG": _tf_config(2)}, gpus=2) == "tpu"
    chief_and_worker = json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]},
                                   "task": {"type": "chief", "index": 0}})
    assert executor.strategy_kind({"TF_CONFIG": chief_and_worker}, gpus=0) == "multi_worker_mirrored"


def test_select_strategy_builds_multi_worker_from_two_worker_tf_config(monkeypatch):
    """select_strategy itself (the real constructor is exercised by the two-process test below;
    building it here would pin this pytest process to a collective-ops cluster)."""
    import tensorflow as tf
    built = []

    class FakeMWMS:
        def __init__(self, *a, **k):
            built.append(os.environ["TF_CONFIG"])

    monkeypatch.setenv("TF_CONFIG", _tf_config(2, index=1))
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", FakeMWMS)
    strategy, name = executor.select_strategy()
    assert isinstance(strategy, FakeMWMS) and name == "multi_worker_mirrored" and len(built) == 1
    assert executor.is_chief() is False  # worker 1 of 2 does not write outputs
    monkeypatch.setenv("TF_CONFIG", _tf_config(2, index=0))
    assert executor.is_chief() is True
    monkeypatch.delenv("TF_CONFIG")
    strategy, name = executor.select_strategy()
    assert name == "default" and strategy is tf.distribute.get_strategy()


def test_trains_checkpoints_every_epoch_and_beats_chance(teacher, work):
    facts = teacher.metadata
    assert facts["strategy"] == "default" and facts["replicas"] == 1
    assert facts["epochs"] == facts["epochs_run"] == 3  # a cap of 3 epochs, below the early-stopping patience
    assert facts["steps_per_epoch"] >= 50 and facts["best_epoch"] in (1, 2, 3)
    ckpt = work / "checkpoints"
    index_files = sorted(p.name for p in ckpt.glob("epoch-*.ckpt.index"))
    assert index_files == [f"epoch-{e:04d}.ckpt.index" for e in (1, 2, 3)]
    assert (ckpt / "checkpoint").exists()
    assert not (ckpt / "backup").exists()  # BackupAndRestore state is dropped once training completes
    assert facts["checkpoints"] == 3
    assert facts["primary_metric"] == "auc"
    assert facts["eval_auc"] > 0.6  # majority class scores AUC 0.5
    assert facts["params"] > 0 and facts["seconds"] > 0
    assert os.path.exists(os.path.join(teacher.path, "saved_model.pb"))


def test_exported_teacher_serves_raw_examples(teacher, examples):
    import tensorflow as tf
    files = sorted((os.path.join(examples.path, "eval", f) for f in os.listdir(os.path.join(examples.path, "eval"))))
    raw = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(32)]
    loaded = tf.saved_model.load(teacher.path)
    probs = loaded.signatures["serving_default"](examples=tf.constant(raw))["probabilities"].numpy()
    assert probs.shape == (32, 1) and np.all((probs >= 0) & (probs <= 1))


def test_resumes_from_checkpoint_after_interruption(model_args, hyperparameters, tmp_path):
    """BackupAndRestore: a run killed after epoch 1 resumes at epoch 2 on restart."""
    import tensorflow as tf
    ckpt, out = tmp_path / "ckpt", tmp_path / "model"

    class Preempted(RuntimeError):
        pass

    class Crash(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise Preempted("simulated preemption")

    orig_fit = tf.keras.Model.fit

    def crashing_fit(self, *a, callbacks=(), **k):
        return orig_fit(self, *a, callbacks=list(callbacks) + [Crash()], **k)

    mp = pytest.MonkeyPatch()
    mp.setattr(tf.keras.Model, "fit", crashing_fit)
    try:
        with pytest.raises(Preempted):
            executor.run(hyperparameters_dir=hyperparameters.path, model_dir=str(out),
                         checkpoint_dir=str(ckpt), epochs=2, **model_args)
    finally:
        mp.undo()
    assert (ckpt / "backup").exists() and not out.exists()
    facts = executor.run(hyperparameters_dir=hyperparameters.path, model_dir=str(out),
                         checkpoint_dir=str(ckpt), epochs=2, **model_args)
    assert facts["epochs_run"] == 1  # only epoch 2 ran after the restart
    assert facts["checkpoints"] == 2 and (out / "saved_model.pb").exists()


def test_bad_hyperparameters_dir_is_named(model_args, tmp_path):
    with pytest.raises(ValueError, match="hyperparameters"):
        executor.run(hyperparameters_dir=str(tmp_path), model_dir=str(tmp_path / "m"),
                     checkpoint_dir=str(tmp_path / "c"), **model_args)


def _free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_workers_over_loopback_train_in_sync(model_args, hyperparameters, tmp_path):
    """Two processes joined by TF_CONFIG run run() end to end with MultiWorkerMirroredStrategy."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    model_dir, ckpt_dir = tmp_path / "model", tmp_path / "ckpt"
    script = textwrap.dedent(f"""
        import json
        from kfx_components.distributed_train import executor
        facts = executor.run(hyperparameters_dir={hyperparameters.path!r}, model_dir={str(model_dir)!r},
                             checkpoint_dir={str(ckpt_dir)!r}, epochs=2,
                             **json.loads({json.dumps(model_args)!r}))
        print("FACTS " + json.dumps(facts))
    """)
    procs = []
    start = time.time()
    for index in range(2):
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        env.pop("TPU_NAME", None)
        procs.append(subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=400)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    seconds = time.time() - start
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-4000:]
    facts = [json.loads(next(l for l in out.splitlines() if l.startswith("FACTS "))[6:]) for out in outputs]
    from kfx_components.common import model as M
    print(f"two-worker wall time {seconds:.1f}s")
    for f in facts:
        assert f["strategy"] == "multi_worker_mirrored" and f["replicas"] == 2
        # the batch size follows the table's size, per replica
        plan = M.fit_plan(f["rows_train"], 2, replicas=2)
        assert f["global_batch_size"] == 2 * plan["batch_size"] and f["epochs_run"] == 2
    assert [f["is_chief"] for f in facts] == [True, False]
    # in sync: both replicas end with the same weights, hence the same eval metrics
    assert facts[0]["eval_loss"] == pytest.approx(facts[1]["eval_loss"], rel=1e-5)
    assert facts[0]["eval_auc"] == pytest.approx(facts[1]["eval_auc"], rel=1e-5)
    assert (model_dir / "saved_model.pb").exists()
    assert sorted(p.name for p in ckpt_dir.glob("epoch-*.ckpt.index")) == \
        ["epoch-0001.ckpt.index", "epoch-0002.ckpt.index"]
    assert not any("workertemp" in p.name for p in model_dir.parent.rglob("*"))  # only the chief wrote here


def test_component_compiles_without_tensorflow(tmp_path):
    script = ("import sys; from kfp import compiler; "
              "from kfx_components.distributed_train.component import distributed_train; "
              f"compiler.Compiler().compile(distributed_train, {str(tmp_path / 'dt.yaml')!r}); "
              "assert 'tensorflow' not in sys.modules, 'component.py imported TF'")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (tmp_path / "dt.yaml").read_text()
    assert "kfx-distributed-train:" in text and "executor.run(" in text


# ------------------------------------------------------------------ workers > 1: the TFJob handoff, end to end
# No Kubernetes API server can run here, so the Kubernetes API + Training Operator are a
# stand-in (`_LocalTrainingOperator`) that runs every replica of the TFJob the step creates
# as a local process: the spec's own command and args, its env (Secret/ConfigMap references
# resolved from this test's environment), and TF_CONFIG per replica on loopback ports, as
# the operator would set it. S3 is real: the moto server of the `s3_server` fixture.

import types  # noqa: E402


class _Metrics:
    def __init__(self):
        self.metadata, self.logged = {}, {}

    def log_metric(self, key, value):
        self.logged[key] = value


class _LocalTrainingOperator:
    """CustomObjectsApi + CoreV1Api stand-in: a created TFJob runs as local worker processes."""

    S3_VARS = ("KFX_S3_ENDPOINT", "KFX_S3_SECURE", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")

    def __init__(self, tmp_path):
        from kubernetes import client as k8s
        self.k8s, self.tmp = k8s, tmp_path
        self.created, self.procs, self.results, self.staged_at_create = [], [], [], []
        refs = [k8s.V1EnvVar(name=n, value_from=k8s.V1EnvVarSource(config_map_key_ref=k8s.V1ConfigMapKeySelector(
                    name="kfx-s3-config", key=n))) for n in self.S3_VARS[:3]]
        refs += [k8s.V1EnvVar(name=n, value_from=k8s.V1EnvVarSource(secret_key_ref=k8s.V1SecretKeySelector(
                     name="kfx-s3-credentials", key=n))) for n in self.S3_VARS[3:]]
        self.step_pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="kfx-tabular-r1-dt", uid="u-1"),
                                  spec=k8s.V1PodSpec(containers=[k8s.V1Container(
                                      name="main", image="reg/kfx-distributed-train:1.0", env=refs)]))

    # CustomObjectsApi
    def create_namespaced_custom_object(self, group, version, ns, plural, body):
        from kfx_components.distributed_train import worker
        self.created.append(body)
        spec = body["spec"]["tfReplicaSpecs"]["Worker"]
        container = spec["template"]["spec"]["containers"][0]
        args = container["args"]
        staging = args[args.index("--staging-uri") + 1]
        bucket, key = worker.split_uri(staging)
        self.staged_at_create = sorted(o.object_name[len(key) + 1:] for o in worker.s3_client().list_objects(
            bucket, prefix=key + "/", recursive=True))
        cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(spec["replicas"])]}
        base = {k: v for k, v in os.environ.items() if k not in self.S3_VARS and k != "TF_CONFIG"}
        for index in range(spec["replicas"]):
            env = dict(base, TF_CPP_MIN_LOG_LEVEL="2",
                       TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
                       KFX_TERMINATION_MESSAGE_PATH=str(self.tmp / f"termination-{index}"))
            for e in container["env"]:  # the spec's env; references resolve like a Secret/ConfigMap would
                ref = e.get("valueFrom")
                env[e["name"]] = e["value"] if ref is None else os.environ[
                    (ref.get("secretKeyRef") or ref.get("configMapKeyRef"))["key"]]
            command = [sys.executable if c == "python3" else c for c in container["command"]]
            self.procs.append(subprocess.Popen(command + args, env=env, cwd=self.tmp, stdout=subprocess.PIPE,
                                               stderr=subprocess.STDOUT, text=True))

    def get_namespaced_custom_object(self, group, version, ns, plural, name):
        if not self.results:  # the job runs to the end while the step polls
            try:
                for p in self.procs:
                    self.results.append((p.communicate(timeout=400)[0], p.returncode))
            finally:
                for p in self.procs:
                    if p.poll() is None:
                        p.kill()
        ok = all(code == 0 for _, code in self.results)
        cond = {"type": "Succeeded" if ok else "Failed", "status": "True", "reason": "TFJobSucceeded" if ok else
                "TFJobFailed", "message": "" if ok else "TFJob has failed because a Worker replica failed."}
        return {"metadata": {"name": name, "namespace": ns}, "status": {"conditions": [cond]}}

    def delete_namespaced_custom_object(self, *a):
        raise AssertionError("no job should be deleted")

    # CoreV1Api
    def read_namespaced_pod(self, name, ns):
        assert name == "kfx-tabular-r1-dt"
        return self.step_pod

    def list_namespaced_pod(self, ns, label_selector=None):
        k8s, pods = self.k8s, []
        name = label_selector.split("=", 1)[1]
        for index, (_, code) in enumerate(self.results):
            msg_file = self.tmp / f"termination-{index}"
            term = k8s.V1ContainerStateTerminated(exit_code=code, reason="Error" if code else "Completed",
                                                  message=msg_file.read_text() if msg_file.exists() else None,
                                                  finished_at=f"2026-01-01T00:00:0{index}Z")
            pods.append(k8s.V1Pod(
                metadata=k8s.V1ObjectMeta(name=f"{name}-worker-{index}", labels={
                    "training.kubeflow.org/replica-type": "worker", "training.kubeflow.org/replica-index": str(index)}),
                status=k8s.V1PodStatus(phase="Failed" if code else "Succeeded", container_statuses=[
                    k8s.V1ContainerStatus(name="tensorflow", image="i", image_id="", ready=False, restart_count=0,
                                          state=k8s.V1ContainerState(terminated=term))])))
        return k8s.V1PodList(items=pods)

    def read_namespaced_pod_log(self, name, ns, container=None, tail_lines=None):
        index = int(name.rsplit("-", 1)[1])
        return "\n".join(self.results[index][0].splitlines()[-(tail_lines or 20):])


def _step(model_args, hyperparameters_dir, tmp_path, workers, epochs=1):
    """Call the component body as the KFP executor would (artifacts with .path/.uri/.metadata)."""
    from kfx_components.distributed_train.component import distributed_train
    art = lambda path, meta=None, uri="": types.SimpleNamespace(path=str(path), uri=uri, metadata=dict(meta or {}))  # noqa: E731
    meta = {"label_key": model_args["label_key"], "problem_type": model_args["problem_type"],
            "num_classes": model_args["num_classes"]}
    root = "minio://kfx-artifacts/pipeline-root/kfx-tabular/run-1/distributed-train"
    outs = dict(model=art(tmp_path / "model", uri=f"{root}/model"),
                checkpoints=art(tmp_path / "checkpoints", uri=f"{root}/checkpoints"), metrics=_Metrics())
    distributed_train.python_func(
        transformed_examples=art(model_args["transformed_examples_dir"], meta),
        transform_graph=art(model_args["transform_graph_dir"]), hyperparameters=art(hyperparameters_dir),
        epochs=epochs, workers=workers, **outs)
    return types.SimpleNamespace(**outs)


@pytest.fixture()
def on_cluster(monkeypatch, tmp_path):
    """The step 'in a pod': in-cluster clients are the local operator; HOSTNAME is the pod name."""
    from kfx_components.distributed_train import tfjob
    operator = _LocalTrainingOperator(tmp_path)
    monkeypatch.setenv("HOSTNAME", "kfx-tabular-r1-dt")
    monkeypatch.delenv(tfjob.STAGING_ENV, raising=False)
    monkeypatch.setattr(tfjob, "current_namespace", lambda default="kubeflow": "kubeflow")
    monkeypatch.setattr(tfjob, "in_cluster_clients", lambda workers: (operator, operator))
    return operator


def test_two_worker_tfjob_handoff_trains_and_the_step_model_serves(s3_server, on_cluster, model_args,
                                                                  hyperparameters, examples, tmp_path):
    """workers=2: the step stages inputs on S3, creates a 2-replica TFJob running worker.py, the two
    workers train under MultiWorkerMirroredStrategy, the chief publishes, the step downloads and serves."""
    import tensorflow as tf
    from kfx_components.distributed_train import worker
    start = time.time()
    out = _step(model_args, hyperparameters.path, tmp_path / "step", workers=2)
    print(f"two-worker TFJob handoff wall time {time.time() - start:.1f}s")
    operator = on_cluster
    (job,) = operator.created
    w = job["spec"]["tfReplicaSpecs"]["Worker"]
    c = w["template"]["spec"]["containers"][0]
    staging = ("s3://kfx-artifacts/pipeline-root/kfx-tabular/run-1/distributed-train/tfjobs/"
               + job["metadata"]["name"])
    assert w["replicas"] == 2 and c["command"] == ["python3", "-m", "kfx_components.distributed_train.worker"]
    assert c["args"][:4] == ["--staging-uri", staging, "--epochs", "1"]
    assert s3_server["AWS_SECRET_ACCESS_KEY"] not in json.dumps(job)
    assert "inputs/_COMPLETE" in operator.staged_at_create and \
        "inputs/hyperparameters/hyperparameters.json" in operator.staged_at_create
    facts = [json.loads(next(l for l in o.splitlines() if l.startswith("KFX_WORKER_FACTS "))[17:])
             for o, _ in operator.results]
    assert [f["is_chief"] for f in facts] == [True, False]
    assert facts[0]["eval_loss"] == pytest.approx(facts[1]["eval_loss"], rel=1e-5)  # in sync
    meta = out.model.metadata
    assert meta["workers"] == 2 and meta["strategy"] == "multi_worker_mirrored" and meta["replicas"] == 2
    assert meta["eval_loss"] == pytest.approx(facts[0]["eval_loss"]) and meta["label_key"] == model_args["label_key"]
    assert out.checkpoints.metadata["workers"] == 2 and out.metrics.logged["workers"] == 2
    assert (tmp_path / "step/checkpoints/epoch-0001.ckpt.index").exists()
    bucket, key = worker.split_uri(staging)
    assert list(worker.s3_client().list_objects(bucket, prefix=key + "/", recursive=True)) == []
    files = sorted(os.path.join(examples.path, "eval", f) for f in os.listdir(os.path.join(examples.path, "eval")))
    raw = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(16)]
    probs = tf.saved_model.load(out.model.path).signatures["serving_default"](
        examples=tf.constant(raw))["probabilities"].numpy()
    assert probs.shape == (16, 1) and np.all((probs >= 0) & (probs <= 1))


def test_two_worker_tfjob_failure_names_the_replica(s3_server, on_cluster, model_args, tmp_path):
    """A worker that fails (a width build_model refuses) fails the step with its replica and message."""
    from kfx_components.distributed_train import tfjob
    bad = tmp_path / "hp"
    bad.mkdir()
    (bad / "hyperparameters.json").write_text('{"width": -1, "depth": 1, "learning_rate": 0.01}')
    with pytest.raises(tfjob.TFJobFailed, match=r"failing replica worker-0 .*exit code 1.*ValueError: "
                                                 r"bad hyperparameters width=-1"):
        _step(model_args, str(bad), tmp_path / "step", workers=2)
    assert not (tmp_path / "step/model").exists()


def test_workers_off_cluster_raise_naming_workers(model_args, hyperparameters, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ValueError, match=r"workers=2.*one process per worker .*TF_CONFIG"):
        _step(model_args, hyperparameters.path, tmp_path, workers=2)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        _step(model_args, hyperparameters.path, tmp_path, workers=0)
