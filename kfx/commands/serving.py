"""kfx serve | rollout | predict: the command lines of the serving end (docs/serving.md). Arguments in,
one call into kfx.serving out; what serving does lives there.

    kfx serve   MODEL_URI [--port 8080] [--executor process|docker] [--log-url URL | --log-dir DIR]
    kfx rollout start MODEL_DIR --candidate vN [--current vM] --strategy canary|blue-green|shadow ...
    kfx rollout approve|reject|rollback|switch-back|status MODEL_DIR
    kfx rollout alias MODEL_DIR --set production=vN
    kfx rollout start ... --target kubernetes --namespace NS --isvc NAME   (KServe InferenceService)
    kfx predict --model MODEL_URI --data CSV --out DIR [--key COLUMN]

MODEL_URI is a registry version (`<registry_uri>/<model_name>/vN`), an alias
(`<registry_uri>/<model_name>@production`) or a model (its latest version); MODEL_DIR is
`<registry_uri>/<model_name>`.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys

from kfx.errors import UsageError
from kfx.serving import ServingError
from kfx.serving.rollout import STRATEGIES, LocalSetup, RolloutPolicy, parse_steps
from kfx.serving.servers import DEFAULT_IMAGE, EXECUTORS
from kfx_formats.payload_log import LABELS_FORMAT
from kfx_formats.registry import RegistryError


# ------------------------------------------------------------------ option types
# Checked when the command line is read: a bad value is one `error:` line naming the option.
def _above_zero(kind):
    """An argparse type: a number of `kind` above 0 (a rate, a batch size, a wait in seconds)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}")
        if not value > 0:       # NaN too
            raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
        return value
    return parse


def _port(text: str) -> int:
    if not text.strip().isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return int(text)


def _percentages(text: str) -> tuple:
    try:
        return parse_steps(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _names(text: str) -> tuple:
    """--replay-slices a,b: feature names."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated feature names, e.g. region,device")
    return names


def _version(option: str, text: str) -> int:
    """--candidate / --current / --set: 'vN' or 'N'."""
    number = text.strip().lstrip("v")
    if not number.isdigit() or int(number) < 1:
        raise UsageError(f"{option} {text!r}: expected a version, vN or N (e.g. v3)")
    return int(number)


def _role_urls(pairs) -> dict:
    """--attach current=http://127.0.0.1:P candidate=...: {role: URL}."""
    out = {}
    for pair in pairs or []:
        role, _, url = pair.partition("=")
        if role not in ("current", "candidate") or not url.rsplit(":", 1)[-1].split("/")[0].isdigit():
            raise UsageError(f"--attach {pair!r}: expected current=URL or candidate=URL with a port, "
                             "e.g. candidate=http://127.0.0.1:8081")
        out[role] = url
    return out


def _one_line(fn):
    """Serving failures (no such version, a server that would not start...) are one line and exit 1."""
    def run(args) -> int:
        try:
            return fn(args)
        except (ServingError, RegistryError) as err:
            print(f"kfx: {' '.join(str(err).split())}", file=sys.stderr)
            return 1
    return run


# ------------------------------------------------------------------ commands
def cmd_serve(args) -> int:
    from kfx.serving.registry import local_version
    from kfx.serving.servers import serve_until_stopped

    def _term(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _term)   # stop the server (and sink) we started, not only ourselves
    return serve_until_stopped(local_version(args.model), args.port, args.executor, image=args.image,
                               log_url=args.log_url, log_dir=args.log_dir, ready_timeout=args.ready_timeout)


def policy_from_args(args) -> RolloutPolicy:
    return RolloutPolicy(strategy=args.strategy, steps=args.steps, hold_seconds=args.hold,
                         max_error_rate=args.max_error_rate, max_p99_ms=args.max_p99_ms,
                         min_requests=args.min_requests, max_online_drop=args.max_online_drop,
                         min_labels=args.min_labels,
                         approve=args.approve, approve_timeout=args.approve_timeout,
                         replay=not args.skip_replay, replay_requests=args.replay_requests,
                         replay_tolerance=args.replay_tolerance, replay_slices=args.replay_slices)


def cmd_rollout(args) -> int:
    from kfx.serving import rollout, rollout_state
    from kfx_formats import registry
    if args.action == "start":
        if not args.candidate:
            raise UsageError("kfx rollout start needs --candidate vN")
        candidate = _version("--candidate", args.candidate)
        policy = policy_from_args(args)
        if args.target == "kubernetes":
            if not args.isvc or (args.strategy != "canary" and not args.virtual_service):
                raise UsageError("--target kubernetes needs --isvc (and --virtual-service for blue-green, shadow)")
            from kfx.serving.kubernetes import run_kubernetes_rollout
            from kfx.serving.contract_check import gate
            checked = gate(rollout.rollout_versions(args.model_dir, candidate), args.payload_log,
                           args.allow_contract_change)   # before the cluster is touched
            res = run_kubernetes_rollout(args.model_dir, candidate, policy, args.namespace, args.isvc,
                                         args.virtual_service, args.to, args.storage_uri, args.prometheus,
                                         labels=rollout.read_late_labels(args.labels) if args.labels else {},
                                         payload_log=args.payload_log)
            print(json.dumps({**res, "contract": checked}, indent=2))
            return 0 if res["decision"] not in ("rolled-back", "rejected-by-replay") else 1
        setup = LocalSetup(executor=args.executor, image=args.image, attach=_role_urls(args.attach),
                           log_url=args.log_url, port=args.port, ready_timeout=args.ready_timeout,
                           state_dir=args.state_dir, traffic_csv=args.traffic, rps=args.rps, batch=args.batch,
                           labels=args.labels, keep_running=args.keep_running, payload_log=args.payload_log,
                           allow_contract_change=args.allow_contract_change)
        current = _version("--current", args.current) if args.current else None
        state = rollout.run_local_rollout(args.model_dir, candidate, policy, current, setup)
        print(json.dumps({k: state.get(k) for k in ("id", "strategy", "current", "candidate", "status", "result",
                                                    "dir")}, indent=2, default=str))
        return 0 if rollout.succeeded(state) else 1
    if args.action == "status":
        latest = rollout_state.read_latest(args.model_dir) or {}
        print(json.dumps({"aliases": registry.aliases(args.model_dir),
                          "active": rollout_state.read_active(args.model_dir),
                          "latest": {k: latest[k] for k in ("id", "status", "result", "replay", "contract")
                                     if k in latest}}, indent=2))
        return 0
    if args.action == "alias":
        name, _, version = args.set.partition("=")
        if not name or not version:
            raise UsageError(f"kfx rollout alias MODEL_DIR --set NAME=vN (got {args.set!r}), e.g. production=v3")
        data = registry.set_alias(args.model_dir, name, _version("--set", version), by="kfx rollout alias")
        print(json.dumps(data, indent=2))
        return 0
    active = rollout_state.send_command(args.model_dir, args.action)
    print(json.dumps({"sent": args.action, "rollout": active["id"]}))
    return 0


def cmd_predict(args) -> int:
    from kfx.serving.batch import batch_predict
    print(json.dumps(batch_predict(args.model, args.data, args.out, key=args.key, batch_size=args.batch_size,
                                   runner=args.runner), indent=2))
    return 0


# ------------------------------------------------------------------ the parsers
def register(subparsers) -> None:
    """Add `serve`, `rollout` and `predict` to kfx's argparse subparsers (each sets `func`)."""
    p = subparsers.add_parser("serve", help="serve a registry version with KServe's model server (V1 + V2 REST)")
    p.add_argument("model", metavar="MODEL_URI", help="<registry_uri>/<model_name>/vN or <registry_uri>/<model_name>@alias")
    p.add_argument("--port", type=_port, default=8080)
    p.add_argument("--executor", choices=EXECUTORS, default="process")
    p.add_argument("--image", default=DEFAULT_IMAGE, help="serving image for --executor docker")
    p.add_argument("--log-url", default="", help="payload-log sink URL (CloudEvents)")
    p.add_argument("--log-dir", default="", help="start a kfx sink writing payload logs here (DIR or s3://...)")
    p.add_argument("--ready-timeout", type=_above_zero(float), default=180)
    p.set_defaults(func=_one_line(cmd_serve))

    d = RolloutPolicy()
    p = subparsers.add_parser("rollout", help="canary / blue-green / shadow rollout of a candidate version")
    p.add_argument("action", choices=("start", "approve", "reject", "rollback", "switch-back", "status", "alias"))
    p.add_argument("model_dir", metavar="MODEL_DIR", help="<registry_uri>/<model_name>")
    p.add_argument("--candidate", help="version to roll out (vN or N)")
    p.add_argument("--current", help="version now serving (default: the production alias)")
    p.add_argument("--strategy", choices=STRATEGIES, default=d.strategy)
    p.add_argument("--steps", type=_percentages, default=d.steps, help="canary: candidate traffic percentages")
    p.add_argument("--hold", type=_above_zero(float), default=d.hold_seconds,
                   help="seconds each step is held and watched")
    p.add_argument("--max-error-rate", type=float, default=d.max_error_rate)
    p.add_argument("--max-p99-ms", type=float, default=d.max_p99_ms)
    p.add_argument("--min-requests", type=_above_zero(int), default=d.min_requests,
                   help="requests a step needs before it can pass (watched up to 3 holds to get them)")
    p.add_argument("--labels", default="", metavar="CSV",
                   help=f"late labels for the online metric (AUC, accuracy or RMSE): {LABELS_FORMAT}")
    p.add_argument("--max-online-drop", type=float, default=d.max_online_drop,
                   help="how much worse (relative) the candidate's online metric may be than the current's")
    p.add_argument("--min-labels", type=_above_zero(int), default=d.min_labels,
                   help="labelled answers the online metric needs before it can fail a step")
    p.add_argument("--skip-replay", action="store_true",
                   help="do not replay logged requests through the candidate before the canary")
    p.add_argument("--replay-requests", type=_above_zero(int), default=d.replay_requests,
                   help="the newest logged requests replayed through the candidate offline")
    p.add_argument("--replay-tolerance", type=float, default=d.replay_tolerance,
                   help="how much worse (relative) the candidate may replay, overall or on a slice "
                        "(default: --max-online-drop)")
    p.add_argument("--replay-slices", type=_names, default=d.replay_slices, metavar="A,B",
                   help="features whose values are the replay's slices (default: the model card's)")
    p.add_argument("--payload-log", default="", metavar="PATH",
                   help="payload log (JSON lines, e.g. `kfx serve --log-dir`'s) of production's requests, "
                        "replayed and read for the fields clients send "
                        "(default: the payloads of earlier rollouts under MODEL_DIR/rollouts)")
    p.add_argument("--allow-contract-change", action="store_true",
                   help="roll out a candidate whose request contract breaks production's clients")
    p.add_argument("--approve", action="store_true", help="wait for `kfx rollout approve` before production")
    p.add_argument("--approve-timeout", type=_above_zero(float), default=d.approve_timeout)
    p.add_argument("--port", type=_port, default=0, help="nginx front port (default: a free one)")
    p.add_argument("--executor", choices=EXECUTORS, default="process")
    p.add_argument("--image", default=DEFAULT_IMAGE)
    p.add_argument("--attach", nargs="*", default=[], metavar="ROLE=URL",
                   help="use running servers: current=http://127.0.0.1:P candidate=...")
    p.add_argument("--log-url", default="", help="payload sink URL (default: a kfx sink under the rollout's dir)")
    p.add_argument("--traffic", default="", help="CSV replayed through the front as client traffic (local load)")
    p.add_argument("--rps", type=_above_zero(float), default=20)
    p.add_argument("--batch", type=_above_zero(int), default=1)
    p.add_argument("--keep-running", action="store_true", help="keep the front and servers up after the decision")
    p.add_argument("--state-dir", default=None)
    p.add_argument("--ready-timeout", type=_above_zero(float), default=180)
    p.add_argument("--set", default="", help="alias: NAME=vN")
    p.add_argument("--target", choices=("local", "kubernetes"), default="local")
    p.add_argument("--namespace", default="kfx-serving")
    p.add_argument("--isvc", default="", help="kubernetes: InferenceService name")
    p.add_argument("--virtual-service", default="", help="kubernetes: VirtualService (blue-green, shadow)")
    p.add_argument("--to", default="", help="kubernetes blue-green: blue or green")
    p.add_argument("--storage-uri", default="")
    p.add_argument("--prometheus", default="http://prometheus.istio-system:9090")
    p.set_defaults(func=_one_line(cmd_rollout))

    p = subparsers.add_parser("predict", help="batch-score a table with a registry version (Beam)")
    p.add_argument("--model", required=True, metavar="MODEL_URI")
    p.add_argument("--data", required=True, help="CSV with the raw feature columns")
    p.add_argument("--out", required=True)
    p.add_argument("--key", default=None, help="column written beside each prediction (default: row number)")
    p.add_argument("--batch-size", type=_above_zero(int), default=256)
    p.add_argument("--runner", default="DirectRunner")
    p.set_defaults(func=_one_line(cmd_predict))
