"""The push KFP component: publish a blessed model, its TFLite variants and model card."""
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from kfx_components.common.artifacts import ExampleStatistics, HyperParameters, ModelBlessing, Schema

from kfx_components.images import stage_image


@dsl.component(base_image=stage_image("push"), install_kfp_package=False)
def push(model: Input[Model], quantized: Input[Model], blessing: Input[ModelBlessing],
         eval_metrics: Input[Metrics], examples: Input[Dataset], hyperparameters: Input[HyperParameters],
         statistics: Input[ExampleStatistics], schema: Input[Schema],
         registry_uri: str, model_name: str, pushed_model: Output[Model], model_card: Output[Markdown],
         model_card_html: Output[HTML]) -> NamedTuple("PushOutputs", pushed=bool):
    """Publish `<registry_uri>/<model_name>/v<N>` when the model is blessed (with the training
    statistics and schema the next run's drift check and the monitor compare with); nothing otherwise.
    The card is written as Markdown and rendered as HTML (charts inline) for the KFP UI.
    Returns `pushed`, which a pipeline's conditions read (deploy runs only for a pushed model)."""
    # dsl.component embeds this body's source in the IR: imports must live here.
    import os
    from typing import NamedTuple

    from kfx_components.push import card_html, executor

    bless = dict(blessing.metadata)
    if "blessed" not in bless:  # fall back on the marker file evaluate writes
        bless["blessed"] = os.path.exists(os.path.join(blessing.path, "BLESSED"))
    lineage = {"model": model.name, "quantized": quantized.name, "blessing": blessing.name,
               "eval_metrics": eval_metrics.name, "examples": examples.name,
               "hyperparameters": hyperparameters.name}
    card = executor.make_card(model_name, dict(model.metadata), dict(quantized.metadata), bless,
                              dict(examples.metadata), dict(hyperparameters.metadata), lineage)
    # kfx's runner adds each input's lineage fingerprint (kfx_fingerprint); KFP does not: then bytes.
    sources = [a.metadata.get("kfx_fingerprint", "") for a in (model, quantized)]
    source_fingerprint = "+".join(sources) if all(sources) else ""
    facts = executor.run(model_dir=model.path, quantized_dir=quantized.path, blessing=bless,
                         registry_uri=registry_uri, model_name=model_name, card=card,
                         statistics_dir=statistics.path, schema_dir=schema.path,
                         source_fingerprint=source_fingerprint)
    markdown = facts.pop("model_card", "")
    page = facts.pop("model_card_html", "")
    if facts["pushed"]:
        pushed_model.uri = facts["uri"]
    else:
        markdown = f"# {model_name}: not pushed\n\n{facts['reason']}\n"
        page = card_html.not_pushed(model_name, facts["reason"])
    # "summary" and "published": what the run ends with, by kfx's stage-neutral convention.
    pushed_model.metadata.update({"pushed": facts["pushed"], "published": facts["pushed"],
                                  "already": facts.get("already", False),
                                  "version": facts.get("version", 0),
                                  "model_name": model_name, "summary": executor.summary_line(facts, card),
                                  **({"reason": facts["reason"]} if not facts["pushed"] else {})})
    os.makedirs(os.path.dirname(model_card.path) or ".", exist_ok=True)
    with open(model_card.path, "w") as f:
        f.write(markdown)
    os.makedirs(os.path.dirname(model_card_html.path) or ".", exist_ok=True)
    with open(model_card_html.path, "w", encoding="utf-8") as f:
        f.write(page or card_html.render(card))
    return NamedTuple("PushOutputs", pushed=bool)(bool(facts["pushed"]))
