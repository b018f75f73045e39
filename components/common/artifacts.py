"""kfx's typed artifacts: what each stage reads and writes, beyond KFP's generic types.

Like TFX's standard artifacts, each has its own schema title, so wiring a
schema into a model input fails when the pipeline compiles
(kfp.dsl.types.type_utils.check_artifact_type_compatibility), and the KFP UI
and ml-metadata show what an artifact is. Formats on disk: docs/design.md.
KFP 2.13 admits only the `system` and `google` namespaces in a lightweight
component's artifact types (type_utils.validate_schema_title), hence
`system.<Name>` titles that KFP's own types do not use.
No TensorFlow here: KFP imports this module wherever a component is defined.
"""
from kfp import dsl

SCHEMA_VERSION = "0.0.1"


class ExampleStatistics(dsl.Artifact):
    """TFDV statistics per split (validate)."""
    schema_title = "system.ExampleStatistics"
    schema_version = SCHEMA_VERSION


class Schema(dsl.Artifact):
    """A TFDV schema, inferred or curated (validate, or an importer)."""
    schema_title = "system.Schema"
    schema_version = SCHEMA_VERSION


class ExampleAnomalies(dsl.Artifact):
    """TFDV anomalies per split (validate)."""
    schema_title = "system.ExampleAnomalies"
    schema_version = SCHEMA_VERSION


class TransformGraph(dsl.Artifact):
    """The TensorFlow Transform output that travels with the model (transform)."""
    schema_title = "system.TransformGraph"
    schema_version = SCHEMA_VERSION


class HyperParameters(dsl.Artifact):
    """The tuned width, depth and learning rate (tune)."""
    schema_title = "system.HyperParameters"
    schema_version = SCHEMA_VERSION


class Checkpoints(dsl.Artifact):
    """Training checkpoints (distributed_train)."""
    schema_title = "system.Checkpoints"
    schema_version = SCHEMA_VERSION


class ModelEvaluation(dsl.Artifact):
    """TFMA's output directory (evaluate)."""
    schema_title = "system.ModelEvaluation"
    schema_version = SCHEMA_VERSION


class ModelBlessing(dsl.Artifact):
    """evaluate's verdict: a BLESSED or NOT_BLESSED file, the reasons in metadata."""
    schema_title = "system.ModelBlessing"
    schema_version = SCHEMA_VERSION
