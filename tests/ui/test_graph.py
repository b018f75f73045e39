"""kfx.views.graph on the demo pipeline's compiled IR: sub-DAGs as nodes, the layered layout, states
from executions (a loop's iterations, a skipped branch, a sub-DAG not finished), and the charts'
readers of KFP's ClassificationMetrics."""
import re

import pytest

from kfx.runner import ir
from kfx.views import graph
from kfx.views import charts
from tests.ui.pipelines import compile_ui_demo


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return ir.load(compile_ui_demo(tmp_path_factory.mktemp("ir")))


def _execution(name, state):
    return {"name": name, "label": re.sub(r"(\[\d+\])+$", "", name), "state": state}


def test_conditions_and_loops_are_nodes_above_their_tasks(pipeline):
    nodes, edges = graph.pipeline_nodes(pipeline)
    kinds = {n.id: n.kind for n in nodes}
    assert kinds["condition-branches-1"] == "branches" and kinds["for-loop-5"] == "for each"
    assert [k for i, k in kinds.items() if i.startswith("condition-branches-1/") and i.count("/") == 1] == ["if", "if"]
    assert ("make-data", "pause", False) in edges and ("pause", "judge", False) in edges
    assert ("for-loop-5", "for-loop-5/square", True) in edges
    place = graph.layers([n.id for n in nodes], edges)
    assert place["make-data"][0] < place["pause"][0] < place["judge"][0]
    assert place["for-loop-5"][0] < place["for-loop-5/square"][0]


def test_states_from_executions(pipeline):
    nodes, _ = graph.pipeline_nodes(pipeline)
    executions = [_execution("make-data", "COMPLETE"), _execution("pause", "RUNNING"),
                  _execution("shout", "SKIPPED"), _execution("shout-2", "COMPLETE"),
                  _execution("square[0]", "CACHED"), _execution("square[1]", "COMPLETE")]
    states = graph.node_states(nodes, executions)
    assert states["pause"] == ("RUNNING", 1) and states["judge"] == ("PENDING", 0)
    assert states["condition-branches-1/condition-2"][0] == "SKIPPED"
    assert states["condition-branches-1/condition-3"][0] == "COMPLETE"
    assert states["for-loop-5/square"] == ("COMPLETE", 2)
    drawn = graph.svg(pipeline, executions, lambda n: f"#task-{n.label}")
    assert drawn.count("<a href=") == len(nodes)
    assert "node kind-if state-SKIPPED" in drawn and "complete ×2" in drawn


def test_classification_metrics_as_the_sdk_and_the_api_write_them():
    sdk = {"confidenceMetrics": [{"falsePositiveRate": 0.2, "recall": 0.6, "confidenceThreshold": 0.5}],
           "confusionMatrix": {"annotationSpecs": [{"displayName": "no"}, {"displayName": "yes"}],
                               "rows": [{"row": [40, 10]}, {"row": [5, 45]}]}}
    assert charts.roc_points(sdk) == [(0.0, 0.0), (0.2, 0.6), (1.0, 1.0)]
    matrix = charts.confusion(sdk)
    assert matrix["labels"] == ["no", "yes"] and matrix["rows"][1][1] == (45, 1.0)
    assert charts.confusion({"confusionMatrix": {"struct": sdk["confusionMatrix"]}}) == matrix
    assert charts.confusion({}) is None
