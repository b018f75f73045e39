"""The pipeline commands: kfx compile | run | submit | lineage | history | schema export."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from kfx import bundled
from kfx.errors import UsageError

EXIT_FAILED = 1


def _pipeline_arguments(p, profile_default: str) -> None:
    p.add_argument("--config", help="data set configuration YAML (e.g. pipelines/configs/chicago_taxi.yaml)")
    p.add_argument("--data", help="CSV or Parquet file")
    p.add_argument("--label", help="label column, or a pandas expression such as 'amount > 100'")
    p.add_argument("--task", choices=["binary", "multiclass", "regression"], help="problem type")
    p.add_argument("--param", action="append", metavar="NAME=VALUE", help="any pipeline parameter")
    p.add_argument("--train-spans", type=int, metavar="K",
                   help="with --data PATTERN-WITH-{SPAN}: train on a window of the K spans before the newest, "
                        "which is held out as the temporal backtest (config key train_spans)")
    p.add_argument("--no-backtest", action="store_true",
                   help="with --train-spans: train on the newest K spans, holding none out "
                        "(config key temporal_backtest: false)")
    p.add_argument("--profile", default=profile_default,
                   help=f"placement profile: local, cpu, gpu, tpu (default {profile_default})")


def _ir_and_parameters(args, tmp: str):
    """(IR path, loaded pipeline, parameters from the command line): --ir, or the bundled
    lifecycle compiled into `tmp`."""
    from kfx.runner import ir
    ir_path = args.ir or bundled.compile_lifecycle(str(Path(tmp) / "pipeline.yaml"), args.profile)
    pipeline = ir.load(ir_path)
    return ir_path, pipeline, _parameters(args, ir.string_parameters(pipeline.parameters))


def _parameters(args, strings) -> dict:
    """The run's parameters from the command line; `strings`: the pipeline's STRING parameters."""
    from kfx.runner.params import run_parameters
    return run_parameters(args.config, args.data, args.label, args.task, args.param, strings,
                          train_spans=args.train_spans, backtest=False if args.no_backtest else None)


def cmd_compile(args) -> int:
    from kfx.runner import ir
    params = _parameters(args, ir.string_parameters(bundled.lifecycle_parameters(args.profile)))
    bundled.compile_lifecycle(args.output, args.profile, params)
    print(args.output)
    return 0


def cmd_run(args) -> int:
    from kfx.runner.execute import default_registry, run_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        ir_path, pipeline, params = _ir_and_parameters(args, tmp)
        missing = [f"--{f}" for f, k in (("data", "data_uri"), ("label", "label")) if k not in params]
        if missing and not args.ir:
            raise UsageError(f"kfx run needs {' and '.join(missing)} (or a --config that sets them)")
        if "registry_uri" in pipeline.parameters:   # a pipeline that pushes: the workspace's registry
            params.setdefault("registry_uri", default_registry(args.root, args.artifact_store))
        bundled.check_parameters(params, pipeline.parameters)
        result = run_pipeline(ir_path, params, args.root, artifact_store=args.artifact_store,
                              executor=args.executor, preload=args.preload, cache=not args.no_cache,
                              parallelism=args.parallelism, verbose=args.verbose)
    return show_result(result, args.verbose)


def show_result(result, verbose: bool = False) -> int:
    """A finished lifecycle run as `kfx run` shows it: its report, its state and its outcome lines."""
    from kfx import report
    from kfx.runner import outcome
    page = report.write(result, result.run_dir / "report.html")
    print(f"report: {page}")
    if result.state != "COMPLETE":
        if verbose:   # the log tail and where a failed step's outputs are kept
            print(f"run {result.run_id} FAILED: {result.error}", file=sys.stderr)
        print(f"error: {result.error_line}", file=sys.stderr)
        return EXIT_FAILED
    states = [s.state for s in result.steps.values()]
    skipped = f", {states.count('SKIPPED')} skipped" if "SKIPPED" in states else ""
    print(f"run {result.run_id} COMPLETE in {result.seconds:.1f}s "
          f"({states.count('CACHED')} of {len(states)} steps cached{skipped})")
    for line in outcome.outcome_lines(result):
        print(line)
    return 0


def cmd_submit(args) -> int:
    from kfx.submit import submit
    with tempfile.TemporaryDirectory() as tmp:
        ir_path, pipeline, params = _ir_and_parameters(args, tmp)
        bundled.check_parameters(params, pipeline.parameters)
        ids = submit(ir_path, host=args.host, pipeline_name=args.pipeline_name,
                     version_name=args.version, experiment=args.experiment, run_name=args.run_name,
                     params=params, namespace=args.namespace, recurring_cron=args.cron,
                     service_account=args.service_account)
    print(json.dumps(ids, indent=2))
    return 0


def cmd_lineage(args) -> int:
    from kfx.runner.run_context import Workspace
    from kfx.stores import lineage
    from kfx.stores.metadata import MetadataStore

    ws = Workspace(args.root)
    if not ws.metadata_path.exists():
        raise UsageError(f"--root {args.root}: no metadata store at {ws.metadata_path}")
    tree = lineage.trace(MetadataStore(str(ws.metadata_path)), args.uri)
    if args.json:
        import dataclasses
        print(json.dumps(dataclasses.asdict(tree), indent=2))
    else:
        print(lineage.render(tree))
    return 0


def cmd_history(args) -> int:
    from kfx.runner import spans
    rows = spans.history(args.root)
    print(json.dumps(rows, indent=2, default=str) if args.json else spans.render(rows))
    return 0


def cmd_schema_export(args) -> int:
    """The schema a run validated with (the newest, or the given run's), for a person to curate."""
    from kfx.stores.lineage import run_schema
    from kfx.stores.metadata import MetadataStore
    found = run_schema(MetadataStore(str(Path(args.root) / "metadata.sqlite")), args.run)
    if not found:
        raise UsageError(f"--root {args.root}: no run{' ' + args.run if args.run else ''} with a schema")
    run, source = found
    Path(args.output).write_text(f"# kfx schema exported from run {run} ({source})\n" + source.read_text())
    print(args.output)
    return 0


def register(sub) -> None:
    p = sub.add_parser("compile", help="compile the pipeline to KFP IR YAML")
    _pipeline_arguments(p, "cpu")
    p.add_argument("-o", "--output", default="pipeline.yaml")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", help="run the compiled pipeline on this machine")
    _pipeline_arguments(p, "local")
    p.add_argument("--root", required=True, help="where artifacts, metadata and run reports go")
    p.add_argument("--ir", help="run this compiled IR instead of compiling the bundled pipeline")
    p.add_argument("--executor", choices=["process", "subprocess", "docker"], default="process",
                   help="each step as a process forked from a server that imported the libraries once "
                        "(default), as a fresh interpreter, or in its stage's container")
    from kfx.runner.preload import TF_STACK
    p.add_argument("--preload", default=None, metavar="MODULE,...",
                   help="with --executor process: modules the fork server imports once for every step "
                        f"(default: {','.join(TF_STACK)} when a step refers to kfx's stages or TensorFlow's "
                        "libraries, else none; '' for none; a module not installed is skipped)")
    p.add_argument("--artifact-store", metavar="s3://BUCKET/PREFIX",
                   help="S3/MinIO artifact store (endpoint and keys from KFX_S3_ENDPOINT, AWS_* env)")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--parallelism", type=int, default=1, help="steps run at once")
    p.add_argument("-v", "--verbose", action="store_true", help="stream every step's log")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("lineage", help="trace an artifact back to the ingested data")
    p.add_argument("uri")
    p.add_argument("--root", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lineage)

    p = sub.add_parser("submit", help="upload a pipeline version and start a run on a KFP cluster")
    _pipeline_arguments(p, profile_default="gpu")
    p.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8888")
    p.add_argument("--ir")
    p.add_argument("--pipeline-name", default="kfx-tabular")
    p.add_argument("--version", required=True)
    p.add_argument("--experiment", default="kfx")
    p.add_argument("--run-name", default=None)
    p.add_argument("--namespace", default=None)
    p.add_argument("--cron", default=None,
                   help="instead of one run, create (or move to this version) a recurring run; "
                        "6-field KFP cron, e.g. '0 0 3 * * *'")
    from kfx.submit import DEFAULT_SERVICE_ACCOUNT
    p.add_argument("--service-account", default=DEFAULT_SERVICE_ACCOUNT,
                   help="the least-privilege account runs execute as")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("history", help="the runs of a root over their spans: rows, drift, metric, outcome")
    p.add_argument("--root", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("schema", help="kfx schema export: the schema a run validated with, to curate")
    p.add_argument("action", choices=["export"])
    p.add_argument("--root", required=True)
    p.add_argument("--run", help="that run's schema (default: the newest run's)")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=cmd_schema_export)
