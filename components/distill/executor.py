"""Distill: train a small student from the teacher SavedModel's logits.

The teacher is the ``model`` artifact of docs/design.md; its
``transformed_logits`` signature (transformed features -> ``logits``) is called
inside the training step, so the student sees the teacher's output for
exactly the batch it trains on (no precomputed copy of the data set).

The student is ``model.build_model(..., width=student_width, depth=STUDENT_DEPTH)`` with
embeddings of at most ``student_embedding_dim`` dimensions: the same
transformed-feature inputs as the teacher, one hidden layer. For categorical
features the embeddings hold most of a model's parameters (the teacher's are
up to 16 wide), so narrowing them is what makes the student small. The size
target: the student is the widest of at most ``student_width`` units within
``max_student_ratio`` times the teacher's parameters (narrower than asked on a
small teacher; the facts say which); a student that meets it but not the
metric is reported with both numbers (see the gate); a teacher too small to
have a smaller student is passed on undistilled, with the reason.
Its loss is::

    alpha * hard(labels, student) + (1 - alpha) * soft(teacher, student)

- binary: hard = BCE(labels, sigmoid(s)); soft = T^2 * KL(sigmoid(t/T) || sigmoid(s/T))
  (Bernoulli KL = BCE against the softened teacher minus its entropy)
- multiclass: hard = CE(labels, softmax(s)); soft = T^2 * KL(softmax(t/T) || softmax(s/T))
- regression: hard = MSE(labels, s); soft = MSE(t, s) (no temperature)

Budget as the teacher's (``model.fit_plan``: ``epochs`` is a cap); training
stops early on the distillation loss over the eval split (what it minimizes)
with the best weights restored; the gate then judges the task metric. The student is exported with ``model.export_serving_model``
(same serving contract as the teacher).

A forest teacher (gradient-boosted trees, chosen by tune): the forest is the
model passed on (``model_dir``) and the student, trained on its soft
predictions the same way, is its edge variant (``edge_model_dir``), since a
forest has no TFLite form; a student better than the forest on eval is passed
on instead (and is its own edge variant). The size target does not apply (a forest's nodes are
not weights); the gate does: a student that falls short of the forest is not
written as the edge variant (the forest is, and quantize says it has none).
For a network teacher ``edge_model_dir`` is a copy of ``model_dir``.

The gate: a student whose eval metric is worse than the teacher's by more
than ``tolerance`` (relative: below ``teacher * (1 - tolerance)`` for AUC and
accuracy, above ``teacher * (1 + tolerance)`` for RMSE) is not passed on; the
teacher's SavedModel is, with ``passed_on: "teacher"`` and the reason in the
facts, naming the student's size and metric against the teacher's and the
size target that could not hold the metric (the model card shows both).
"""
from __future__ import annotations

import shutil
import time

from kfx_components.common import io, loading, problem
from kfx_formats import saved_model

STUDENT_DEPTH = 1
LEARNING_RATE = 3e-3  # a one-layer student trained for few epochs


def validate_parameters(problem_type: str, temperature: float, alpha: float, student_width: int,
                        epochs: int, tolerance: float, student_embedding_dim: int = 2,
                        max_student_ratio: float = 0.25) -> None:
    """Raise ValueError naming the first bad parameter."""
    problem.check_problem_type(problem_type)
    if isinstance(student_embedding_dim, bool) or int(student_embedding_dim) != student_embedding_dim \
            or student_embedding_dim < 1:
        raise ValueError(f"student_embedding_dim must be an integer >= 1, got {student_embedding_dim!r}")
    if not isinstance(max_student_ratio, (int, float)) or not 0.0 < max_student_ratio <= 1.0:
        raise ValueError(f"max_student_ratio must be in (0, 1], got {max_student_ratio!r}")
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if isinstance(student_width, bool) or int(student_width) != student_width or student_width < 1:
        raise ValueError(f"student_width must be an integer >= 1, got {student_width!r}")
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if not isinstance(tolerance, (int, float)) or not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")


def distillation_loss(problem_type: str, labels, student_logits, teacher_logits, alpha: float,
                      temperature: float):
    """(total, hard, soft) scalar losses; see the module docstring."""
    import tensorflow as tf

    t = tf.cast(temperature, tf.float32)
    if problem_type == "binary":
        bce = tf.keras.losses.binary_crossentropy
        y = tf.reshape(tf.cast(labels, tf.float32), [-1, 1])
        hard = tf.reduce_mean(bce(y, student_logits, from_logits=True))
        p_teacher = tf.sigmoid(teacher_logits / t)
        # KL(teacher || student) of the softened Bernoullis = BCE - teacher entropy (same gradient).
        entropy = bce(p_teacher, teacher_logits / t, from_logits=True)
        soft = tf.reduce_mean(bce(p_teacher, student_logits / t, from_logits=True) - entropy) * t * t
    elif problem_type == "multiclass":
        y = tf.reshape(tf.cast(labels, tf.int64), [-1])
        hard = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y, student_logits, from_logits=True))
        p_teacher = tf.nn.softmax(teacher_logits / t, axis=-1)
        log_p_teacher = tf.nn.log_softmax(teacher_logits / t, axis=-1)
        log_p_student = tf.nn.log_softmax(student_logits / t, axis=-1)
        soft = tf.reduce_mean(tf.reduce_sum(p_teacher * (log_p_teacher - log_p_student), axis=-1)) * t * t
    else:
        y = tf.reshape(tf.cast(labels, tf.float32), [-1, 1])
        hard = tf.reduce_mean(tf.square(y - student_logits))
        soft = tf.reduce_mean(tf.square(teacher_logits - student_logits))
    return alpha * hard + (1.0 - alpha) * soft, hard, soft


def _make_distiller(student, teacher_fn, teacher_inputs, problem_type, alpha, temperature):
    import tensorflow as tf

    class Distiller(tf.keras.Model):
        """Trains ``student`` on the distillation loss; the teacher is frozen (a SavedModel function)."""

        def __init__(self):
            super().__init__()
            self.student = student
            self.trackers = {k: tf.keras.metrics.Mean(name=k) for k in ("loss", "hard_loss", "soft_loss")}

        @property
        def metrics(self):
            return list(self.trackers.values())

        def call(self, features, training=False):
            return self.student(features, training=training)

        def train_step(self, data):
            features, labels = data
            teacher_logits = tf.stop_gradient(
                teacher_fn(**{a: features[f] for a, f in teacher_inputs.items()})["logits"])
            with tf.GradientTape() as tape:
                student_logits = self.student(features, training=True)
                loss, hard, soft = distillation_loss(problem_type, labels, student_logits,
                                                     teacher_logits, alpha, temperature)
            grads = tape.gradient(loss, self.student.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.student.trainable_variables))
            for name, value in (("loss", loss), ("hard_loss", hard), ("soft_loss", soft)):
                self.trackers[name].update_state(value)
            return {k: m.result() for k, m in self.trackers.items()}

        def test_step(self, data):
            features, labels = data
            teacher_logits = teacher_fn(**{a: features[f] for a, f in teacher_inputs.items()})["logits"]
            student_logits = self.student(features, training=False)
            loss, hard, soft = distillation_loss(problem_type, labels, student_logits, teacher_logits,
                                                 alpha, temperature)
            for name, value in (("loss", loss), ("hard_loss", hard), ("soft_loss", soft)):
                self.trackers[name].update_state(value)
            return {k: m.result() for k, m in self.trackers.items()}

    return Distiller()


def _eval_logits(dataset, teacher_fn, teacher_inputs, student):
    """(labels, teacher logits, student logits) over a dataset, as numpy arrays."""
    import numpy as np

    labels, t_out, s_out = [], [], []
    for features, y in dataset:
        t_out.append(teacher_fn(**{a: features[f] for a, f in teacher_inputs.items()})["logits"].numpy())
        s_out.append(student(features, training=False).numpy())
        labels.append(y.numpy().reshape(-1))
    return np.concatenate(labels), np.concatenate(t_out), np.concatenate(s_out)


def _count_teacher_params(teacher_model_dir: str, loaded) -> int:
    """Trainable parameters of a network teacher (the SavedModel's trainable variables)."""
    import numpy as np
    import tensorflow as tf

    variables = getattr(loaded, "trainable_variables", None)
    if variables:
        return int(sum(int(np.prod(v.shape)) for v in variables))
    return int(tf.keras.models.load_model(teacher_model_dir, compile=False).count_params())


def run(teacher_model_dir: str, transformed_examples_dir: str, transform_graph_dir: str,
        model_dir: str, label_key: str, problem_type: str, num_classes: int,
        temperature: float = 4.0, alpha: float = 0.3, student_width: int = 16, epochs: int = 100,
        tolerance: float = 0.02, seed: int = 42, student_embedding_dim: int = 2,
        max_student_ratio: float = 0.25, edge_model_dir: str = "") -> dict:
    """Distill a student from the teacher; write the model to pass on (student or teacher) to
    ``model_dir`` and its edge variant to ``edge_model_dir``; see the module doc."""
    start = time.time()
    validate_parameters(problem_type, temperature, alpha, student_width, epochs, tolerance,
                        student_embedding_dim, max_student_ratio)
    problem.require_saved_model(teacher_model_dir, "teacher_model_dir")

    import tensorflow as tf

    from kfx_components.common import model as M

    transform_output = M.load_transform_output(transform_graph_dir)
    family = saved_model.family(teacher_model_dir)
    forest = family == saved_model.FAMILY_FOREST
    teacher = loading.load_model(teacher_model_dir)
    teacher_fn, teacher_inputs = _teacher_logits_fn(teacher, teacher_model_dir, transform_output,
                                                    transform_graph_dir, label_key)
    tf.keras.utils.set_random_seed(int(seed))
    stats = M.label_stats(transformed_examples_dir, transform_output, label_key, problem_type, num_classes)
    teacher_params = None if forest else _count_teacher_params(teacher_model_dir, teacher)

    def build(width):
        return M.build_model(transform_output, label_key, problem_type, num_classes, width=width,
                             depth=STUDENT_DEPTH, label_stats=stats, max_embedding_dim=int(student_embedding_dim))
    if forest:
        student, width = build(int(student_width)), int(student_width)
    else:
        student, width = _student_within_target(build, int(student_width), teacher_params,
                                                float(max_student_ratio))
    sizes = _check_sizes(teacher_params, student, float(max_student_ratio))
    if not forest and sizes["student_params"] >= teacher_params:   # a tiny teacher: nothing smaller to distill into
        history, plan = None, M.fit_plan(1, int(epochs))
        comparison = {"passed_on": "teacher", "primary_metric": problem.primary_metric(problem_type),
                      "reason": f"the smallest student ({sizes['student_params']:,} parameters) is not smaller "
                                f"than the teacher ({teacher_params:,}): the teacher is passed on, not distilled"}
    else:
        history, plan = _distill(student, teacher_fn, teacher_inputs, transformed_examples_dir, transform_output,
                                 label_key, problem_type, float(alpha), float(temperature), int(epochs), int(seed))
        comparison = _compare(student, teacher_fn, teacher_inputs, transformed_examples_dir, transform_output,
                              label_key, problem_type, float(tolerance), sizes, float(max_student_ratio))

    edge = _edge(comparison, forest)
    if forest:
        comparison = _forest_passed_on(comparison, problem_type)
    with io.Staging() as stage:
        out = stage.dir(model_dir)
        edge_out = stage.dir(edge_model_dir) if edge_model_dir else None
        sources = {"teacher": teacher_model_dir, "none": teacher_model_dir}
        if comparison["passed_on"] == "student":
            sources["student"] = M.export_serving_model(student, transform_output, label_key, problem_type, out)
        elif edge["edge_model"] == "student" and edge_out:
            sources["student"] = M.export_serving_model(student, transform_output, label_key, problem_type, edge_out)
        for target, which in ((out, comparison["passed_on"]), (edge_out, edge["edge_model"])):
            if target and sources[which] != target:
                shutil.copytree(sources[which], target, dirs_exist_ok=True)

    return {
        **comparison,
        **edge,
        "teacher_family": family,
        **sizes,
        "history": M.history_summary(history) if history is not None else {},
        "temperature": float(temperature),
        "alpha": float(alpha),
        "student_width": width,
        "student_width_asked": int(student_width),
        "student_depth": STUDENT_DEPTH,
        "student_embedding_dim": int(student_embedding_dim),
        "max_student_ratio": float(max_student_ratio),
        "epochs": plan["epochs"],
        "batch_size": plan["batch_size"],
        "steps_per_epoch": plan["steps_per_epoch"],
        "tolerance": float(tolerance),
        "seed": int(seed),
        "seconds": round(time.time() - start, 2),
    }


def _forest_passed_on(comparison: dict, problem_type: str) -> dict:
    """A forest teacher is passed on and its student is the edge variant, unless the student is better on
    eval: then the student is (the better model wins, and it converts to TFLite as it is)."""
    s, t = comparison["student_metric"], comparison["teacher_metric"]
    if problem.worse_by_more_than(t, s, problem_type, 0.0):
        return {**comparison, "passed_on": "student",
                "reason": f"the student's eval {comparison['primary_metric']} {s:.4f} beats the forest's {t:.4f}: "
                          "the better model is passed on"}
    return {**comparison, "passed_on": "teacher",
            "reason": "the teacher is a forest: it is passed on, the student is its edge variant"}


def _edge(comparison: dict, forest: bool) -> dict:
    """Which model is the edge variant (``edge_model``: student | teacher | none) and why."""
    if not forest:
        return {"edge_model": comparison["passed_on"], "edge_reason": "the model passed on converts to TFLite"}
    if comparison["passed_on"] == "student":   # the gate held: the student stands in for the forest
        return {"edge_model": "student",
                "edge_reason": "a forest has no TFLite form (TF-DF's ops are not TFLite builtins): its distilled "
                               "student is the edge variant"}
    return {"edge_model": "none",
            "edge_reason": "a forest has no TFLite form and its student fell short of it: "
                           + (comparison.get("reason") or "not distilled")}


def _teacher_logits_fn(teacher, teacher_model_dir, transform_output, transform_graph_dir, label_key):
    """The teacher's ``transformed_logits`` function and {signature argument: feature}."""
    from kfx_components.common import model as M

    if M.LOGITS_SIGNATURE not in teacher.signatures:
        raise ValueError(f"teacher_model_dir {teacher_model_dir!r} has no {M.LOGITS_SIGNATURE!r} signature "
                         f"(has {sorted(teacher.signatures)})")
    teacher_fn = teacher.signatures[M.LOGITS_SIGNATURE]
    args = M.signature_args(M.feature_keys(transform_output, label_key))
    teacher_keys = sorted(teacher_fn.structured_input_signature[1])
    missing = sorted(set(teacher_keys) - set(args))
    if missing:
        raise ValueError(f"teacher {M.LOGITS_SIGNATURE!r} signature wants features {missing} that "
                         f"transform_graph_dir {transform_graph_dir!r} does not produce")
    return teacher_fn, {a: args[a] for a in teacher_keys}


def _student_within_target(build, width: int, teacher_params: int, max_ratio: float):
    """(student, width): the widest student of at most ``width`` units within the size target
    (``max_ratio`` x the teacher's parameters); on a small teacher that may take a narrower one
    than asked. When even one unit is above the target, the one-unit student (the gate then
    judges it, and the card says the target was not met)."""
    while True:
        student = build(width)
        if _params(student) <= max_ratio * teacher_params or width == 1:
            return student, width
        width = max(1, width // 2)


def _params(model) -> int:
    import numpy as np
    return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))


def _check_sizes(teacher_params: int | None, student, max_student_ratio: float = 1.0) -> dict:
    """Parameter counts of teacher and student, and whether the student meets the size target
    (a forest teacher, ``teacher_params`` None, has no parameters to compare with)."""
    import numpy as np

    student_params = _params(student)
    embedding = int(sum(int(np.prod(w.shape)) for layer in student.layers if layer.name.startswith("emb_")
                        for w in layer.trainable_weights))
    if teacher_params is None:
        return {"teacher_params": None, "student_params": student_params, "size_target_met": None,
                "student_embedding_params": embedding, "param_ratio": None, "compression_ratio": None}
    return {"teacher_params": teacher_params, "student_params": student_params,
            "size_target_met": student_params <= max_student_ratio * teacher_params,
            "student_embedding_params": embedding,
            "param_ratio": round(student_params / teacher_params, 4),
            "compression_ratio": round(teacher_params / student_params, 4)}


def _distill(student, teacher_fn, teacher_inputs, transformed_examples_dir, transform_output, label_key,
             problem_type, alpha, temperature, epochs, seed):
    """Fit the student on the distillation loss, stopping early on its value over the eval split."""
    import tensorflow as tf

    from kfx_components.common import model as M

    distiller = _make_distiller(student, teacher_fn, teacher_inputs, problem_type, alpha, temperature)
    distiller.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=LEARNING_RATE))
    plan = M.fit_plan(M.count_examples(transformed_examples_dir, "train"), epochs)
    train = M.make_dataset(transformed_examples_dir, "train", transform_output, label_key,
                           batch_size=plan["batch_size"], shuffle=True, repeat=True, seed=seed)
    evals = M.make_dataset(transformed_examples_dir, "eval", transform_output, label_key, batch_size=1024)
    history = distiller.fit(train, epochs=plan["epochs"], steps_per_epoch=plan["steps_per_epoch"],
                            validation_data=evals, callbacks=M.fit_callbacks(), verbose=0)
    return history, plan


def _compare(student, teacher_fn, teacher_inputs, transformed_examples_dir, transform_output, label_key,
             problem_type, tolerance, sizes=None, max_student_ratio: float = 1.0) -> dict:
    """Teacher and student on the eval split, and which one is passed on (the gate)."""
    import numpy as np

    from kfx_components.common import model as M

    evals = M.make_dataset(transformed_examples_dir, "eval", transform_output, label_key, batch_size=1024)
    labels, t_logits, s_logits = _eval_logits(evals, teacher_fn, teacher_inputs, student)
    primary = problem.primary_metric(problem_type)
    teacher_metric = M.metric_from_logits(problem_type, labels, t_logits)
    student_metric = M.metric_from_logits(problem_type, labels, s_logits)
    t_flat, s_flat = t_logits.reshape(-1), s_logits.reshape(-1)
    corr = float(np.corrcoef(t_flat, s_flat)[0, 1]) if t_flat.std() > 0 and s_flat.std() > 0 else 0.0
    worse = problem.worse_by_more_than(student_metric, teacher_metric, problem_type, tolerance)
    ratio = student_metric / teacher_metric if teacher_metric else None
    size = ""
    if sizes and sizes.get("teacher_params"):
        size = (f" at {sizes['student_params']:,} parameters ({sizes['param_ratio']:.2f}x the teacher's "
                f"{sizes['teacher_params']:,}; size target {max_student_ratio:g}x)")
    elif sizes:
        size = f" at {sizes['student_params']:,} parameters"
    reason = (f"student {primary} {student_metric:.4f}{size} is worse than the teacher's {teacher_metric:.4f} "
              + (f"({ratio:.3f}x) " if ratio is not None else "")
              + f"by more than the tolerance {tolerance:g} (relative): a student of this size cannot hold "
              "the teacher's metric; the teacher is passed on"
              if worse else "")
    return {
        "passed_on": "teacher" if worse else "student",
        "reason": reason,
        "primary_metric": primary,
        "teacher_metric": teacher_metric,
        "student_metric": student_metric,
        "metric_ratio": round(ratio, 6) if ratio is not None else None,
        "logit_mse_to_teacher": float(np.mean((t_flat - s_flat) ** 2)),
        "logit_corr_to_teacher": corr,
        "eval_rows": int(len(labels)),
    }
