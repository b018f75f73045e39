"""The distill KFP component: teacher Model -> a smaller student, or the teacher when the student falls short."""
from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from kfx_components.common.artifacts import TransformGraph

from kfx_components.images import stage_image


@dsl.component(base_image=stage_image("distill"), install_kfp_package=False)
def distill(teacher: Input[Model], transformed_examples: Input[Dataset], transform_graph: Input[TransformGraph],
            temperature: float, alpha: float, student_width: int, epochs: int, tolerance: float,
            model: Output[Model], edge_model: Output[Model], metrics: Output[Metrics],
            student_embedding_dim: int = 2, max_student_ratio: float = 0.25):
    """Train a one-hidden-layer student (embeddings at most `student_embedding_dim` wide, at most
    `max_student_ratio` x the teacher's parameters) on alpha * label loss + (1 - alpha) * T^2 * teacher
    loss; pass it on, or the teacher when the student's eval metric is worse by more than `tolerance`.
    A forest teacher is passed on as it is and its student, within `tolerance`, is `edge_model` (what
    quantize converts); for a network teacher `edge_model` is the model passed on."""
    # dsl.component embeds this body's source in the IR: imports must live here.
    from kfx_components.common import component_io
    from kfx_components.distill import executor
    facts = executor.run(teacher_model_dir=teacher.path, transformed_examples_dir=transformed_examples.path,
                         transform_graph_dir=transform_graph.path, model_dir=model.path,
                         edge_model_dir=edge_model.path,
                         **component_io.problem(transformed_examples), temperature=temperature,
                         alpha=alpha, student_width=student_width, epochs=epochs, tolerance=tolerance,
                         student_embedding_dim=student_embedding_dim, max_student_ratio=max_student_ratio)
    component_io.carry(model, transformed_examples, facts)
    component_io.carry(edge_model, transformed_examples, {k: facts[k] for k in ("edge_model", "edge_reason")})
    teacher_meta = dict(teacher.metadata or {})
    teacher_history = {k: teacher_meta[k] for k in ("epochs_run", "best_epoch", "curves") if k in teacher_meta}
    if teacher_history:
        model.metadata["teacher_history"] = teacher_history
    if teacher_meta.get("model_families"):   # what tune compared, for evaluate's report
        model.metadata["model_families"] = teacher_meta["model_families"]
    if teacher_meta.get("strategy"):         # how the teacher trained (trees: one worker), for the card
        model.metadata["teacher_strategy"] = teacher_meta["strategy"]
    logged = ("teacher_params", "student_params", "compression_ratio", "param_ratio", "teacher_metric",
              "student_metric", "logit_mse_to_teacher", "logit_corr_to_teacher", "seconds")
    # no student metrics when the teacher was too small to distill
    component_io.log_metrics(metrics, {k: float(facts[k]) for k in logged if facts.get(k) is not None},
                             passed_on=facts["passed_on"], edge_model=facts["edge_model"])
