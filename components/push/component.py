"""The push KFP component: publish a blessed model, its TFLite variants and model card."""
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from kfx_components.common.artifacts import ExampleStatistics, HyperParameters, InfraBlessing, ModelBlessing, Schema

from kfx_components.images import stage_image


@dsl.component(base_image=stage_image("push"), install_kfp_package=False)
def push(model: Input[Model], quantized: Input[Model], blessing: Input[ModelBlessing],
         eval_metrics: Input[Metrics], examples: Input[Dataset], hyperparameters: Input[HyperParameters],
         statistics: Input[ExampleStatistics], schema: Input[Schema],
         registry_uri: str, model_name: str, pushed_model: Output[Model], model_card: Output[Markdown],
         model_card_html: Output[HTML], infra_blessing: Input[InfraBlessing] = None
         ) -> NamedTuple("PushOutputs", pushed=bool):
    """Publish `<registry_uri>/<model_name>/v<N>` when the model is blessed (with the training
    statistics and schema the next run's drift check and the monitor compare with); nothing otherwise.
    The card is written as Markdown and rendered as HTML (charts inline) for the KFP UI.
    Returns `pushed`, which a pipeline's conditions read (deploy runs only for a pushed model)."""
    # dsl.component embeds this body's source in the IR: imports must live here.
    import os
    from typing import NamedTuple

    from kfx_components.common import component_io
    from kfx_components.push import card_html, executor

    bless = dict(blessing.metadata)
    if "blessed" not in bless:  # fall back on the marker file evaluate writes
        bless["blessed"] = os.path.exists(os.path.join(blessing.path, "BLESSED"))
    lineage = component_io.names(model=model, quantized=quantized, blessing=blessing, eval_metrics=eval_metrics,
                                 examples=examples, hyperparameters=hyperparameters)
    card = executor.make_card(model_name, dict(model.metadata), dict(quantized.metadata), bless,
                              dict(examples.metadata), dict(hyperparameters.metadata), lineage)
    # infra_validate's verdict, when the pipeline has that stage (its metadata; else its marker file).
    infra = None if infra_blessing is None else dict(
        infra_blessing.metadata, infra_blessed=infra_blessing.metadata.get(
            "infra_blessed", os.path.exists(os.path.join(infra_blessing.path, "INFRA_BLESSED"))))
    if infra and not infra.get("skipped"):
        card["infra_validation"] = {k: infra[k] for k in card_html.INFRA_FACTS if k in infra}
    facts = executor.run(model_dir=model.path, quantized_dir=quantized.path, blessing=bless,
                         registry_uri=registry_uri, model_name=model_name, card=card,
                         statistics_dir=statistics.path, schema_dir=schema.path,
                         source_fingerprint=component_io.source_fingerprint(model, quantized), infra_blessing=infra)
    markdown = facts.pop("model_card", "")
    page = facts.pop("model_card_html", "")
    if facts["pushed"]:
        pushed_model.uri = facts["uri"]
    else:
        markdown = f"# {model_name}: not pushed\n\n{facts['reason']}\n"
        page = card_html.not_pushed(model_name, facts["reason"])
    component_io.result(pushed_model, executor.summary_line(facts, card), published=facts["pushed"],
                        pushed=facts["pushed"], already=facts.get("already", False),
                        version=facts.get("version", 0), model_name=model_name,
                        **({"reason": facts["reason"]} if not facts["pushed"] else {}))
    component_io.write_text(model_card, markdown)
    component_io.write_text(model_card_html, page or card_html.render(card))
    return NamedTuple("PushOutputs", pushed=bool)(bool(facts["pushed"]))
