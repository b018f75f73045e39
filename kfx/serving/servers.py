"""Process control of the serving runtime (serving/kfx_serving): one model server on a loopback port
(a process in `.venv-serving` or a kfx-serve container) and the payload-log sink."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, List, Optional

from kfx.serving import ServingError, log

REPO = Path(__file__).resolve().parents[2]
SERVING_SRC = REPO / "serving"
DEFAULT_IMAGE = os.environ.get("KFX_SERVE_IMAGE", "kfx/kfx-serve:0.1.0")
EXECUTORS = ("process", "docker")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serving_venv_python() -> str:
    return os.environ.get("KFX_SERVING_PYTHON") or str(REPO / ".venv-serving" / "bin" / "python")


def serving_python() -> str:
    py = _serving_venv_python()
    if not os.path.exists(py):
        raise ServingError(f"no serving environment at {py}: run `make serving-venv` "
                           "(or set KFX_SERVING_PYTHON)")
    return py


def http_json(method: str, url: str, body: Any = None, timeout: float = 10.0, headers: Optional[dict] = None):
    """(status, decoded JSON body, headers) of one request; an HTTP error status is returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null"), dict(r.headers)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw), dict(e.headers)
        except ValueError:
            return e.code, {"error": raw.decode(errors="replace")}, dict(e.headers)


def wait_healthy(url: str, seconds: float) -> bool:
    """True once GET `url` answers 200 within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if http_json("GET", url, timeout=1)[0] == 200:
                return True
        except OSError:
            time.sleep(0.1)
    return False


class Server:
    """One running model server (a process or a container) on a loopback port."""

    def __init__(self, version_dir: str, port: int, executor: str = "process", log_url: str = "",
                 image: str = DEFAULT_IMAGE, log_file: Optional[str] = None, name: Optional[str] = None):
        if executor not in EXECUTORS:
            raise ServingError(f"--executor {executor!r}: process or docker")
        self.version_dir, self.port, self.executor = os.path.abspath(version_dir), port, executor
        self.log_url, self.image, self.name = log_url, image, name
        self.url = f"http://127.0.0.1:{port}"
        self.proc: Optional[subprocess.Popen] = None
        self.container = ""
        self.log_file = log_file
        self._log_handle = None

    def command(self) -> List[str]:
        args = ["serve", "--http-port", str(self.port)]
        if self.log_url:
            args += ["--log-url", self.log_url]
        if self.name:
            args += ["--model-name", self.name]
        if self.executor == "process":
            return [serving_python(), "-m", "kfx_serving", *args, "--model-dir", self.version_dir]
        self.container = f"kfx-serve-{self.port}-{uuid.uuid4().hex[:6]}"
        mount = f"/models/{os.path.basename(self.version_dir)}"
        # Host network: the server binds its port on loopback and reaches a loopback sink.
        return ["docker", "run", "--rm", "--name", self.container, "--network", "host",
                "--user", "1000:1000", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
                "--security-opt", "no-new-privileges", "-v", f"{self.version_dir}:{mount}:ro",
                self.image, *args, "--model-dir", mount]

    def start(self) -> "Server":
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(SERVING_SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        # TensorFlow in a server on a shared 2-core machine: one intra-op pool thread per core is plenty.
        env.setdefault("TF_NUM_INTEROP_THREADS", "1")
        if self.log_file:
            os.makedirs(os.path.dirname(self.log_file) or ".", exist_ok=True)
            self._log_handle = open(self.log_file, "ab")
        out = self._log_handle or subprocess.DEVNULL
        self.proc = subprocess.Popen(self.command(), env=env, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 120.0) -> "Server":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServingError(f"server for {self.version_dir} exited {self.proc.returncode}"
                                   + self._last_log_line())
            try:
                code, _, _ = http_json("GET", f"{self.url}/v2/health/ready", timeout=2)
                if code == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        raise ServingError(f"server for {self.version_dir} not ready on :{self.port} after {timeout:.0f}s"
                           + self._last_log_line())

    def _last_log_line(self) -> str:
        """': <last line of the server's log> (log: PATH)', for a one-line error."""
        if not (self.log_file and os.path.exists(self.log_file)):
            return ""
        lines = [ln for ln in Path(self.log_file).read_text(errors="replace").splitlines() if ln.strip()]
        return f": {lines[-1].strip()[:300] if lines else ''} (log: {self.log_file})"

    def metadata(self) -> dict:
        return http_json("GET", f"{self.url}/kfx/metadata")[1]

    def stop(self) -> None:
        if self.executor == "docker" and self.container:
            subprocess.run(["docker", "rm", "-f", self.container], capture_output=True)
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self._log_handle:
            self._log_handle.close()


class Sink:
    """The payload-log sink (serving/kfx_serving/sink.py) as a subprocess."""

    def __init__(self, out: str, port: Optional[int] = None, log_file: Optional[str] = None):
        self.out, self.port = out, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = log_file
        self.proc = None

    def start(self) -> "Sink":
        env = dict(os.environ, PYTHONPATH=str(SERVING_SRC))
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        # The sink is stdlib + minio: the platform's own Python can run it when the serving venv is absent.
        py = _serving_venv_python()
        py = py if os.path.exists(py) else sys.executable
        self.proc = subprocess.Popen([py, "-m", "kfx_serving", "sink", "--port", str(self.port), "--out", self.out,
                                      "--flush-seconds", "2"],
                                     env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        if not wait_healthy(self.url + "/healthz", 30):
            raise ServingError("the payload sink did not start")
        return self

    def stats(self) -> dict:
        return http_json("GET", self.url + "/healthz", timeout=2)[1]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)


def serve_until_stopped(version, port: int, executor: str = "process", image: str = DEFAULT_IMAGE,
                        log_url: str = "", log_dir: str = "", ready_timeout: float = 180.0) -> int:
    """`kfx serve`: a server for a LocalVersion (kfx.serving.registry) until it exits or the caller is
    interrupted (KeyboardInterrupt: 0); with `log_dir` and no `log_url`, a kfx sink writing payload logs."""
    sink = None
    if log_dir and not log_url:
        sink = Sink(log_dir).start()
        log_url = sink.url
    srv = Server(version.path, port, executor, log_url, image=image).start()
    try:
        srv.wait_ready(ready_timeout)
        name = srv.metadata().get("name")
        log(f"serving {name} v{version.number} ({executor}) on {srv.url}: "
            f"POST {srv.url}/v1/models/{name}:predict | /v2/models/{name}/infer; "
            f"metrics {srv.url}/metrics" + (f"; payload logs -> {log_url}" if log_url else ""))
        srv.proc.wait()
        return srv.proc.returncode or 0
    except KeyboardInterrupt:
        return 0
    finally:
        srv.stop()
        if sink:
            sink.stop()
