"""The infra_validate KFP component: the blessed candidate loaded and queried in the serving runtime.

On a cluster the step's own image (kfx-infra-validate: the TF stage runtime plus the serving venv
of the kfx-serve image at /opt/serving-venv, named by KFX_SERVING_PYTHON) starts the model server
on 127.0.0.1 inside its own pod: no pod or Job to create, so the step needs no Kubernetes RBAC and
no Service; the server is the same kfx_serving and serving.lock the InferenceService runs.
Locally the kfx-serve container (Docker) or the serving venv (launcher.py).
"""
from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from kfx_components.common.artifacts import InfraBlessing, ModelBlessing

from kfx_components.images import stage_image


@dsl.component(base_image=stage_image("infra_validate"), install_kfp_package=False)
def infra_validate(model: Input[Model], examples: Input[Dataset], blessing: Input[ModelBlessing],
                   infra_blessing: Output[InfraBlessing], tolerance: float = 1e-4, requests: int = 100,
                   runtime: str = "auto"):
    """Serve the candidate evaluate blessed with kfx_serving (KServe) on 127.0.0.1, send it `requests`
    raw test rows and require its answers to equal the in-process predictions within `tolerance`
    (absolute); record load time, p50/p99 latency and the request count. `runtime`: auto, docker,
    process or step (docs/serving.md, "Infra validation"). A candidate not blessed is skipped."""
    # dsl.component embeds this body's source in the IR: imports must live here.
    import os

    from kfx_components.common import component_io
    from kfx_components.infra_validate import executor

    blessed = blessing.metadata.get("blessed")
    if blessed is None:  # fall back on the marker file evaluate writes
        blessed = os.path.exists(os.path.join(blessing.path, "BLESSED"))
    facts = executor.run(model_dir=model.path, examples_dir=examples.path, infra_blessing_dir=infra_blessing.path,
                         blessed=bool(blessed), tolerance=tolerance, requests=requests, runtime=runtime)
    details = [f"{k}: {facts[k]}" for k in ("runtime", "load_seconds", "latency_ms", "requests", "max_difference")
               if k in facts]
    component_io.result(infra_blessing, executor.summary_line(facts), details=details, **facts)
