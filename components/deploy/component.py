"""The deploy KFP component (optional, after push): record a deployment for a blessed, pushed model."""
from kfp import dsl
from kfp.dsl import Input, Model, Output

from kfx_components.common.artifacts import Deployment
from kfx_components.images import stage_image


@dsl.component(base_image=stage_image("deploy"), install_kfp_package=False)
def deploy(pushed_model: Input[Model], registry_uri: str, model_name: str, rollout: str,
           deployment: Output[Deployment]):
    """Write `<registry_uri>/<model_name>/deployments/<stamp>-vN.json` (rollout none|canary|blue-green|shadow)
    when push published the model; nothing otherwise. Starts no server."""
    # dsl.component embeds this body's source in the IR: imports must live here.
    import json

    from kfx_components.common import component_io
    from kfx_components.deploy import executor

    facts = executor.run(dict(pushed_model.metadata), registry_uri, model_name, rollout,
                         run_info=component_io.names(pushed_model=pushed_model))
    component_io.put(deployment, facts, ("deployed", "rollout", "version", "reason", "record"))
    if facts["deployed"]:   # the artifact is the record the executor wrote under the registry (file or S3)
        deployment.uri = facts["record"]
    else:                   # nothing deployed: the artifact says why
        component_io.write_text(deployment, json.dumps(facts, indent=2, sort_keys=True, default=str))
