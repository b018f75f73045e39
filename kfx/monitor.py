"""kfx monitor: is a pushed model still seeing the data it was trained on?

    kfx monitor --serving-data PATH --model REGISTRY_URI/MODEL/vN [--previous PATH] [--labels FILE]
                [--root DIR] [--retrain DATA_PATTERN [--host URL] [--config FILE] [--param NAME=VALUE]]

Compiles the monitor pipeline (pipelines/monitor.py: import the serving window
and the registry version, run the monitor stage) and runs its IR with kfx's
runner, as `kfx run` does: MLMD lineage in ROOT/metadata.sqlite, the step's log
and the run report under ROOT/runs/<run>/. The stage (components/monitor)
compares the window with the version's training statistics and schema (TFDV:
skew, drift against --previous, missing features; columns the model does not use are
listed, not compared) and, with --labels, the logged predictions with late labels (concept drift).

Exit codes: 0 all is well; 3 retraining is due (one line names the features);
1 the monitor failed (one `error:` line); 2 a usage error (one `error:` line).
With --retrain, a due retraining starts `kfx run` on DATA_PATTERN (on this
machine, into the same --root) or, with --host, submits that run to KFP; the
exit code is then 3 when the retraining run was started (locally: completed),
1 when it failed.

Platform code: imports no kfx_components (stage) module; kfx_pipelines only to
compile, as kfx/cli.py does.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_RETRAIN = 0, 1, 2, 3
TASK = "monitor"
# What a registry version must hold for the monitor (push publishes them with the model).
TRAIN_STATISTICS = "statistics/train/FeatureStats.pb"
SCHEMA = "schema/schema.pbtxt"
MODEL_CARD = "model_card.json"
_VERSION_RE = re.compile(r"^v[1-9][0-9]*$")
# The monitor step needs TFDV (and what it imports); the fork server imports only that.
PRELOAD = "tensorflow_data_validation"


def UsageError(message: str) -> Exception:   # noqa: N802 - raised like a class
    """kfx's usage error (kfx.cli.UsageError: exit 2 with one `error:` line), imported when raised
    (kfx.cli imports this module to register the command)."""
    from kfx.cli import UsageError as CliUsageError
    return CliUsageError(message)


def _is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def _local(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri


def _existing(flag: str, value: Optional[str], what: str) -> str:
    """The absolute path of a local input (or a remote URI as is); a usage error naming it when absent."""
    if not value:
        return ""
    if _is_remote(value):
        return value
    path = Path(_local(value)).expanduser()
    if not path.exists():
        raise UsageError(f"{flag} {value}: no such file or directory ({what})")
    return str(path.resolve())


def check_model(value: str) -> str:
    """A registry version `<registry_uri>/<model_name>/vN` holding training statistics and a schema."""
    if _is_remote(value):
        if not _VERSION_RE.match(value.rstrip("/").rsplit("/", 1)[-1]):
            raise UsageError(f"--model {value}: expected a registry version <registry_uri>/<model_name>/vN")
        return value.rstrip("/")
    path = Path(_local(value)).expanduser().resolve()
    if not path.is_dir():
        raise UsageError(f"--model {value}: no such registry version directory "
                         "(expected <registry_uri>/<model_name>/vN)")
    if not _VERSION_RE.match(path.name):
        raise UsageError(f"--model {value}: {path.name!r} is not a version; name one: "
                         f"{path}/v1, or see `ls {path}`")
    for rel, what in ((TRAIN_STATISTICS, "the training statistics"), (SCHEMA, "the schema")):
        if not (path / rel).is_file():
            raise UsageError(f"--model {value}: {path / rel} not found ({what} the model was trained with); "
                             "this version was pushed without them: push it again with a kfx whose push "
                             "publishes statistics/ and schema/")
    return str(path)


def default_root(model: str) -> str:
    """The workspace the model was pushed from (ROOT/registry/<model>/vN -> ROOT), else runs/monitor."""
    if not _is_remote(model):
        version = Path(model)
        if version.parent.parent.name == "registry":
            return str(version.parent.parent.parent)
    return "runs/monitor"


def compile_ir(output: str, profile: str = "local", defaults: Optional[dict] = None) -> str:
    from kfx_pipelines.monitor import compile_pipeline   # the one place this module sees pipelines
    return compile_pipeline(output, profile=profile, defaults=defaults)


def retrain_command(args, model: str) -> List[str]:
    """The `kfx run` (or `kfx submit`, with --host) command line that retrains on DATA_PATTERN."""
    registry_uri, model_name = model.rstrip("/").rsplit("/", 2)[0], model.rstrip("/").rsplit("/", 2)[1]
    cmd = [sys.executable, "-m", "kfx.cli"]
    if args.host:
        cmd += ["submit", "--host", args.host, "--version", "monitor-{digest}"]
    else:
        cmd += ["run", "--root", str(Path(args.root).resolve())]
    cmd += ["--data", args.retrain]
    if args.config:
        cmd += ["--config", args.config]
    given = {p.partition("=")[0] for p in args.param or []}
    for p in args.param or []:
        cmd += ["--param", p]
    # The retrained model goes where the monitored one came from.
    if "model_name" not in given:
        cmd += ["--param", f"model_name={model_name}"]
    if "registry_uri" not in given:
        cmd += ["--param", f"registry_uri={registry_uri}"]
    return cmd


def due_line(verdict: dict) -> str:
    """`retraining due: <feature> (skew), <feature> (new values), concept drift (...)` - one line."""
    kinds = {}
    for key, word in (("skewed", "skew"), ("drifted", "drift"), ("missing_features", "missing"),
                      ("schema_anomalies", "schema")):
        for feature in verdict.get(key) or []:
            kinds.setdefault(feature, []).append(word)
    parts = [f"{f} ({', '.join(kinds.get(f, ['anomaly']))})" for f in verdict.get("features") or []]
    if verdict.get("concept_drift"):
        online = verdict.get("online") or {}
        detail = (f" ({online['metric']} {online['value']:.3f} online vs {online['reference']:.3f} on test)"
                  if online.get("value") is not None and online.get("reference") is not None else "")
        parts.append(f"concept drift{detail}")
    return "retraining due: " + ", ".join(parts)


def cmd_monitor(args) -> int:
    from kfx import ir, report
    from kfx.runner import Runner, Workspace

    if args.host and not args.retrain:
        raise UsageError("--host submits the retraining run: it needs --retrain DATA_PATTERN")
    if not 0 <= args.metric_tolerance < 1:
        raise UsageError(f"--metric-tolerance {args.metric_tolerance}: expected a fraction in [0, 1)")
    model = check_model(args.model)
    params = {
        "serving_data_uri": _existing("--serving-data", args.serving_data,
                                      "logged requests: payload-log JSON lines, or a CSV"),
        "model_uri": model,
        "previous_uri": _existing("--previous", args.previous, "the previous window's data or statistics"),
        "labels_uri": _existing("--labels", args.labels, "a CSV of request_id,label"),
        "metric_tolerance": args.metric_tolerance,
    }
    args.root = args.root or default_root(model)
    ws = Workspace(args.root)
    from kfx.cli import make_launcher, make_store
    store = make_store(args.artifact_store)
    with tempfile.TemporaryDirectory() as tmp:
        ir_path = compile_ir(str(Path(tmp) / "monitor.yaml"))
        pipeline = ir.load(ir_path)
        runner = Runner(ws, store=store, launcher=make_launcher(args.executor, pipeline, args.preload),
                        cache=True, verbose=args.verbose)
        result = runner.run(ir_path, params)
    report.write(result, result.run_dir / "report.html")
    if result.state != "COMPLETE":
        if args.verbose:
            print(f"run {result.run_id} FAILED: {result.error}", file=sys.stderr)
        print(f"error: {result.error_line}", file=sys.stderr)
        return EXIT_FAILED
    outputs = result.steps[TASK].outputs
    verdict = dict(outputs["anomalies"].metadata)
    page = outputs["report"].uri
    if "://" not in page and Path(page).is_file():   # an .html name, so a browser renders it
        import shutil
        page = shutil.copyfile(page, result.run_dir / "monitor.html")
    print(f"report: {page}")
    print(f"statistics of this window (--previous for the next one): {outputs['statistics'].uri}")
    for warning in verdict.get("warnings") or []:
        print(f"warning: {warning}", file=sys.stderr)
    if not verdict.get("retrain"):
        print(f"all is well: {verdict.get('rows', '?')} serving instances match {verdict.get('model', model)}")
        return EXIT_OK
    for reason in verdict.get("reasons") or []:
        print(f"  {reason}")
    print(due_line(verdict))
    if not args.retrain:
        return EXIT_RETRAIN
    cmd = retrain_command(args, model)
    print(f"retraining: {' '.join(cmd[1:])}", flush=True)
    code = subprocess.call(cmd)
    if code != 0:
        print(f"error: the retraining run failed (exit code {code}); see its output above", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_RETRAIN


def add_arguments(p: argparse.ArgumentParser) -> None:
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
                   help="when retraining is due, start `kfx run` on this data (e.g. 'incoming/span-{SPAN}/*.csv')")
    p.add_argument("--host", help="with --retrain: submit the run to this KFP API endpoint instead")
    p.add_argument("--config", help="with --retrain: the data set configuration for the run")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="with --retrain: a pipeline parameter for the run")
    p.add_argument("--executor", choices=["process", "subprocess", "docker"], default="process",
                   help="how the monitor step runs (as in `kfx run`)")
    p.add_argument("--preload", default=PRELOAD, metavar="MODULE,...",
                   help=f"with --executor process: modules the fork server imports once (default {PRELOAD})")
    p.add_argument("--artifact-store", metavar="s3://BUCKET/PREFIX",
                   help="S3/MinIO artifact store (endpoint and keys from KFX_S3_ENDPOINT, AWS_* env)")
    p.add_argument("-v", "--verbose", action="store_true", help="stream the step's log")


def add_commands(subparsers) -> None:
    """Registers `kfx monitor` on kfx's subcommands (kfx/cli.py build_parser)."""
    p = subparsers.add_parser("monitor", help="compare logged serving data with a pushed model's training data; "
                                              "exit 3 when retraining is due")
    add_arguments(p)
    p.set_defaults(func=cmd_monitor)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="kfx monitor", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    from kfx.cli import UsageError as CliUsageError
    from kfx.ir import IRError
    try:
        return cmd_monitor(args)
    except (CliUsageError, IRError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)   # one line
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
