"""Generated tables (issue 20, item 6): ingest takes any of them or refuses it in one line; a whole run
on the nastiest ends in a verdict or in ingest, never in a traceback or a later step.

The contract, for every table: either the run ends in a verdict (pushed, or refused with its reason
in the closing line), or ingest fails with ONE line (`error: ingest: ...`) naming the column, row or
parameter. Hypothesis generates the tables (tests/wild/tables.py: random names from every class of
the issue, kinds, missing cells, sizes from 30 rows, label kinds and balance, CSV and Parquet),
derandomized so CI is deterministic; `bench/wild.py` runs many more through the whole pipeline.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests import cli_runs
from tests.wild import contract, tables
from tests.wild.contract import check_ingested, ingest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

# Many small tables through ingest alone: each costs a fraction of a second in-process.
INGEST_EXAMPLES = 100
INGEST_SETTINGS = settings(max_examples=INGEST_EXAMPLES, deadline=None, derandomize=True, database=None,
                           suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TINY = [x for pair in tables.TINY_BUDGET for x in ("--param", pair)]
KFX = [sys.executable, "-m", "kfx.cli"]


def ingest_outcome(table: tables.WildTable) -> str:
    """'ok', or the one-line error; fails the test on anything that breaks the contract."""
    with tempfile.TemporaryDirectory(prefix="kfx-wild-") as tmp:
        work = Path(tmp)
        try:
            facts = ingest(table, work)
        except ValueError as err:
            message = str(err)
            assert contract.one_line_names_culprit(message, table), \
                f"ingest's refusal does not name a column, row or parameter in one line: {message!r}\n{table.describe()}"
            return message
        check_ingested(table, work, facts)
        return "ok"


@INGEST_SETTINGS
@given(table=tables.hypothesis_tables(min_rows=30, max_rows=200))
def test_generated_table_is_ingested_or_refused_in_one_line(table):
    outcome = ingest_outcome(table)
    # --hypothesis-show-statistics tallies what the tables met.
    hypothesis.event("ingested" if outcome == "ok" else "refused: " + outcome.split(": ", 1)[-1][:40])


def test_the_bench_generator_makes_mostly_ingestible_tables():
    """The bench's seeded driver of the same generator: tables kfx must take (not a stream of refusals,
    which would test nothing past ingest), the odd ones refused in one line."""
    outcomes = [ingest_outcome(tables.generate(tables.RandomChooser(seed))) for seed in range(20)]
    taken = outcomes.count("ok")
    assert taken >= 16, [o for o in outcomes if o != "ok"]


@pytest.mark.parametrize("name, task", [("lambda", "binary"), ("class", "multiclass"), ("a-b", "regression")])
def test_nastiest_names_are_ingested(name, task, tmp_path):
    """Every name class of the issue at once, each task: ingest takes the table."""
    table = tables.nastiest(rows=120, task=task)
    assert name in table.frame.columns
    facts = ingest(table, tmp_path)
    check_ingested(table, tmp_path, facts)


def duplicated_rows_table(rows: int = 90) -> tables.WildTable:
    """Few distinct rows, each many times (a text column, a constant, an empty column): ingest's split
    keeps identical rows together (no copy of a test row in train), so a category whose rows are all
    copies of one row can sit in eval/test and nowhere in train (bench/wild.py seed 2 found it)."""
    import pandas as pd
    colour = (["red"] * 15 + ["green"] * 30 + ["blue"] * 12 + [None] * 33)[:rows]
    target = ["no" if i % 7 else "yes" for i in range(rows)]
    target = [("no" if c == "red" else t) for c, t in zip(colour, target)]
    frame = pd.DataFrame({"naïve": colour, "k": [7] * rows, "9 lives": [None] * rows, "größe?": target})
    return tables.WildTable("duplicated_rows", "binary", "größe?", frame)


def dates_as_text_table(rows: int = 112) -> tables.WildTable:
    """Dates written as text, nearly all distinct, and a label: fewer distinct values in train than
    TFDV's domain limit, so a schema inferred from train lists them, and eval/test hold others
    (bench/wild.py seed 6 found it)."""
    import numpy as np
    import pandas as pd
    rng = np.random.default_rng(6)
    signal = rng.normal(0, 1, rows)
    frame = pd.DataFrame({"é": tables._feature_values("date_text", rows, rng, signal),
                          "1st": tables._label_values("multiclass_int", signal, 0.3, rng)})
    return tables.WildTable("dates_as_text", "multiclass", "1st", frame)


@pytest.mark.parametrize("make", [duplicated_rows_table, dates_as_text_table])
def test_validate_never_stops_a_run_for_its_own_split(make, tmp_path):
    """A split made by ingest never stops the run in validate: text values that only eval/test hold are
    the split's doing, not the data's (issue 20: a random split of one file can never stop a run)."""
    from kfx_components.validate import executor
    table = make()
    facts = ingest(table, tmp_path)
    check_ingested(table, tmp_path, facts)
    executor.run(examples_dir=str(tmp_path / "examples"), statistics_dir=str(tmp_path / "stats"),
                 schema_dir=str(tmp_path / "schema"), anomalies_dir=str(tmp_path / "anomalies"),
                 report_path=str(tmp_path / "report.html"), label_key=facts["label_key"])


# ------------------------------------------------------------------ through the CLI
def kfx_run(table: tables.WildTable, work: Path, *extra: str, timeout: int = 900) -> subprocess.CompletedProcess:
    data = table.write(work / "in")
    return subprocess.run([*KFX, "run", "--data", str(data), *table.kfx_args(), "--root", str(work / "root"), *extra],
                          capture_output=True, text=True, timeout=timeout)


def assert_contract(proc: subprocess.CompletedProcess, table: tables.WildTable) -> str:
    """A verdict line, or ONE `error: ingest: ...` line naming the culprit; never a traceback, never a
    later step's failure. Returns the verdict or the error line."""
    kind, line = contract.classify(proc.returncode, proc.stdout, proc.stderr, table)
    assert kind in contract.KEPT, f"{kind}: {line}\n{table.describe()}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return line


@pytest.mark.parametrize("spoil", ["stray text in 'lambda'", "three classes in a binary label"])
def test_cli_refusal_of_a_nasty_table_is_one_ingest_line(spoil, lifecycle_ir, tmp_path):
    """Tables ingest must refuse, with the names of the issue around: the one line names the culprit,
    nothing is left written (tests/test_bad_input.py's contract)."""
    table = tables.nastiest(rows=120)
    if spoil.startswith("stray"):
        table.frame["lambda"] = table.frame["lambda"].astype(object)
        table.frame.loc[7, "lambda"] = "n.a."
        must = ["ingest", "'lambda'", "line 9", "'n.a.'"]
    else:
        table.frame.loc[3, "x y"] = "maybe"
        must = ["ingest", "'x y'", "3 classes"]
    root = tmp_path / "root"
    done = cli_runs.kfx_run(lifecycle_ir, root, table.write(tmp_path / "in"), table.label, table.task, [])
    assert contract.classify(done.returncode, done.stdout, done.stderr, table)[0] == contract.REFUSED_IN_INGEST
    cli_runs.assert_one_clear_error(done, root, must)

