"""The quantize KFP component: Model -> TFLite dynamic-range, float16 and full-int8 variants."""
from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from kfx_components.common.artifacts import TransformGraph

from kfx_components.images import stage_image


@dsl.component(base_image=stage_image("quantize"), install_kfp_package=False)
def quantize(model: Input[Model], transformed_examples: Input[Dataset], transform_graph: Input[TransformGraph],
             tolerance: float, quantized: Output[Model], metrics: Output[Metrics],
             examples: Input[Dataset] = None, pruning_sparsity: float = 0.5, qat: bool = True,
             finetune_epochs: int = 2):
    """Convert the model's transformed_logits signature to TFLite (float32 reference, dynamic range,
    float16, full int8), prune it (`pruning_sparsity`, 0: off) and train it quantization-aware (`qat`);
    score, size and time each on test. A variant worse than the SavedModel by more than `tolerance`
    (relative) is not published. `examples` (raw, optional) times the SavedModel end to end."""
    # dsl.component embeds this body's source in the IR: imports must live here.
    from kfx_components.common import facts as travelling
    from kfx_components.quantize import executor
    meta = transformed_examples.metadata
    facts = executor.run(model_dir=model.path, transformed_examples_dir=transformed_examples.path,
                         transform_graph_dir=transform_graph.path, quantized_dir=quantized.path,
                         label_key=meta["label_key"], problem_type=meta["problem_type"],
                         num_classes=int(meta.get("num_classes") or 0), tolerance=tolerance,
                         examples_dir=examples.path if examples is not None else "",
                         pruning_sparsity=pruning_sparsity, qat=qat, finetune_epochs=finetune_epochs)
    primary = facts["primary_metric"]
    kept = ("file", "size_bytes", "gzip_bytes", "weight_bytes", "weight_ratio_to_float32", "size_ratio_to_float32",
            "latency_ratio_to_float32", "metric", "metric_delta", "latency", "training")
    quantized.metadata.update({
        **travelling.carried(meta), "primary_metric": primary,
        "signature": facts["signature"], "reference": facts["reference"],
        "variants": {name: {k: v[k] for k in kept if k in v} for name, v in facts["variants"].items()},
        "rejected": facts["rejected"], "notes": facts["notes"], "recommended": facts["recommended"],
        "recommendation": facts["recommendation"], "seconds": facts["seconds"],
    })
    metrics.log_metric(f"saved_model_{primary}", float(facts["reference"]["metric"]))
    metrics.log_metric("saved_model_size_bytes", float(facts["reference"]["saved_model_bytes"]))
    for name, v in facts["variants"].items():
        metrics.log_metric(f"{name}_size_bytes", float(v["size_bytes"]))
        metrics.log_metric(f"{name}_gzip_bytes", float(v["gzip_bytes"]))
        metrics.log_metric(f"{name}_{primary}", float(v["metric"]))
        metrics.log_metric(f"{name}_single_ms", float(v["latency"]["single_invoke"]["median_ms"]))
    metrics.metadata["recommended"] = facts["recommended"]
