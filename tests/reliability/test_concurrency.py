"""Point 5: several `kfx run` processes at once on one root: one MLMD database, one registry.

Each run finishes, with its own lineage (its model traced back to its own data), every run's
executions in its own context, no `database is locked`, a store that passes SQLite's integrity
check, and distinct registry versions for distinct models."""
import sqlite3

from kfp import compiler, dsl
from kfp.dsl import Dataset, Input, Model, Output

from kfx.stores import lineage
from kfx.stores.metadata import MetadataStore, prop
from tests.reliability.common import kfx_run

RUNS = 4


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def fit_mean(data: Input[Dataset], model: Output[Model]):
    values = [float(line.split(",")[1]) for line in open(data.path).read().splitlines()[1:]]
    with open(model.path, "w") as f:
        f.write(str(sum(values) / len(values)))


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def publish(model: Input[Model], registry_uri: str) -> int:
    from kfx_formats import registry
    version = registry.publish({}, {"model.txt": open(model.path, "rb").read()}, registry_uri, "toy-model")
    return version.number


@dsl.pipeline(name="concurrent")
def concurrent(data_uri: str, registry_uri: str):
    data = dsl.importer(artifact_uri=data_uri, artifact_class=Dataset, reimport=False)
    publish(model=fit_mean(data=data.output).outputs["model"], registry_uri=registry_uri)


def test_concurrent_runs_on_one_root_keep_separate_lineage_and_distinct_versions(tmp_path):
    ir_path = tmp_path / "concurrent.yaml"
    compiler.Compiler().compile(concurrent, str(ir_path))
    root = tmp_path / "root"          # new: the runs also race to create the MLMD schema
    datas = []
    for i in range(RUNS):
        datas.append(tmp_path / f"data{i}.csv")
        datas[-1].write_text("name,value\n" + "".join(f"r{j},{i * 10 + j}\n" for j in range(3)))
    procs = [kfx_run(ir_path, root, "--param", f"data_uri={d}") for d in datas]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, out + err
        assert "database is locked" not in out + err and "malformed" not in out + err

    db = sqlite3.connect(root / "metadata.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()
    md = MetadataStore(str(root / "metadata.sqlite"))
    runs = md.store.get_contexts_by_type("system.PipelineRun")
    assert len(runs) == RUNS
    versions = {}
    for ctx in runs:
        executions = md.store.get_executions_by_context(ctx.id)
        assert sorted(prop(e, "task_name") for e in executions) == ["fit-mean", "importer", "publish"]
        assert {prop(e, "run_id") for e in executions if prop(e, "run_id")} == {ctx.name}
        data_uri = eval_json(prop(ctx, "parameters"))["data_uri"]
        [model] = [a for a in md.store.get_artifacts_by_context(ctx.id) if "/fit-mean/" in a.uri]
        chain = list(lineage.trace(md, model.uri).walk())
        assert [n.task for n in chain] == ["fit-mean", "importer"] and chain[-1].uri == data_uri
        i = datas.index(next(d for d in datas if str(d) == data_uri))
        assert open(model.uri).read() == str(float(i * 10 + 1))
        [pub] = [e for e in executions if prop(e, "task_name") == "publish"]
        versions[i] = eval_json(prop(pub, "output_parameters"))["Output"]
    assert sorted(versions.values()) == list(range(1, RUNS + 1))     # one distinct version each
    for i, number in versions.items():                                # holding that run's model
        assert (root / "registry" / "toy-model" / f"v{number}" / "model.txt").read_text() == str(float(i * 10 + 1))


def eval_json(text):
    import json
    return json.loads(text) if isinstance(text, str) else text
