"""kfx: compile, run, trace and submit the lifecycle pipeline.

    kfx compile [--config FILE] [--profile cpu|gpu|tpu] [-o pipeline.yaml]
    kfx run     [--config FILE] --data CSV|PATTERN-WITH-{SPAN} --label COL|EXPR --task binary --root DIR
    kfx lineage URI --root DIR
    kfx history --root DIR
    kfx schema export --root DIR -o schema.pbtxt
    kfx submit  --host URL --ir pipeline.yaml ...
    kfx serve | rollout | predict | monitor | gc    (see each command's --help)
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Optional

import yaml

from kfx import spans
from kfx.params import parse_params

EXIT_FAILED, EXIT_USAGE = 1, 2

# Config keys that are not pipeline parameters under the same name.
_CONFIG_ALIASES = {"data": "data_uri", "schema": "schema_uri"}


class UsageError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    """A bad option (a missing one, a number that is none, an unknown choice) is one `error:`
    line and exit 2, as every other refusal, instead of argparse's usage block."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def load_config(path: Optional[str]) -> dict:
    """A data set's configuration as pipeline parameters; paths resolved against the file."""
    if not path:
        return {}
    config_path = Path(path)
    try:
        raw = yaml.safe_load(config_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise UsageError(f"--config {path}: {err}") from err
    if not isinstance(raw, dict):
        raise UsageError(f"--config {path}: expected a mapping of parameter names to values")
    params = {_CONFIG_ALIASES.get(k, k): v for k, v in raw.items()}
    for key in ("data_uri", "schema_uri"):
        if key in params and "://" not in str(params[key]):
            params[key] = str((config_path.parent / params[key]).resolve())
    return params


def pipeline_parameters(args, strings=()) -> dict:
    """The run's parameters from --config, --data/--label/--task and --param; `strings`: the
    pipeline's STRING parameters, whose --param text is taken verbatim."""
    params = load_config(args.config)
    for flag, name in (("data", "data_uri"), ("label", "label"), ("task", "problem_type")):
        value = getattr(args, flag, None)
        if value is not None:
            params[name] = str(Path(value).resolve()) if flag == "data" and "://" not in value else value
    try:
        params.update(parse_params(args.param, strings))
    except ValueError as err:
        raise UsageError(str(err)) from err
    data = params.get("data_uri", "")
    if spans.is_pattern(str(data)):   # a new span is a new input: resolve it before anything is imported
        try:
            found = spans.resolve(str(data), params.get("span"))
        except spans.SpanError as err:
            raise UsageError(str(err)) from err
        params.update(data_uri=found.path, span=found.span)
    elif getattr(args, "data", None) and "://" not in args.data and not Path(args.data).exists():
        raise UsageError(f"--data {args.data}: no such file")
    return params


def check_parameters(params: dict, known) -> None:
    """A misspelt --param or config key is an error, never silently dropped."""
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise UsageError(f"unknown pipeline parameter(s) {unknown}; the pipeline takes: {', '.join(sorted(known))}")


def compile_ir(output: str, profile: str, params: dict, as_defaults: bool = False) -> str:
    """Compiles the pipeline; with `as_defaults`, `params` become the IR's parameter defaults."""
    from kfx_pipelines.tabular import build_pipeline, compile_pipeline   # the one place the platform sees pipelines
    if as_defaults:   # written into the IR: every name must be one of the pipeline's parameters
        check_parameters(params, build_pipeline(profile).component_spec.inputs)
    return compile_pipeline(output, profile=profile, defaults=params if as_defaults else None)


# ---------------------------------------------------------------- commands
def cmd_compile(args) -> int:
    from kfx_pipelines.tabular import build_pipeline
    inputs = build_pipeline(args.profile).component_spec.inputs
    params = pipeline_parameters(args, {name for name, spec in inputs.items() if spec.type == "String"})
    compile_ir(args.output, args.profile, params, as_defaults=True)
    print(args.output)
    return 0


def cmd_run(args) -> int:
    from kfx import ir, report
    from kfx.runner import Runner, Workspace

    ws = Workspace(args.root)
    store = make_store(args.artifact_store)
    registry = f"{store.root_uri.rstrip('/')}/registry" if store else str(ws.registry)
    with tempfile.TemporaryDirectory() as tmp:
        ir_path = args.ir or compile_ir(str(Path(tmp) / "pipeline.yaml"), args.profile, {})
        pipeline = ir.load(ir_path)
        params = pipeline_parameters(args, ir.string_parameters(pipeline.parameters))
        missing = [f"--{f}" for f, k in (("data", "data_uri"), ("label", "label")) if k not in params]
        if missing and not args.ir:
            raise UsageError(f"kfx run needs {' and '.join(missing)} (or a --config that sets them)")
        if "registry_uri" in pipeline.parameters:   # a pipeline that pushes: the workspace's registry
            params.setdefault("registry_uri", registry)
        check_parameters(params, pipeline.parameters)
        runner = Runner(ws, store=store, launcher=make_launcher(args.executor, pipeline, args.preload),
                        cache=not args.no_cache, parallelism=args.parallelism, verbose=args.verbose)
        result = runner.run(ir_path, params)
    page = report.write(result, result.run_dir / "report.html")
    print(f"report: {page}")
    if result.state != "COMPLETE":
        if args.verbose:   # the log tail and where a failed step's outputs are kept
            print(f"run {result.run_id} FAILED: {result.error}", file=sys.stderr)
        print(f"error: {result.error_line}", file=sys.stderr)
        return EXIT_FAILED
    states = [s.state for s in result.steps.values()]
    skipped = f", {states.count('SKIPPED')} skipped" if "SKIPPED" in states else ""
    print(f"run {result.run_id} COMPLETE in {result.seconds:.1f}s "
          f"({states.count('CACHED')} of {len(states)} steps cached{skipped})")
    for line in report.outcome_lines(result):
        print(line)
    return 0


def cmd_history(args) -> int:
    rows = spans.history(args.root)
    print(json.dumps(rows, indent=2, default=str) if args.json else spans.render(rows))
    return 0


def cmd_schema_export(args) -> int:
    """The schema a run validated with (the newest, or the given run's), for a person to curate."""
    from kfx.metadata import RUN_CONTEXT, MetadataStore
    md = MetadataStore(str(Path(args.root) / "metadata.sqlite"))
    runs = sorted(md.store.get_contexts_by_type(RUN_CONTEXT), key=lambda c: c.id)
    if args.run:
        runs = [c for c in runs if c.name == args.run]
    for ctx in reversed(runs):
        schemas = [a for a in md.store.get_artifacts_by_context(ctx.id) if md.type_name(a) == "system.Schema"]
        if schemas:
            source = Path(schemas[-1].uri) / "schema.pbtxt"
            Path(args.output).write_text(f"# kfx schema exported from run {ctx.name} ({source})\n"
                                         + source.read_text())
            print(args.output)
            return 0
    raise UsageError(f"--root {args.root}: no run{' ' + args.run if args.run else ''} with a schema")


def make_store(uri: Optional[str]):
    """None means the embedded default (a directory under --root)."""
    if not uri:
        return None
    if not uri.startswith("s3://"):
        raise UsageError(f"--artifact-store {uri}: expected s3://BUCKET/PREFIX")
    from kfx.s3 import S3ConfigError, S3Store, S3Unavailable
    try:
        return S3Store(uri)
    except (S3ConfigError, S3Unavailable) as err:
        raise UsageError(f"--artifact-store {uri}: {err}") from err


def make_launcher(name: str, pipeline, preload: Optional[str]):
    """`preload` None: what the pipeline's steps import (kfx.forkserver.preload_for)."""
    if name == "process":
        from kfx.forkserver import ForkServerLauncher, preload_for
        if preload is None:
            return ForkServerLauncher(preload_for(t for t in pipeline.tasks.values() if not t.is_importer))
        return ForkServerLauncher([m.strip() for m in preload.split(",") if m.strip()])
    if name == "subprocess":
        from kfx.launchers import SubprocessLauncher
        return SubprocessLauncher()
    from kfx.docker_launcher import DockerLauncher, image_exists
    try:
        launcher = DockerLauncher()
    except Exception as err:  # docker.errors.DockerException: no engine
        raise UsageError(f"--executor docker: no Docker engine ({err}); start one with scripts/docker-engine.sh") from err
    images = sorted({t.container["image"] for t in pipeline.tasks.values() if not t.is_importer})
    missing = [i for i in images if not image_exists(launcher.client, i)]
    if missing:
        raise UsageError(f"--executor docker: image(s) {missing} not built; run `make images`")
    return launcher


def cmd_lineage(args) -> int:
    from kfx import lineage
    from kfx.metadata import MetadataStore
    from kfx.runner import Workspace

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


def cmd_submit(args) -> int:
    from kfx import ir
    from kfx.submit import submit
    with tempfile.TemporaryDirectory() as tmp:
        ir_path = args.ir or compile_ir(str(Path(tmp) / "pipeline.yaml"), args.profile, {})
        pipeline = ir.load(ir_path)
        params = pipeline_parameters(args, ir.string_parameters(pipeline.parameters))
        check_parameters(params, pipeline.parameters)
        ids = submit(ir_path, host=args.host, pipeline_name=args.pipeline_name,
                     version_name=args.version, experiment=args.experiment, run_name=args.run_name,
                     params=params,
                     namespace=args.namespace, recurring_cron=args.cron,
                     service_account=args.service_account)
    print(json.dumps(ids, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kfx", description="The ML lifecycle as a KFP pipeline.")
    sub = parser.add_subparsers(dest="command", required=True)

    def pipeline_args(p, profile_default):
        p.add_argument("--config", help="data set configuration YAML (e.g. pipelines/configs/chicago_taxi.yaml)")
        p.add_argument("--data", help="CSV or Parquet file")
        p.add_argument("--label", help="label column, or a pandas expression such as 'amount > 100'")
        p.add_argument("--task", choices=["binary", "multiclass", "regression"], help="problem type")
        p.add_argument("--param", action="append", metavar="NAME=VALUE", help="any pipeline parameter")
        p.add_argument("--profile", default=profile_default,
                       help=f"placement profile: local, cpu, gpu, tpu (default {profile_default})")

    p = sub.add_parser("compile", help="compile the pipeline to KFP IR YAML")
    pipeline_args(p, "cpu")
    p.add_argument("-o", "--output", default="pipeline.yaml")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", help="run the compiled pipeline on this machine")
    pipeline_args(p, "local")
    p.add_argument("--root", required=True, help="where artifacts, metadata and run reports go")
    p.add_argument("--ir", help="run this compiled IR instead of compiling the bundled pipeline")
    p.add_argument("--executor", choices=["process", "subprocess", "docker"], default="process",
                   help="each step as a process forked from a server that imported the libraries once "
                        "(default), as a fresh interpreter, or in its stage's container")
    from kfx.forkserver import TF_STACK
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
    pipeline_args(p, profile_default="gpu")
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

    # The serving end of the loop and the monitor: kfx serve | rollout | predict, kfx monitor.
    from kfx import gc, monitor, serving
    serving.add_commands(sub)
    monitor.add_commands(sub)
    gc.add_commands(sub)   # retention: old runs, failed-step folders, resume state, unpinned versions
    from kfx.ui.command import add_command as add_ui_command
    add_ui_command(sub)   # kfx ui: the web UI over a root
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from kfx.ir import IRError
    from kfx.lineage import LineageError
    from kfx.s3 import S3ConfigError   # a KFX_S3_* setting read by any command (serve, gc, monitor...)
    try:
        return args.func(args)
    except (UsageError, IRError, LineageError, S3ConfigError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)   # one line
        return EXIT_USAGE
    except Exception as err:
        from kfx.submit import SubmitError   # light: no kfp import until a submission is made
        if not isinstance(err, SubmitError):
            raise
        print(f"kfx submit: {err}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
