"""Chart values that mirror other sources of truth must equal them (no cluster, no tools).

* pipeline.parameters (the recurring run the registration Job creates) vs the data set
  configuration pipelines/configs/chicago_taxi.yaml that `kfx run/submit --config` use:
  every key but `data` (a local file; on the cluster it is data_uri on MinIO) must match,
  so a cluster run blesses against the same AUC floor as a local one.
* nodePools vs pipelines/profiles.py NODE_POOLS: the platform pods' CPU pool placement and
  the accelerator resources the quota counts. Step placement itself is compiled into the IR.
"""
import pathlib

import yaml

from kfx_pipelines import profiles as P

REPO = pathlib.Path(__file__).resolve().parents[2]
VALUES = yaml.safe_load((REPO / "helm" / "kfx" / "values.yaml").read_text())
TAXI = yaml.safe_load((REPO / "pipelines" / "configs" / "chicago_taxi.yaml").read_text())


def test_chart_run_parameters_equal_the_taxi_config():
    chart = VALUES["pipeline"]["parameters"]
    keys = set(TAXI) - {"data", "schema"}   # local files; on the cluster objects in the bucket
    assert "metric_threshold" in keys            # the AUC floor must reach cluster runs
    missing = sorted(k for k in keys if k not in chart)
    assert not missing, f"helm/kfx/values.yaml pipeline.parameters lacks {missing} (chicago_taxi.yaml has them)"
    differ = {k: (chart[k], TAXI[k]) for k in keys if chart[k] != TAXI[k]}
    assert not differ, f"chart value != chicago_taxi.yaml value: {differ}"
    # the data file becomes an object in the chart's bucket, under the same name
    assert chart["data_uri"] == f"minio://{VALUES['s3']['bucket']}/data/chicago_taxi/{pathlib.Path(TAXI['data']).name}"
    assert chart["schema_uri"] == f"minio://{VALUES['s3']['bucket']}/schemas/{pathlib.Path(TAXI['schema']).name}"
    # what the chart adds beyond the config is cluster-only
    assert set(chart) - keys == {"data_uri", "schema_uri", "registry_uri"}
    assert chart["registry_uri"].startswith(f"s3://{VALUES['s3']['bucket']}/")


def test_chart_run_parameters_survive_the_registration_jobs_encoding():
    """The Job passes each value as --param=NAME=VALUE (lists as JSON); kfx.submit reads it back."""
    import json

    from kfx.runner.params import parse_params
    chart = VALUES["pipeline"]["parameters"]
    encoded = [f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in chart.items()]
    assert parse_params(encoded) == chart
    assert isinstance(parse_params(["metric_threshold=0.75"])["metric_threshold"], float)


def test_chart_node_pools_match_the_compile_profiles():
    pools = VALUES["nodePools"]
    cpu = P.NODE_POOLS["cpu"]
    assert pools["cpu"]["labels"] == cpu.node_selector
    assert pools["cpu"]["taints"] == [
        {k: v for k, v in (("key", t.key), ("operator", t.operator), ("value", t.value), ("effect", t.effect))
         if v is not None} for t in cpu.tolerations]
    for name in ("gpu", "tpu"):
        # only the extended resource the acceleratorQuota counts; no unused labels/taints
        assert pools[name] == {"resource": P.NODE_POOLS[name].accelerator_type}


def test_chart_keeps_no_default_api_server_cidr():
    assert VALUES["networkPolicies"]["apiServerCIDRs"] == []
