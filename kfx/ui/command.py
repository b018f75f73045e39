"""`kfx ui --root ROOT [--host 127.0.0.1] [--port N]`: the command. Flask is imported only when
the command runs, so registering it costs the other kfx commands nothing."""
from __future__ import annotations

from pathlib import Path

DEFAULT_PORT = 8765


def serve(root: str, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """`kfx ui`: the app on Werkzeug's threaded server (one user, one machine)."""
    if not Path(root).is_dir():   # an empty root is fine: runs appear as they start
        from kfx.cli import UsageError
        raise UsageError(f"--root {root}: no such directory")
    from kfx.ui.app import create_app
    app = create_app(root)
    print(f"kfx ui: http://{host}:{port}/ (root {Path(root).resolve()}; read-only; Ctrl-C stops)", flush=True)
    app.run(host=host, port=port, threaded=True, use_reloader=False, debug=False)


def add_command(subparsers) -> None:
    p = subparsers.add_parser("ui", help="a read-only web UI over a root: runs, graphs, artifacts, models, drift")
    p.add_argument("--root", required=True)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.set_defaults(func=lambda args: serve(args.root, args.host, args.port) or 0)

