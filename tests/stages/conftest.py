"""The stages chained on a small slice of the bundled data, once per session.

Each fixture calls a stage's executor directly (no KFP, no runner) and returns
an `Artifact`-like namespace: `.path` and `.metadata`, as the next stage sees it.
"""
import pathlib
import types

import pandas as pd
import pytest

SAMPLE_ROWS = 3000


def _artifact(path, metadata):
    return types.SimpleNamespace(path=str(path), metadata=dict(metadata))


@pytest.fixture(scope="session")
def work(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("stages")


@pytest.fixture(scope="session")
def sample_csv(repo, taxi_config, work) -> str:
    """The first rows of the bundled CSV."""
    path = work / "sample.csv"
    pd.read_csv(repo / "pipelines/configs" / taxi_config["data"], nrows=SAMPLE_ROWS).to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="session")
def examples(sample_csv, taxi_config, work):
    from kfx_components.ingest import executor
    out = work / "examples"
    facts = executor.run(data_path=sample_csv, examples_dir=str(out), label=taxi_config["label"],
                         problem_type=taxi_config["problem_type"], eval_ratio=0.25,
                         drop_columns=taxi_config["drop_columns"])
    return _artifact(out, facts)


@pytest.fixture(scope="session")
def validated(examples, work):
    """(statistics, schema, anomalies, report) artifacts, schema inferred."""
    from kfx_components.validate import executor
    paths = {name: work / "validate" / name for name in ("statistics", "schema", "anomalies")}
    report = work / "validate" / "report.html"
    facts = executor.run(examples_dir=examples.path, statistics_dir=str(paths["statistics"]),
                         schema_dir=str(paths["schema"]), anomalies_dir=str(paths["anomalies"]),
                         report_path=str(report), label_key=examples.metadata["label_key"])
    return types.SimpleNamespace(facts=facts, report=str(report),
                                 **{k: _artifact(v, facts) for k, v in paths.items()})


@pytest.fixture(scope="session")
def transformed(examples, validated, taxi_config, work):
    """(transform_graph, transformed_examples) artifacts."""
    from kfx_components.transform import executor
    graph, data = work / "transform_graph", work / "transformed_examples"
    facts = executor.run(examples_dir=examples.path, schema_dir=validated.schema.path,
                         transform_graph_dir=str(graph), transformed_examples_dir=str(data),
                         label_key=examples.metadata["label_key"],
                         categorical_features=taxi_config["categorical_features"],
                         bucketize_features=taxi_config["bucketize_features"])
    from kfx_components.common import facts as travelling
    meta = travelling.carried(examples.metadata)
    return types.SimpleNamespace(graph=_artifact(graph, facts),
                                 examples=_artifact(data, {**meta, **facts}))


@pytest.fixture(scope="session")
def model_args(transformed) -> dict:
    """The keyword arguments every model stage takes from transformed_examples' metadata."""
    m = transformed.examples.metadata
    return dict(transformed_examples_dir=transformed.examples.path,
                transform_graph_dir=transformed.graph.path, label_key=m["label_key"],
                problem_type=m["problem_type"], num_classes=m["num_classes"])


@pytest.fixture(scope="session")
def hyperparameters(model_args, work):
    from kfx_components.tune import executor
    out = work / "hyperparameters"
    # The network family: the stage fixtures below are the network's path (tests/stages/test_forest.py: the trees').
    facts = executor.run(hyperparameters_dir=str(out), max_trials=2, epochs=2, model_family="network", **model_args)
    return _artifact(out, facts)


@pytest.fixture(scope="session")
def teacher(model_args, hyperparameters, work):
    from kfx_components.distributed_train import executor
    out, ckpt = work / "teacher", work / "checkpoints"
    facts = executor.run(hyperparameters_dir=hyperparameters.path, model_dir=str(out),
                         checkpoint_dir=str(ckpt), epochs=3, **model_args)
    return _artifact(out, facts)


@pytest.fixture(scope="session")
def forest(model_args, work):
    """distributed_train given tune's choice of a (small) forest: the trees' path through the stages."""
    from kfx_components.common import model as M
    from kfx_components.distributed_train import executor
    hp, out = str(work / "forest_hp"), work / "forest"
    M.write_hyperparameters(hp, **M.DEFAULT_HYPERPARAMETERS, family="gradient_boosted_trees",
                            forest={"num_trees": 20})
    facts = executor.run(hyperparameters_dir=hp, model_dir=str(out), checkpoint_dir=str(work / "forest_ckpt"),
                         **model_args)
    return _artifact(out, facts)


@pytest.fixture(scope="session")
def student(model_args, teacher, work):
    from kfx_components.distill import executor
    out = work / "student"
    # tolerance 0.99: always pass the student on, so the tests see a student (the gate has its own test).
    facts = executor.run(teacher_model_dir=teacher.path, model_dir=str(out), epochs=3, tolerance=0.99,
                         **model_args)
    return _artifact(out, facts)
