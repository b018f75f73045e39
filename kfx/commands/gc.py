"""kfx gc: retention of a root (old runs, failed-step folders, resume dirs, unpinned registry versions)."""
from __future__ import annotations

import argparse
from pathlib import Path

from kfx import gc
from kfx.errors import UsageError


def cmd_gc(args) -> int:
    root = Path(args.root)
    if not root.is_dir():
        raise UsageError(f"--root {args.root}: no such directory")
    try:
        policy = gc.load_policy(root, args.keep_runs, args.older_than, args.keep_versions)
    except ValueError as err:
        raise UsageError(str(err)) from err
    report = gc.collect(root, policy, dry_run=args.dry_run)
    for line in report.lines():
        print(line)
    return 0


def register(sub) -> None:
    p = sub.add_parser("gc", help="remove old runs, failed-step folders, resume dirs and registry versions",
                       description=gc.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True)
    p.add_argument("--keep-runs", type=int, default=None, metavar="N",
                   help=f"keep the newest N runs (default: {gc.RETENTION_FILE}, else {gc.DEFAULT_KEEP_RUNS})")
    p.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                   help="only remove runs (and failed-step folders, resume dirs) older than DAYS")
    p.add_argument("--keep-versions", type=int, default=None, metavar="N",
                   help="keep the newest N versions per registered model (plus aliased and referenced ones)")
    p.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    p.set_defaults(func=cmd_gc)
