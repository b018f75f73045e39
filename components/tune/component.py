"""tune: the KFP component around ``kfx_components.tune.executor.run``."""
from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from kfx_components.common.artifacts import HyperParameters, TransformGraph

from kfx_components.images import stage_image


@dsl.component(base_image=stage_image("tune"), install_kfp_package=False)
def tune(transformed_examples: Input[Dataset], transform_graph: Input[TransformGraph], algorithm: str,
         max_trials: int, epochs: int, hyperparameters: Output[HyperParameters], metrics: Output[Metrics],
         model_family: str = "auto"):
    """Choose the model family (network, gradient-boosted trees, or the better of both on eval) and its
    settings within max_trials; write hyperparameters.json."""
    from kfx_components.common import component_io
    from kfx_components.tune import executor

    facts = executor.run(transformed_examples_dir=transformed_examples.path,
                         transform_graph_dir=transform_graph.path,
                         hyperparameters_dir=hyperparameters.path,
                         **component_io.problem(transformed_examples),
                         algorithm=algorithm, max_trials=max_trials, epochs=epochs,
                         model_family=model_family)
    component_io.carry(hyperparameters, transformed_examples, facts)
    scores = {f"eval_{facts['metric']}_{family}": f["eval_metric"] for family, f in facts["families"].items()}
    component_io.log_metrics(metrics, {**scores, "seconds": facts["seconds"]}, family=facts["family"])
