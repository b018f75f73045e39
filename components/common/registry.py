"""A versioned model registry: `<registry_uri>/<model_name>/v<N>/`.

Versions are numbered 1, 2, ... and are never overwritten; a version is only
visible once it is complete.

* Filesystem (`/path` or `file:///path`): files are staged into a hidden
  directory inside `<registry_uri>/<model_name>/` (same file system), and the
  staged directory is renamed to `v<N>` in one atomic step that refuses to
  replace an existing entry (Linux `renameat2(RENAME_NOREPLACE)`; elsewhere
  `os.rename`, which refuses a non-empty target, after an existence check). If
  `v<N>` is taken (a concurrent publisher), N+1 is tried. A crash leaves at
  most a hidden `.staging-*` directory, which is never listed as a version.
* S3 (`s3://bucket/prefix`, MinIO SDK; endpoint and credentials from
  `KFX_S3_ENDPOINT`, `KFX_S3_SECURE`, `AWS_ACCESS_KEY_ID`,
  `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`): a publisher first claims `v<N>` by
  writing `v<N>/_CLAIM` (a random token) with `If-None-Match: *` and reading
  it back; a taken N moves it on to N+1. Then the version is committed by the
  stages' one convention (`common.s3.commit`): the objects, then
  `v<N>/_COMPLETE` last, listing them. Only versions with `_COMPLETE` are
  visible (`latest`, `fetch`); versions pushed before the marker listed its
  objects (it held the claim token) stay readable.

This module must not import TensorFlow: the push image carries none.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno
import json
import os
import re
import shutil
import time
import uuid
from typing import Callable, Dict, List, Mapping, Optional

from kfx_components.common import s3

_VERSION_RE = re.compile(r"^v([1-9][0-9]*)$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
STAGING_PREFIX = ".staging-"
CLAIM = "_CLAIM"
MAX_ATTEMPTS = 1000
STALE_STAGING_SECONDS = 24 * 3600


class RegistryError(RuntimeError):
    """The registry could not complete an operation."""


@dataclasses.dataclass(frozen=True)
class Version:
    number: int
    uri: str

    @property
    def name(self) -> str:
        return f"v{self.number}"


def _check_name(model_name: str) -> None:
    if not isinstance(model_name, str) or not _NAME_RE.match(model_name):
        raise ValueError(f"model_name {model_name!r} must match {_NAME_RE.pattern}")


def _local_root(registry_uri: str) -> str:
    if registry_uri.startswith("file://"):
        return registry_uri[len("file://"):]
    if "://" in registry_uri:
        raise ValueError(f"registry_uri {registry_uri!r}: only filesystem paths, file:// and "
                         "s3:// are supported")
    return registry_uri


def _version_uri(registry_uri: str, model_name: str, number: int) -> str:
    return f"{registry_uri.rstrip('/')}/{model_name}/v{number}"


def _check_sources(source_dirs: Mapping[str, str], files: Mapping[str, bytes],
                   allow_empty: bool = False) -> None:
    if not source_dirs and not files and not allow_empty:
        raise ValueError("publish: nothing to publish (no source_dirs and no files)")
    for name in list(source_dirs) + list(files):
        if not _NAME_RE.match(name) or _VERSION_RE.match(name):   # never a marker (`_...`) nor `v<N>`
            raise ValueError(f"publish: entry name {name!r} is not allowed")
    for name, path in source_dirs.items():
        if not os.path.isdir(path):
            raise ValueError(f"publish: source_dirs[{name!r}] = {path!r} is not a directory")
    for name, data in files.items():
        if not isinstance(data, (bytes, bytearray)):
            raise ValueError(f"publish: files[{name!r}] must be bytes")


# ------------------------------------------------------------------ filesystem

def _rename_noreplace(src: str, dst: str) -> None:
    """Atomically rename src -> dst; raise FileExistsError if dst exists."""
    libc_name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(libc_name, use_errno=True) if libc_name else None
    renameat2 = getattr(libc, "renameat2", None) if libc is not None else None
    if renameat2 is not None:
        at_fdcwd, rename_noreplace = -100, 1
        rc = renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_noreplace)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err), dst)
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), dst)
    # Portable fallback: os.rename refuses a non-empty target directory, and a staged
    # version is never empty; an empty stray directory is not replaced either.
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "version exists", dst)
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(e.errno, "version exists", dst) from e
        raise


def _local_versions(model_dir: str) -> List[int]:
    if not os.path.isdir(model_dir):
        return []
    out = []
    for entry in os.listdir(model_dir):
        m = _VERSION_RE.match(entry)
        if m and os.path.isdir(os.path.join(model_dir, entry)):
            out.append(int(m.group(1)))
    return sorted(out)


def _clean_stale_staging(model_dir: str) -> None:
    now = time.time()
    for entry in os.listdir(model_dir):
        path = os.path.join(model_dir, entry)
        if entry.startswith(STAGING_PREFIX):
            try:
                if now - os.path.getmtime(path) > STALE_STAGING_SECONDS:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass


def _write_files(directory: str, files: Mapping[str, bytes]) -> None:
    for name, data in files.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def _local_publish(source_dirs, files, registry_uri, model_name, versioned_files) -> Version:
    model_dir = os.path.join(_local_root(registry_uri), model_name)
    os.makedirs(model_dir, exist_ok=True)
    _clean_stale_staging(model_dir)
    staging = os.path.join(model_dir, f"{STAGING_PREFIX}{uuid.uuid4().hex}")
    os.mkdir(staging)
    try:
        for name, src in source_dirs.items():
            shutil.copytree(src, os.path.join(staging, name))
        _write_files(staging, files)
        existing = _local_versions(model_dir)
        number = (existing[-1] if existing else 0) + 1
        for _ in range(MAX_ATTEMPTS):
            if versioned_files is not None:
                extra = dict(versioned_files(number))
                _check_sources({}, extra)
                _write_files(staging, extra)
            try:
                _rename_noreplace(staging, os.path.join(model_dir, f"v{number}"))
            except FileExistsError:
                number += 1
                continue
            return Version(number, _version_uri(registry_uri, model_name, number))
        raise RegistryError(f"could not claim a version under {model_dir!r} after "
                            f"{MAX_ATTEMPTS} attempts")
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging, ignore_errors=True)


# ------------------------------------------------------------------ S3 / MinIO

def _s3_model_prefix(prefix: str, model_name: str) -> str:
    return f"{prefix}/{model_name}/" if prefix else f"{model_name}/"


def _s3_versions(client, bucket: str, model_prefix: str) -> Dict[int, bool]:
    """{N: complete?} for every claimed version."""
    out: Dict[int, bool] = {}
    for obj in client.list_objects(bucket, prefix=model_prefix, recursive=True):
        rel = obj.object_name[len(model_prefix):]
        head, _, tail = rel.partition("/")
        m = _VERSION_RE.match(head)
        if not m:
            continue
        n = int(m.group(1))
        out[n] = out.get(n, False) or tail == s3.MARKER
    return out


def _s3_claim(client, bucket: str, key: str, token: bytes) -> bool:
    """Create `key` only if absent (If-None-Match: *), then verify it holds our token."""
    from minio.error import S3Error

    try:
        # The public put_object turns unknown headers into user metadata; the conditional
        # header must go out as is.
        client._put_object(bucket, key, token, headers={  # pylint: disable=protected-access
            "If-None-Match": "*", "Content-Type": "application/octet-stream"})
    except S3Error as e:
        if e.code in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        raise
    return s3.read(client, bucket, key) == token


def _s3_publish(source_dirs, files, registry_uri, model_name, versioned_files) -> Version:
    bucket, prefix = s3.split_uri(registry_uri)
    client = s3.client()
    if not client.bucket_exists(bucket):
        raise ValueError(f"registry_uri {registry_uri!r}: bucket {bucket!r} does not exist")
    model_prefix = _s3_model_prefix(prefix, model_name)
    token = uuid.uuid4().hex.encode()
    versions = _s3_versions(client, bucket, model_prefix)
    number = max(versions, default=0) + 1
    for _ in range(MAX_ATTEMPTS):
        if _s3_claim(client, bucket, f"{model_prefix}v{number}/{CLAIM}", token):
            break
        number += 1
    else:
        raise RegistryError(f"could not claim a version under s3://{bucket}/{model_prefix}")
    base = f"{model_prefix}v{number}/"
    if versioned_files is not None:
        extra = dict(versioned_files(number))
        _check_sources({}, extra)
        files = {**files, **extra}
    s3.commit(client, bucket, base, source_dirs, files)
    return Version(number, _version_uri(registry_uri, model_name, number))


# ------------------------------------------------------------------ public API

def versions(registry_uri: str, model_name: str) -> List[Version]:
    """Every complete version, oldest first."""
    _check_name(model_name)
    if s3.is_s3(registry_uri):
        bucket, prefix = s3.split_uri(registry_uri)
        client = s3.client()
        if not client.bucket_exists(bucket):
            return []
        found = _s3_versions(client, bucket, _s3_model_prefix(prefix, model_name))
        numbers = sorted(n for n, complete in found.items() if complete)
    else:
        numbers = _local_versions(os.path.join(_local_root(registry_uri), model_name))
    return [Version(n, _version_uri(registry_uri, model_name, n)) for n in numbers]


def latest(registry_uri: str, model_name: str) -> Optional[Version]:
    """The highest complete version, or None when the model has none."""
    found = versions(registry_uri, model_name)
    return found[-1] if found else None


def publish(source_dirs: Mapping[str, str], files: Mapping[str, bytes], registry_uri: str,
            model_name: str,
            versioned_files: Optional[Callable[[int], Mapping[str, bytes]]] = None) -> Version:
    """Publish directories and in-memory files as the next version `v<N>`; return it.

    `versioned_files(N)`, when given, returns more files whose content depends on the
    version number (a model card naming its version); it is called once N is chosen
    (again with N+1 if N turns out to be taken) and its files are part of the version
    from the moment it becomes visible.
    """
    _check_name(model_name)
    source_dirs, files = dict(source_dirs or {}), dict(files or {})
    _check_sources(source_dirs, files, allow_empty=versioned_files is not None)
    if s3.is_s3(registry_uri):
        return _s3_publish(source_dirs, files, registry_uri, model_name, versioned_files)
    return _local_publish(source_dirs, files, registry_uri, model_name, versioned_files)


# <registry_uri>/<model_name>/aliases.json = {"production": {"version": N, ...}, "staging": ..., "history": [...]},
# written by `kfx rollout` (kfx/serving.py set_alias).
ALIASES = "aliases.json"


def read_alias(registry_uri: str, model_name: str, alias: str) -> Optional[int]:
    """The version number an alias (``staging``, ``production``) points to, or None."""
    _check_name(model_name)
    if s3.is_s3(registry_uri):
        bucket, prefix = s3.split_uri(registry_uri)
        raw = s3.read(s3.client(), bucket, _s3_model_prefix(prefix, model_name) + ALIASES)
    else:
        path = os.path.join(_local_root(registry_uri), model_name, ALIASES)
        raw = None
        if os.path.isfile(path):
            with open(path, "rb") as f:
                raw = f.read()
    if raw is None:
        return None
    try:
        entry = json.loads(raw).get(alias)
        return None if entry is None else int(entry["version"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{registry_uri.rstrip('/')}/{model_name}/{ALIASES}: alias {alias!r} is not "
                         f'{{"{alias}": {{"version": N}}}} JSON ({e})') from e


def read_file(version: Version, name: str) -> Optional[bytes]:
    """One file of a complete version (e.g. its model card), or None when the version has no such file."""
    if s3.is_s3(version.uri):
        bucket, key_prefix = s3.split_uri(version.uri)
        return s3.read(s3.client(), bucket, f"{key_prefix}/{name}")
    path = os.path.join(_local_root(version.uri), *name.split("/"))
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return f.read()


def fetch(version: Version, dest: str) -> str:
    """Copy a version's contents into `dest` (created); return `dest`."""
    os.makedirs(dest, exist_ok=True)
    if s3.is_s3(version.uri):
        bucket, key_prefix = s3.split_uri(version.uri)
        client = s3.client()
        if s3.committed(client, bucket, key_prefix) is None:
            raise ValueError(f"version {version.uri!r} is not complete (no {s3.MARKER})")
        s3.fetch(client, bucket, key_prefix, dest)
        return dest
    src = _local_root(version.uri)
    if not os.path.isdir(src):
        raise ValueError(f"version {version.uri!r} does not exist")
    shutil.copytree(src, dest, dirs_exist_ok=True)
    return dest
