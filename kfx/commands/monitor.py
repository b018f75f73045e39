"""kfx monitor: one window of logged serving data against a pushed model (kfx/monitor.py)."""
from __future__ import annotations

import json
import sys

from kfx import monitor
from kfx.errors import UsageError

EXIT_OK, EXIT_FAILED, EXIT_RETRAIN = 0, 1, 3


def cmd_monitor(args) -> int:
    from kfx import report
    if args.host and not args.retrain:
        raise UsageError("--host submits the retraining run: it needs --retrain DATA_PATTERN")
    window = monitor.watch(args.model, args.serving_data, root=args.root, previous=args.previous,
                           labels=args.labels, metric_tolerance=args.metric_tolerance,
                           artifact_store=args.artifact_store, executor=args.executor, preload=args.preload,
                           verbose=args.verbose)
    result = window.result
    report.write(result, result.run_dir / "report.html")
    if result.state != "COMPLETE":
        if args.verbose:
            print(f"run {result.run_id} FAILED: {result.error}", file=sys.stderr)
        print(f"error: {result.error_line}", file=sys.stderr)
        return EXIT_FAILED
    print(f"report: {window.report}")
    print(f"statistics of this window (--previous for the next one): {window.statistics}")
    for warning in window.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not window.alert:
        print(window.summary)
        return EXIT_OK
    for line in window.alert["details"]:
        print(f"  {line}")
    print(window.alert["summary"])
    if not args.retrain:
        return EXIT_RETRAIN
    print(f"retraining on {args.retrain}" + (f" (submitted to {args.host})" if args.host else ""), flush=True)
    retrained = monitor.retrain(args.model, args.retrain, root=str(result.run_dir.parents[1]), config=args.config,
                                pairs=args.param or (), host=args.host, artifact_store=args.artifact_store,
                                verbose=args.verbose)
    if args.host:
        print(json.dumps(retrained, indent=2))
        return EXIT_RETRAIN
    from kfx.commands.pipeline import show_result
    if show_result(retrained, args.verbose) != 0:
        print("error: the retraining run failed; see its report above", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_RETRAIN


def register(sub) -> None:
    p = sub.add_parser("monitor", help="compare logged serving data with a pushed model's training data; "
                                       "exit 3 when retraining is due")
    p.add_argument("--serving-data", required=True, metavar="PATH",
                   help="logged requests: the payload logger's JSON lines (a file or a directory of them), "
                        "JSON lines of feature dicts, or a CSV with a header; no label")
    p.add_argument("--model", required=True, metavar="REGISTRY_URI/MODEL/vN",
                   help="the pushed version serving the requests (its statistics/, schema/, model_card.json)")
    p.add_argument("--previous", metavar="PATH",
                   help="the previous window, for drift: its logged data, or the statistics a monitor run "
                        "wrote for it")
    p.add_argument("--labels", metavar="FILE",
                   help="late labels: a CSV request_id,label[,index]; reports the online metric against the "
                        "model's test metric (concept drift)")
    p.add_argument("--metric-tolerance", type=float, default=0.05,
                   help="concept drift when the online metric is worse than the test metric by more than "
                        "this fraction across its 95%% interval (default 0.05)")
    p.add_argument("--root", help="where artifacts, metadata and reports go (default: the workspace the "
                                  "model was pushed from, ROOT/registry/<model>/vN -> ROOT; else runs/monitor)")
    p.add_argument("--retrain", metavar="DATA_PATTERN",
                   help="when retraining is due, run the lifecycle on this data (e.g. 'incoming/span-{SPAN}/*.csv')")
    p.add_argument("--host", help="with --retrain: submit the run to this KFP API endpoint instead")
    p.add_argument("--config", help="with --retrain: the data set configuration for the run")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="with --retrain: a pipeline parameter for the run")
    p.add_argument("--executor", choices=["process", "subprocess", "docker"], default="process",
                   help="how the monitor step runs (as in `kfx run`)")
    p.add_argument("--preload", default=monitor.PRELOAD, metavar="MODULE,...",
                   help=f"with --executor process: modules the fork server imports once (default {monitor.PRELOAD})")
    p.add_argument("--artifact-store", metavar="s3://BUCKET/PREFIX",
                   help="S3/MinIO artifact store (endpoint and keys from KFX_S3_ENDPOINT, AWS_* env)")
    p.add_argument("-v", "--verbose", action="store_true", help="stream the step's log")
    p.set_defaults(func=cmd_monitor)


