"""tune: the KFP component around ``kfx_components.tune.executor.run``."""
from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from kfx_components.common.artifacts import HyperParameters, TransformGraph

from kfx_components.images import stage_image


@dsl.component(base_image=stage_image("tune"), install_kfp_package=False)
def tune(transformed_examples: Input[Dataset], transform_graph: Input[TransformGraph], algorithm: str,
         max_trials: int, epochs: int, hyperparameters: Output[HyperParameters], metrics: Output[Metrics]):
    """Search width, depth and learning rate; write hyperparameters.json."""
    from kfx_components.common import facts as travelling
    from kfx_components.tune import executor

    meta = transformed_examples.metadata
    facts = executor.run(transformed_examples_dir=transformed_examples.path,
                         transform_graph_dir=transform_graph.path,
                         hyperparameters_dir=hyperparameters.path,
                         label_key=meta["label_key"], problem_type=meta["problem_type"],
                         num_classes=int(meta.get("num_classes") or 0),
                         algorithm=algorithm, max_trials=max_trials, epochs=epochs)
    hyperparameters.metadata.update({**facts, **travelling.carried(meta)})
    metrics.log_metric("best_score", facts["best_score"])
    metrics.log_metric("trials", facts["trials"])
    metrics.log_metric("seconds", facts["seconds"])
    metrics.metadata["objective"] = facts["objective"]
    metrics.metadata["algorithm"] = facts["algorithm"]
