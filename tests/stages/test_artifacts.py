"""kfx's typed artifacts: a miswired pipeline fails when it compiles, and the IR names the types."""
import pytest
from kfp import compiler, dsl
from kfp.dsl.types.type_utils import InconsistentTypeException

from kfx_components.common import artifacts


def test_a_schema_cannot_be_wired_into_a_transform_graph_input():
    from kfx_components.transform.component import transform
    from kfx_components.tune.component import tune

    def miswired(data: dsl.Input[dsl.Dataset]):
        t = transform(examples=data, schema=data, categorical_features=[], bucketize_features=[],
                      num_buckets=3, beam_pipeline_args=[])
        tune(transformed_examples=t.outputs["transformed_examples"],
             transform_graph=t.outputs["transformed_examples"], algorithm="random", max_trials=1, epochs=1)

    # KFP builds (and type-checks) the graph when the pipeline is defined, before compiling.
    with pytest.raises(InconsistentTypeException, match=r"system\.Schema"):
        compiler.Compiler().compile(dsl.pipeline(name="miswired")(miswired), "/dev/null")


def test_the_lifecycle_ir_names_each_type(tmp_path):
    from kfx_pipelines.tabular import compile_pipeline
    ir = compile_pipeline(str(tmp_path / "p.yaml"))
    text = open(ir).read()
    for kind in (artifacts.ExampleStatistics, artifacts.Schema, artifacts.ExampleAnomalies,
                 artifacts.TransformGraph, artifacts.HyperParameters, artifacts.Checkpoints,
                 artifacts.ModelEvaluation, artifacts.ModelBlessing, artifacts.InfraBlessing, artifacts.Deployment):
        assert f"schemaTitle: {kind.schema_title}" in text, kind.__name__
    assert "schemaTitle: system.Artifact" not in text  # nothing left untyped
