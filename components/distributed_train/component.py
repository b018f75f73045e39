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
    When tune chose gradient-boosted trees, TF-DF trains them in this pod on one worker
    whatever `workers` and the accelerator profile say (tf.distribute does not apply to trees).
    """
    from kfx_components.common import component_io, families
    from kfx_components.common import model as model_io
    from kfx_components.distributed_train import executor

    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    kwargs = dict(transformed_examples_dir=transformed_examples.path,
                  transform_graph_dir=transform_graph.path,
                  hyperparameters_dir=hyperparameters.path,
                  model_dir=model.path, checkpoint_dir=checkpoints.path,
                  **component_io.problem(transformed_examples), epochs=epochs)
    trees = model_io.read_hyperparameters(hyperparameters.path)["family"] == "gradient_boosted_trees"
    if int(workers) > 1 and not trees:
        from kfx_components.distributed_train import tfjob
        facts = tfjob.train_with_tfjob(workers=int(workers), output_uri=model.uri or "", **kwargs)
    else:
        facts = {**executor.run(**kwargs), "workers": 1}
    component_io.carry(model, transformed_examples, {**facts, "model_families": families.summary(
        dict(hyperparameters.metadata or {}))})
    component_io.put(checkpoints, facts, ("epochs", "checkpoints", "strategy", "workers", "replicas"))
    evaluated = {k: v for k, v in facts.items() if k.startswith("eval_") and isinstance(v, (int, float))}
    run = {k: facts[k] for k in ("replicas", "workers", "params", "seconds") if k in facts}
    component_io.log_metrics(metrics, {**evaluated, **run}, strategy=facts["strategy"])
