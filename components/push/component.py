"""The push KFP component: publish a blessed model, its TFLite variants and model card."""
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from kfx_components.images import stage_image


@dsl.component(base_image=stage_image("push"), install_kfp_package=False)
def push(model: Input[Model], quantized: Input[Model], blessing: Input[Artifact],
         eval_metrics: Input[Metrics], examples: Input[Dataset], hyperparameters: Input[Artifact],
         registry_uri: str, model_name: str, pushed_model: Output[Model], model_card: Output[Markdown]):
    """Publish `<registry_uri>/<model_name>/v<N>` when the model is blessed; nothing otherwise."""
    # dsl.component embeds this body's source in the IR: imports must live here.
    import json
    import os

    from kfx_components.push import executor

    bless = dict(blessing.metadata)
    if "blessed" not in bless:  # fall back on the marker file evaluate writes
        bless["blessed"] = os.path.exists(os.path.join(blessing.path, "BLESSED"))
    ex = dict(examples.metadata)
    hp_path = os.path.join(hyperparameters.path, "hyperparameters.json")
    hp = json.load(open(hp_path)) if os.path.exists(hp_path) else {}
    qmeta = dict(quantized.metadata)
    variants = qmeta.get("variants") if isinstance(qmeta.get("variants"), dict) else {
        k: v for k, v in qmeta.items() if isinstance(v, dict) and "size_bytes" in v}
    quant = {name: {k: info[k] for k in ("size_bytes", "metric", "metric_delta") if k in info}
             for name, info in variants.items()}
    overall = {k: v for k, v in dict(eval_metrics.metadata).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    card = {
        "model_name": model_name,
        "problem_type": ex.get("problem_type", ""),
        "label_key": ex.get("label_key", ""),
        "label_vocabulary": ex.get("label_vocabulary", []),
        "metrics": {"overall": overall or bless.get("overall", {}),
                    "per_slice": bless.get("per_slice", {}),
                    "slice_feature": bless.get("slice_feature", "")},
        "blessing": {k: bless.get(k) for k in ("blessed", "reasons", "baseline_used", "baseline_version")},
        "data": {k: ex[k] for k in ("source", "rows", "rows_train", "rows_eval") if k in ex},
        "hyperparameters": hp,
        # How the pushed (student) model was made: distillation settings, sizes, teacher vs student.
        "training": {k: v for k, v in dict(model.metadata).items()
                     if k in ("temperature", "alpha", "student_width", "student_depth", "epochs",
                              "batch_size", "seed", "teacher_params", "student_params",
                              "compression_ratio", "teacher_metric", "student_metric")},
        "quantized": quant,
        "lineage": {"model": model.name, "quantized": quantized.name, "blessing": blessing.name,
                    "eval_metrics": eval_metrics.name, "examples": examples.name,
                    "hyperparameters": hyperparameters.name},
    }
    facts = executor.run(model_dir=model.path, quantized_dir=quantized.path, blessing=bless,
                         registry_uri=registry_uri, model_name=model_name, card=card)
    markdown = facts.pop("model_card", "")
    if facts["pushed"]:
        pushed_model.uri = facts["uri"]
    else:
        markdown = f"# {model_name}: not pushed\n\n{facts['reason']}\n"
    pushed_model.metadata.update({"pushed": facts["pushed"], "version": facts.get("version", 0),
                                  "model_name": model_name,
                                  **({"reason": facts["reason"]} if not facts["pushed"] else {})})
    os.makedirs(os.path.dirname(model_card.path) or ".", exist_ok=True)
    with open(model_card.path, "w") as f:
        f.write(markdown)
