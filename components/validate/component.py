"""The validate KFP component: TFDV statistics, schema, anomalies and an HTML report."""
from typing import List

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Output

from kfx_components.common.artifacts import ExampleAnomalies, ExampleStatistics, Schema

from kfx_components.images import stage_image


@dsl.component(base_image=stage_image("validate"), install_kfp_package=False)
def validate(examples: Input[Dataset], stop_on_anomalies: bool, beam_pipeline_args: List[str],
             statistics: Output[ExampleStatistics], schema: Output[Schema], anomalies: Output[ExampleAnomalies],
             report: Output[HTML], curated_schema: Input[Schema] = None):
    """Statistics per split, a schema (inferred from train unless curated), anomalies, report."""
    # dsl.component embeds this body's source in the IR: imports must live here.
    from kfx_components.validate import executor
    facts = executor.run(examples_dir=examples.path, statistics_dir=statistics.path, schema_dir=schema.path,
                         anomalies_dir=anomalies.path, report_path=report.path,
                         label_key=examples.metadata["label_key"],
                         curated_schema_path=curated_schema.path if curated_schema else "",
                         stop_on_anomalies=stop_on_anomalies,
                         beam_pipeline_args=list(beam_pipeline_args or ()))
    statistics.metadata.update({k: facts[k] for k in ("num_features", "statistics_seconds")})
    schema.metadata.update({k: facts[k] for k in ("num_features", "features", "schema_source")})
    schema.metadata["label_key"] = examples.metadata["label_key"]
    anomalies.metadata.update({k: facts[k] for k in
                               ("num_anomalies", "anomalies", *(k for k in facts if k.startswith("anomalies_")))})
    report.metadata.update({"num_anomalies": facts["num_anomalies"], "seconds": facts["seconds"]})
