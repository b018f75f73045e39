"""kfx works on any tabular CSV: no bundled-data column name in platform, stage or pipeline code.

The taxi columns may appear only in the taxi configuration (and the data, docs
and tests that use it).
"""
import csv
import re


def test_no_taxi_column_name_outside_its_configuration(repo):
    with open(repo / "data/chicago_taxi/data.csv", newline="") as f:
        columns = next(csv.reader(f))
    assert len(columns) == 18 and "tips" in columns
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, columns)) + r")\b")
    code = [*repo.glob("kfx/**/*.py"), *repo.glob("components/**/*.py"), *repo.glob("pipelines/*.py")]
    assert len(code) > 30
    found = [f"{p.relative_to(repo)}:{n}: {line.strip()}" for p in code
             for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []
