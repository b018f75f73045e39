"""The S3 artifact store (MinIO in production), through the minio SDK.

Endpoint and credentials come from the environment only (KFX_S3_ENDPOINT,
KFX_S3_SECURE, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION); the IR
and the images never hold them. Like KFP's launcher, the runner downloads a
step's inputs and uploads its outputs, so components see local paths.

A multi-file artifact is many objects and S3 has no atomic rename, so an
artifact counts as stored only once its commit marker `<key>.kfx-commit`
(written last, listing every object) exists: a crash mid-upload leaves
objects that nothing will read.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from urllib.parse import urlparse

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
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise S3ConfigError(f"not an s3://bucket/key URI: {uri}")
    return parsed.netloc, parsed.path.lstrip("/")


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
        if not uri.startswith("s3://"):
            return Path(uri).exists()
        return self._manifest(uri) is not None

    def local_path(self, uri: str, scratch: Path) -> str:
        """Downloads a committed artifact into scratch; local paths (imported files) pass through."""
        if not uri.startswith("s3://"):
            return uri
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
