"""distributed_train: train the tuned model under a tf.distribute strategy and export it.

The strategy comes from the environment (``select_strategy``):

* ``tpu``: ``TPU_NAME`` (or GKE's ``KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS``) is set and a
  ``TPUClusterResolver`` resolves -> ``TPUStrategy``;
* ``multi_worker_mirrored``: ``TF_CONFIG`` lists more than one task in
  ``chief`` + ``worker`` -> ``MultiWorkerMirroredStrategy`` (each worker runs
  this same function with its own ``TF_CONFIG``: Training Operator TFJob);
* ``mirrored``: more than one local GPU -> ``MirroredStrategy``;
* ``default``: the default one-device strategy.

Budget: ``epochs`` is a cap; the batch size and steps per epoch follow the
table's size (``model.fit_plan``) and training stops early on the eval split's
loss with the best epoch's weights restored (``model.fit_callbacks``).

Checkpoints: ``tf.keras.callbacks.BackupAndRestore`` under ``backup_dir()``
(a restarted worker resumes from the last finished epoch): the chief's is
``$KFX_RESUME_DIR/backup`` when the local runner sets that variable (a
directory keyed by the step's cache key that outlives a killed attempt and is
removed when the step commits), else ``<checkpoint_dir>/backup`` (on KFP, as
before); and ``ModelCheckpoint`` writing weights every epoch to
``<checkpoint_dir>/epoch-XXXX.ckpt*`` (``checkpoint`` index file included).
Only the chief writes ``checkpoint_dir`` and ``model_dir``; other workers write
to temporary directories that are removed (the standard MWMS pattern: every
worker must take part in saving).

Trees (tune chose ``gradient_boosted_trees``): TF-DF trains them in this process,
on one worker, whatever the profile: tf.distribute strategies, GPUs and TPUs do not
apply to its learner (TF-DF's own distributed training needs a cluster of its own
GRPC workers, which kfx does not start), so on a multi-worker cluster only the
chief trains and the other workers end at once; ``strategy`` says so. A forest
stops early on the eval split (``forest.train_forest``) and has no checkpoints.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

from kfx_components.common import problem
from kfx_formats.saved_model import FAMILY_FOREST as FOREST


def _tf_config() -> dict:
    try:
        return json.loads(os.environ.get("TF_CONFIG") or "{}")
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not JSON: {e}") from e


def cluster_workers(tf_config: dict | None = None) -> int:
    """Number of chief + worker tasks in TF_CONFIG (0 when unset)."""
    cluster = (_tf_config() if tf_config is None else tf_config).get("cluster", {})
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def strategy_kind(environ=None, gpus: int | None = None) -> str:
    """Which strategy ``select_strategy`` picks, without building it (pure; for tests and reports)."""
    environ = os.environ if environ is None else environ
    if environ.get("TPU_NAME") or environ.get("KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS"):
        return "tpu"
    tf_config = json.loads(environ.get("TF_CONFIG") or "{}")
    if cluster_workers(tf_config) > 1:
        return "multi_worker_mirrored"
    if gpus is None:
        import tensorflow as tf
        gpus = len(tf.config.list_physical_devices("GPU"))
    if gpus > 1:
        return "mirrored"
    return "default"


def select_strategy():
    """``(strategy, name)`` for this process's environment; see the module docstring."""
    import tensorflow as tf
    kind = strategy_kind()
    if kind == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME") or None)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            return tf.distribute.TPUStrategy(resolver), "tpu"
        except (ValueError, RuntimeError, tf.errors.OpError) as e:  # named but unreachable
            print(f"distributed_train: TPU did not resolve ({e}); falling back")
            env = {k: v for k, v in os.environ.items() if k not in ("TPU_NAME", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS")}
            kind = strategy_kind(env)
    if kind == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy(), kind
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(), kind
    return tf.distribute.get_strategy(), "default"


def is_chief(strategy=None) -> bool:
    """True for the task that writes outputs: chief, or worker 0 when there is no chief."""
    tf_config = _tf_config()
    task = tf_config.get("task", {})
    if not task or task.get("type") == "chief":
        return True
    if task.get("type") == "worker":
        return "chief" not in tf_config.get("cluster", {}) and int(task.get("index", 0)) == 0
    return False


RESUME_ENV = "KFX_RESUME_DIR"


def backup_dir(ckpt_dir: str, chief: bool, environ=None) -> str:
    """Where BackupAndRestore keeps the state a rerun resumes from (see the module docstring)."""
    environ = os.environ if environ is None else environ
    resume = environ.get(RESUME_ENV)
    if chief and resume:
        return os.path.join(resume, "backup")
    return os.path.join(ckpt_dir, "backup")


def _last_backed_up_epoch(backup: str):
    """The 0-based epoch a BackupAndRestore backup in `backup` holds, or None (no backup).
    Read from tf.train's checkpoint index without restoring anything."""
    import tensorflow as tf
    try:
        path = tf.train.latest_checkpoint(os.path.join(backup, "chief")) or tf.train.latest_checkpoint(backup)
        if not path:
            return None
        names = dict(tf.train.list_variables(path))
        key = next((k for k in names if k.startswith("ckpt_saved_epoch")), None)
        epoch = int(tf.train.load_variable(path, key)) if key else -1
        return epoch if epoch >= 0 else None
    except (tf.errors.OpError, ValueError):
        return None


def run(transformed_examples_dir: str, transform_graph_dir: str, hyperparameters_dir: str,
        model_dir: str, checkpoint_dir: str, label_key: str, problem_type: str, num_classes: int,
        epochs: int = 100, seed: int = 42) -> dict:
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs!r}")
    epochs = int(epochs)

    import tensorflow as tf
    from kfx_components.common import model as m

    start = time.time()
    chosen = m.read_hyperparameters(hyperparameters_dir)
    hps = chosen["network"]
    m.output_units(problem_type, num_classes)
    transform_output = m.load_transform_output(transform_graph_dir)
    tf.keras.utils.set_random_seed(seed)
    if chosen["family"] == FOREST:
        return _train_forest(transformed_examples_dir, transform_output, chosen["forest"], model_dir, checkpoint_dir,
                             label_key, problem_type, num_classes, seed, start)

    strategy, strategy_name = select_strategy()
    replicas = int(strategy.num_replicas_in_sync)
    chief = is_chief(strategy)
    n_train = m.count_examples(transformed_examples_dir, "train")
    n_eval = m.count_examples(transformed_examples_dir, "eval")
    plan = m.fit_plan(n_train, epochs, replicas)
    global_batch = plan["batch_size"] * replicas
    # Training: repeat + the same steps_per_epoch on every worker keeps the collectives in step.
    # Evaluation: one finite pass (tf.distribute pads the last partial batch).
    train = m.make_dataset(transformed_examples_dir, "train", transform_output, label_key, global_batch,
                           shuffle=True, repeat=True, seed=seed, problem_type=problem_type)
    evals = m.make_dataset(transformed_examples_dir, "eval", transform_output, label_key, global_batch,
                           problem_type=problem_type)
    stats = m.label_stats(transformed_examples_dir, transform_output, label_key, problem_type, num_classes)

    with strategy.scope():
        model = m.build_model(transform_output, label_key, problem_type, num_classes, **hps, label_stats=stats)

    scratch = tempfile.mkdtemp(prefix="kfx-train-")
    ckpt_dir = checkpoint_dir if chief else os.path.join(scratch, "checkpoints")
    out_dir = model_dir if chief else os.path.join(scratch, "model")
    os.makedirs(ckpt_dir, exist_ok=True)
    backup = backup_dir(ckpt_dir, chief)
    resumed_from = _last_backed_up_epoch(backup)
    if resumed_from is not None:
        print(f"distributed_train: resuming from the backup in {backup} (epoch {resumed_from + 1} done)")
    callbacks = [
        # The chief's backup survives a killed attempt (KFX_RESUME_DIR, or next to the checkpoints),
        # so a restarted step resumes from it; Keras deletes it when fit() completes.
        tf.keras.callbacks.BackupAndRestore(backup_dir=backup),
        tf.keras.callbacks.ModelCheckpoint(os.path.join(ckpt_dir, "epoch-{epoch:04d}.ckpt"),
                                           save_weights_only=True, save_freq="epoch"),
    ]
    try:
        history = model.fit(train, epochs=plan["epochs"], steps_per_epoch=plan["steps_per_epoch"],
                            validation_data=evals, callbacks=callbacks + m.fit_callbacks(), verbose=2)
        if chief:  # finished: drop the resume state (Keras empties it; remove the folder too)
            shutil.rmtree(backup, ignore_errors=True)
        results = model.evaluate(evals, return_dict=True, verbose=0)
        m.export_serving_model(model, transform_output, label_key, problem_type, out_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # a non-chief's checkpoints and model copy
    checkpoints = sorted(f[: -len(".index")] for f in os.listdir(ckpt_dir) if f.endswith(".ckpt.index")) \
        if chief else []

    metric = problem.primary_metric(problem_type)
    eval_metrics = {f"eval_{k}": float(v) for k, v in results.items()}
    return {
        "strategy": strategy_name,
        "replicas": replicas,
        "is_chief": chief,
        "epochs": plan["epochs"],
        **m.history_summary(history),
        "steps_per_epoch": plan["steps_per_epoch"],
        "global_batch_size": global_batch,
        "rows_train": n_train,
        "rows_eval": n_eval,
        **eval_metrics,
        "primary_metric": metric,
        "primary_metric_value": eval_metrics.get(f"eval_{metric}"),
        "params": int(model.count_params()),
        "checkpoints": len(checkpoints),
        "resumed_after_epoch": None if resumed_from is None else resumed_from + 1,
        "family": "network",
        "hyperparameters": hps,
        "seconds": round(time.time() - start, 2),
    }


FOREST_STRATEGY = "one worker (TF-DF trains in-process; tf.distribute does not apply to trees)"


def _train_forest(transformed_examples_dir, transform_output, settings, model_dir, checkpoint_dir, label_key,
                  problem_type, num_classes, seed, start) -> dict:
    """Train and export the forest on the chief; another worker ends without writing (module doc)."""
    from kfx_components.common import forest
    from kfx_components.common import model as m
    os.makedirs(checkpoint_dir, exist_ok=True)   # an output artifact: present, empty (no checkpoints)
    facts = {"family": FOREST, "strategy": FOREST_STRATEGY, "replicas": 1, "is_chief": is_chief(),
             "hyperparameters": settings, "checkpoints": 0, "resumed_after_epoch": None,
             "rows_train": m.count_examples(transformed_examples_dir, "train"),
             "rows_eval": m.count_examples(transformed_examples_dir, "eval")}
    if not facts["is_chief"]:
        return {**facts, "seconds": round(time.time() - start, 2)}
    model, trained = forest.train_forest(transformed_examples_dir, transform_output, label_key, problem_type,
                                         num_classes, seed, **settings)
    metric = problem.primary_metric(problem_type)
    value = m.split_metric(lambda f: model(f, training=False), transformed_examples_dir, transform_output,
                           label_key, problem_type)
    m.export_serving_model(model, transform_output, label_key, problem_type, model_dir)
    return {**facts, "num_trees": trained["num_trees"], "trees_trained": trained["trees_trained"],
            "primary_metric": metric, "primary_metric_value": value, f"eval_{metric}": value,
            "params": 0, "epochs": 0, "seconds": round(time.time() - start, 2)}
