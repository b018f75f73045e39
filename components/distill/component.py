"""The distill KFP component: teacher Model -> smaller student Model (knowledge distillation)."""
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from kfx_components.images import stage_image


@dsl.component(base_image=stage_image("distill"), install_kfp_package=False)
def distill(teacher: Input[Model], transformed_examples: Input[Dataset], transform_graph: Input[Artifact],
            temperature: float, alpha: float, student_width: int, epochs: int,
            student: Output[Model], metrics: Output[Metrics]):
    """Train a one-hidden-layer student on alpha * label loss + (1 - alpha) * T^2 * teacher loss."""
    # dsl.component embeds this body's source in the IR: imports must live here.
    from kfx_components.distill import executor
    meta = transformed_examples.metadata
    facts = executor.run(teacher_model_dir=teacher.path, transformed_examples_dir=transformed_examples.path,
                         transform_graph_dir=transform_graph.path, student_model_dir=student.path,
                         label_key=meta["label_key"], problem_type=meta["problem_type"],
                         num_classes=int(meta.get("num_classes") or 0), temperature=temperature,
                         alpha=alpha, student_width=student_width, epochs=epochs)
    student.metadata.update(facts)
    if "label_vocabulary" in meta:
        student.metadata["label_vocabulary"] = meta["label_vocabulary"]
    primary = facts["primary_metric"]
    for key in ("teacher_params", "student_params", "compression_ratio", f"teacher_{primary}",
                f"student_{primary}", "logit_mse_to_teacher", "logit_corr_to_teacher", "seconds"):
        metrics.log_metric(key, float(facts[key]))
