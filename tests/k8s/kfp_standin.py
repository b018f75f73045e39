"""A loopback stand-in for the KFP v2beta1 REST API (no KFP API server can run here).

It is NOT Kubeflow Pipelines: it serves only the endpoints ``kfp.Client`` calls for
``kfx submit`` (healthz, pipelines, upload, versions, experiments, runs, recurring
runs), keeps state in memory, and checks every request against the API models
shipped with the SDK (``kfp_server_api``):

* JSON bodies must only use the model's JSON keys, with the model's value types,
  recursively (``openapi_types``/``attribute_map``), and enum values must be allowed;
* semantic checks the real server makes: referenced pipeline/version/experiment ids
  exist, run parameters are inputs of the stored IR with the IR's types, a recurring
  run has exactly one trigger and a 6-field cron, uploads carry a KFP IR as
  ``uploadfile`` and a unique version name.

A rejected request gets HTTP 400 with the reason and is kept in ``errors``;
every request is recorded in ``calls``.
"""
from __future__ import annotations

import datetime
import email
import email.policy
import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional
from urllib.parse import parse_qs, urlparse

import kfp_server_api
import yaml
from kfp_server_api import models as M

_api_client = kfp_server_api.ApiClient()


class Invalid(ValueError):
    pass


def _model_class(type_name: str):
    return getattr(M, type_name, None)


def check_json(value: Any, type_name: str, where: str) -> None:
    """Validate a JSON value against an openapi type string of kfp_server_api."""
    if value is None:
        return
    m = re.fullmatch(r"list\[(.+)\]", type_name)
    if m:
        if not isinstance(value, list):
            raise Invalid(f"{where}: expected a list, got {type(value).__name__}")
        for i, v in enumerate(value):
            check_json(v, m.group(1), f"{where}[{i}]")
        return
    m = re.fullmatch(r"dict\(str, (.+)\)", type_name)
    if m:
        if not isinstance(value, dict):
            raise Invalid(f"{where}: expected an object, got {type(value).__name__}")
        if m.group(1) != "object":
            for k, v in value.items():
                check_json(v, m.group(1), f"{where}.{k}")
        return
    simple = {"str": str, "bool": bool, "int": int, "float": (int, float), "object": object}
    if type_name in simple:
        if type_name in ("int", "float") and isinstance(value, bool):
            raise Invalid(f"{where}: expected {type_name}, got bool")
        if type_name == "int" and isinstance(value, str) and re.fullmatch(r"-?\d+", value):
            return  # int64 travels as a JSON string in gRPC-gateway
        if not isinstance(value, simple[type_name]):
            raise Invalid(f"{where}: expected {type_name}, got {type(value).__name__} {value!r}")
        return
    if type_name in ("datetime", "date"):
        if not isinstance(value, str):
            raise Invalid(f"{where}: expected an RFC3339 string")
        datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return
    cls = _model_class(type_name)
    if cls is None:
        raise Invalid(f"{where}: no model {type_name} in kfp_server_api")
    allowed = getattr(cls, "allowable_values", None)
    if not cls.openapi_types:  # an enum model (protojson also takes the enum number)
        if allowed is not None and isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value < len(allowed):
                raise Invalid(f"{where}: enum number {value} out of range for {type_name}")
            return
        if allowed is not None and value not in allowed:
            raise Invalid(f"{where}: {value!r} is not one of {sorted(allowed)}")
        if not isinstance(value, str):
            raise Invalid(f"{where}: enum {type_name} expects a string")
        return
    if not isinstance(value, dict):
        raise Invalid(f"{where}: expected a {type_name} object")
    json_to_attr = {j: a for a, j in cls.attribute_map.items()}
    # protojson (grpc-gateway) accepts the lowerCamelCase spelling of each field too
    json_to_attr.update({re.sub(r"_([a-z])", lambda m: m.group(1).upper(), j): a
                         for j, a in list(json_to_attr.items())})
    for key, v in value.items():
        if key not in json_to_attr:
            raise Invalid(f"{where}: unknown field {key!r} for {type_name} "
                          f"(known: {', '.join(sorted(json_to_attr))})")
        attr = json_to_attr[key]
        if attr in _INT64_FIELDS and isinstance(v, int) and not isinstance(v, bool):
            continue  # int64 fields are strings in the OpenAPI models; protojson takes numbers too
        check_json(v, cls.openapi_types[attr], f"{where}.{key}")


_INT64_FIELDS = {"max_concurrency", "interval_second"}

_PARAM_TYPES = {"STRING": (str,), "NUMBER_INTEGER": (int,), "NUMBER_DOUBLE": (int, float),
                "BOOLEAN": (bool,), "LIST": (list,), "STRUCT": (dict,)}


class KfpStandIn:
    def __init__(self) -> None:
        self.calls: List[Dict[str, Any]] = []
        self.errors: List[str] = []
        self.pipelines: Dict[str, Dict[str, Any]] = {}
        self.versions: Dict[str, Dict[str, Any]] = {}   # version id -> {pipeline_id, display_name, spec}
        self.experiments: Dict[str, Dict[str, Any]] = {}
        self.runs: Dict[str, Dict[str, Any]] = {}
        self.recurring: Dict[str, Dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.server: Optional[ThreadingHTTPServer] = None

    # ---------------------------------------------------------------- server
    def start(self) -> str:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _handle(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                with standin.lock:
                    standin.calls.append({"method": method, "path": url.path, "query": query})
                    try:
                        status, payload = standin.dispatch(method, url.path, query, body,
                                                           self.headers.get("Content-Type", ""))
                    except Invalid as exc:
                        standin.errors.append(f"{method} {url.path}: {exc}")
                        status, payload = 400, {"error": str(exc), "code": 3, "message": str(exc)}
                    except KeyError as exc:
                        status, payload = 404, {"error": f"not found: {exc}", "code": 5,
                                                "message": f"not found: {exc}"}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_DELETE(self):
                self._handle("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def _json(body: bytes, model: str) -> dict:
        try:
            data = json.loads(body or b"{}")
        except ValueError as exc:
            raise Invalid(f"body is not JSON: {exc}")
        check_json(data, model, model)
        return data

    @staticmethod
    def _out(model_obj) -> dict:
        return _api_client.sanitize_for_serialization(model_obj)

    @staticmethod
    def _now() -> str:
        return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    @staticmethod
    def _filter_name(query: dict) -> Optional[str]:
        if "filter" not in query:
            return None
        flt = json.loads(query["filter"])
        check_json(flt, "V2beta1Filter", "filter")
        for p in flt.get("predicates", []):
            if p.get("key") in ("display_name", "name") and p.get("operation") in ("EQUALS", 1):
                return p.get("stringValue") or p.get("string_value")
        raise Invalid(f"unsupported filter {flt}")

    def _upload(self, body: bytes, ctype: str) -> dict:
        if not ctype.startswith("multipart/form-data"):
            raise Invalid(f"upload must be multipart/form-data, got {ctype!r}")
        msg = email.message_from_bytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body,
                                       policy=email.policy.HTTP)
        files = {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                 for part in msg.iter_parts()}
        if "uploadfile" not in files:
            raise Invalid(f"multipart upload has no 'uploadfile' part (parts: {sorted(files)})")
        try:
            spec = next(d for d in yaml.safe_load_all(files["uploadfile"]) if d)
        except Exception as exc:  # noqa: BLE001
            raise Invalid(f"uploadfile is not YAML: {exc}")
        if not isinstance(spec, dict) or "pipelineInfo" not in spec or "root" not in spec:
            raise Invalid("uploadfile is not a KFP pipeline IR")
        return spec

    def _new_version(self, pipeline_id: str, name: str, spec: dict) -> dict:
        if any(v["pipeline_id"] == pipeline_id and v["display_name"] == name for v in self.versions.values()):
            raise Invalid(f"pipeline version {name!r} already exists")  # the real server: 409
        vid = str(uuid.uuid4())
        self.versions[vid] = {"pipeline_id": pipeline_id, "display_name": name, "spec": spec,
                              "created_at": self._now()}
        return self._out(M.V2beta1PipelineVersion(
            pipeline_id=pipeline_id, pipeline_version_id=vid, display_name=name,
            created_at=self._now()))

    def _check_run_body(self, data: dict) -> None:
        if not data.get("display_name"):
            raise Invalid("display_name is required")
        exp = data.get("experiment_id")
        if exp and exp not in self.experiments:
            raise Invalid(f"experiment {exp} does not exist")
        ref = data.get("pipeline_version_reference")
        if bool(ref) == bool(data.get("pipeline_spec")):
            raise Invalid("exactly one of pipeline_version_reference and pipeline_spec is required")
        spec = data.get("pipeline_spec")
        if ref:
            v = self.versions.get(ref.get("pipeline_version_id", ""))
            if v is None or v["pipeline_id"] != ref.get("pipeline_id"):
                raise Invalid(f"pipeline version reference {ref} does not exist")
            spec = v["spec"]
        inputs = ((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
        params = (data.get("runtime_config") or {}).get("parameters") or {}
        for k, value in params.items():
            if k not in inputs:
                raise Invalid(f"runtime parameter {k!r} is not an input of the pipeline")
            ptype = inputs[k].get("parameterType")
            ok = _PARAM_TYPES.get(ptype, (object,))
            if not isinstance(value, ok) or (ptype.startswith("NUMBER") and isinstance(value, bool)):
                raise Invalid(f"runtime parameter {k!r} must be {ptype}, got {value!r}")
        missing = [k for k, d in inputs.items()
                   if k not in params and "defaultValue" not in d and not d.get("isOptional")]
        if missing:
            raise Invalid(f"runtime parameters missing (no default): {missing}")

    # ---------------------------------------------------------------- routes
    def dispatch(self, method: str, path: str, query: dict, body: bytes, ctype: str):
        p = path
        if method == "GET" and p == "/apis/v2beta1/healthz":
            return 200, self._out(M.V2beta1GetHealthzResponse(multi_user=False))
        if method == "GET" and p == "/apis/v2beta1/pipelines":
            name = self._filter_name(query)
            items = [M.V2beta1Pipeline(pipeline_id=i, display_name=d["display_name"])
                     for i, d in self.pipelines.items() if name is None or d["display_name"] == name]
            return 200, self._out(M.V2beta1ListPipelinesResponse(pipelines=items or None,
                                                                 total_size=len(items)))
        if method == "POST" and p == "/apis/v2beta1/pipelines/upload":
            if not query.get("name"):
                raise Invalid("query parameter 'name' is required")
            spec = self._upload(body, ctype)
            if any(d["display_name"] == query["name"] for d in self.pipelines.values()):
                raise Invalid(f"pipeline {query['name']!r} already exists")
            pid = str(uuid.uuid4())
            self.pipelines[pid] = {"display_name": query["name"]}
            self._new_version(pid, query["name"], spec)  # KFP makes a first version named like the pipeline
            return 200, self._out(M.V2beta1Pipeline(pipeline_id=pid, display_name=query["name"],
                                                    namespace=query.get("namespace")))
        if method == "POST" and p == "/apis/v2beta1/pipelines/upload_version":
            for q in ("name", "pipelineid"):
                if not query.get(q):
                    raise Invalid(f"query parameter {q!r} is required")
            if query["pipelineid"] not in self.pipelines:
                raise Invalid(f"pipeline {query['pipelineid']} does not exist")
            spec = self._upload(body, ctype)
            return 200, self._new_version(query["pipelineid"], query["name"], spec)
        m = re.fullmatch(r"/apis/v2beta1/pipelines/([^/]+)/versions", p)
        if method == "GET" and m:
            pid = m.group(1)
            if pid not in self.pipelines:
                raise KeyError(pid)
            name = self._filter_name(query)
            items = [M.V2beta1PipelineVersion(pipeline_id=pid, pipeline_version_id=i,
                                              display_name=v["display_name"])
                     for i, v in self.versions.items()
                     if v["pipeline_id"] == pid and (name is None or v["display_name"] == name)]
            return 200, self._out(M.V2beta1ListPipelineVersionsResponse(
                pipeline_versions=items or None, total_size=len(items)))
        if method == "GET" and p == "/apis/v2beta1/experiments":
            name = self._filter_name(query)
            items = [M.V2beta1Experiment(experiment_id=i, display_name=e["display_name"])
                     for i, e in self.experiments.items() if name is None or e["display_name"] == name]
            return 200, self._out(M.V2beta1ListExperimentsResponse(experiments=items or None,
                                                                   total_size=len(items)))
        if method == "POST" and p == "/apis/v2beta1/experiments":
            data = self._json(body, "V2beta1Experiment")
            if not data.get("display_name"):
                raise Invalid("experiment display_name is required")
            eid = str(uuid.uuid4())
            self.experiments[eid] = data
            return 200, self._out(M.V2beta1Experiment(experiment_id=eid, display_name=data["display_name"]))
        if method == "POST" and p == "/apis/v2beta1/runs":
            data = self._json(body, "V2beta1Run")
            self._check_run_body(data)
            rid = str(uuid.uuid4())
            self.runs[rid] = dict(data, created_at=datetime.datetime.now(datetime.timezone.utc))
            return 200, self._out(M.V2beta1Run(run_id=rid, display_name=data["display_name"],
                                               experiment_id=data.get("experiment_id"), state="PENDING",
                                               created_at=self.runs[rid]["created_at"]))
        if method == "POST" and p == "/apis/v2beta1/recurringruns":
            data = self._json(body, "V2beta1RecurringRun")
            self._check_run_body(data)
            trig = data.get("trigger") or {}
            if bool(trig.get("cron_schedule")) == bool(trig.get("periodic_schedule")):
                raise Invalid("a recurring run needs exactly one of cron_schedule and periodic_schedule")
            cron = (trig.get("cron_schedule") or {}).get("cron")
            if cron is not None and len(cron.split()) != 6:
                raise Invalid(f"cron {cron!r} must have 6 fields (seconds first)")
            if data.get("mode") not in ("ENABLE", "DISABLE"):
                raise Invalid(f"mode {data.get('mode')!r} must be ENABLE or DISABLE")
            rid = str(uuid.uuid4())
            self.recurring[rid] = dict(data, recurring_run_id=rid)
            return 200, self._out(M.V2beta1RecurringRun(recurring_run_id=rid,
                                                        display_name=data["display_name"],
                                                        status="ENABLED"))
        if method == "GET" and p == "/apis/v2beta1/recurringruns":
            name = self._filter_name(query)
            exp = query.get("experiment_id")
            items = [_api_client._ApiClient__deserialize(r, "V2beta1RecurringRun")
                     for r in self.recurring.values()
                     if (name is None or r["display_name"] == name)
                     and (exp is None or r.get("experiment_id") == exp)]
            return 200, self._out(M.V2beta1ListRecurringRunsResponse(recurring_runs=items or None,
                                                                     total_size=len(items)))
        m = re.fullmatch(r"/apis/v2beta1/runs/([^/:]+)", p)
        if method == "GET" and m:
            data = self.runs[m.group(1)]
            # a test moves a run on by setting runs[id]["state"] (SUCCEEDED, FAILED, ...)
            return 200, self._out(M.V2beta1Run(run_id=m.group(1), display_name=data["display_name"],
                                               experiment_id=data.get("experiment_id"),
                                               state=data.get("state", "PENDING"),
                                               created_at=data.get("created_at"), storage_state="AVAILABLE"))
        m = re.fullmatch(r"/apis/v2beta1/recurringruns/([^/:]+)", p)
        if method == "GET" and m:
            r = self.recurring[m.group(1)]
            return 200, self._out(_api_client._ApiClient__deserialize(r, "V2beta1RecurringRun"))
        m = re.fullmatch(r"/apis/v2beta1/recurringruns/([^/:]+)(:disable)?", p)
        if m and method in ("POST", "DELETE"):
            rid = m.group(1)
            if rid not in self.recurring:
                raise KeyError(rid)
            if m.group(2):
                self.recurring[rid]["mode"] = "DISABLE"
            else:
                del self.recurring[rid]
            return 200, {}
        raise Invalid(f"the stand-in does not serve {method} {path}")
