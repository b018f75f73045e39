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


def _kfx_type(name: str, doc: str) -> type:
    return type(name, (dsl.Artifact,), {"schema_title": f"system.{name}", "schema_version": SCHEMA_VERSION,
                                        "__doc__": doc, "__module__": __name__})


ExampleStatistics = _kfx_type("ExampleStatistics", "TFDV statistics per split (validate).")
Schema = _kfx_type("Schema", "A TFDV schema, inferred or curated (validate).")
ExampleAnomalies = _kfx_type("ExampleAnomalies", "TFDV anomalies per split, or drift against the previous span.")
TransformGraph = _kfx_type("TransformGraph", "The TensorFlow Transform output that travels with the model.")
HyperParameters = _kfx_type("HyperParameters", "The tuned width, depth and learning rate (tune).")
Checkpoints = _kfx_type("Checkpoints", "Training checkpoints (distributed_train).")
ModelEvaluation = _kfx_type("ModelEvaluation", "TFMA's output directory (evaluate).")
ModelBlessing = _kfx_type("ModelBlessing", "evaluate's verdict: a BLESSED or NOT_BLESSED file, reasons in metadata.")
InfraBlessing = _kfx_type("InfraBlessing", "infra_validate's verdict: an INFRA_BLESSED or NOT_BLESSED file "
                         "(the reason, one line) and result.json.")
Deployment = _kfx_type("Deployment", "A rollout record for kfx serve / kfx rollout (deploy).")
