"""python -m kfx_serving serve|sink ... (see kfx_serving/__init__.py)."""
from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kfx_serving", allow_abbrev=False)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve a registry version with KServe's ModelServer", allow_abbrev=False)
    s.add_argument("--model-dir", required=True, help="a registry version directory (saved_model/ + model_card.json)")
    s.add_argument("--model-name", default=None, help="endpoint name (default: model_card.json model_name)")
    port = os.environ.get("KFX_HTTP_PORT", "").strip() or "8080"
    if not port.isdigit() or not 0 < int(port) < 65536:
        ap.error(f"KFX_HTTP_PORT={port!r} is not a port number (1-65535)")
    s.add_argument("--http-port", type=int, default=int(port))
    s.add_argument("--log-url", default=os.environ.get("KFX_PAYLOAD_LOG_URL", ""),
                   help="payload sink URL: request/response CloudEvents are POSTed there")
    s.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", ""))
    k = sub.add_parser("sink", help="payload-log sink: CloudEvents in, JSON lines out", allow_abbrev=False)
    k.add_argument("--port", type=int, default=9090)
    k.add_argument("--host", default="127.0.0.1")
    k.add_argument("--out", required=True, help="directory or s3://bucket/prefix")
    k.add_argument("--flush-seconds", type=float, default=10.0)
    k.add_argument("--pair-timeout", type=float, default=60.0)
    args = ap.parse_args(argv)
    if args.cmd == "sink":
        from kfx_serving import sink
        sink.serve(args.port, args.out, host=args.host, flush_seconds=args.flush_seconds,
                   pair_timeout=args.pair_timeout)
        return 0
    # kserve.model_server parses sys.argv when imported: hand it only what it should see.
    sys.argv = [sys.argv[0], "--http_port", str(args.http_port), "--enable_grpc", "false"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import kserve
    from kserve.model_server import app
    from kfx_serving.model import KfxModel

    model = KfxModel(args.model_dir, name=args.model_name, payload_url=args.log_url, namespace=args.namespace)
    model.load()
    app.add_api_route("/kfx/metadata", lambda: model.metadata(), methods=["GET"])
    logging.getLogger("kfx_serving").info("serving %s %s on :%d", model.name, model.version, args.http_port)
    kserve.ModelServer(http_port=args.http_port, enable_grpc=False, workers=1,
                       enable_latency_logging=False).start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
