"""The S3 artifact store (MinIO in production), through the minio SDK.

Endpoint and credentials come from the environment only (KFX_S3_ENDPOINT,
KFX_S3_SECURE, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION); the IR
and the images never hold them. Like KFP's launcher, the runner downloads a
step's inputs and uploads its outputs, so components see local paths.

A multi-file artifact is many objects and S3 has no atomic rename, so an
artifact counts as stored only once its commit marker `<key>.kfx-commit`
(written last, listing every object) exists: a crash mid-upload leaves
objects that nothing will read. That rule holds for everything under the
store's root; data a pipeline imports from elsewhere in S3 (an object or a
prefix someone uploaded) is read as it is, fingerprinted by key, ETag and size.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from urllib.parse import urlparse

from kfx.store import import_local

COMMIT_SUFFIX = ".kfx-commit"


class S3ConfigError(ValueError):
    pass


def client_from_env():
    from minio import Minio
    endpoint = os.environ.get("KFX_S3_ENDPOINT")
    if not endpoint:
        raise S3ConfigError("KFX_S3_ENDPOINT is not set (host:port of the S3/MinIO server)")
    missing = [v for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not os.environ.get(v)]
    if missing:
        raise S3ConfigError(f"{' and '.join(missing)} not set: S3 credentials come from the environment")
    return Minio(endpoint, access_key=os.environ["AWS_ACCESS_KEY_ID"],
                 secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                 secure=os.environ.get("KFX_S3_SECURE", "0") == "1",
                 region=os.environ.get("AWS_REGION", "us-east-1"))


def split_uri(uri: str) -> tuple[str, str]:
    """Bucket and key of s3://bucket/key (or KFP's minio://bucket/key)."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("s3", "minio") or not parsed.netloc:
        raise S3ConfigError(f"not an s3://bucket/key URI: {uri}")
    return parsed.netloc, parsed.path.lstrip("/")


def _is_s3(uri: str) -> bool:
    return uri.startswith(("s3://", "minio://"))


class S3Store:
    def __init__(self, root_uri: str, client=None):
        self.root_uri = root_uri.rstrip("/")
        self.bucket, self.prefix = split_uri(self.root_uri + "/")
        self.client = client or client_from_env()
        if not self.client.bucket_exists(self.bucket):
            self.client.make_bucket(self.bucket)

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
            self.client.fput_object(bucket, object_key, str(path))
            manifest["objects"][rel] = path.stat().st_size
        body = json.dumps(manifest).encode()
        self.client.put_object(bucket, key + COMMIT_SUFFIX, io.BytesIO(body), len(body),
                               content_type="application/json")
        return True

    def _manifest(self, uri: str):
        from minio.error import S3Error
        bucket, key = split_uri(uri)
        try:
            response = self.client.get_object(bucket, key + COMMIT_SUFFIX)
        except S3Error as err:
            if err.code in ("NoSuchKey", "NoSuchBucket"):
                return None
            raise
        try:
            return json.loads(response.read())
        finally:
            response.close()
            response.release_conn()

    def exists(self, uri: str) -> bool:
        if not _is_s3(uri):
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
        exact = [o for o in self.client.list_objects(bucket, prefix=key) if o.object_name == key]
        if exact:
            return exact
        return list(self.client.list_objects(bucket, prefix=key.rstrip("/") + "/", recursive=True))

    def resolve_import(self, uri: str) -> tuple[str, str]:
        if not _is_s3(uri):
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
        if not _is_s3(uri):
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
            self.client.fget_object(bucket, key if not rel else f"{key}/{rel}", str(target))
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
            self.client.fget_object(bucket, key, str(target))
            return str(target)
        for o in objects:
            target = scratch / o.object_name[len(key.rstrip("/")) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            self.client.fget_object(bucket, o.object_name, str(target))
        return str(scratch)
