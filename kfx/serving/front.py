"""The front of a local rollout: a real nginx on a loopback port before the current and candidate
servers (split_clients for a weighted split, mirror for shadow), reloaded at every traffic change,
and its per-request JSON access log read back as per-variant statistics."""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import time
from typing import Iterable, List

from kfx.serving import ServingError
from kfx.serving.servers import http_json, wait_healthy

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
        if wait_healthy(self.url + "/kfx/front", 15):
            return self
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
