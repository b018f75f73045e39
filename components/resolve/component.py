"""The resolve KFP component: the registry's baseline model and training statistics, as URIs."""
from typing import NamedTuple

from kfp import dsl

from kfx_components.images import stage_image


@dsl.component(base_image=stage_image("resolve"), install_kfp_package=False)
def resolve(registry_uri: str, model_name: str) -> NamedTuple(
        "Baseline", [("model_uri", str), ("statistics_uri", str), ("version", int)]):
    """The model in production (or the newest version) and the statistics it was trained on;
    empty URIs when the registry holds none. Always runs: the registry changes between runs."""
    # dsl.component embeds this body's source in the IR: imports must live here.
    from collections import namedtuple

    from kfx_components.resolve import executor
    facts = executor.run(registry_uri=registry_uri, model_name=model_name)
    print(executor.describe(facts))
    return namedtuple("Baseline", ["model_uri", "statistics_uri", "version"])(
        facts["model_uri"], facts["statistics_uri"], facts["version"])
