"""The quantize KFP component: Model -> TFLite dynamic-range, float16 and full-int8 variants."""
from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from kfx_components.common.artifacts import TransformGraph

from kfx_components.images import stage_image


@dsl.component(base_image=stage_image("quantize"), install_kfp_package=False)
def quantize(model: Input[Model], transformed_examples: Input[Dataset], transform_graph: Input[TransformGraph],
             tolerance: float, quantized: Output[Model], metrics: Output[Metrics],
             examples: Input[Dataset] = None, pruning_sparsity: float = 0.5, qat: bool = True,
             finetune_epochs: int = 2, finetune_when: str = "int8_rejected", stands_in_for: Input[Model] = None):
    """Convert the model's transformed_logits signature to TFLite (float32 reference, dynamic range,
    float16, full int8), prune it (`pruning_sparsity`, 0: off) and train it quantization-aware (`qat`)
    when int8 is rejected (`finetune_when="int8_rejected"`) or `"always"`; score, size and time each on
    test. A variant worse than the SavedModel by more than `tolerance` (relative) is not published.
    `examples` (raw, optional) times the SavedModel end to end. `stands_in_for` (optional): the model pushed
    when `model` is its edge variant (a forest's student); every variant must be within `tolerance` of it too."""
    # dsl.component embeds this body's source in the IR: imports must live here.
    from kfx_components.common import component_io
    from kfx_components.quantize import executor
    facts = executor.run(model_dir=model.path, transformed_examples_dir=transformed_examples.path,
                         transform_graph_dir=transform_graph.path, quantized_dir=quantized.path,
                         **component_io.problem(transformed_examples), tolerance=tolerance,
                         examples_dir=examples.path if examples is not None else "",
                         pruning_sparsity=pruning_sparsity, qat=qat, finetune_epochs=finetune_epochs,
                         finetune_when=finetune_when,
                         stands_in_for_dir=stands_in_for.path if stands_in_for is not None else "")
    primary = facts["primary_metric"]
    kept = ("file", "size_bytes", "gzip_bytes", "weight_bytes", "weight_ratio_to_float32", "size_ratio_to_float32",
            "latency_ratio_to_float32", "metric", "metric_delta", "latency", "training")
    component_io.carry(quantized, transformed_examples)
    component_io.put(quantized, {
        "primary_metric": primary, "signature": facts["signature"], "reference": facts["reference"],
        "variants": {name: {k: v[k] for k in kept if k in v} for name, v in facts["variants"].items()},
        "rejected": facts["rejected"], "notes": facts["notes"], "recommended": facts["recommended"],
        "recommendation": facts["recommendation"], "seconds": facts["seconds"],
        "no_edge_variant": facts.get("no_edge_variant", ""),   # a forest: why it has no variant (push's card)
    })
    scalars = {f"saved_model_{primary}": facts["reference"]["metric"],
               "saved_model_size_bytes": facts["reference"]["saved_model_bytes"]}
    for name, v in facts["variants"].items():
        scalars.update({f"{name}_size_bytes": v["size_bytes"], f"{name}_gzip_bytes": v["gzip_bytes"],
                        f"{name}_{primary}": v["metric"],
                        f"{name}_single_ms": v["latency"]["single_invoke"]["median_ms"]})
    component_io.log_metrics(metrics, {name: float(value) for name, value in scalars.items()},
                             recommended=facts["recommended"])
