"""The kfx payload sink: a small HTTP server that receives KServe-style inference
CloudEvents (binary or structured mode) and writes one JSON line per answered
request: the payload-log record of kfx_formats.payload_log, which `kfx monitor` and
`kfx rollout` read (docs/serving.md).

Request and response events are paired by their CloudEvent id (the request id);
a line is written when the response arrives. A request whose response never
arrives (the server answered an error) is dropped after --pair-timeout seconds.

--out DIR            lines go to DIR/<model>/<model_version>/payloads-<YYYYmmddHH>.jsonl
                     (flushed per line)
--out s3://b/prefix  lines are buffered and uploaded every --flush-seconds (and at exit)
                     as s3://b/prefix/<model>/<model_version>/payloads-<YYYYmmddTHHMMSS>-<uuid>.jsonl
                     via the minio SDK (KFX_S3_ENDPOINT, KFX_S3_SECURE read by kfx_formats.s3;
                     AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY from the environment or as files in
                     KFX_S3_CREDENTIALS_DIR), with kfx_formats.s3's retry policy
Plain stdlib + minio + kfx_formats: no TensorFlow, no KServe.
"""
from __future__ import annotations

import datetime
import json
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Optional, Tuple

from kfx_formats import payload_log, s3
from kfx_formats.payload_log import REQUEST_TYPE, RESPONSE_TYPE
from kfx_serving import normalize


def _utcnow() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Writer:
    def __init__(self, out: str, flush_seconds: float = 10.0):
        self.out, self.flush_seconds = out, flush_seconds
        self.lock = threading.Lock()
        self.written = 0
        self._buffers: Dict[Tuple[str, str], list] = {}
        self._s3 = None
        if out.startswith("s3://"):
            bucket, _, prefix = out[5:].partition("/")
            self.bucket, self.prefix = bucket, prefix.strip("/")
            self._s3 = self._client()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._flusher, daemon=True)
            self._thread.start()
        else:
            os.makedirs(out, exist_ok=True)

    @staticmethod
    def _client():
        from minio import Minio
        try:
            host, secure = s3.endpoint()
            http = s3.http_client()
        except s3.S3ConfigError as err:
            raise SystemExit(f"sink: {err}") from None
        creds = os.environ.get("KFX_S3_CREDENTIALS_DIR", "")   # keys as files (a mounted Secret)

        def key(name):
            path = os.path.join(creds, name)
            if creds and os.path.isfile(path):
                with open(path) as f:
                    return f.read().strip()
            return os.environ.get(name)
        return Minio(host, access_key=key("AWS_ACCESS_KEY_ID"), secret_key=key("AWS_SECRET_ACCESS_KEY"),
                     secure=secure, region=os.environ.get("AWS_REGION") or None, http_client=http)

    def write(self, record: Dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
        key = (record["model"] or "model", record["model_version"] or "unknown")
        with self.lock:
            self.written += 1
            if self._s3 is not None:
                self._buffers.setdefault(key, []).append(line)
                return
            d = os.path.join(self.out, *key)
            os.makedirs(d, exist_ok=True)
            name = f"payloads-{datetime.datetime.now(datetime.timezone.utc):%Y%m%d%H}.jsonl"
            with open(os.path.join(d, name), "a") as f:
                f.write(line)

    def flush(self) -> None:
        if self._s3 is None:
            return
        with self.lock:
            buffers, self._buffers = self._buffers, {}
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
        for (model, version), lines in buffers.items():
            data = "".join(lines).encode()
            key = "/".join(p for p in (self.prefix, model, version,
                                       f"payloads-{stamp}-{uuid.uuid4().hex[:8]}.jsonl") if p)
            s3.put(self._s3, self.bucket, key, data, content_type="application/x-ndjson")

    def _flusher(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def close(self) -> None:
        if self._s3 is not None:
            self._stop.set()
            self.flush()


class Pairer:
    """Joins request and response events by id; hands complete records to the writer."""

    def __init__(self, writer: Writer, pair_timeout: float = 60.0):
        self.writer, self.pair_timeout = writer, pair_timeout
        self.pending: Dict[tuple, Tuple[float, str, Any, Dict[str, str]]] = {}
        self.lock = threading.Lock()
        self.errors = 0

    def accept(self, attrs: Dict[str, str], data: Any) -> None:
        rid, ce_type = attrs.get("id", ""), attrs.get("type", "")
        # A shadow or canary pair of servers logs the same request id: pair within one server's events.
        key = (rid, attrs.get("source", ""), attrs.get("modelversion", ""))
        now = time.monotonic()
        with self.lock:
            for k in [k for k, v in self.pending.items() if now - v[0] > self.pair_timeout]:
                del self.pending[k]
            other = self.pending.pop(key, None)
            if other is None:
                self.pending[key] = (now, ce_type, data, attrs)
                return
        _, other_type, other_data, other_attrs = other
        if {ce_type, other_type} != {REQUEST_TYPE, RESPONSE_TYPE}:
            with self.lock:   # two of one kind (a retried id): keep the newest
                self.pending[key] = (now, ce_type, data, attrs)
            return
        req, resp = (data, other_data) if ce_type == REQUEST_TYPE else (other_data, data)
        req_attrs = attrs if ce_type == REQUEST_TYPE else other_attrs
        try:
            record = payload_log.record(
                rid, req_attrs.get("time") or _utcnow(), req_attrs.get("inferenceservicename", ""),
                req_attrs.get("modelversion", ""), normalize.instances_from_request(req),
                normalize.outputs_from_response(resp))
        except Exception:  # noqa: BLE001 - a malformed event is counted, never fatal
            self.errors += 1
            return
        self.writer.write(record)


def make_handler(pairer: Pairer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _reply(self, code: int, body: Dict[str, Any]):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path in ("/", "/healthz"):
                return self._reply(200, {"status": "ok", "written": pairer.writer.written,
                                         "pending": len(pairer.pending), "errors": pairer.errors})
            self._reply(404, {"error": "not found"})

        def do_POST(self):
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            try:
                ctype = (self.headers.get("content-type") or "").split(";")[0].strip()
                if ctype == "application/cloudevents+json":       # structured mode
                    event = json.loads(body)
                    attrs = {k: str(v) for k, v in event.items() if k not in ("data", "data_base64")}
                    data = event.get("data")
                else:                                              # binary mode (KServe's logger)
                    attrs = {k[3:].lower(): v for k, v in self.headers.items() if k.lower().startswith("ce-")}
                    data = json.loads(body) if body else None
                if not attrs.get("id") or attrs.get("type") not in (REQUEST_TYPE, RESPONSE_TYPE):
                    return self._reply(400, {"error": "not a KServe inference CloudEvent (ce-id, ce-type)"})
            except ValueError as err:
                return self._reply(400, {"error": f"bad event: {err}"})
            pairer.accept(attrs, data)
            self._reply(202, {"accepted": attrs["id"]})

    return Handler


def serve(port: int, out: str, host: str = "127.0.0.1", flush_seconds: float = 10.0,
          pair_timeout: float = 60.0, ready: Optional[threading.Event] = None) -> None:
    writer = Writer(out, flush_seconds)
    server = ThreadingHTTPServer((host, port), make_handler(Pairer(writer, pair_timeout)))
    server.daemon_threads = True
    if ready is not None:
        ready.set()
    import signal
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        writer.close()
