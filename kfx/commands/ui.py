"""kfx ui --root ROOT [--host 127.0.0.1] [--port N]: the read-only web UI. Flask is imported only
when the command runs, so registering it costs the other kfx commands nothing."""
from __future__ import annotations

from pathlib import Path

from kfx.errors import UsageError

DEFAULT_PORT = 8765


def cmd_ui(args) -> int:
    """The app on Werkzeug's threaded server (one user, one machine)."""
    if not Path(args.root).is_dir():   # an empty root is fine: runs appear as they start
        raise UsageError(f"--root {args.root}: no such directory")
    from kfx.ui.app import create_app
    app = create_app(args.root)
    print(f"kfx ui: http://{args.host}:{args.port}/ (root {Path(args.root).resolve()}; read-only; Ctrl-C stops)",
          flush=True)
    app.run(host=args.host, port=args.port, threaded=True, use_reloader=False, debug=False)
    return 0


def register(sub) -> None:
    p = sub.add_parser("ui", help="a read-only web UI over a root: runs, graphs, artifacts, models, drift")
    p.add_argument("--root", required=True)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.set_defaults(func=cmd_ui)
