"""The one S3/MinIO client of kfx: the platform's store, the stages and the serving runtime use it.

Endpoint and credentials come from the environment only (KFX_S3_ENDPOINT, KFX_S3_SECURE,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION); on Kubernetes from a Secret; never from
the IR or an image. Each setting is checked where it is read (the endpoint as host:port or
http(s)://host:port, yes/no settings as 1/0, true/false, yes/no or on/off, numbers as numbers);
anything else is an S3ConfigError (a ValueError) whose one line names it.

One retry policy: every request has bounded timeouts (KFX_S3_CONNECT_TIMEOUT, default 10 s;
KFX_S3_READ_TIMEOUT, default 60 s, per socket read) and every operation is retried with
exponential backoff on transient failures (connection refused or reset, timeouts, 5xx, SlowDown):
KFX_S3_ATTEMPTS (default 5) attempts, waits KFX_S3_BACKOFF (default 0.5 s) doubling up to 8 s.
Then the operation fails with S3Unavailable, one line naming the endpoint. urllib3's own retries
are off (one retry layer, `with_retries`). The helpers below (read, commit, committed, fetch,
local_copy) retry each of their requests; a caller using the client directly wraps its call in
`with_retries`.

The commit-marker convention of a set of objects below a prefix (a registry version, a TFJob
staging folder; docs/design.md, "Storage and commit markers"): it exists once `<prefix>/_COMPLETE`
does. `commit` uploads the objects and writes that marker last, a JSON manifest of what it vouches
for; `committed` and `fetch` read a prefix only through its marker and only the objects it lists,
so a crash mid-upload or a stale object is never read as content. Top-level names starting with
`_` are the convention's own (the marker, a registry's `_CLAIM`), never content. (The platform's
artifact store has its own per-artifact marker, `<key>.kfx-commit`: kfx/stores/s3.py.)
"""
from __future__ import annotations

import io
import json
import math
import os
import random
import re
import time
from typing import Callable, Dict, Mapping, Optional, Tuple, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")
MARKER = "_COMPLETE"
# What "not found" is: a missing object or a missing bucket.
NOT_FOUND = ("NoSuchKey", "NoSuchObject", "NoSuchBucket")
MAX_BACKOFF = 8.0
# S3 error codes that say "try again" (the server is there but busy or failing).
_RETRYABLE_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout",
                    "RequestTimeTooSkewed", "OperationAborted"}
_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
_HOST = re.compile(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]+")      # a name, an IPv4 or (unbracketed) IPv6 address


class S3ConfigError(ValueError):
    """An S3 setting (environment variable or URI) kfx cannot use; the message names it."""


class S3Unavailable(ConnectionError):
    """The S3 endpoint did not answer (or kept failing) through every retry."""


# ------------------------------------------------------------------ settings

def flag(name: str, default: bool) -> bool:
    """A yes/no environment variable: 1/0, true/false, yes/no, on/off (any case); unset: `default`."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() not in _BOOLEANS:
        raise S3ConfigError(f"{name}={raw!r} is not a boolean (1/0, true/false, yes/no, on/off)")
    return _BOOLEANS[raw.lower()]


def setting(name: str, default: float, minimum: float = 0.0, whole: bool = False) -> float:
    """A numeric environment variable of at least `minimum` (a whole number with `whole`); unset: `default`."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or (whole and not value.is_integer()):
        raise S3ConfigError(f"{name}={raw!r} is not {'a whole number' if whole else 'a number'}")
    if value < minimum:
        raise S3ConfigError(f"{name}={raw!r} must be at least {minimum:g}")
    return value


def endpoint() -> Tuple[str, bool]:
    """(host[:port], secure) of the S3 server, the one reading of KFX_S3_ENDPOINT and KFX_S3_SECURE.

    KFX_S3_ENDPOINT is host:port or a URL http(s)://host:port (a trailing slash allowed), as the
    AWS CLI takes it; the scheme decides TLS unless KFX_S3_SECURE (a `flag`) says otherwise."""
    raw = os.environ.get("KFX_S3_ENDPOINT", "").strip()
    if not raw:
        raise S3ConfigError("KFX_S3_ENDPOINT is not set (host:port or http(s)://host:port of the S3/MinIO server)")
    parsed = urlsplit(raw if "://" in raw else f"//{raw}")
    try:
        port = parsed.port      # a port that is not a number, or out of range, raises here
    except ValueError as err:
        raise S3ConfigError(f"KFX_S3_ENDPOINT={raw!r}: {err}") from err
    problem = ("the scheme must be http or https" if parsed.scheme not in ("", "http", "https") else
               "credentials do not belong in it (they come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
               if "@" in parsed.netloc else
               f"a path ({parsed.path}) is not allowed" if parsed.path not in ("", "/") else
               "a query or fragment is not allowed" if parsed.query or parsed.fragment else
               "no valid host name" if not _HOST.fullmatch(parsed.hostname or "") else
               "port 0 is not a port" if port == 0 else "")
    if problem:
        raise S3ConfigError(f"KFX_S3_ENDPOINT={raw!r}: {problem}; expected host:port or http(s)://host:port")
    return parsed.netloc, flag("KFX_S3_SECURE", parsed.scheme == "https")


def endpoint_url() -> str:
    """http(s)://host:port of the S3 server (for messages and SDKs that take a URL)."""
    host, secure = endpoint()
    return f"{'https' if secure else 'http'}://{host}"


def http_client():
    """urllib3 pool with bounded timeouts and no retries of its own (`with_retries` retries operations)."""
    import certifi
    import urllib3
    ca_file = os.environ.get("SSL_CERT_FILE") or certifi.where()
    if not os.path.isfile(ca_file):
        raise S3ConfigError(f"SSL_CERT_FILE={ca_file!r}: no such file (a CA bundle, PEM)")
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=setting("KFX_S3_CONNECT_TIMEOUT", 10, minimum=0.001),
                                read=setting("KFX_S3_READ_TIMEOUT", 60, minimum=0.001)),
        maxsize=10, cert_reqs="CERT_REQUIRED", ca_certs=ca_file, retries=False)


def client():
    """A minio client from the environment settings (never literal credentials)."""
    from minio import Minio
    host, secure = endpoint()
    missing = [v for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not os.environ.get(v)]
    if missing:
        raise S3ConfigError(f"{' and '.join(missing)} not set: S3 credentials come from the environment")
    return Minio(host, access_key=os.environ["AWS_ACCESS_KEY_ID"],
                 secret_key=os.environ["AWS_SECRET_ACCESS_KEY"], secure=secure,
                 region=os.environ.get("AWS_REGION") or "us-east-1", http_client=http_client())


# ------------------------------------------------------------------ the retry policy

def transient(err: BaseException) -> bool:
    """A failure worth retrying: the network or the server, not the request."""
    import urllib3
    from minio.error import S3Error, ServerError
    if isinstance(err, (urllib3.exceptions.HTTPError, ServerError)):
        return True          # refused, reset, timed out, a 5xx without an S3 error body
    return isinstance(err, S3Error) and err.code in _RETRYABLE_CODES


def _cause(err: BaseException) -> str:
    text = str(getattr(err, "reason", None) or err)
    text = re.sub(r"<[^>]*>:?\s*", "", text)          # urllib3's "<...HTTPConnection object at 0x..>: "
    return " ".join(text.split())[:160] or type(err).__name__


def with_retries(what: str, call: Callable[[], T], url: str = "") -> T:
    """`call()`, retried with exponential backoff (and jitter) on transient failures; then S3Unavailable:
    'S3 endpoint http://host:port unreachable: <what> failed N times over Ts (<cause>)'. `url` names
    the endpoint in that line (default: `endpoint_url()`)."""
    attempts = int(setting("KFX_S3_ATTEMPTS", 5, minimum=1, whole=True))
    backoff = setting("KFX_S3_BACKOFF", 0.5)
    started = time.monotonic()
    for attempt in range(attempts):
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - only transient ones are retried
            if not transient(err):
                raise
            if attempt == attempts - 1:
                raise S3Unavailable(
                    f"S3 endpoint {url or endpoint_url()} unreachable: {what} failed {attempts} times "
                    f"over {time.monotonic() - started:.0f}s ({_cause(err)})") from err
            time.sleep(min(MAX_BACKOFF, backoff * 2 ** attempt) * random.uniform(0.8, 1.2))
    raise AssertionError("unreachable")


# ------------------------------------------------------------------ URIs and objects

def is_s3(uri: str) -> bool:
    return uri.startswith(("s3://", "minio://"))


def split_uri(uri: str) -> Tuple[str, str]:
    """``s3://bucket/key`` (or KFP's ``minio://bucket/key``) -> (bucket, key without slashes at its ends)."""
    for scheme in ("s3://", "minio://"):
        if uri.startswith(scheme):
            bucket, _, key = uri[len(scheme):].partition("/")
            if bucket:
                return bucket, key.strip("/")
    raise S3ConfigError(f"{uri!r} is not s3://bucket/key (or minio://bucket/key)")


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def read(s3_client, bucket: str, key: str) -> Optional[bytes]:
    """An object's bytes, or None when it (or its bucket) does not exist."""
    from minio.error import S3Error

    def get() -> Optional[bytes]:
        try:
            response = s3_client.get_object(bucket, key)
        except S3Error as e:
            if e.code in NOT_FOUND:
                return None
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()
    return with_retries(f"read of s3://{bucket}/{key}", get)


def put(s3_client, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
    """Write one small object (bytes in memory)."""
    with_retries(f"upload of s3://{bucket}/{key}", lambda: s3_client.put_object(
        bucket, key, io.BytesIO(bytes(data)), len(data), content_type=content_type))


def _list(s3_client, bucket: str, prefix: str) -> list:
    return with_retries(f"listing of s3://{bucket}/{prefix}",
                        lambda: list(s3_client.list_objects(bucket, prefix=prefix, recursive=True)))


def _download(s3_client, bucket: str, key: str, path: str) -> None:
    with_retries(f"download of s3://{bucket}/{key}", lambda: s3_client.fget_object(bucket, key, path))


def local_copy(uri: str, scratch: str) -> str:
    """A local path holding ``uri``: the path itself, or the S3 object or prefix downloaded below
    ``scratch`` (a prefix keeps its layout); "" for "" (an optional input not given). A URI that
    names nothing is a ValueError naming it."""
    if not uri:
        return ""
    if not is_s3(uri):
        if not os.path.exists(uri):
            raise ValueError(f"{uri}: no such file or directory")
        return uri
    bucket, key = split_uri(uri)
    s3 = client()
    dest = os.path.join(scratch, os.path.basename(key))
    names = [o.object_name for o in _list(s3, bucket, key + "/")]
    if not names:   # a single object
        from minio.error import S3Error
        try:
            _download(s3, bucket, key, dest)
        except S3Error as e:
            raise ValueError(f"{uri}: no such object or prefix ({e.code})") from e
        return dest
    for name in names:
        _download(s3, bucket, name, os.path.join(dest, *name[len(key) + 1:].split("/")))
    return dest


# ------------------------------------------------------------------ commit markers

def commit(s3_client, bucket: str, prefix: str, trees: Mapping[str, str] = None,
           files: Mapping[str, bytes] = None) -> Dict:
    """Upload local directories (each below its name) and small files below ``prefix``, then the
    marker last; returns the manifest ``{"objects": {relative name: bytes}, "dirs": [empty dirs]}``."""
    marker = _join(prefix, MARKER)
    # A stale marker never vouches for new objects.
    with_retries(f"delete of s3://{bucket}/{marker}", lambda: s3_client.remove_object(bucket, marker))
    manifest: Dict = {"objects": {}, "dirs": []}
    for name, local in (trees or {}).items():
        if not os.path.isdir(local):
            raise ValueError(f"{local!r} is not a directory")
        for root, dirs, names in os.walk(local):
            rel_root = os.path.relpath(root, local)
            rel_root = "" if rel_root == "." else rel_root.replace(os.sep, "/")
            if not names and not dirs:
                manifest["dirs"].append(_join(name, rel_root))  # e.g. a SavedModel's empty assets/
            for fname in sorted(names):
                path, rel = os.path.join(root, fname), _join(name, rel_root, fname)
                key = _join(prefix, rel)
                with_retries(f"upload of s3://{bucket}/{key}", lambda: s3_client.fput_object(bucket, key, path))
                manifest["objects"][rel] = os.path.getsize(path)
    for name, data in (files or {}).items():
        put(s3_client, bucket, _join(prefix, name), data)
        manifest["objects"][name] = len(data)
    put(s3_client, bucket, marker, json.dumps(manifest, sort_keys=True).encode(), "application/json")
    return manifest


def committed(s3_client, bucket: str, prefix: str) -> Optional[Dict]:
    """The manifest of a committed prefix, or None when its marker does not exist.

    A marker that is no manifest (registry versions pushed before manifests, whose `_COMPLETE`
    held the publisher's claim token) vouches for every object below the prefix: the registry
    never rewrites a version, so what is there is what was published."""
    raw = read(s3_client, bucket, _join(prefix, MARKER))
    if raw is None:
        return None
    try:
        manifest = json.loads(raw)
    except ValueError:
        manifest = None
    if isinstance(manifest, dict) and isinstance(manifest.get("objects"), dict):
        return {"objects": manifest["objects"], "dirs": list(manifest.get("dirs") or [])}
    base = _join(prefix) + "/"
    return {"objects": {o.object_name[len(base):]: o.size for o in _list(s3_client, bucket, base)
                        if not o.is_dir and not o.object_name[len(base):].startswith("_")},
            "dirs": []}


def fetch(s3_client, bucket: str, prefix: str, dest: str, under: str = "",
          manifest: Optional[Dict] = None) -> Dict:
    """Download the committed objects below ``<prefix>/<under>`` into ``dest`` (created), keeping
    their layout; returns the manifest. A prefix without its marker is a ValueError naming it."""
    manifest = manifest if manifest is not None else committed(s3_client, bucket, prefix)
    if manifest is None:
        raise ValueError(f"s3://{bucket}/{_join(prefix, MARKER)} is missing: not committed")
    os.makedirs(dest, exist_ok=True)
    head = _join(under) + "/" if _join(under) else ""
    for rel in manifest["dirs"]:
        if rel.startswith(head):
            os.makedirs(os.path.join(dest, *rel[len(head):].split("/")), exist_ok=True)
    for rel in manifest["objects"]:
        if rel.startswith(head) and rel != head:
            _download(s3_client, bucket, _join(prefix, rel), os.path.join(dest, *rel[len(head):].split("/")))
    return manifest
