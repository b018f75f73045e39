"""Trust on tables of several shapes: `kfx run` with default parameters, as a new user runs it.

For each table of tests/trust/tables.py: what was pushed (or why not), the
pushed model's test metric with its 95% bootstrap interval, the trivial
predictor and the plain classical reference on the same test rows (all read
from the model card / blessing the run wrote), and the run's wall time.
Writes the table between the markers in docs/measurements.md.

    .venv/bin/python bench/trust_tables.py [--tables wine,diabetes] [--param NAME=VALUE ...] [--doc docs/measurements.md]
    .venv/bin/python bench/trust_tables.py --smoke    # the smallest table, tiny budgets: checks it runs
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.trust import tables  # noqa: E402  (the same tables the tests use)

BEGIN, END = "<!-- trust-tables:begin -->", "<!-- trust-tables:end -->"


def run_table(make, work: Path, params: list) -> dict:
    name, problem_type, frame = make()
    data = work / f"{name}.csv"
    frame.to_csv(data, index=False)
    root = work / name
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "kfx.cli", "run", "--data", str(data), "--label", tables.LABEL,
                           "--task", problem_type, "--root", str(root), *params], capture_output=True, text=True)
    seconds = time.time() - start
    row = {"table": name, "task": problem_type, "rows": len(frame), "seconds": round(seconds, 1),
           "exit": proc.returncode}
    outcome = re.search(r"^(pushed .*|already .*|not pushed: .*)$", proc.stdout, re.M)
    row["outcome"] = outcome.group(1) if outcome else (proc.stderr.strip().splitlines() or ["?"])[-1]
    [blessing] = list(root.glob("artifacts/kfx-tabular/*/evaluate/blessing")) or [None]
    if blessing is not None:
        meta = _metadata(root, blessing)
        row.update(trust=meta.get("trust", {}), blessed=meta.get("blessed"))
    [distilled] = list(root.glob("artifacts/kfx-tabular/*/distill/model")) or [None]
    if distilled is not None:
        meta = _metadata(root, distilled)
        row.update(passed_on=meta.get("passed_on"), teacher_metric=meta.get("teacher_metric"),
                   student_metric=meta.get("student_metric"))
    return row


def _metadata(root: Path, artifact: Path) -> dict:
    """An artifact's custom properties, read from the run's MLMD store."""
    from kfx.stores.metadata import MetadataStore
    md = MetadataStore(str(root / "metadata.sqlite"))
    [found] = md.artifacts_by_uri(str(artifact))
    return md.stored_artifact(found).metadata


def render(rows: list, when: str, params: list) -> str:
    def f(x):
        return "n/a" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)
    out = [BEGIN, "",
           f"Measured {when} with `bench/trust_tables.py` "
           f"({' '.join(params[1::2]) if params else 'default parameters'}; every figure on the test split).", "",
           "| table | task | rows | pushed model (test) | 95% CI | teacher / student (eval) | trivial predictor "
           "| plain classical reference | blessed | outcome | seconds |",
           "| --- | --- | ---: | --- | --- | --- | --- | --- | --- | --- | ---: |"]
    for r in rows:
        t = r.get("trust") or {}
        model, ref = t.get("model") or {}, (t.get("references") or {}).get("linear") or {}
        ci = model.get("ci") or [None, None]
        out.append(
            f"| {r['table']} | {r['task']} | {r['rows']} | {t.get('metric', '')} {f(model.get('metric'))} "
            f"| {f(ci[0])} - {f(ci[1])} | {f(r.get('teacher_metric'))} / {f(r.get('student_metric'))} "
            f"({r.get('passed_on', '?')} passed on) | {f((t.get('trivial') or {}).get('metric'))} "
            f"| {ref.get('estimator', '')} {f(ref.get('metric'))} | {r.get('blessed')} "
            f"| {r['outcome'][:90].replace('|', '/')} | {r['seconds']} |")
    out += ["", END]
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tables", default=",".join(t.__name__ for t in tables.ALL))
    p.add_argument("--doc", default=str(REPO / "docs/measurements.md"))
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="passed to every kfx run")
    p.add_argument("--no-doc", action="store_true", help="print only")
    p.add_argument("--smoke", action="store_true", help="the wine table with the wild bench's tiny budgets; "
                   "implies --no-doc")
    args = p.parse_args()
    if args.smoke:
        from tests.wild.tables import TINY_BUDGET
        args.tables, args.param, args.no_doc = "wine", [*TINY_BUDGET, *args.param], True
    params = [x for pair in args.param for x in ("--param", pair)]
    work = Path(tempfile.mkdtemp(prefix="kfx-trust-"))
    rows = []
    try:
        for name in args.tables.split(","):
            row = run_table(getattr(tables, name), work, params)
            print(json.dumps({k: v for k, v in row.items() if k != "trust"}), flush=True)
            rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)     # every run's workspace: what the table needs is read
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") + \
        f", load average {os.getloadavg()[0]:.1f}"
    block = render(rows, when, params)
    print(block)
    if not args.no_doc:
        doc = Path(args.doc)
        text = doc.read_text()
        if BEGIN in text:
            text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
        else:
            text += "\n## Trust on tables of several shapes (issue: trustworthy models)\n\n" + block + "\n"
        doc.write_text(text)
    # A run that reached no verdict (no blessing written) is a broken bench or pipeline, not a figure.
    return 0 if all("blessed" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
