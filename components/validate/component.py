"""The validate stage's KFP components: TFDV statistics, schema and anomalies; drift against the
previous span."""
from typing import List

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Output

from kfx_components.common.artifacts import ExampleAnomalies, ExampleStatistics, Schema
from kfx_components.images import stage_image


@dsl.component(base_image=stage_image("validate"), install_kfp_package=False)
def validate(examples: Input[Dataset], curated_schema_uri: str, stop_on_anomalies: bool,
             beam_pipeline_args: List[str], statistics: Output[ExampleStatistics], schema: Output[Schema],
             anomalies: Output[ExampleAnomalies], report: Output[HTML]):
    """Statistics per split, a schema (inferred from train unless curated_schema_uri names one),
    anomalies per split and between the splits, and a report."""
    # dsl.component embeds this body's source in the IR: imports must live here.
    import tempfile

    from kfx_formats import s3
    from kfx_components.common import component_io
    from kfx_components.validate import executor
    with tempfile.TemporaryDirectory() as scratch:
        facts = executor.run(
            examples_dir=examples.path, statistics_dir=statistics.path, schema_dir=schema.path,
            anomalies_dir=anomalies.path, report_path=report.path, label_key=examples.metadata["label_key"],
            curated_schema_path=s3.local_copy(curated_schema_uri, scratch),
            stop_on_anomalies=stop_on_anomalies, beam_pipeline_args=list(beam_pipeline_args or ()))
    component_io.put(statistics, facts, ("num_features", "statistics_seconds"))
    component_io.put(schema, facts, ("num_features", "features", "schema_source"),
                     label_key=examples.metadata["label_key"], curated_schema_uri=curated_schema_uri)
    component_io.put(anomalies, facts, ("num_anomalies", "anomalies", "split_skew",
                                        *(k for k in facts if k.startswith("anomalies_"))))
    component_io.put(report, facts, ("num_anomalies", "seconds"))
    for skew in facts["split_skew"]:   # a random split of one file: the run goes on
        print(f"warning: [{skew['split']}] {skew['feature']}: {skew['description']}")


@dsl.component(base_image=stage_image("validate"), install_kfp_package=False)
def check_drift(statistics: Input[ExampleStatistics], schema: Input[Schema], baseline_statistics_uri: str,
                drift_action: str, drift: Output[ExampleAnomalies], report: Output[HTML]):
    """This span's statistics against the previous span's (baseline_statistics_uri, from resolve;
    "" on a first run): Jensen-Shannon / L-infinity per feature; block the run or warn."""
    # dsl.component embeds this body's source in the IR: imports must live here.
    import tempfile

    from kfx_formats import s3
    from kfx_components.common import component_io
    from kfx_components.validate import executor
    with tempfile.TemporaryDirectory() as scratch:
        facts = executor.check_drift(
            statistics_dir=statistics.path, schema_dir=schema.path,
            baseline_statistics_path=s3.local_copy(baseline_statistics_uri, scratch),
            drift_dir=drift.path, report_path=report.path, drift_action=drift_action)
    component_io.put(drift, facts)
    component_io.put(report, facts, ("drifted_features", "seconds"))
    if facts["drifted_features"]:   # warn: say so in the step's log, the run goes on
        print(f"warning: drift against the previous span in {', '.join(facts['drifted_features'])}")
