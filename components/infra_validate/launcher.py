"""Where infra validation finds the serving runtime (serving/kfx_serving) and how it runs it.

One model server on a loopback port, in the first of (docs/serving.md, "Infra validation"):

  docker   the serve image (``{registry}/kfx-serve:{tag}``, as ``kfx serve --executor docker`` runs it:
           non-root, read-only root, the model mounted read-only, host network on 127.0.0.1)
           when a Docker engine answers and the image exists;
  process  the serving venv's python (``KFX_SERVING_PYTHON``, else ``.venv-serving`` of the checkout),
           which is also how the kfx-infra-validate image carries it on a cluster;
  step     the step's own python, when it can import ``kfx_serving``.

The platform's launcher (kfx/serving/servers.py) is not imported: stages never import kfx.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Tuple

from kfx_components.images import stage_image

RUNTIMES = ("docker", "process", "step")
MODEL_NAME = "candidate"
INSTALL_HINT = ("no serving runtime for infra validation: build the serve image (`make serving-image`) "
                "or the serving venv (`make serving-venv`, or set KFX_SERVING_PYTHON)")


EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception)\b: ")


class ServerDidNotLoad(Exception):
    """The server exited or never became ready; the message is one line."""


@dataclass(frozen=True)
class Runtime:
    kind: str     # docker | process | step
    where: str    # the image, or the python that runs kfx_serving

    def describe(self) -> str:
        return f"{self.kind} {self.where}"


def serve_image() -> str:
    return os.environ.get("KFX_SERVE_IMAGE") or stage_image("serve")


def _serving_venv_python() -> str:
    named = os.environ.get("KFX_SERVING_PYTHON", "")
    if named:
        return named
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = root / ".venv-serving" / "bin" / "python"
        if candidate.exists():
            return str(candidate)
    return ""


def _docker_image_present(image: str) -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "image", "inspect", image], capture_output=True,
                              timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_runtime(prefer: str = "auto") -> Runtime:
    """The runtime to serve with: `prefer` (docker | process | step) or the first present ("auto").
    A RuntimeError naming what to install when there is none."""
    if prefer not in ("auto", *RUNTIMES):
        raise ValueError(f"runtime={prefer!r}: auto, docker, process or step")
    image, venv = serve_image(), _serving_venv_python()
    found = {
        "docker": lambda: Runtime("docker", image) if _docker_image_present(image) else None,
        "process": lambda: Runtime("process", venv) if venv and os.path.exists(venv) else None,
        "step": lambda: Runtime("step", sys.executable) if importlib.util.find_spec("kfx_serving") else None,
    }
    for kind in (RUNTIMES if prefer == "auto" else (prefer,)):
        runtime = found[kind]()
        if runtime is not None:
            return runtime
    raise RuntimeError(INSTALL_HINT if prefer == "auto" else f"runtime={prefer}: not available here; {INSTALL_HINT}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(method: str, url: str, body: Any = None, timeout: float = 30.0) -> Tuple[int, Any]:
    """(status, decoded JSON body) of one request; an HTTP error status is returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, {"error": raw.decode(errors="replace")}


class Server:
    """One kfx_serving model server for a SavedModel directory, on 127.0.0.1; a context manager
    that always stops it (process group, container)."""

    def __init__(self, runtime: Runtime, saved_model_dir: str, workdir: str):
        self.runtime, self.saved_model_dir = runtime, os.path.abspath(saved_model_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(workdir, "server.log")
        self.workdir = workdir
        self.container = ""
        self.proc: Optional[subprocess.Popen] = None
        self.started = 0.0
        self._watcher: Optional[threading.Thread] = None
        self._ready: Any = None   # seconds to ready, or the ServerDidNotLoad

    def _command(self) -> List[str]:
        args = ["serve", "--http-port", str(self.port), "--model-name", MODEL_NAME]
        if self.runtime.kind == "docker":
            self.container = f"kfx-infra-validate-{self.port}-{uuid.uuid4().hex[:6]}"
            # The server reads <model-dir>/saved_model: the candidate is mounted there, read-only.
            return ["docker", "run", "--rm", "--name", self.container, "--network", "host",
                    "--user", "1000:1000", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
                    "--security-opt", "no-new-privileges",
                    "-v", f"{self.saved_model_dir}:/models/{MODEL_NAME}/saved_model:ro",
                    self.runtime.where, *args, "--model-dir", f"/models/{MODEL_NAME}"]
        version_dir = os.path.join(self.workdir, MODEL_NAME)
        os.makedirs(version_dir, exist_ok=True)
        os.symlink(self.saved_model_dir, os.path.join(version_dir, "saved_model"))
        return [self.runtime.where, "-m", "kfx_serving", *args, "--model-dir", version_dir]

    def __enter__(self) -> "Server":
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_NUM_INTEROP_THREADS="1")
        with open(self.log_path, "ab") as log:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(self._command(), env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def watch_ready(self, timeout: float) -> "Server":
        """Wait for readiness in the background (the caller works meanwhile); `ready_seconds` joins."""
        def watch():
            try:
                self._ready = self.wait_ready(timeout)
            except ServerDidNotLoad as err:
                self._ready = err
        self._watcher = threading.Thread(target=watch, daemon=True)
        self._watcher.start()
        return self

    def ready_seconds(self) -> float:
        """Seconds from start until the model answered ready; ServerDidNotLoad otherwise."""
        self._watcher.join()
        if isinstance(self._ready, ServerDidNotLoad):
            raise self._ready
        return self._ready

    def wait_ready(self, timeout: float) -> float:
        """Seconds from start until the model answers ready; ServerDidNotLoad otherwise."""
        deadline = self.started + timeout
        ready = f"{self.url}/v2/models/{MODEL_NAME}/ready"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerDidNotLoad(f"the server exited ({self.proc.returncode}) while loading the model: "
                                       + self.last_log_line())
            with contextlib.suppress(OSError):
                if http_json("GET", ready, timeout=2)[0] == 200:
                    return time.monotonic() - self.started
            time.sleep(0.2)
        raise ServerDidNotLoad(f"the model was not ready after {timeout:.0f}s: {self.last_log_line()}")

    def last_log_line(self) -> str:
        """The server log's last exception line ("SomeError: ..."; TensorFlow's errors go on with
        graph details), else its last line; one short line."""
        with contextlib.suppress(OSError):
            lines = [ln.strip() for ln in Path(self.log_path).read_text(errors="replace").splitlines()
                     if ln.strip()]
            errors = [ln for ln in lines if EXCEPTION_LINE.match(ln)]
            if errors or lines:
                return (errors or lines)[-1][:300]
        return "(no output)"

    def __exit__(self, *exc) -> None:
        if self.container:
            subprocess.run(["docker", "rm", "-f", self.container], capture_output=True)
        # The whole process group (the server's workers too): asked first, then killed.
        for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            if self.proc is None or self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)


def workdir() -> str:
    """A scratch directory for the server's log (and the process runtime's version directory)."""
    return tempfile.mkdtemp(prefix="kfx-infra-validate-")
