"""distributed_train: the KFP component around ``kfx_components.distributed_train.executor.run``."""
from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from kfx_components.common.artifacts import Checkpoints, HyperParameters, TransformGraph

from kfx_components.images import stage_image


@dsl.component(base_image=stage_image("distributed_train"), install_kfp_package=False)
def distributed_train(transformed_examples: Input[Dataset], transform_graph: Input[TransformGraph],
                      hyperparameters: Input[HyperParameters], epochs: int, model: Output[Model],
                      checkpoints: Output[Checkpoints], metrics: Output[Metrics], workers: int = 1):
    """Train under the environment's tf.distribute strategy; export the serving SavedModel.

    workers == 1: train in this pod. workers > 1 (on a cluster only): hand off to a
    Kubeflow Training Operator TFJob of `workers` replicas (MultiWorkerMirroredStrategy,
    TF_CONFIG set per replica by the operator); inputs and outputs travel through the
    S3 prefix KFX_TFJOB_STAGING_URI (default: next to this step's outputs), see
    kfx_components.distributed_train.tfjob.train_with_tfjob.
    """
    from kfx_components.common import facts as travelling
    from kfx_components.distributed_train import executor

    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    meta = transformed_examples.metadata
    kwargs = dict(transformed_examples_dir=transformed_examples.path,
                  transform_graph_dir=transform_graph.path,
                  hyperparameters_dir=hyperparameters.path,
                  model_dir=model.path, checkpoint_dir=checkpoints.path,
                  label_key=meta["label_key"], problem_type=meta["problem_type"],
                  num_classes=int(meta.get("num_classes") or 0), epochs=epochs)
    if int(workers) > 1:
        from kfx_components.distributed_train import tfjob
        facts = tfjob.train_with_tfjob(workers=int(workers), output_uri=model.uri or "", **kwargs)
    else:
        facts = {**executor.run(**kwargs), "workers": 1}
    model.metadata.update({**facts, **travelling.carried(meta)})
    checkpoints.metadata.update({"epochs": facts["epochs"], "checkpoints": facts["checkpoints"],
                                 "strategy": facts["strategy"], "workers": facts["workers"],
                                 "replicas": facts["replicas"]})
    for key, value in facts.items():
        if key.startswith("eval_") and isinstance(value, (int, float)):
            metrics.log_metric(key, value)
    for key in ("replicas", "workers", "params", "seconds"):
        metrics.log_metric(key, facts[key])
    metrics.metadata["strategy"] = facts["strategy"]
