"""The monitor KFP component: skew, drift, missing features and concept drift of a serving window."""
from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from kfx_components.common.artifacts import ExampleAnomalies, ExampleStatistics
from kfx_components.images import stage_image


@dsl.component(base_image=stage_image("monitor"), install_kfp_package=False)
def monitor(serving_data: Input[Dataset], model: Input[Model], previous_uri: str, labels_uri: str,
            metric_tolerance: float, statistics: Output[ExampleStatistics], anomalies: Output[ExampleAnomalies],
            report: Output[HTML], metrics: Output[Metrics]):
    """Compare logged serving data (payload-log JSON lines, feature-dict JSON lines or CSV) with the
    training statistics and schema of a registry version (`model`: `<registry_uri>/<model>/vN`).
    previous_uri: the previous window (its data, or a monitor's statistics output) for drift, or "".
    labels_uri: late labels (a CSV request_id,index,label: kfx_formats.payload_log) for the online metric
    (concept drift), or "".
    The verdict is anomalies.metadata: for the platform, stage-neutral `summary` (one line), `alert`
    (retraining is due), `details` (the reasons) and `warnings`; beside them this stage's own keys
    (retrain, features, reasons, skewed, ...: old roots and the UI read them) and report.metadata."""
    # dsl.component embeds this body's source in the IR: imports must live here.
    import tempfile

    from kfx_components.common import component_io
    from kfx_components.monitor import executor
    from kfx_formats import s3
    with tempfile.TemporaryDirectory() as scratch:
        facts = executor.run(
            serving_data_path=serving_data.path, model_dir=model.path,
            statistics_dir=statistics.path, anomalies_dir=anomalies.path, report_path=report.path,
            previous_path=s3.local_copy(previous_uri, scratch),
            labels_path=s3.local_copy(labels_uri, scratch),
            metric_tolerance=metric_tolerance)
    verdict = facts["verdict"]
    print(f"monitor: {facts['summary']}")
    for reason in verdict["reasons"]:
        print(f"  {reason}")
    if verdict["ignored_columns"]:
        print(f"ignored (not features of the model): {', '.join(verdict['ignored_columns'])}")
    component_io.put(statistics, facts, ["rows", "requests"], serving_data=serving_data.uri, model_uri=model.uri)
    # The platform reads summary, alert (retraining is due), details and warnings only.
    component_io.result(anomalies, facts["summary"], **verdict, alert=verdict["retrain"], details=verdict["reasons"],
                        **{k: facts[k] for k in ("model", "rows", "warnings", "online", "skew", "drift")},
                        model_uri=model.uri, serving_data=serving_data.uri, previous_uri=previous_uri,
                        labels_uri=labels_uri)
    component_io.put(report, verdict, ["retrain", "features", "concept_drift"], seconds=facts["seconds"])
    online = facts["online"] or {}
    scored = {} if online.get("value") is None else {
        f"online_{online['metric']}": online["value"], "labelled": online["labelled"],
        **({} if online.get("reference") is None else {f"test_{online['metric']}": online["reference"]})}
    component_io.log_metrics(metrics, {"rows": facts["rows"], "features_flagged": len(verdict["features"]), **scored})
