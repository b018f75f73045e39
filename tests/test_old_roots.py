"""Roots, registries and MLMD stores written before the consolidation stay readable (issue 9, point 9).

The fixture was written by kfx at commit 3df31fe (tests/fixtures/README.md says how): one lifecycle
run's MLMD store and the registry version it pushed. Today's code must take that version as the
baseline (resolve, evaluate, push's next version, kfx serving) and read the store (kfx history,
kfx lineage). An S3 registry version of that time (`_COMPLETE` holding the claim token, not a
manifest) is covered in tests/stages/test_registry.py.
"""
import contextlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from kfx import cli
from kfx_formats import registry
from kfx_components.push import executor as push
from kfx_components.resolve import executor as resolve

FIXTURE = Path(__file__).parent / "fixtures" / "old_root_3df31fe.tar.gz"
RECORDED_ROOT = "/tmp/oldroot/root"   # where the old run wrote it: its MLMD URIs name paths below it
MODEL = "tiny"


@pytest.fixture(scope="module")
def old(tmp_path_factory) -> Path:
    """The unpacked fixture: tiny.csv, root/metadata.sqlite, root/registry/tiny/v1."""
    out = tmp_path_factory.mktemp("old")
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(out, filter="data")
    return out


def _registry(old: Path, tmp_path: Path) -> str:
    """A copy of the old registry, for a test that writes to it."""
    shutil.copytree(old / "root" / "registry", tmp_path / "registry")
    return str(tmp_path / "registry")


def _kfx(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(list(argv)) == 0
    return out.getvalue()


def test_resolve_takes_the_old_pushed_model_as_baseline(old):
    reg = str(old / "root" / "registry")
    facts = resolve.run(reg, MODEL)
    assert facts["version"] == 1 and facts["source"] == "the newest version"
    assert facts["model_uri"] == f"{reg}/{MODEL}/v1/saved_model"
    assert os.path.isfile(os.path.join(facts["model_uri"], "saved_model.pb"))
    # Versions kept no training statistics then: no drift check against it, no error either.
    assert facts["statistics_uri"] == ""


def test_push_onto_an_old_registry_publishes_the_next_version(old, tmp_path):
    """The old head's card has no model_fingerprint: a model is never taken for 'already v1' by it."""
    reg = _registry(old, tmp_path)
    model = os.path.join(reg, MODEL, "v1", "saved_model")
    facts = push.run(model, "", {"blessed": True, "reasons": []}, reg, MODEL, card={"problem_type": "binary"})
    assert facts["pushed"] and not facts["already"] and facts["version"] == 2
    assert resolve.run(reg, MODEL)["version"] == 2
    again = push.run(model, "", {"blessed": True, "reasons": []}, reg, MODEL, card={"problem_type": "binary"})
    assert again["already"] and again["version"] == 2


def test_kfx_serving_and_the_production_alias_on_an_old_registry(old, tmp_path):
    reg = _registry(old, tmp_path)
    push.run(os.path.join(reg, MODEL, "v1", "saved_model"), "", {"blessed": True}, reg, MODEL, card={})
    assert registry.resolve(f"{reg}/{MODEL}") == (f"{reg}/{MODEL}", 2)
    registry.set_alias(f"{reg}/{MODEL}", "production", 1)   # kfx rollout rolls back to the old model
    facts = resolve.run(reg, MODEL)
    assert facts["version"] == 1 and facts["source"] == "the 'production' alias"
    assert registry.read_alias(reg, MODEL, "staging") is None


def test_history_and_lineage_read_an_old_metadata_store(old, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(old / "root", root)
    [row] = [line.split() for line in _kfx("history", "--root", str(root)).splitlines()[1:]]
    assert row[0].startswith("kfx-tabular-") and row[1:3] == ["0", "600"]   # run, span, rows

    tree = json.loads(_kfx("lineage", f"{RECORDED_ROOT}/registry/{MODEL}/v1", "--root", str(root), "--json"))

    def producers(node, chain=()):
        chain = (*chain, node["task"])
        yield chain
        for child in node["inputs"]:
            yield from producers(child, chain)
    chains = set(producers(tree))
    assert {task for chain in chains for task in chain} == {
        "push", "evaluate", "quantize", "distill", "distributed-train", "tune", "transform", "validate",
        "ingest", "importer"}
    assert {("push", "evaluate", "distill", "distributed-train", "tune", "transform"),
            ("push", "evaluate", "ingest", "importer")} <= chains


def test_evaluate_judges_a_candidate_against_the_old_model(old, tmp_path):
    """The old SavedModel serves raw tf.Examples under today's signature name: TFMA runs it as the
    baseline on a split today's ingest writes (here the candidate is the same model: no change)."""
    from kfx_components.evaluate import executor as evaluate
    from kfx_components.ingest import executor as ingest

    examples = str(tmp_path / "examples")
    ingest.run(str(old / "tiny.csv"), examples, "label", "binary")
    baseline = resolve.run(str(old / "root" / "registry"), MODEL)["model_uri"]
    facts = evaluate.run(model_dir=baseline, examples_dir=examples, evaluation_dir=str(tmp_path / "evaluation"),
                         report_path=str(tmp_path / "report.html"), label_key="label", problem_type="binary",
                         num_classes=2, baseline_model_dir=baseline, explain_rows=0)
    assert facts["baseline_used"] and facts["baseline_overall"]["auc"] > 0.8
    assert facts["diff_overall"]["auc"] == pytest.approx(0.0, abs=1e-6)
    assert facts["blessed"], facts["reasons"]
