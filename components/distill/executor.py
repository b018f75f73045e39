"""Distill: train a small student from the teacher SavedModel's logits.

The teacher is the ``model`` artifact of docs/design.md; its
``transformed_logits`` signature (transformed features -> ``logits``) is called
inside the training step, so the student sees the teacher's output for
exactly the batch it trains on (no precomputed copy of the data set).

The student is ``model.build_model(..., width=student_width, depth=STUDENT_DEPTH)``: the
same transformed-feature inputs and embeddings as the teacher, one hidden
layer. Its loss is::

    alpha * hard(labels, student) + (1 - alpha) * soft(teacher, student)

- binary: hard = BCE(labels, sigmoid(s)); soft = T^2 * KL(sigmoid(t/T) || sigmoid(s/T))
  (Bernoulli KL = BCE against the softened teacher minus its entropy)
- multiclass: hard = CE(labels, softmax(s)); soft = T^2 * KL(softmax(t/T) || softmax(s/T))
- regression: hard = MSE(labels, s); soft = MSE(t, s) (no temperature)

The student is exported with ``model.export_serving_model`` (same serving
contract as the teacher).
"""
from __future__ import annotations

import os
import time


PROBLEM_TYPES = ("binary", "multiclass", "regression")
STUDENT_DEPTH = 1
LEARNING_RATE = 3e-3  # a one-layer student trained for few epochs


def validate_parameters(problem_type: str, temperature: float, alpha: float, student_width: int,
                        epochs: int, batch_size: int) -> None:
    """Raise ValueError naming the first bad parameter."""
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"problem_type must be one of {PROBLEM_TYPES}, got {problem_type!r}")
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if isinstance(student_width, bool) or int(student_width) != student_width or student_width < 1:
        raise ValueError(f"student_width must be an integer >= 1, got {student_width!r}")
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")


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
    """Trainable parameters of the teacher (the SavedModel's trainable variables)."""
    import numpy as np
    import tensorflow as tf

    variables = getattr(loaded, "trainable_variables", None)
    if variables:
        return int(sum(int(np.prod(v.shape)) for v in variables))
    return int(tf.keras.models.load_model(teacher_model_dir, compile=False).count_params())


def run(teacher_model_dir: str, transformed_examples_dir: str, transform_graph_dir: str,
        student_model_dir: str, label_key: str, problem_type: str, num_classes: int,
        temperature: float = 4.0, alpha: float = 0.3, student_width: int = 16, epochs: int = 8,
        batch_size: int = 256, seed: int = 42) -> dict:
    start = time.time()
    validate_parameters(problem_type, temperature, alpha, student_width, epochs, batch_size)
    if not os.path.exists(os.path.join(teacher_model_dir, "saved_model.pb")):
        raise ValueError(f"teacher_model_dir {teacher_model_dir!r} holds no saved_model.pb")

    import numpy as np
    import tensorflow as tf

    from kfx_components.common import io
    from kfx_components.common import model as M

    temperature, alpha = float(temperature), float(alpha)
    student_width, epochs, batch_size = int(student_width), int(epochs), int(batch_size)

    transform_output = M.load_transform_output(transform_graph_dir)
    keys = M.feature_keys(transform_output, label_key)

    teacher = tf.saved_model.load(teacher_model_dir)
    if M.LOGITS_SIGNATURE not in teacher.signatures:
        raise ValueError(f"teacher_model_dir {teacher_model_dir!r} has no {M.LOGITS_SIGNATURE!r} signature "
                         f"(has {sorted(teacher.signatures)})")
    teacher_fn = teacher.signatures[M.LOGITS_SIGNATURE]
    args = M.signature_args(keys)
    teacher_keys = sorted(teacher_fn.structured_input_signature[1])
    missing = sorted(set(teacher_keys) - set(args))
    if missing:
        raise ValueError(f"teacher {M.LOGITS_SIGNATURE!r} signature wants features {missing} that "
                         f"transform_graph_dir {transform_graph_dir!r} does not produce")

    tf.keras.utils.set_random_seed(int(seed))
    student = M.build_model(transform_output, label_key, problem_type, num_classes,
                            width=student_width, depth=STUDENT_DEPTH)
    teacher_params = _count_teacher_params(teacher_model_dir, teacher)
    student_params = int(sum(int(np.prod(w.shape)) for w in student.trainable_weights))
    if student_params >= teacher_params:
        raise ValueError(f"student_width={student_width} (depth {STUDENT_DEPTH}) gives a student of "
                         f"{student_params:,} parameters, not fewer than the teacher's {teacher_params:,}: "
                         "lower student_width")
    teacher_inputs = {a: args[a] for a in teacher_keys}   # signature argument -> feature
    distiller = _make_distiller(student, teacher_fn, teacher_inputs, problem_type, alpha, temperature)
    distiller.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=LEARNING_RATE))
    train = M.make_dataset(transformed_examples_dir, "train", transform_output, label_key,
                           batch_size=batch_size, shuffle=True, seed=int(seed))
    history = distiller.fit(train, epochs=epochs, verbose=0)

    eval_ds = M.make_dataset(transformed_examples_dir, "eval", transform_output, label_key,
                             batch_size=1024)
    labels, t_logits, s_logits = _eval_logits(eval_ds, teacher_fn, teacher_inputs, student)
    primary = M.primary_metric(problem_type)
    teacher_metric = M.metric_from_logits(problem_type, labels, t_logits)
    student_metric = M.metric_from_logits(problem_type, labels, s_logits)
    t_flat, s_flat = t_logits.reshape(-1), s_logits.reshape(-1)
    corr = float(np.corrcoef(t_flat, s_flat)[0, 1]) if t_flat.std() > 0 and s_flat.std() > 0 else 0.0

    with io.Staging() as stage:
        M.export_serving_model(student, transform_output, label_key, problem_type,
                               stage.dir(student_model_dir))

    return {
        "label_key": label_key,
        "problem_type": problem_type,
        "num_classes": int(num_classes),
        "primary_metric": primary,
        "teacher_params": teacher_params,
        "student_params": student_params,
        "compression_ratio": round(teacher_params / student_params, 4),
        f"teacher_{primary}": teacher_metric,
        f"student_{primary}": student_metric,
        "teacher_metric": teacher_metric,
        "student_metric": student_metric,
        "logit_mse_to_teacher": float(np.mean((t_flat - s_flat) ** 2)),
        "logit_corr_to_teacher": corr,
        "final_loss": float(history.history["loss"][-1]),
        "final_hard_loss": float(history.history["hard_loss"][-1]),
        "final_soft_loss": float(history.history["soft_loss"][-1]),
        "temperature": temperature,
        "alpha": alpha,
        "student_width": student_width,
        "student_depth": STUDENT_DEPTH,
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": int(seed),
        "eval_rows": int(len(labels)),
        "seconds": round(time.time() - start, 2),
    }
