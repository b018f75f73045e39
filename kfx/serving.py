"""kfx serve / kfx rollout / kfx predict: the serving end of the lifecycle (docs/serving.md).

    kfx serve   MODEL_URI [--port 8080] [--executor process|docker] [--log-url URL | --log-dir DIR]
    kfx rollout start MODEL_DIR --candidate vN [--current vM] --strategy canary|blue-green|shadow ...
    kfx rollout approve|switch-back|status MODEL_DIR
    kfx rollout start ... --target kubernetes --namespace NS --isvc NAME   (KServe InferenceService)
    kfx predict --model MODEL_URI --data CSV --out DIR [--key COLUMN]

MODEL_URI is a registry version (`<registry_uri>/<model_name>/vN`) or an alias
(`<registry_uri>/<model_name>@production`); MODEL_DIR is `<registry_uri>/<model_name>`.

Locally a model is served by the kfx serving runtime (serving/kfx_serving: KServe's
ModelServer) in its own environment: `.venv-serving` (process executor) or the
kfx-serve image (docker executor). Rollouts run the servers behind a real nginx
on loopback (split_clients for weights, mirror for shadow) and watch nginx's
per-request log; their state lives under the registry:

    <registry_uri>/<model_name>/aliases.json                 staging / production -> version
    <registry_uri>/<model_name>/deployments/<stamp>-vN.json  written by the pipeline's deploy step
    <registry_uri>/<model_name>/rollouts/<id>/               state.json, events.jsonl, nginx/, payloads/

Platform code: imports no kfx_components (stage) module and no TensorFlow at import time.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import io
import json
import math
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
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional

from kfx.s3 import is_s3, read_object, split_uri

REPO = Path(__file__).resolve().parents[1]
SERVING_SRC = REPO / "serving"
ALIASES = ("staging", "production")
STRATEGIES = ("canary", "blue-green", "shadow")
_VERSION_RE = re.compile(r"^v([1-9][0-9]*)$")
DEFAULT_IMAGE = os.environ.get("KFX_SERVE_IMAGE", "kfx/kfx-serve:0.1.0")


class ServingError(RuntimeError):
    pass


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _log(msg: str) -> None:
    print(f"[kfx serving] {msg}", file=sys.stderr, flush=True)


# ============================================================== registry (no stage imports)

# A registry version is committed by the stages' marker convention (docs/design.md, "Storage and
# commit markers"): it exists once `v<N>/_COMPLETE` does; top-level `_` names are never content.
REGISTRY_MARKER = "_COMPLETE"


def _local(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri


def _s3_client():
    from kfx.s3 import client_from_env
    return client_from_env()


def read_json(uri: str) -> Optional[dict]:
    if is_s3(uri):
        raw = read_object(_s3_client(), *split_uri(uri))
        return None if raw is None else json.loads(raw)
    path = _local(uri)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_json(uri: str, data: Any) -> None:
    raw = json.dumps(data, indent=2, sort_keys=True, default=str).encode()
    if is_s3(uri):
        bucket, key = split_uri(uri)
        _s3_client().put_object(bucket, key, io.BytesIO(raw), len(raw), content_type="application/json")
        return
    path = _local(uri)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "wb") as f:
        f.write(raw)
    os.replace(tmp, path)   # readers see the old or the new file, never half of one


def versions(model_dir: str) -> List[int]:
    if is_s3(model_dir):
        bucket, prefix = split_uri(model_dir)
        found = set()
        for obj in _s3_client().list_objects(bucket, prefix=prefix + "/", recursive=True):
            head, _, tail = obj.object_name[len(prefix) + 1:].partition("/")
            m = _VERSION_RE.match(head)
            if m and tail == REGISTRY_MARKER:
                found.add(int(m.group(1)))
        return sorted(found)
    d = _local(model_dir)
    if not os.path.isdir(d):
        return []
    return sorted(int(m.group(1)) for e in os.listdir(d) if (m := _VERSION_RE.match(e))
                  and os.path.isdir(os.path.join(d, e)))


def aliases(model_dir: str) -> dict:
    return read_json(f"{model_dir.rstrip('/')}/aliases.json") or {}


def set_alias(model_dir: str, alias: str, version: int, by: str = "", note: str = "") -> dict:
    if alias not in ALIASES:
        raise ServingError(f"alias {alias!r}: one of {ALIASES}")
    if version not in versions(model_dir):
        raise ServingError(f"{model_dir}: no version v{version}")
    data = aliases(model_dir)
    previous = (data.get(alias) or {}).get("version")
    data[alias] = {"version": version, "updated": _now(), "by": by}
    data.setdefault("history", []).append({"alias": alias, "from": previous, "to": version, "time": _now(),
                                           "by": by, "note": note})
    write_json(f"{model_dir.rstrip('/')}/aliases.json", data)
    return data


def split_model_uri(uri: str):
    """'<reg>/<model>/vN' | '<reg>/<model>@alias' | '<reg>/<model>' -> (model_dir, version or None, alias)."""
    uri = uri.rstrip("/")
    if "@" in uri.rsplit("/", 1)[-1]:
        model_dir, alias = uri.rsplit("@", 1)
        return model_dir, None, alias
    head, _, last = uri.rpartition("/")
    m = _VERSION_RE.match(last)
    if m:
        return head, int(m.group(1)), ""
    return uri, None, ""


def resolve(uri: str) -> tuple:
    """(model_dir, version number) for a version URI or alias URI; latest version when neither."""
    model_dir, version, alias = split_model_uri(uri)
    if alias:
        entry = aliases(model_dir).get(alias)
        if not entry:
            raise ServingError(f"{model_dir}: alias {alias!r} is not set (aliases.json)")
        version = int(entry["version"])
    if version is None:
        found = versions(model_dir)
        if not found:
            raise ServingError(f"{model_dir}: no versions")
        version = found[-1]
    if version not in versions(model_dir):
        raise ServingError(f"{model_dir}: no complete version v{version}")
    return model_dir, version


def local_version_dir(model_dir: str, version: int, cache: Optional[str] = None) -> str:
    """A local directory holding the version (an S3 version is downloaded into a cache once)."""
    if not is_s3(model_dir):
        return os.path.join(_local(model_dir), f"v{version}")
    bucket, prefix = split_uri(model_dir)
    dest = os.path.join(cache or os.path.join(tempfile.gettempdir(), "kfx-serving-cache"),
                        bucket, prefix, f"v{version}")
    if os.path.isfile(os.path.join(dest, ".complete")):
        return dest
    client = _s3_client()
    key = f"{prefix}/v{version}/"
    for obj in client.list_objects(bucket, prefix=key, recursive=True):
        rel = obj.object_name[len(key):]
        if rel.startswith("_") or obj.is_dir:
            continue
        client.fget_object(bucket, obj.object_name, os.path.join(dest, *rel.split("/")))
    Path(dest, ".complete").touch()
    return dest


# ============================================================== servers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving_python() -> str:
    py = os.environ.get("KFX_SERVING_PYTHON") or str(REPO / ".venv-serving" / "bin" / "python")
    if not os.path.exists(py):
        raise ServingError(f"no serving environment at {py}: run `make serving-venv` "
                           "(or set KFX_SERVING_PYTHON)")
    return py


def http_json(method: str, url: str, body: Any = None, timeout: float = 10.0, headers: Optional[dict] = None):
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


class Server:
    """One running model server (a process or a container) on a loopback port."""

    def __init__(self, version_dir: str, port: int, executor: str = "process", log_url: str = "",
                 image: str = DEFAULT_IMAGE, log_file: Optional[str] = None, name: Optional[str] = None):
        if executor not in ("process", "docker"):
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
                tail = ""
                if self.log_file and os.path.exists(self.log_file):
                    tail = Path(self.log_file).read_text(errors="replace")[-2000:]
                raise ServingError(f"server for {self.version_dir} exited {self.proc.returncode}\n{tail}")
            try:
                code, _, _ = http_json("GET", f"{self.url}/v2/health/ready", timeout=2)
                if code == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        raise ServingError(f"server for {self.version_dir} not ready on :{self.port} after {timeout:.0f}s")

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
        py = os.environ.get("KFX_SERVING_PYTHON") or str(REPO / ".venv-serving" / "bin" / "python")
        py = py if os.path.exists(py) else sys.executable
        self.proc = subprocess.Popen([py, "-m", "kfx_serving", "sink", "--port", str(self.port), "--out", self.out,
                                      "--flush-seconds", "2"],
                                     env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if http_json("GET", self.url + "/healthz", timeout=1)[0] == 200:
                    return self
            except OSError:
                time.sleep(0.1)
        raise ServingError("the payload sink did not start")

    def stats(self) -> dict:
        return http_json("GET", self.url + "/healthz", timeout=2)[1]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)


# ============================================================== nginx front

NGINX_CONF = """\
# Written by kfx rollout ({strategy}); reloaded (SIGHUP) at every traffic change.
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/tmp/body;
  proxy_temp_path {prefix}/tmp/proxy;
  fastcgi_temp_path {prefix}/tmp/fastcgi;
  uwsgi_temp_path {prefix}/tmp/uwsgi;
  scgi_temp_path {prefix}/tmp/scgi;
  # A request id the client sent is kept (labels join on it); otherwise nginx makes one.
  map $http_x_request_id $kfx_rid {{ "" $request_id; default $http_x_request_id; }}
  log_format kfx escape=json '{{"time":"$time_iso8601","rid":"$kfx_rid","variant":"$kfx_variant",'
                             '"status":$status,"upstream_status":"$upstream_status",'
                             '"request_time":$request_time,"upstream":"$upstream_addr","uri":"$uri"}}';
  upstream current {{ server 127.0.0.1:{current_port}; keepalive 32; }}
  upstream candidate {{ server 127.0.0.1:{candidate_port}; keepalive 32; }}
{split}
  server {{
    listen 127.0.0.1:{port};
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header X-Request-Id $kfx_rid;
    proxy_read_timeout 60s;
    location = /kfx/front {{ default_type application/json; return 200 '{{"strategy":"{strategy}","weights":{weights_json}}}'; }}
    location / {{
      access_log {prefix}/access.log kfx;
{main}
    }}
{shadow}
  }}
}}
"""


def nginx_binary() -> str:
    for cand in (os.environ.get("KFX_NGINX", ""), shutil.which("nginx") or "", "/usr/sbin/nginx"):
        if cand and os.path.exists(cand):
            return cand
    raise ServingError("nginx not found: `make serving-nginx` (apt-get install nginx-light)")


class Front:
    """A real nginx on a loopback port in front of the current and candidate servers."""

    def __init__(self, prefix: str, port: int, current_port: int, candidate_port: int, strategy: str):
        self.prefix, self.port = os.path.abspath(prefix), port
        self.current_port, self.candidate_port, self.strategy = current_port, candidate_port, strategy
        self.url = f"http://127.0.0.1:{port}"
        self.proc = None
        self.weight = 0
        os.makedirs(os.path.join(self.prefix, "tmp"), exist_ok=True)

    def render(self, candidate_percent: int) -> str:
        pct = max(0, min(100, int(candidate_percent)))
        if self.strategy == "shadow":
            split = '  map $uri $kfx_variant { default "current"; }'
            main = "      mirror /_kfx_shadow;\n      mirror_request_body on;\n      proxy_pass http://current;"
            shadow = ("    location = /_kfx_shadow {\n      internal;\n"
                      "      access_log " + self.prefix + "/access.log kfx;\n"
                      "      set $kfx_variant \"shadow\";\n"
                      "      proxy_set_header X-Request-Id $kfx_rid;\n"
                      "      proxy_pass http://candidate$request_uri;\n    }")
            pct = 100
        else:
            if pct == 0:
                split = '  map $uri $kfx_variant { default "current"; }'
            elif pct == 100:
                split = '  map $uri $kfx_variant { default "candidate"; }'
            else:
                # split_clients hashes the request id: a fresh id per request gives a weighted random split.
                split = f'  split_clients "$kfx_rid" $kfx_variant {{ {pct}% candidate; * current; }}'
            main, shadow = "      proxy_pass http://$kfx_variant;", ""
        return NGINX_CONF.format(prefix=self.prefix, port=self.port, current_port=self.current_port,
                                 candidate_port=self.candidate_port, split=split, main=main, shadow=shadow,
                                 strategy=self.strategy,
                                 weights_json=json.dumps({"current": 100 - pct, "candidate": pct}
                                                         if self.strategy != "shadow" else
                                                         {"current": 100, "candidate(mirror)": 100}))

    def _write(self, pct: int) -> str:
        conf = os.path.join(self.prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(self.render(pct))
        p = subprocess.run([nginx_binary(), "-t", "-q", "-p", self.prefix, "-c", conf], capture_output=True, text=True)
        if p.returncode != 0:
            raise ServingError(f"nginx rejected {conf}: {p.stderr}")
        return conf

    def start(self, pct: int = 0) -> "Front":
        conf = self._write(pct)
        self.weight = pct
        self.proc = subprocess.Popen([nginx_binary(), "-p", self.prefix, "-c", conf, "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if http_json("GET", self.url + "/kfx/front", timeout=1)[0] == 200:
                    return self
            except OSError:
                time.sleep(0.1)
        raise ServingError(f"nginx did not come up on :{self.port} (see {self.prefix}/error.log)")

    def set_weight(self, pct: int) -> None:
        """Move traffic: rewrite the config and reload nginx (graceful: in-flight requests finish)."""
        self._write(pct)
        self.weight = pct
        os.kill(self.proc.pid, signal.SIGHUP)
        want = json.dumps({"current": 100 - pct, "candidate": pct}) if self.strategy != "shadow" else None
        deadline = time.monotonic() + 10
        while want and time.monotonic() < deadline:   # the new workers answer with the new weights
            try:
                if json.dumps(http_json("GET", self.url + "/kfx/front", timeout=1)[1]["weights"]) == want:
                    return
            except (OSError, KeyError):
                pass
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)   # graceful shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class AccessLog:
    """Tails nginx's JSON access log: per-variant request counts, errors and latency."""

    def __init__(self, path: str):
        self.path, self.offset = path, 0

    def read(self) -> List[dict]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind("\n") + 1
        self.offset += len(data[:end].encode())
        out = []
        for line in data[:end].splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out


def window_stats(entries: Iterable[dict], variant: str) -> dict:
    rows = [e for e in entries if e.get("variant") == variant and e.get("uri") != "/kfx/front"]
    n = len(rows)
    # A server error is what the model server did wrong: 5xx (and 502/504 from nginx when it is down).
    # 4xx are the client's bad requests: counted apart, they do not fail a rollout.
    errors = sum(1 for e in rows if int(e.get("status", 0)) >= 500)
    client = sum(1 for e in rows if 400 <= int(e.get("status", 0)) < 500)
    lat = sorted(float(e.get("request_time", 0)) * 1000 for e in rows)

    def q(p):
        return lat[min(len(lat) - 1, int(math.ceil(p * len(lat))) - 1)] if lat else None
    return {"requests": n, "server_errors": errors, "client_errors": client,
            "error_rate": (errors / n) if n else 0.0, "p50_ms": q(0.50), "p99_ms": q(0.99)}


# ============================================================== payload logs / shadow difference

def read_payloads(directory: str) -> List[dict]:
    out = []
    for path in sorted(Path(directory).rglob("*.jsonl")):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def prediction_difference(records: List[dict], current: str, candidate: str) -> dict:
    """Join the two versions' logged answers by request id and compare them instance by instance."""
    by = {current: {}, candidate: {}}
    for r in records:
        if r.get("model_version") in by:
            by[r["model_version"]][r["request_id"]] = r
    common = sorted(set(by[current]) & set(by[candidate]))
    diffs, agree, n = [], 0, 0
    for rid in common:
        a, b = by[current][rid]["outputs"], by[candidate][rid]["outputs"]
        for x, y in zip(a, b):
            n += 1
            if isinstance(x, dict):
                classes = sorted(set(x["probabilities"]) | set(y["probabilities"]))
                diffs.append(max(abs(x["probabilities"].get(c, 0.0) - y["probabilities"].get(c, 0.0)) for c in classes))
                agree += x.get("label") == y.get("label")
            else:
                diffs.append(abs(float(x) - float(y)))
    diffs.sort()
    return {"requests_compared": len(common), "instances_compared": n,
            "only_current": len(set(by[current]) - set(by[candidate])),
            "only_candidate": len(set(by[candidate]) - set(by[current])),
            "mean_abs_diff": (sum(diffs) / n) if n else None,
            "p99_abs_diff": diffs[min(n - 1, int(math.ceil(0.99 * n)) - 1)] if n else None,
            "max_abs_diff": diffs[-1] if n else None,
            "label_agreement": (agree / n) if n and isinstance(a[0] if common else None, dict) else None}


def online_metric(records: List[dict], labels: Dict[tuple, Any], version: str) -> dict:
    """Accuracy (classification) or MAE (regression) of a version's logged answers against late labels.

    `labels` maps (request_id, instance index) -> true label (a class name or a number).
    """
    hits, n, err, kind = 0, 0, 0.0, None
    for r in records:
        if r.get("model_version") != version:
            continue
        for i, out in enumerate(r.get("outputs") or []):
            key = (r["request_id"], i)
            if key not in labels:
                continue
            n += 1
            if isinstance(out, dict):
                kind = "accuracy"
                hits += str(out.get("label")) == str(labels[key])
            else:
                kind = "mae"
                err += abs(float(out) - float(labels[key]))
    if not n:
        return {"labelled": 0}
    return {"labelled": n, "metric": kind, "value": hits / n if kind == "accuracy" else err / n}


def read_labels(path: str) -> Dict[tuple, Any]:
    """Late labels: JSON lines {"request_id": ..., "index": 0, "label": ...} (a file or a directory of them)."""
    out = {}
    paths = sorted(Path(path).rglob("*.jsonl")) if os.path.isdir(path) else [Path(path)]
    for p in paths:
        if not p.exists():
            continue
        for line in p.read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError):
                d = json.loads(line)
                out[(d["request_id"], int(d.get("index", 0)))] = d["label"]
    return out


# ============================================================== synthetic traffic (local load)

def instances_from_csv(path: str, feature_types: Dict[str, str], limit: int = 0) -> List[dict]:
    """CSV rows as request instances typed by the served model's raw feature spec ('' -> null)."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            inst = {}
            for name, dtype in feature_types.items():
                v = (r.get(name) or "").strip()
                if v == "":
                    inst[name] = None
                elif dtype == "int64":
                    inst[name] = int(float(v))
                elif dtype == "float":
                    inst[name] = float(v)
                else:
                    inst[name] = v
            rows.append(inst)
            if limit and len(rows) >= limit:
                break
    return rows


class Traffic(threading.Thread):
    """Replays instances through the front at a rate (real HTTP), like clients would."""

    def __init__(self, url: str, instances: List[dict], rps: float = 20.0, batch: int = 1, workers: int = 4):
        super().__init__(daemon=True)
        self.url, self.instances, self.rps, self.batch, self.workers = url, instances, rps, batch, workers
        self.stop_event = threading.Event()
        self.sent = self.failed = 0
        self.request_ids: List[tuple] = []   # (request id, first instance index into self.instances)

    def _one(self, i: int) -> None:
        batch = [self.instances[(i + k) % len(self.instances)] for k in range(self.batch)]
        rid = uuid.uuid4().hex
        try:
            code, _, _ = http_json("POST", self.url, {"instances": batch}, timeout=30, headers={"x-request-id": rid})
        except OSError:
            code = 599
        self.sent += 1
        self.failed += code >= 500
        self.request_ids.append((rid, i % len(self.instances)))

    def run(self) -> None:
        from concurrent.futures import ThreadPoolExecutor
        i = 0
        with ThreadPoolExecutor(self.workers) as pool:
            t0 = time.monotonic()
            while not self.stop_event.is_set():
                pool.submit(self._one, i)
                i += self.batch
                delay = t0 + (i / self.batch) / self.rps - time.monotonic()
                if delay > 0:
                    self.stop_event.wait(delay)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(30)


# ============================================================== local rollouts

class Rollout:
    """One local rollout: state.json + events.jsonl under <model_dir>/rollouts/<id>/."""

    def __init__(self, model_dir: str, strategy: str, current: int, candidate: int, state_root: Optional[str] = None):
        if strategy not in STRATEGIES:
            raise ServingError(f"--strategy {strategy!r}: one of {STRATEGIES}")
        self.model_dir, self.strategy, self.current, self.candidate = model_dir.rstrip("/"), strategy, current, candidate
        self.id = f"{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%S}-{strategy}-v{current}-v{candidate}"
        base = state_root or (os.path.join(_local(self.model_dir), "rollouts") if not is_s3(self.model_dir)
                              else os.path.join(tempfile.gettempdir(), "kfx-rollouts"))
        self.dir = os.path.join(base, self.id)
        os.makedirs(self.dir, exist_ok=True)
        self.state = {"id": self.id, "model_dir": self.model_dir, "strategy": strategy, "current": f"v{current}",
                      "candidate": f"v{candidate}", "status": "starting", "started": _now(), "steps": [],
                      "dir": self.dir}

    def event(self, kind: str, **data) -> None:
        rec = {"time": _now(), "event": kind, **data}
        with open(os.path.join(self.dir, "events.jsonl"), "a") as f:
            f.write(json.dumps(rec, default=str) + "\n")
        _log(f"{self.strategy} v{self.current}->v{self.candidate}: {kind} "
             + json.dumps({k: v for k, v in data.items() if k != "stats"}, default=str)[:300])

    def save(self, **updates) -> None:
        self.state.update(updates, updated=_now())
        write_json(os.path.join(self.dir, "state.json"), self.state)
        if self.state["status"] in ("starting", "running", "awaiting-approval", "switched"):
            write_json(f"{_local(self.model_dir)}/rollouts/active.json" if not is_s3(self.model_dir)
                       else os.path.join(os.path.dirname(self.dir), "active.json"),
                       {"id": self.id, "dir": self.dir, "strategy": self.strategy})
        else:
            active = (f"{_local(self.model_dir)}/rollouts/active.json" if not is_s3(self.model_dir)
                      else os.path.join(os.path.dirname(self.dir), "active.json"))
            with contextlib.suppress(FileNotFoundError):
                if (read_json(active) or {}).get("id") == self.id:
                    os.remove(active)

    def command(self) -> str:
        """A command left by `kfx rollout approve|switch-back` (consumed)."""
        path = os.path.join(self.dir, "command")
        if not os.path.exists(path):
            return ""
        cmd = Path(path).read_text().strip()
        os.remove(path)
        return cmd


def _breaches(stats: dict, baseline: dict, g: argparse.Namespace) -> List[str]:
    out = []
    if stats["requests"] >= g.min_requests:
        if stats["error_rate"] > g.max_error_rate:
            out.append(f"error rate {stats['error_rate']:.3f} > {g.max_error_rate}")
        # 4xx are the client's fault only when the current version rejects the same traffic too:
        # a candidate that refuses requests the current one answers (a changed feature contract) is broken.
        rejected = stats["client_errors"] / stats["requests"]
        base = (baseline["client_errors"] / baseline["requests"]) if baseline.get("requests") else 0.0
        if rejected - base > g.max_error_rate:
            out.append(f"rejects {rejected:.3f} of requests (4xx) vs {base:.3f} on the current version")
        if stats["p99_ms"] is not None and stats["p99_ms"] > g.max_p99_ms:
            out.append(f"p99 {stats['p99_ms']:.0f} ms > {g.max_p99_ms} ms")
    return out


def run_local_rollout(g: argparse.Namespace) -> dict:
    """The whole local rollout; returns its final state. Exit status: promoted/shadowed 0, else 1."""
    model_dir = g.model_dir.rstrip("/")
    candidate = int(str(g.candidate).lstrip("v"))
    if g.current:
        current = int(str(g.current).lstrip("v"))
    else:
        prod = aliases(model_dir).get("production")
        if prod:
            current = int(prod["version"])
        else:
            older = [v for v in versions(model_dir) if v != candidate]
            if not older:
                raise ServingError(f"{model_dir}: no current version to roll out from (set --current or the "
                                   "production alias: kfx rollout alias)")
            current = older[-1]
    if current == candidate:
        raise ServingError(f"candidate v{candidate} is already the current version")
    ro = Rollout(model_dir, g.strategy, current, candidate, g.state_dir)
    servers: List[Server] = []
    sink = front = traffic = None
    payload_dir = os.path.join(ro.dir, "payloads")
    attach = dict(a.split("=", 1) for a in (g.attach or []))
    try:
        ro.save(status="starting")
        log_url = g.log_url
        if not log_url and not attach:
            sink = Sink(payload_dir, log_file=os.path.join(ro.dir, "sink.log")).start()
            log_url = sink.url
        ports = {}
        for role, version in (("current", current), ("candidate", candidate)):
            if role in attach:
                ports[role] = int(attach[role].rsplit(":", 1)[1].split("/")[0])
                continue
            srv = Server(local_version_dir(model_dir, version), free_port(), g.executor, log_url,
                         image=g.image, log_file=os.path.join(ro.dir, f"server-{role}-v{version}.log")).start()
            servers.append(srv)
            ports[role] = srv.port
        for srv in servers:
            srv.wait_ready(g.ready_timeout)
        ro.event("servers-ready", ports=ports)
        front = Front(os.path.join(ro.dir, "nginx"), g.port or free_port(), ports["current"], ports["candidate"],
                      g.strategy).start(0)
        ro.save(status="running", front=front.url)
        ro.event("front-up", url=front.url)
        accesslog = AccessLog(os.path.join(front.prefix, "access.log"))
        if g.traffic:
            status, meta, _ = http_json("GET", f"http://127.0.0.1:{ports['current']}/kfx/metadata")
            types = {f["name"]: f["dtype"] for f in meta["features"]}
            name = meta["name"]
            traffic = Traffic(f"{front.url}/v1/models/{name}:predict", instances_from_csv(g.traffic, types, 2000),
                              rps=g.rps, batch=g.batch)
            traffic.start()
        labels = read_labels(g.labels) if g.labels else {}

        def hold(seconds: float, variant: str, pct: int) -> dict:
            """Watch the candidate's traffic for `seconds` (ends early on a breach or a command)."""
            seen: List[dict] = []
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                time.sleep(min(1.0, max(0.0, end - time.monotonic())))
                seen += accesslog.read()
                cmd = ro.command()
                if cmd:
                    return {"command": cmd, "stats": window_stats(seen, variant)}
                stats = window_stats(seen, variant)
                if _breaches(stats, window_stats(seen, "current"), g):
                    break
            stats, baseline = window_stats(seen, variant), window_stats(seen, "current")
            res = {"stats": stats, "baseline": baseline, "breaches": _breaches(stats, baseline, g)}
            if stats["requests"] < g.min_requests and variant != "current":
                res["breaches"].append(f"only {stats['requests']} requests reached the candidate "
                                       f"(< --min-requests {g.min_requests}): not enough evidence")
            if labels:
                recs = read_payloads(payload_dir)
                cur, cand = online_metric(recs, labels, f"v{current}"), online_metric(recs, labels, f"v{candidate}")
                res["online"] = {"current": cur, "candidate": cand}
                if cur.get("labelled") and cand.get("labelled"):
                    worse = (cur["value"] - cand["value"]) if cand["metric"] == "accuracy" else (cand["value"] - cur["value"])
                    if worse > g.max_online_drop:
                        res["breaches"].append(f"online {cand['metric']} worse by {worse:.4f} > {g.max_online_drop}")
            return res

        result: Dict[str, Any] = {}
        if g.strategy == "canary":
            steps = [int(s) for s in str(g.steps).split(",") if s.strip()]
            if not steps or any(not 0 < s <= 100 for s in steps) or steps != sorted(steps):
                raise ServingError(f"--steps {g.steps!r}: increasing percentages in (0, 100]")
            if steps[-1] != 100:
                steps.append(100)
            for pct in steps:
                if pct == 100 and g.approve:
                    ro.save(status="awaiting-approval")
                    set_alias(model_dir, "staging", candidate, by=ro.id, note="canary passed every step before 100%")
                    ro.event("awaiting-approval", hint=f"kfx rollout approve {model_dir}")
                    if not wait_approval(ro, g.approve_timeout):
                        ro.event("not-approved")
                        front.set_weight(0)
                        result = {"decision": "rolled-back", "reason": "not approved in time"}
                        break
                front.set_weight(pct)
                ro.event("step", candidate_percent=pct)
                res = hold(g.hold, "candidate", pct)
                ro.state["steps"].append({"candidate_percent": pct, **res})
                ro.save()
                if res.get("command") == "rollback" or res.get("breaches"):
                    front.set_weight(0)   # everything back on the current version at once
                    ro.event("rolled-back", at_percent=pct, breaches=res.get("breaches"), stats=res["stats"])
                    result = {"decision": "rolled-back", "at_percent": pct,
                              "reason": "; ".join(res.get("breaches") or ["rollback requested"])}
                    break
            else:
                result = {"decision": "promoted"}
        elif g.strategy == "blue-green":
            front.set_weight(100)          # switch at once; blue (current) stays up and warm
            ro.event("switched", to=f"v{candidate}", warm=f"v{current}")
            ro.save(status="switched")
            res = hold(g.hold, "candidate", 100)
            ro.state["steps"].append({"candidate_percent": 100, **res})
            if res.get("command") == "switch-back" or res.get("breaches"):
                front.set_weight(0)
                why = "switch-back requested" if res.get("command") == "switch-back" else "; ".join(res["breaches"])
                ro.event("switched-back", to=f"v{current}", reason=why)
                result = {"decision": "switched-back", "reason": why}
            else:
                result = {"decision": "promoted"}
                if g.approve:
                    set_alias(model_dir, "staging", candidate, by=ro.id, note="blue-green healthy")
                    ro.save(status="awaiting-approval")
                    if not wait_approval(ro, g.approve_timeout):
                        front.set_weight(0)
                        result = {"decision": "switched-back", "reason": "not approved in time"}
        else:  # shadow
            res = hold(g.hold, "shadow", 100)
            time.sleep(2.5)                # the sink flushes every 2 s: let the last answers land
            records = read_payloads(payload_dir)
            diff = prediction_difference(records, f"v{current}", f"v{candidate}")
            shadow_stats = res["stats"]
            ro.state["steps"].append({"mirror_percent": 100, **res, "difference": diff})
            healthy = not res.get("breaches") and diff["instances_compared"] > 0
            result = {"decision": "shadowed", "healthy": healthy, "difference": diff, "shadow": shadow_stats,
                      **({"reason": "; ".join(res.get("breaches") or ["no mirrored answers to compare"])}
                         if not healthy else {})}
            ro.event("shadow-report", **diff)
            if healthy:
                set_alias(model_dir, "staging", candidate, by=ro.id, note="shadow: healthy, see difference")

        if result.get("decision") == "promoted":
            set_alias(model_dir, "staging", candidate, by=ro.id)
            set_alias(model_dir, "production", candidate, by=ro.id,
                      note="approved" if g.approve else f"{g.strategy} passed")
            ro.event("promoted", production=f"v{candidate}")
        ro.save(status=result["decision"], result=result, finished=_now())
        if g.keep_running and result.get("decision") in ("promoted", "switched-back", "rolled-back", "shadowed"):
            _log(f"serving on {front.url} until interrupted (Ctrl-C)")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    cmd = ro.command()
                    if cmd == "switch-back" and g.strategy == "blue-green":
                        front.set_weight(0 if front.weight else 100)
                        ro.event("switched", to=f"v{current}" if front.weight == 0 else f"v{candidate}")
                    time.sleep(1)
        return ro.state
    except BaseException as err:
        if front is not None and front.proc is not None and front.proc.poll() is None:
            with contextlib.suppress(Exception):
                front.set_weight(0)
        ro.save(status="failed", error=str(err), finished=_now())
        raise
    finally:
        if traffic is not None:
            traffic.stop()
            ro.state["traffic"] = {"sent": traffic.sent, "server_errors": traffic.failed}
            ro.save()
        if front is not None:
            front.stop()
        for srv in servers:
            srv.stop()
        if sink is not None:
            time.sleep(0.5)
            sink.stop()


def wait_approval(ro: Rollout, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cmd = ro.command()
        if cmd == "approve":
            ro.event("approved")
            return True
        if cmd in ("reject", "rollback"):
            return False
        time.sleep(0.5)
    return False


def send_command(model_dir: str, command: str) -> dict:
    active = read_json(f"{_local(model_dir.rstrip('/'))}/rollouts/active.json")
    if not active:
        raise ServingError(f"{model_dir}: no rollout in progress (rollouts/active.json)")
    with open(os.path.join(active["dir"], "command"), "w") as f:
        f.write(command + "\n")
    return active


# ============================================================== Kubernetes (KServe InferenceService)

ISVC = dict(group="serving.kserve.io", version="v1beta1", plural="inferenceservices")
VS = dict(group="networking.istio.io", version="v1beta1", plural="virtualservices")


def prometheus_query(base_url: str) -> Callable[[str], Optional[float]]:
    """A PromQL instant-query function against a Prometheus HTTP API (single scalar result)."""
    def query(promql: str) -> Optional[float]:
        url = f"{base_url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as r:
            data = json.loads(r.read())
        result = data.get("data", {}).get("result", [])
        if not result:
            return None
        v = float(result[0]["value"][1])
        return None if math.isnan(v) else v
    return query


def k8s_queries(namespace: str, isvc: str, revision_label: str = "candidate") -> Dict[str, str]:
    """PromQL the Kubernetes canary watches: Istio's request metrics of the predictor's latest revision."""
    sel = (f'destination_workload_namespace="{namespace}",'
           f'destination_service_name=~"{isvc}-predictor.*",destination_canonical_revision=~".*"')
    return {
        "requests": f'sum(increase(istio_requests_total{{{sel}}}[1m]))',
        "error_rate": (f'sum(rate(istio_requests_total{{{sel},response_code=~"5.."}}[1m])) / '
                       f'sum(rate(istio_requests_total{{{sel}}}[1m]))'),
        "p99_ms": (f'histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{{{sel}}}[1m])) '
                   f'by (le))'),
    }


def k8s_canary(api, namespace: str, name: str, storage_uri: str, steps: List[int], hold: float,
               metrics: Callable[[str], Optional[float]], max_error_rate: float, max_p99_ms: float,
               sleep: Callable[[float], None] = time.sleep, on_event: Callable[..., None] = lambda *a, **k: None) -> dict:
    """Canary on KServe: point the predictor at the candidate with canaryTrafficPercent=step, raise it step by
    step while Prometheus shows the canary healthy; on a breach patch canaryTrafficPercent=0 (KServe sends all
    traffic back to the previous ready revision). `api` is a kubernetes.client.CustomObjectsApi."""
    kw = dict(ISVC, namespace=namespace, name=name)
    isvc = api.get_namespaced_custom_object(**kw)
    # The chart's predictor is a custom container (the kfx serving image): the model is its STORAGE_URI env.
    containers = json.loads(json.dumps(isvc["spec"]["predictor"]["containers"]))
    env = containers[0].setdefault("env", [])
    previous = next((e.get("value") for e in env if e["name"] == "STORAGE_URI"), None)
    env[:] = [e for e in env if e["name"] != "STORAGE_URI"] + [{"name": "STORAGE_URI", "value": storage_uri}]
    q = k8s_queries(namespace, name)
    for i, pct in enumerate(steps):
        body = {"spec": {"predictor": {"canaryTrafficPercent": pct}}}
        if i == 0:   # a new predictor spec = a new revision; it gets pct, the previous one the rest
            body["spec"]["predictor"]["containers"] = containers
        api.patch_namespaced_custom_object(**kw, body=body)
        on_event("step", candidate_percent=pct)
        sleep(hold)
        err, p99 = metrics(q["error_rate"]), metrics(q["p99_ms"])
        breaches = []
        if err is not None and err > max_error_rate:
            breaches.append(f"error rate {err:.3f} > {max_error_rate}")
        if p99 is not None and p99 > max_p99_ms:
            breaches.append(f"p99 {p99:.0f} ms > {max_p99_ms} ms")
        if breaches:
            api.patch_namespaced_custom_object(**kw, body={"spec": {"predictor": {"canaryTrafficPercent": 0}}})
            on_event("rolled-back", at_percent=pct, breaches=breaches)
            return {"decision": "rolled-back", "at_percent": pct, "reason": "; ".join(breaches),
                    "previous_storage_uri": previous}
    # Promote: drop canaryTrafficPercent (JSON merge patch null) -> the latest revision takes 100%.
    api.patch_namespaced_custom_object(**kw, body={"spec": {"predictor": {"canaryTrafficPercent": None}}})
    on_event("promoted")
    return {"decision": "promoted", "storage_uri": storage_uri, "previous_storage_uri": previous}


def k8s_blue_green_switch(api, namespace: str, virtual_service: str, to: str, hosts: Dict[str, str]) -> dict:
    """Blue-green on Kubernetes: two InferenceServices (blue, green) behind one Istio VirtualService route;
    switch all traffic at once by patching the route weights (to = 'blue' or 'green')."""
    if to not in hosts:
        raise ServingError(f"switch to {to!r}: one of {sorted(hosts)}")
    vs = api.get_namespaced_custom_object(**VS, namespace=namespace, name=virtual_service)
    http = vs["spec"]["http"]
    for route in http:
        for dest in route.get("route", []):
            color = next((c for c, h in hosts.items() if dest["destination"]["host"] == h), None)
            if color is not None:
                dest["weight"] = 100 if color == to else 0
    api.patch_namespaced_custom_object(**VS, namespace=namespace, name=virtual_service, body={"spec": {"http": http}})
    return {"decision": "switched", "to": to}


def k8s_shadow(api, namespace: str, virtual_service: str, candidate_host: str, percent: float = 100.0) -> dict:
    """Shadow on Kubernetes: mirror the route's traffic to the candidate InferenceService (answers dropped)."""
    vs = api.get_namespaced_custom_object(**VS, namespace=namespace, name=virtual_service)
    http = vs["spec"]["http"]
    for route in http:
        route["mirror"] = {"host": candidate_host}
        route["mirrorPercentage"] = {"value": float(percent)}
    api.patch_namespaced_custom_object(**VS, namespace=namespace, name=virtual_service, body={"spec": {"http": http}})
    return {"decision": "shadowing", "mirror": candidate_host, "percent": percent}


def _k8s_api():
    from kubernetes import client, config
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


# ============================================================== batch scoring (Beam)

def batch_predict(model_uri: str, data: str, out: str, key: Optional[str] = None, batch_size: int = 256,
                  runner: str = "DirectRunner") -> dict:
    """Score a CSV with the version's SavedModel in a Beam pipeline; write JSON lines {key, prediction} to `out`.

    Each record: {"key": <row number or the --key column>, "model_version": "vN", <outputs>} with the same
    outputs as the server (label + class probabilities, or a prediction in the label's units).
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    model_dir, version = resolve(model_uri)
    vdir = local_version_dir(model_dir, version)
    card = read_json(os.path.join(vdir, "model_card.json")) or {}
    os.makedirs(out, exist_ok=True)
    with open(data, newline="") as f:
        header = next(csv.reader(f))
    if key and key not in header:
        raise ServingError(f"--key {key!r} is not a column of {data}")

    class Score(beam.DoFn):
        def setup(self):
            import tensorflow as tf
            self.tf = tf
            self.fn = tf.saved_model.load(os.path.join(vdir, "saved_model")).signatures["serving_default"]
            self.out_key = "probabilities" if "probabilities" in self.fn.structured_outputs else "predictions"
            self.spec = _parse_spec(self.fn)

        def process(self, batch):
            examples = [_to_example(self.tf, row, self.spec) for _, row in batch]
            values = self.fn(examples=self.tf.constant(examples, dtype=self.tf.string))[self.out_key].numpy()
            problem = card.get("problem_type") or ("regression" if self.out_key == "predictions" else
                                                    ("binary" if values.shape[-1] == 1 else "multiclass"))
            vocab = [str(v) for v in card.get("label_vocabulary") or []]
            for (k, _), v in zip(batch, values.tolist()):
                rec = {"key": k, "model_version": f"v{version}"}
                if problem == "regression":
                    rec["prediction"] = float(v[0])
                else:
                    probs = [1 - v[0], v[0]] if problem == "binary" else v
                    names = vocab if len(vocab) == len(probs) else [str(i) for i in range(len(probs))]
                    rec["probabilities"] = dict(zip(names, map(float, probs)))
                    rec["label"] = names[max(range(len(probs)), key=probs.__getitem__)]
                yield json.dumps(rec)

    def parse(line_and_no):
        no, line = line_and_no
        row = next(csv.reader([line]))
        rec = dict(zip(header, row))
        return (rec[key] if key else no, rec)

    opts = PipelineOptions(runner=runner, direct_num_workers=1)
    t0 = time.monotonic()
    with open(data, newline="") as f:
        lines = f.read().splitlines()[1:]
    with beam.Pipeline(options=opts) as p:
        (p | "rows" >> beam.Create(list(enumerate(lines)))
           | "parse" >> beam.Map(parse)
           | "batch" >> beam.BatchElements(min_batch_size=batch_size, max_batch_size=batch_size)
           | "score" >> beam.ParDo(Score())
           | "write" >> beam.io.WriteToText(os.path.join(out, "predictions"), file_name_suffix=".jsonl"))
    summary = {"model": f"{model_dir}/v{version}", "rows": len(lines), "out": out,
               "seconds": round(time.monotonic() - t0, 2), "key": key or "row number"}
    write_json(os.path.join(out, "summary.json"), summary)
    return summary


def _parse_spec(fn) -> Dict[str, tuple]:
    """{feature: (dtype, required)} from the signature's ParseExampleV2 op (as kfx_serving.features does)."""
    import tensorflow as tf
    gd = fn.graph.as_graph_def()
    names = {1: "float", 9: "int64", 7: "string"}
    spec: Dict[str, tuple] = {}
    for nodes in [list(gd.node)] + [list(f.node_def) for f in gd.library.function]:
        for node in nodes:
            if node.op != "ParseExampleV2":
                continue
            consts = {n.name: n for n in nodes if n.op == "Const"}
            val = lambda i: tf.make_ndarray(consts[node.input[i].split(":")[0]].attr["value"].tensor)  # noqa: E731
            for k, t in zip(val(2).tolist(), node.attr["sparse_types"].list.type):
                spec.setdefault(k.decode(), (names[t], False))
            for k, t in zip(val(3).tolist(), node.attr["Tdense"].list.type):
                spec[k.decode()] = (names[t], True)
    if not spec:
        raise ServingError("serving_default has no ParseExampleV2 op")
    return spec


def _to_example(tf, row: Dict[str, str], spec: Dict[str, tuple]) -> bytes:
    ex = tf.train.Example()
    for name, (dtype, required) in spec.items():
        v = (row.get(name) or "").strip()
        if v == "":
            if required:
                raise ServingError(f"row has no value for required feature {name!r}")
            continue
        feat = ex.features.feature[name]
        if dtype == "string":
            feat.bytes_list.value.append(v.encode())
        elif dtype == "int64":
            feat.int64_list.value.append(int(float(v)))
        else:
            feat.float_list.value.append(float(v))
    return ex.SerializeToString()


# ============================================================== commands

def cmd_serve(args) -> int:
    model_dir, version = resolve(args.model)
    vdir = local_version_dir(model_dir, version)
    sink = None
    log_url = args.log_url
    if args.log_dir and not log_url:
        sink = Sink(args.log_dir).start()
        log_url = sink.url
    srv = Server(vdir, args.port, args.executor, log_url, image=args.image).start()

    def _term(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _term)   # stop the server (and sink) we started, not only ourselves
    try:
        srv.wait_ready(args.ready_timeout)
        meta = srv.metadata()
        _log(f"serving {meta.get('name')} v{version} ({args.executor}) on {srv.url}: "
             f"POST {srv.url}/v1/models/{meta.get('name')}:predict | /v2/models/{meta.get('name')}/infer; "
             f"metrics {srv.url}/metrics" + (f"; payload logs -> {log_url}" if log_url else ""))
        srv.proc.wait()
        return srv.proc.returncode or 0
    except KeyboardInterrupt:
        return 0
    finally:
        srv.stop()
        if sink:
            sink.stop()


def cmd_rollout(args) -> int:
    if args.action == "start":
        if args.target == "kubernetes":
            return _rollout_k8s(args)
        state = run_local_rollout(args)
        print(json.dumps({k: state.get(k) for k in ("id", "strategy", "current", "candidate", "status", "result", "dir")},
                         indent=2, default=str))
        return 0 if state["status"] in ("promoted", "shadowed") and (state.get("result") or {}).get("healthy", True) else 1
    if args.action == "status":
        print(json.dumps({"aliases": aliases(args.model_dir),
                          "active": read_json(f"{_local(args.model_dir.rstrip('/'))}/rollouts/active.json")},
                         indent=2))
        return 0
    if args.action == "alias":
        if not args.set:
            raise ServingError("kfx rollout alias MODEL_DIR --set production=vN")
        name, _, ver = args.set.partition("=")
        if not name or not ver.lstrip("v").isdigit():
            raise ServingError(f"--set {args.set!r}: expected NAME=vN, e.g. production=v3")
        print(json.dumps(set_alias(args.model_dir, name, int(ver.lstrip("v")), by="kfx rollout alias"), indent=2))
        return 0
    command = {"approve": "approve", "switch-back": "switch-back", "rollback": "rollback", "reject": "reject"}[args.action]
    active = send_command(args.model_dir, command)
    print(json.dumps({"sent": command, "rollout": active["id"]}))
    return 0


def _rollout_k8s(args) -> int:
    api = _k8s_api()
    metrics = prometheus_query(args.prometheus)
    steps = [int(s) for s in str(args.steps).split(",") if s.strip()]
    storage = args.storage_uri or f"{args.model_dir.rstrip('/')}/{str(args.candidate) if str(args.candidate).startswith('v') else 'v' + str(args.candidate)}/saved_model"
    if args.strategy == "canary":
        res = k8s_canary(api, args.namespace, args.isvc, storage, steps, args.hold, metrics,
                         args.max_error_rate, args.max_p99_ms, on_event=lambda k, **d: _log(f"{k} {d}"))
    elif args.strategy == "blue-green":
        res = k8s_blue_green_switch(api, args.namespace, args.virtual_service, args.to or "green",
                                    {"blue": f"{args.isvc}-blue-predictor.{args.namespace}.svc.cluster.local",
                                     "green": f"{args.isvc}-green-predictor.{args.namespace}.svc.cluster.local"})
    else:
        res = k8s_shadow(api, args.namespace, args.virtual_service,
                         f"{args.isvc}-candidate-predictor.{args.namespace}.svc.cluster.local")
    print(json.dumps(res, indent=2))
    return 0 if res["decision"] != "rolled-back" else 1


def cmd_predict(args) -> int:
    print(json.dumps(batch_predict(args.model, args.data, args.out, key=args.key, batch_size=args.batch_size,
                                   runner=args.runner), indent=2))
    return 0


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


def _percentages(text: str) -> str:
    """--steps: increasing percentages in (0, 100] (kept as text: the rollout reads it so)."""
    parts = [s.strip() for s in text.split(",") if s.strip()]
    steps = [int(s) for s in parts if s.isdigit()]
    if not steps or len(steps) != len(parts) or any(not 0 < s <= 100 for s in steps) or steps != sorted(steps):
        raise argparse.ArgumentTypeError(f"{text!r}: expected increasing percentages in (0, 100], e.g. 10,50,100")
    return text


def _wrap(fn):
    def run(args) -> int:
        try:
            return fn(args)
        except ServingError as err:
            print(f"kfx: {err}", file=sys.stderr)
            return 1
    return run


def add_commands(subparsers) -> None:
    """Register `serve`, `rollout` and `predict` on kfx's argparse subparsers (each sets `func`)."""
    p = subparsers.add_parser("serve", help="serve a registry version with KServe's model server (V1 + V2 REST)")
    p.add_argument("model", metavar="MODEL_URI", help="<registry_uri>/<model_name>/vN or <registry_uri>/<model_name>@alias")
    p.add_argument("--port", type=_port, default=8080)
    p.add_argument("--executor", choices=("process", "docker"), default="process")
    p.add_argument("--image", default=DEFAULT_IMAGE, help="serving image for --executor docker")
    p.add_argument("--log-url", default="", help="payload-log sink URL (CloudEvents)")
    p.add_argument("--log-dir", default="", help="start a kfx sink writing payload logs here (DIR or s3://...)")
    p.add_argument("--ready-timeout", type=_above_zero(float), default=180)
    p.set_defaults(func=_wrap(cmd_serve))

    p = subparsers.add_parser("rollout", help="canary / blue-green / shadow rollout of a candidate version")
    p.add_argument("action", choices=("start", "approve", "reject", "rollback", "switch-back", "status", "alias"))
    p.add_argument("model_dir", metavar="MODEL_DIR", help="<registry_uri>/<model_name>")
    p.add_argument("--candidate", help="version to roll out (vN or N)")
    p.add_argument("--current", help="version now serving (default: the production alias)")
    p.add_argument("--strategy", choices=STRATEGIES, default="canary")
    p.add_argument("--steps", type=_percentages, default="10,50,100", help="canary: candidate traffic percentages")
    p.add_argument("--hold", type=_above_zero(float), default=60, help="seconds each step is held and watched")
    p.add_argument("--max-error-rate", type=float, default=0.01)
    p.add_argument("--max-p99-ms", type=float, default=1000)
    p.add_argument("--min-requests", type=_above_zero(int), default=20, help="requests a step needs before it can pass")
    p.add_argument("--labels", default="", help="late labels (JSON lines request_id/index/label) for the online metric")
    p.add_argument("--max-online-drop", type=float, default=0.05)
    p.add_argument("--approve", action="store_true", help="wait for `kfx rollout approve` before production")
    p.add_argument("--approve-timeout", type=_above_zero(float), default=3600)
    p.add_argument("--port", type=_port, default=0, help="nginx front port (default: a free one)")
    p.add_argument("--executor", choices=("process", "docker"), default="process")
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
    p.set_defaults(func=_wrap(cmd_rollout))

    p = subparsers.add_parser("predict", help="batch-score a table with a registry version (Beam)")
    p.add_argument("--model", required=True, metavar="MODEL_URI")
    p.add_argument("--data", required=True, help="CSV with the raw feature columns")
    p.add_argument("--out", required=True)
    p.add_argument("--key", default=None, help="column written beside each prediction (default: row number)")
    p.add_argument("--batch-size", type=_above_zero(int), default=256)
    p.add_argument("--runner", default="DirectRunner")
    p.set_defaults(func=_wrap(cmd_predict))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="kfx")
    add_commands(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
