"""The S3 artifact store (MinIO in production): the runner's store of step outputs.

The client, its settings (KFX_S3_ENDPOINT, KFX_S3_SECURE, AWS_*, from the environment only; the IR
and the images never hold them) and its one retry policy (bounded timeouts, KFX_S3_ATTEMPTS tries
with backoff, then S3Unavailable naming the endpoint) are kfx_formats.s3's, shared with the stages
and the serving runtime. Like KFP's launcher, the runner downloads a step's inputs and uploads its
outputs, so components see local paths.

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
from pathlib import Path
from typing import Callable, TypeVar

from kfx.stores.local import import_local
from kfx_formats import s3
# S3ConfigError, S3Unavailable and split_uri are imported from here by kfx's commands and gc.
from kfx_formats.s3 import S3ConfigError, S3Unavailable, is_s3, split_uri  # noqa: F401

COMMIT_SUFFIX = ".kfx-commit"
T = TypeVar("T")


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
        self.client = client or s3.client()
        self.endpoint = s3.endpoint_url()
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
        return s3.with_retries(what, call, self.endpoint)

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
        raw = s3.read(self.client, bucket, key + COMMIT_SUFFIX)      # retried by s3.read itself
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
