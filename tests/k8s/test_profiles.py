"""Placement in the compiled IR: pipelines/profiles.py applied through kfp + kfp-kubernetes.

A nine-step pipeline with one stand-in component per stage is compiled for every
profile and the IR is read back: resources, accelerators, node selectors,
tolerations, S3 settings by reference, retries, caching and the pipeline root.
The real pipeline (pipelines/tabular.py) is checked the same way when it imports.
"""
from pathlib import Path
import pytest
import yaml
from kfp import compiler, dsl

from kfx_pipelines import profiles as P


def _stage_component(stage: str):
    @dsl.component(base_image=f"kfx/kfx-{stage.replace('_', '-')}:test")
    def step(x: str) -> str:
        return x
    step.component_spec.name = stage  # noqa: attribute exists on the spec
    return step


def compile_all_stages(profile, path):
    comps = {s: _stage_component(s) for s in P.STAGES}

    @dsl.pipeline(name="kfx-placement", pipeline_root=P.pipeline_root(profile))
    def pipe(x: str = "a"):
        prev = x
        for s in P.STAGES:
            t = P.place(comps[s](x=prev).set_display_name(s), s, profile)
            prev = t.output

    compiler.Compiler().compile(pipe, str(path))
    docs = list(yaml.safe_load_all(path.read_text()))
    return docs[0], (docs[1] if len(docs) > 1 else {})


def _by_stage(spec, platform):
    """stage -> (container spec, task spec, kubernetes executor config)."""
    out = {}
    tasks = spec["root"]["dag"]["tasks"]
    k8s = (platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {}))
    for tname, task in tasks.items():
        stage = task["taskInfo"]["name"]
        comp = spec["components"][task["componentRef"]["name"]]
        ex = comp["executorLabel"]
        out[stage] = (spec["deploymentSpec"]["executors"][ex]["container"], task, k8s.get(ex, {}))
    return out


@pytest.mark.parametrize("profile", P.PROFILES)
def test_cluster_profiles_place_every_stage(profile, tmp_path):
    spec, platform = compile_all_stages(profile, tmp_path / "p.yaml")
    assert spec["defaultPipelineRoot"] == "minio://kfx-artifacts/pipeline-root"
    stages = _by_stage(spec, platform)
    assert set(stages) == set(P.STAGES)
    for stage, (container, task, k8s) in stages.items():
        res = container["resources"]
        want = P.STAGE_SPECS[stage].resources
        assert (res["resourceCpuRequest"], res["resourceCpuLimit"]) == (want.cpu_request, want.cpu_limit)
        assert (res["resourceMemoryRequest"], res["resourceMemoryLimit"]) == (want.memory_request, want.memory_limit)
        accelerated = profile in ("gpu", "tpu") and stage in P.ACCELERATED_STAGES
        pool = profile if accelerated else "cpu"
        if accelerated:
            acc = res["accelerator"]
            assert acc["resourceType"] == {"gpu": "nvidia.com/gpu", "tpu": "google.com/tpu"}[profile]
            assert acc["resourceCount"] == "1"
            assert k8s["tolerations"] == [{"key": acc["resourceType"], "operator": "Exists", "effect": "NoSchedule"}]
        else:
            assert "accelerator" not in res
            assert "tolerations" not in k8s
        assert k8s["nodeSelector"]["labels"]["kfx.dev/node-pool"] == pool
        if accelerated and profile == "tpu":
            assert k8s["nodeSelector"]["labels"]["cloud.google.com/gke-tpu-accelerator"] == "tpu-v5-lite-podslice"
        assert k8s["podMetadata"]["labels"] == {"app.kubernetes.io/part-of": "kfx",
                                                "kfx.dev/stage": stage.replace("_", "-"),
                                                "kfx.dev/node-pool": pool}
        assert int(k8s["activeDeadlineSeconds"]) == P.STAGE_SPECS[stage].timeout_seconds
        # S3 settings by reference only
        assert k8s["secretAsEnv"][0]["secretName"] == "kfx-s3-credentials"
        assert {e["envVar"] for e in k8s["secretAsEnv"][0]["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        assert k8s["configMapAsEnv"][0]["configMapName"] == "kfx-s3-config"
        assert "env" not in container or not any("AWS" in e["name"] for e in container["env"])
        assert task["retryPolicy"]["maxRetryCount"] == P.STAGE_SPECS[stage].retries
        assert task["cachingOptions"].get("enableCache", False) is P.STAGE_SPECS[stage].cached
    assert not stages["push"][1]["cachingOptions"].get("enableCache")
    assert stages["evaluate"][1]["cachingOptions"].get("enableCache")   # the baseline is an input now


def test_gpu_profile_puts_only_training_tuning_distillation_on_gpus(tmp_path):
    spec, platform = compile_all_stages("gpu", tmp_path / "p.yaml")
    on_gpu = {s for s, (c, _, k) in _by_stage(spec, platform).items()
              if c["resources"].get("accelerator", {}).get("resourceType") == "nvidia.com/gpu"}
    assert on_gpu == {"tune", "distributed_train", "distill"}


@pytest.mark.parametrize("profile", P.PROFILES)
def test_tpu_placed_steps_name_the_local_tpu(profile, tmp_path):
    """TPU-placed steps get TPU_NAME=local (GKE TPU VM), so distributed_train's executor
    builds a TPUStrategy instead of holding the TPU and training on the CPU; no other step
    gets it."""
    spec, platform = compile_all_stages(profile, tmp_path / "p.yaml")
    for stage, (container, task, k8s) in _by_stage(spec, platform).items():
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        on_tpu = profile == "tpu" and stage in P.ACCELERATED_STAGES
        if on_tpu:
            assert env.get("TPU_NAME") == "local", (stage, env)
            assert container["resources"]["accelerator"]["resourceType"] == "google.com/tpu"
        else:
            assert "TPU_NAME" not in env, (profile, stage, env)


def test_tpu_env_selects_the_tpu_strategy():
    """The executor's strategy choice for the env the tpu profile sets (pure: no TensorFlow)."""
    import importlib.util

    from tests.k8s.conftest import REPO
    path = REPO / "components" / "distributed_train" / "executor.py"
    spec = importlib.util.spec_from_file_location("kfx_dt_executor", path)
    executor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(executor)
    assert executor.strategy_kind(dict(P.NODE_POOLS["tpu"].env), gpus=0) == "tpu"
    assert executor.strategy_kind({}, gpus=0) == "default"
    assert P.NODE_POOLS["gpu"].env == {} and P.NODE_POOLS["cpu"].env == {}


def test_local_profile_has_no_kubernetes_settings(tmp_path):
    spec, platform = compile_all_stages("local", tmp_path / "p.yaml")
    assert "defaultPipelineRoot" not in spec
    # the stage's timeout alone (kfx run applies it): no pool, secret, label or pull policy
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert {k for e in executors.values() for k in e} == {"activeDeadlineSeconds"}
    for stage, (container, task, _) in _by_stage(spec, platform).items():
        assert "accelerator" not in container["resources"]
        assert "retryPolicy" not in task


def test_no_literal_credentials_in_ir(tmp_path):
    for profile in P.PROFILES:
        text = (tmp_path / f"{profile}.yaml")
        compile_all_stages(profile, text)
        body = text.read_text()
        assert "minio123" not in body and "secretKey: " in body  # secret *key names* only
        assert "AWS_SECRET_ACCESS_KEY:" not in body


def test_unknown_profile_and_stage_are_errors():
    task = object()
    with pytest.raises(ValueError, match="unknown compile profile 'arm'"):
        P.place(task, "ingest", "arm")
    with pytest.raises(ValueError, match="unknown stage 'train'"):
        P.place(task, "train", "gpu")
    with pytest.raises(ValueError, match="unknown compile profile"):
        P.pipeline_root("arm")
    assert P.pipeline_root(None) is None and P.pipeline_root("local") is None


def test_describe_rows():
    rows = {r["stage"]: r for r in P.describe("tpu")}
    assert rows["distill"]["accelerator"] == "google.com/tpu x1" and rows["push"]["pool"] == "cpu"
    assert rows["distributed_train"]["env"] == {"TPU_NAME": "local"} and rows["push"]["env"] == {}


def test_real_pipeline_gpu_placement(tmp_path):
    tabular = pytest.importorskip("kfx_pipelines.tabular", reason="pipelines/tabular.py does not import yet",
                                  exc_type=ImportError)
    out = tmp_path / "tabular.yaml"
    tabular.compile_pipeline(str(out), profile="gpu")
    docs = list(yaml.safe_load_all(out.read_text()))
    spec, platform = docs[0], docs[1]
    assert spec["defaultPipelineRoot"] == P.PIPELINE_ROOT
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    gpu_execs = {ex for ex, c in spec["deploymentSpec"]["executors"].items()
                 if c.get("container", {}).get("resources", {}).get("accelerator", {}).get("resourceType")
                 == "nvidia.com/gpu"}
    assert len(gpu_execs) == 3
    for ex in gpu_execs:
        assert k8s[ex]["nodeSelector"]["labels"]["kfx.dev/node-pool"] == "gpu"
    cpu_execs = [ex for ex in k8s if ex not in gpu_execs]
    assert len(cpu_execs) >= 6
    for ex in cpu_execs:
        assert k8s[ex]["nodeSelector"]["labels"]["kfx.dev/node-pool"] == "cpu"
        assert k8s[ex]["secretAsEnv"][0]["secretName"] == "kfx-s3-credentials"


def test_flink_profile_compiles_the_portable_runner_into_the_data_stages(tmp_path):
    tabular = pytest.importorskip("kfx_pipelines.tabular", reason="pipelines/tabular.py does not import yet",
                                  exc_type=ImportError)
    out = tmp_path / "tabular-flink.yaml"
    tabular.compile_pipeline(str(out), profile="flink")
    spec = next(yaml.safe_load_all(out.read_text()))
    default = spec["root"]["inputDefinitions"]["parameters"]["beam_pipeline_args"]["defaultValue"]
    assert default[0] == "--runner=PortableRunner" and f"--job_endpoint={P.FLINK_JOB_SERVER}:8099" in default
    # every Beam stage takes that parameter; the job server named is the one the manifests render
    lifecycle = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]   # inside the notify exit handler
    for stage in P.BEAM_STAGES:
        task = lifecycle[stage]
        assert task["inputs"]["parameters"]["beam_pipeline_args"]["componentInputParameter"] == \
            "pipelinechannel--beam_pipeline_args"
    rendered = (Path(__file__).resolve().parents[2] / "manifests" / "flink").glob("*.yaml")
    assert any(f"name: {P.FLINK_JOB_SERVER}" in p.read_text() for p in rendered)
