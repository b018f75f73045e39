"""The S3 artifact store (MinIO in production), through the minio SDK.

Endpoint and credentials come from the environment only (KFX_S3_ENDPOINT,
KFX_S3_SECURE, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION); the IR
and the images never hold them. Each setting is checked where it is read (the
endpoint as host:port or http(s)://host:port, yes/no settings as 1/0, true/false
or yes/no, numbers as numbers); anything else is an S3ConfigError naming it.
Like KFP's launcher, the runner downloads a step's inputs and uploads its
outputs, so components see local paths.

A multi-file artifact is many objects and S3 has no atomic rename, so an
artifact counts as stored only once its commit marker `<key>.kfx-commit`
(written last, listing every object) exists: a crash mid-upload leaves
objects that nothing will read. That rule holds for everything under the
store's root; data a pipeline imports from elsewhere in S3 (an object or a
prefix someone uploaded) is read as it is, fingerprinted by key, ETag and size.

An S3 server that stops answering: every request has bounded timeouts
(KFX_S3_CONNECT_TIMEOUT, default 10 s; KFX_S3_READ_TIMEOUT, default 60 s, per
socket read) and every operation is retried with exponential backoff on
transient failures (connection refused or reset, timeouts, 5xx, SlowDown):
KFX_S3_ATTEMPTS (default 5) attempts, waits KFX_S3_BACKOFF (default 0.5 s)
doubling up to 8 s, so about 8 s of waiting plus the timeouts. Then the
operation fails with `S3Unavailable`, one line naming the endpoint. urllib3's
own retries are off (one retry layer, this one). An upload cut off midway
leaves objects without their commit marker: never read.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
import re
import time
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import urlparse, urlsplit

from kfx.store import import_local

COMMIT_SUFFIX = ".kfx-commit"


T = TypeVar("T")
MAX_BACKOFF = 8.0
# S3 error codes that say "try again" (the server is there but busy or failing).
_RETRYABLE_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout",
                    "RequestTimeTooSkewed", "OperationAborted"}


class S3ConfigError(ValueError):
    """An S3 setting (environment variable or URI) kfx cannot use; the message names it."""


class S3Unavailable(ConnectionError):
    """The S3 endpoint did not answer (or kept failing) through every retry."""


_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
_HOST = re.compile(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]+")      # a name, an IPv4 or (unbracketed) IPv6 address


def flag(name: str, default: bool) -> bool:
    """A yes/no environment variable: 1/0, true/false, yes/no, on/off (any case); unset: `default`."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() not in _BOOLEANS:
        raise S3ConfigError(f"{name}={raw!r} is not a boolean (1/0, true/false, yes/no)")
    return _BOOLEANS[raw.lower()]


def _setting(name: str, default: float, minimum: float = 0.0, whole: bool = False) -> float:
    """A numeric environment variable of at least `minimum` (a whole number with `whole`)."""
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


def endpoint_from_env() -> tuple[str, bool]:
    """(host[:port], secure) of the S3 server. KFX_S3_ENDPOINT is host:port or a URL
    http(s)://host:port (a trailing slash allowed), as the AWS CLI takes it; the scheme
    decides TLS unless KFX_S3_SECURE says otherwise."""
    raw = os.environ.get("KFX_S3_ENDPOINT", "").strip()
    if not raw:
        raise S3ConfigError("KFX_S3_ENDPOINT is not set (host:port or http(s)://host:port of the S3/MinIO server)")
    parsed = urlsplit(raw if "://" in raw else f"//{raw}")
    try:
        parsed.port      # a port that is not a number, or out of range, raises here
    except ValueError as err:
        raise S3ConfigError(f"KFX_S3_ENDPOINT={raw!r}: {err}") from err
    problem = ("the scheme must be http or https" if parsed.scheme not in ("", "http", "https") else
               "credentials do not belong in it (they come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
               if "@" in parsed.netloc else
               f"a path ({parsed.path}) is not allowed" if parsed.path not in ("", "/") else
               "a query or fragment is not allowed" if parsed.query or parsed.fragment else
               "no valid host name" if not _HOST.fullmatch(parsed.hostname or "") else "")
    if problem:
        raise S3ConfigError(f"KFX_S3_ENDPOINT={raw!r}: {problem}; expected host:port or http(s)://host:port")
    return parsed.netloc, flag("KFX_S3_SECURE", parsed.scheme == "https")


def endpoint_url() -> str:
    host, secure = endpoint_from_env()
    return f"{'https' if secure else 'http'}://{host}"


def http_client():
    """urllib3 pool with bounded timeouts and no retries of its own (S3Store retries operations)."""
    import certifi
    import urllib3
    ca_file = os.environ.get("SSL_CERT_FILE") or certifi.where()
    if not os.path.isfile(ca_file):
        raise S3ConfigError(f"SSL_CERT_FILE={ca_file!r}: no such file (a CA bundle, PEM)")
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=_setting("KFX_S3_CONNECT_TIMEOUT", 10, minimum=0.001),
                                read=_setting("KFX_S3_READ_TIMEOUT", 60, minimum=0.001)),
        maxsize=10, cert_reqs="CERT_REQUIRED", ca_certs=ca_file, retries=False)


def client_from_env():
    from minio import Minio
    host, secure = endpoint_from_env()
    missing = [v for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not os.environ.get(v)]
    if missing:
        raise S3ConfigError(f"{' and '.join(missing)} not set: S3 credentials come from the environment")
    return Minio(host, access_key=os.environ["AWS_ACCESS_KEY_ID"],
                 secret_key=os.environ["AWS_SECRET_ACCESS_KEY"], secure=secure,
                 region=os.environ.get("AWS_REGION") or "us-east-1", http_client=http_client())


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


def with_retries(what: str, call: Callable[[], T], endpoint: str = "") -> T:
    """`call()`, retried with exponential backoff (and jitter) on transient failures; then
    S3Unavailable: 'S3 endpoint http://host:port unreachable: <what> failed N times over Ts (<cause>)'."""
    attempts = int(_setting("KFX_S3_ATTEMPTS", 5, minimum=1, whole=True))
    backoff = _setting("KFX_S3_BACKOFF", 0.5)
    started = time.monotonic()
    for attempt in range(attempts):
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - only transient ones are retried
            if not transient(err):
                raise
            if attempt == attempts - 1:
                raise S3Unavailable(
                    f"S3 endpoint {endpoint or endpoint_url()} unreachable: {what} failed {attempts} times "
                    f"over {time.monotonic() - started:.0f}s ({_cause(err)})") from err
            time.sleep(min(MAX_BACKOFF, backoff * 2 ** attempt) * random.uniform(0.8, 1.2))
    raise AssertionError("unreachable")


def split_uri(uri: str) -> tuple[str, str]:
    """Bucket and key (no slashes at its ends) of s3://bucket/key (or KFP's minio://bucket/key)."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("s3", "minio") or not parsed.netloc:
        raise S3ConfigError(f"not an s3://bucket/key URI: {uri}")
    return parsed.netloc, parsed.path.strip("/")


def is_s3(uri: str) -> bool:
    return uri.startswith(("s3://", "minio://"))


def read_object(client, bucket: str, key: str) -> bytes | None:
    """An object's bytes, or None when it (or its bucket) does not exist."""
    from minio.error import S3Error
    try:
        response = client.get_object(bucket, key)
    except S3Error as err:
        if err.code in ("NoSuchKey", "NoSuchObject", "NoSuchBucket"):
            return None
        raise
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


class S3Store:
    def __init__(self, root_uri: str, client=None):
        self.root_uri = root_uri.rstrip("/")
        self.bucket, key = split_uri(self.root_uri)
        from minio.helpers import check_bucket_name
        try:
            check_bucket_name(self.bucket, strict=True)
        except ValueError as err:
            raise S3ConfigError(f"{root_uri}: {err} (S3 bucket names: 3-63 characters, lowercase letters, "
                                "digits, '.' and '-')") from err
        self.prefix = f"{key}/" if key else ""
        self.client = client or client_from_env()
        self.endpoint = endpoint_url()
        if not self._retry(f"bucket_exists {self.bucket}", lambda: self.client.bucket_exists(self.bucket)):
            self._retry(f"make_bucket {self.bucket}", lambda: self._make_bucket())

    def _make_bucket(self) -> None:
        from minio.error import S3Error
        try:
            self.client.make_bucket(self.bucket)
        except S3Error as err:     # a retried make_bucket whose first try got through; a concurrent run
            if err.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def _retry(self, what: str, call: Callable[[], T]) -> T:
        return with_retries(what, call, self.endpoint)

    def output_uri(self, pipeline: str, run_id: str, task: str, output: str) -> str:
        return f"{self.root_uri}/{pipeline}/{run_id}/{task}/{output}"

    def commit(self, staged: Path, uri: str) -> bool:
        if not staged.exists():
            return False
        bucket, key = split_uri(uri)
        files = [staged] if staged.is_file() else sorted(p for p in staged.rglob("*") if p.is_file())
        manifest = {"kind": "file" if staged.is_file() else "directory", "objects": {}}
        for path in files:
            rel = "" if staged.is_file() else path.relative_to(staged).as_posix()
            object_key = key if not rel else f"{key}/{rel}"
            self._retry(f"upload of s3://{bucket}/{object_key}",
                        lambda: self.client.fput_object(bucket, object_key, str(path)))
            manifest["objects"][rel] = path.stat().st_size
        body = json.dumps(manifest).encode()
        # Last: the artifact exists from this object on, whole (an upload cut off before it leaves
        # objects that nothing reads).
        self._retry(f"commit marker of {uri}", lambda: self.client.put_object(
            bucket, key + COMMIT_SUFFIX, io.BytesIO(body), len(body), content_type="application/json"))
        return True

    def delete(self, uri: str) -> int:
        """Removes a committed artifact (its marker first, so it stops existing at once, then its
        objects); the bytes it held."""
        manifest = self._manifest(uri)
        if manifest is None:
            return 0
        bucket, key = split_uri(uri)
        self._retry(f"delete of {uri}{COMMIT_SUFFIX}", lambda: self.client.remove_object(bucket, key + COMMIT_SUFFIX))
        for rel in manifest["objects"]:
            name = key if not rel else f"{key}/{rel}"
            self._retry(f"delete of s3://{bucket}/{name}", lambda: self.client.remove_object(bucket, name))
        return sum(manifest["objects"].values())

    def _manifest(self, uri: str):
        bucket, key = split_uri(uri)
        raw = self._retry(f"read of {uri}{COMMIT_SUFFIX}",
                          lambda: read_object(self.client, bucket, key + COMMIT_SUFFIX))
        return None if raw is None else json.loads(raw)

    def exists(self, uri: str) -> bool:
        if not is_s3(uri):
            return Path(uri).exists()
        if not self._is_ours(uri):
            return bool(self._external_objects(uri))
        return self._manifest(uri) is not None

    def _is_ours(self, uri: str) -> bool:
        """Under the store's root: written by a runner, readable only once committed."""
        bucket, key = split_uri(uri)
        return bucket == self.bucket and key.startswith(self.prefix)

    def _external_objects(self, uri: str) -> list:
        """The object at `uri`, or else the objects below it as a prefix (a directory)."""
        bucket, key = split_uri(uri)
        exact = [o for o in self._retry(f"listing of s3://{bucket}/{key}",
                                        lambda: list(self.client.list_objects(bucket, prefix=key)))
                 if o.object_name == key]
        if exact:
            return exact
        prefix = key.rstrip("/") + "/"
        return self._retry(f"listing of s3://{bucket}/{prefix}",
                           lambda: list(self.client.list_objects(bucket, prefix=prefix, recursive=True)))

    def _download(self, bucket: str, key: str, target: Path) -> None:
        self._retry(f"download of s3://{bucket}/{key}", lambda: self.client.fget_object(bucket, key, str(target)))

    def resolve_import(self, uri: str) -> tuple[str, str]:
        if not is_s3(uri):
            return import_local(uri)
        bucket, key = split_uri(uri)
        uri = f"s3://{bucket}/{key}"
        if self._is_ours(uri):
            raise ValueError(f"{uri}: imported data must live outside the pipeline root {self.root_uri}")
        objects = self._external_objects(uri)
        if not objects:
            raise FileNotFoundError(f"imported artifact not found: {uri} (no such object or prefix)")
        digest = hashlib.sha256()
        for o in sorted(objects, key=lambda o: o.object_name):
            digest.update(f"{o.object_name}\0{o.etag}\0{o.size}\n".encode())
        return uri, digest.hexdigest()

    def local_path(self, uri: str, scratch: Path) -> str:
        """Downloads an artifact into scratch; local paths (imported files) pass through."""
        if not is_s3(uri):
            return uri
        if not self._is_ours(uri):
            return self._download_external(uri, scratch)
        manifest = self._manifest(uri)
        if manifest is None:
            raise FileNotFoundError(f"{uri}: no committed artifact (missing {COMMIT_SUFFIX} marker)")
        bucket, key = split_uri(uri)
        for rel in manifest["objects"]:
            target = scratch if manifest["kind"] == "file" else scratch / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            self._download(bucket, key if not rel else f"{key}/{rel}", target)
        if manifest["kind"] == "directory":
            scratch.mkdir(parents=True, exist_ok=True)
        return str(scratch)

    def _download_external(self, uri: str, scratch: Path) -> str:
        bucket, key = split_uri(uri)
        objects = self._external_objects(uri)
        if not objects:
            raise FileNotFoundError(f"{uri}: no such object or prefix")
        if len(objects) == 1 and objects[0].object_name == key:
            # Keep the file name: stages read the extension (.csv, .parquet).
            target = scratch / Path(key).name
            scratch.mkdir(parents=True, exist_ok=True)
            self._download(bucket, key, target)
            return str(target)
        for o in objects:
            target = scratch / o.object_name[len(key.rstrip("/")) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            self._download(bucket, o.object_name, target)
        return str(scratch)
