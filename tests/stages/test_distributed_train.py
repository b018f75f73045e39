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
    assert facts["epochs"] == facts["epochs_run"] == 3
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
                             checkpoint_dir={str(ckpt_dir)!r}, epochs=2, batch_size=128,
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
    print(f"two-worker wall time {seconds:.1f}s")
    for f in facts:
        assert f["strategy"] == "multi_worker_mirrored" and f["replicas"] == 2
        assert f["global_batch_size"] == 256 and f["epochs_run"] == 2
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
