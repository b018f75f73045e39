"""What was left out is shown (issue 20, item 5): the rows ingest drops for a missing label, the
columns drop_columns leaves out and the columns with no values are counted beside the file's own
row count, in ingest's facts, in the run's outcome lines and report, and in the model card's
warnings. In-process: ingest's executor on a small table, push's card and the report from its facts."""
import pandas as pd
import pytest

from kfx import report
from kfx.runner import outcome
from kfx.stores.metadata import StoredArtifact
from kfx.runner.run_context import RunResult, StepRecord
from kfx_components.push import card_html
from kfx_components.push import executor as push

ROWS, UNLABELLED = 90, 30
EXPECTED = ("90 rows in the file; 30 dropped (label missing); 60 used; "
            "columns left out: 'id' (drop_columns); columns with no values: 'blank'")


@pytest.fixture(scope="module")
def facts(tmp_path_factory):
    """ingest on a table whose label is missing in a third of its rows, with an id column dropped
    and a column empty in every row. (The Beam engine's facts equal these: test_ingest.py's
    test_beam_engine_gives_the_pandas_split compares them whole.)"""
    from kfx_components.ingest import executor
    tmp = tmp_path_factory.mktemp("left-out")
    csv = tmp / "wages.csv"
    pd.DataFrame({"id": range(ROWS), "hours": [float(i % 17) for i in range(ROWS)], "blank": [None] * ROWS,
                  "paid": [("yes", "no", None)[i % 3] for i in range(ROWS)]}).to_csv(csv, index=False)
    return executor.run(data_path=str(csv), examples_dir=str(tmp / "examples"), label="paid",
                        problem_type="binary", drop_columns=["id"])


def test_ingest_counts_what_it_left_out_beside_the_files_rows(facts):
    assert (facts["rows_in_file"], facts["dropped_rows"], facts["rows"]) == (ROWS, UNLABELLED, ROWS - UNLABELLED)
    assert facts["dropped_columns"] == ["id"] and facts["empty_columns"] == ["blank"]
    assert facts["summary"] == f"data: {EXPECTED}"


def test_a_table_with_nothing_left_out_has_no_data_line():
    from kfx_components.common.facts import left_out
    assert "summary" not in left_out(rows_used=500, dropped_rows=0)
    assert left_out(rows_used=7, dropped_rows=0, dropped_columns=["ts"])["summary"] == \
        "data: 7 rows in the file, all used; columns left out: 'ts' (drop_columns)"


def test_the_model_card_warns_of_it_and_shows_the_files_rows(facts):
    card = push.make_card("wages", model={}, quantized={}, examples=facts, hyperparameters={}, lineage={},
                          blessing={"blessed": True, "warnings": ["the test split has only 12 rows"]})
    assert card["warnings"] == [f"data: {EXPECTED}", "the test split has only 12 rows"]
    assert (card["data"]["rows_in_file"], card["data"]["dropped_rows"], card["data"]["rows"]) == (90, 30, 60)
    markdown, page = push.render_card({**card, "version": 1}), card_html.render({**card, "version": 1})
    assert f"- warning: data: {EXPECTED}" in markdown
    assert "| rows_in_file | 90 |" in markdown
    assert "90 rows in the file; 30 dropped (label missing); 60 used" in page


def test_the_run_ends_with_it_and_the_report_shows_it(facts, tmp_path):
    examples = StoredArtifact(id=1, type="system.Dataset", uri=str(tmp_path / "examples"), metadata=facts,
                              fingerprint="f")
    pushed = StoredArtifact(id=2, type="system.Model", uri=str(tmp_path / "registry/wages/v1"),
                            metadata={"summary": "pushed wages v1 (student)", "published": True}, fingerprint="p")
    result = RunResult(run_id="r1", pipeline="lifecycle", root=tmp_path, parameters={}, seconds=1.0, steps={
        "ingest": StepRecord("ingest", "COMPLETE", 0.5, outputs={"examples": examples}),
        "push": StepRecord("push", "COMPLETE", 0.5, outputs={"pushed_model": pushed})})
    assert outcome.outcome_lines(result)[:2] == [f"data: {EXPECTED}", "pushed wages v1 (student)"]
    page = report.write(result, tmp_path / "report.html").read_text()
    shown = page[page.index("<h2>Outcome</h2>"):page.index("</ul>", page.index("<h2>Outcome</h2>"))]
    assert "90 rows in the file; 30 dropped (label missing); 60 used" in shown
    warnings = page[page.index("<h2>Warnings</h2>"):]
    assert "ingest: label &#x27;paid&#x27; is missing in 30 row(s)" in warnings
