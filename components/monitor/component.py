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
    labels_uri: late labels (request_id,label CSV) for the online metric (concept drift), or "".
    The verdict is anomalies.metadata: retrain, features, reasons (and report.metadata)."""
    # dsl.component embeds this body's source in the IR: imports must live here.
    import tempfile

    from kfx_components.common import s3
    from kfx_components.monitor import executor
    with tempfile.TemporaryDirectory() as scratch:
        facts = executor.run(
            serving_data_path=serving_data.path, model_dir=model.path,
            statistics_dir=statistics.path, anomalies_dir=anomalies.path, report_path=report.path,
            previous_path=s3.local_copy(previous_uri, scratch) if previous_uri else "",
            labels_path=s3.local_copy(labels_uri, scratch) if labels_uri else "",
            metric_tolerance=metric_tolerance)
    verdict = facts["verdict"]
    print(executor.describe(verdict))
    for reason in verdict["reasons"]:
        print(f"  {reason}")
    if verdict["ignored_columns"]:
        print(f"ignored (not features of the model): {', '.join(verdict['ignored_columns'])}")
    statistics.metadata.update({"rows": facts["rows"], "requests": facts["requests"],
                                "serving_data": serving_data.uri, "model_uri": model.uri})
    anomalies.metadata.update({**verdict, "model": facts["model"], "model_uri": model.uri,
                               "serving_data": serving_data.uri, "previous_uri": previous_uri,
                               "labels_uri": labels_uri, "rows": facts["rows"], "warnings": facts["warnings"],
                               "online": facts["online"], "skew": facts["skew"], "drift": facts["drift"]})
    report.metadata.update({"retrain": verdict["retrain"], "features": verdict["features"],
                            "concept_drift": verdict["concept_drift"], "seconds": facts["seconds"]})
    metrics.log_metric("rows", facts["rows"])
    metrics.log_metric("features_flagged", len(verdict["features"]))
    online = facts["online"] or {}
    if online.get("value") is not None:
        metrics.log_metric(f"online_{online['metric']}", online["value"])
        metrics.log_metric("labelled", online["labelled"])
        if online.get("reference") is not None:
            metrics.log_metric(f"test_{online['metric']}", online["reference"])
