"""The kfx monitor as a KFP pipeline: logged serving data against a pushed model version.

import the serving window -> import the registry version -> monitor (TFDV skew,
drift against the previous window, missing/new features, concept drift from late
labels; an HTML report and a verdict in the anomalies artifact's metadata).
Runs locally with `kfx monitor` (the same IR through kfx's runner) and on KFP as a
one-off or recurring run (helm/kfx/templates/monitor-cronjob.yaml).
"""
from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Model

from kfx_components.monitor.component import monitor
from kfx_pipelines.profiles import kfx_pipeline, place

PIPELINE_NAME = "kfx-monitor"


def build_pipeline(profile: str = "cpu"):
    """The pipeline function for a compile profile (local, cpu, gpu, tpu: the monitor runs on CPU)."""

    @kfx_pipeline(PIPELINE_NAME, __doc__, profile)
    def monitor_pipeline(
        serving_data_uri: str,
        model_uri: str,
        previous_uri: str = "",
        labels_uri: str = "",
        metric_tolerance: float = 0.05,
    ):
        # reimport: a serving window at the same path is new data each time it is monitored.
        serving = dsl.importer(artifact_uri=serving_data_uri, artifact_class=Dataset, reimport=True)
        serving.set_display_name("import-serving-data")
        # A registry version is never overwritten: its URI names its content.
        model = dsl.importer(artifact_uri=model_uri, artifact_class=Model, reimport=False)
        model.set_display_name("import-model-version")
        place(monitor(serving_data=serving.output, model=model.output, previous_uri=previous_uri,
                      labels_uri=labels_uri, metric_tolerance=metric_tolerance), "monitor", profile)

    return monitor_pipeline


def compile_pipeline(output_path: str, profile: str = "cpu", defaults: Optional[dict] = None) -> str:
    """Compiles the monitor pipeline to KFP IR YAML; `defaults` become parameter defaults in the IR."""
    from kfp import compiler
    compiler.Compiler().compile(build_pipeline(profile), output_path, pipeline_parameters=defaults or None)
    return output_path
