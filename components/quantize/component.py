"""The quantize KFP component: Model -> TFLite dynamic-range, float16 and full-int8 variants."""
from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from kfx_components.common.artifacts import TransformGraph

from kfx_components.images import stage_image


@dsl.component(base_image=stage_image("quantize"), install_kfp_package=False)
def quantize(model: Input[Model], transformed_examples: Input[Dataset], transform_graph: Input[TransformGraph],
             tolerance: float, quantized: Output[Model], metrics: Output[Metrics]):
    """Convert the model's transformed_logits signature to TFLite three ways and score each on test;
    a variant worse than the SavedModel by more than `tolerance` (relative) is not published."""
    # dsl.component embeds this body's source in the IR: imports must live here.
    from kfx_components.common import facts as travelling
    from kfx_components.quantize import executor
    meta = transformed_examples.metadata
    facts = executor.run(model_dir=model.path, transformed_examples_dir=transformed_examples.path,
                         transform_graph_dir=transform_graph.path, quantized_dir=quantized.path,
                         label_key=meta["label_key"], problem_type=meta["problem_type"],
                         num_classes=int(meta.get("num_classes") or 0), tolerance=tolerance)
    primary = facts["primary_metric"]
    quantized.metadata.update({
        **travelling.carried(meta), "primary_metric": primary,
        "signature": facts["signature"], "reference": facts["reference"],
        "variants": {name: {k: v[k] for k in ("file", "size_bytes", "metric", "metric_delta")}
                     for name, v in facts["variants"].items()},
        "rejected": facts["rejected"], "notes": facts["notes"], "seconds": facts["seconds"],
    })
    metrics.log_metric(f"saved_model_{primary}", float(facts["reference"]["metric"]))
    metrics.log_metric("saved_model_size_bytes", float(facts["reference"]["saved_model_bytes"]))
    for name, v in facts["variants"].items():
        metrics.log_metric(f"{name}_size_bytes", float(v["size_bytes"]))
        metrics.log_metric(f"{name}_{primary}", float(v["metric"]))
