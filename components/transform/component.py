"""The transform KFP component: fit a TFT graph on train, transform train and eval."""
from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from kfx_components.common.artifacts import Schema, TransformGraph

from kfx_components.images import stage_image


@dsl.component(base_image=stage_image("transform"), install_kfp_package=False)
def transform(examples: Input[Dataset], schema: Input[Schema], categorical_features: List[str],
              bucketize_features: List[str], num_buckets: int, beam_pipeline_args: List[str],
              transform_graph: Output[TransformGraph], transformed_examples: Output[Dataset]):
    """Schema-driven TensorFlow Transform: z-scores, vocabularies, buckets; label unchanged."""
    # dsl.component embeds this body's source in the IR: imports must live here.
    from kfx_components.common import component_io
    from kfx_components.transform import executor
    facts = executor.run(examples_dir=examples.path, schema_dir=schema.path,
                         transform_graph_dir=transform_graph.path,
                         transformed_examples_dir=transformed_examples.path,
                         label_key=examples.metadata["label_key"],
                         categorical_features=list(categorical_features or ()),
                         bucketize_features=list(bucketize_features or ()), num_buckets=num_buckets,
                         beam_pipeline_args=list(beam_pipeline_args or ()))
    component_io.put(transform_graph, facts)
    # Downstream stages read the problem from here, not from pipeline parameters.
    component_io.carry(transformed_examples, examples, facts)
