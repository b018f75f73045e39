"""S3/MinIO access for stages (the registry, the TFJob staging prefix).

Endpoint and credentials come from the environment only (`KFX_S3_ENDPOINT`,
as host:port or http(s)://host:port, `KFX_S3_SECURE`, `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_REGION`); on Kubernetes from a Secret. Never from
the IR or an image.

The stages' commit-marker convention (docs/design.md, "Storage and commit
markers"): a set of objects below a prefix (a registry version, a TFJob staging
folder) exists once `<prefix>/_COMPLETE` does. `commit` uploads the objects and
writes that marker last, a JSON manifest of what it vouches for; `committed`
and `fetch` read a prefix only through its marker and only the objects it
lists, so a crash mid-upload or a stale object is never read as content.
Top-level names starting with `_` are the convention's own (the marker, a
registry's `_CLAIM`), never content.
"""
import io
import json
import os
import re
from typing import Dict, Mapping, Optional, Tuple
from urllib.parse import urlsplit

# What "not found" is, for the stages: a missing object or a missing bucket.
NOT_FOUND = ("NoSuchKey", "NoSuchObject", "NoSuchBucket")


_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def endpoint() -> Tuple[str, bool]:
    """(host[:port], secure) from ``KFX_S3_ENDPOINT`` (host:port, or http(s)://host:port with an
    optional trailing slash) and ``KFX_S3_SECURE`` (1/0, true/false, yes/no; when set it overrides
    the URL's scheme). A value that is neither is a ValueError naming the variable. (kfx/s3.py reads
    the same settings on the platform side: stages do not import kfx.)"""
    raw = os.environ.get("KFX_S3_ENDPOINT", "").strip()
    parsed = urlsplit(raw if "://" in raw else "//" + raw)
    try:
        host_ok = bool(re.fullmatch(r"[A-Za-z0-9._:-]+", parsed.hostname or "")) and parsed.port != 0
    except ValueError:   # a port that is no number, or out of range
        host_ok = False
    if not raw or parsed.scheme not in ("", "http", "https") or parsed.path not in ("", "/") \
            or "@" in parsed.netloc or parsed.query or parsed.fragment or not host_ok:
        raise ValueError(f"KFX_S3_ENDPOINT={raw!r} is not host:port or http(s)://host:port of the S3/MinIO server")
    secure = os.environ.get("KFX_S3_SECURE", "").strip()
    if secure and secure.lower() not in _BOOLEANS:
        raise ValueError(f"KFX_S3_SECURE={secure!r} is not a boolean (1/0, true/false, yes/no)")
    return parsed.netloc, _BOOLEANS[secure.lower()] if secure else parsed.scheme == "https"


def client():
    """A minio client from the environment settings (never literal credentials)."""
    from minio import Minio
    host, secure = endpoint()
    missing = [v for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not os.environ.get(v)]
    if missing:
        raise ValueError(f"{' and '.join(missing)} not set: S3 credentials come from the environment")
    return Minio(host, access_key=os.environ["AWS_ACCESS_KEY_ID"],
                 secret_key=os.environ["AWS_SECRET_ACCESS_KEY"], secure=secure,
                 region=os.environ.get("AWS_REGION") or "us-east-1", http_client=_http_client())


def _http_client():
    """Bounded waits: a server that stops answering fails a stage in about a minute (5 tries with
    backoff, 10 s to connect, 60 s per read), not after the SDK's default five minutes per request."""
    import certifi
    import urllib3
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=10, read=60), maxsize=10, cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=5, backoff_factor=0.5, status_forcelist=[500, 502, 503, 504]))


def split_uri(uri: str) -> Tuple[str, str]:
    """``s3://bucket/key`` (or KFP's ``minio://bucket/key``) -> (bucket, key without slashes at the ends)."""
    for scheme in ("s3://", "minio://"):
        if uri.startswith(scheme):
            bucket, _, key = uri[len(scheme):].partition("/")
            if bucket:
                return bucket, key.strip("/")
    raise ValueError(f"{uri!r} is not s3://bucket/prefix (or minio://bucket/prefix)")


def read(s3_client, bucket: str, key: str) -> Optional[bytes]:
    """An object's bytes, or None when it (or its bucket) does not exist."""
    from minio.error import S3Error
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


def is_s3(uri: str) -> bool:
    return uri.startswith(("s3://", "minio://"))


def local_copy(uri: str, scratch: str) -> str:
    """A local path holding ``uri``: the path itself, or the S3 object or prefix downloaded below
    ``scratch`` (a prefix keeps its layout). A URI that names nothing is a ValueError naming it."""
    if not is_s3(uri):
        if not os.path.exists(uri):
            raise ValueError(f"{uri}: no such file or directory")
        return uri
    bucket, key = split_uri(uri)
    s3 = client()
    names = [o.object_name for o in s3.list_objects(bucket, prefix=key + "/", recursive=True)]
    if not names:   # a single object
        dest = os.path.join(scratch, os.path.basename(key))
        from minio.error import S3Error
        try:
            s3.fget_object(bucket, key, dest)
        except S3Error as e:
            raise ValueError(f"{uri}: no such object or prefix ({e.code})") from e
        return dest
    dest = os.path.join(scratch, os.path.basename(key))
    for name in names:
        s3.fget_object(bucket, name, os.path.join(dest, *name[len(key) + 1:].split("/")))
    return dest


MARKER = "_COMPLETE"


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def commit(s3_client, bucket: str, prefix: str, trees: Mapping[str, str] = None,
           files: Mapping[str, bytes] = None) -> Dict:
    """Upload local directories (each below its name) and small files below ``prefix``, then the
    marker last; returns the manifest ``{"objects": {relative name: bytes}, "dirs": [empty dirs]}``."""
    s3_client.remove_object(bucket, _join(prefix, MARKER))  # a stale marker never vouches for new objects
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
                s3_client.fput_object(bucket, _join(prefix, rel), path)
                manifest["objects"][rel] = os.path.getsize(path)
    for name, data in (files or {}).items():
        s3_client.put_object(bucket, _join(prefix, name), io.BytesIO(bytes(data)), len(data))
        manifest["objects"][name] = len(data)
    body = json.dumps(manifest, sort_keys=True).encode()
    s3_client.put_object(bucket, _join(prefix, MARKER), io.BytesIO(body), len(body),
                         content_type="application/json")
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
    return {"objects": {o.object_name[len(base):]: o.size
                        for o in s3_client.list_objects(bucket, prefix=base, recursive=True)
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
            s3_client.fget_object(bucket, _join(prefix, rel), os.path.join(dest, *rel[len(head):].split("/")))
    return manifest
