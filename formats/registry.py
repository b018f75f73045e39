"""The model registry layout: `<registry_uri>/<model_name>/v<N>/`, plus `aliases.json`.

A registry is a filesystem path (`/path` or `file:///path`) or an S3 prefix (`s3://bucket/prefix`).
A model directory (`model_dir`) is `<registry_uri>/<model_name>`; a model URI names a version in
it: `<model_dir>/v<N>`, `<model_dir>@<alias>` or `<model_dir>` (its latest version).

Versions are numbered 1, 2, ... and are never overwritten; a version is only visible once it is
complete.

* Filesystem: files are staged into a hidden directory inside the model directory (same file
  system), and the staged directory is renamed to `v<N>` in one atomic step that refuses to
  replace an existing entry (Linux `renameat2(RENAME_NOREPLACE)`; elsewhere `os.rename`, which
  refuses a non-empty target, after an existence check). If `v<N>` is taken (a concurrent
  publisher), N+1 is tried. A crash leaves at most a hidden `.staging-*` directory, which is
  never listed as a version.
* S3 (kfx_formats.s3; endpoint and credentials from the environment): a publisher first claims
  `v<N>` by writing `v<N>/_CLAIM` (a random token) with `If-None-Match: *` and reading it back;
  a taken N moves it on to N+1. Then the version is committed by the one marker convention
  (`kfx_formats.s3.commit`): the objects, then `v<N>/_COMPLETE` last, listing them. Only
  versions with `_COMPLETE` are visible; versions pushed before the marker listed its objects
  (it held the claim token) stay readable.

Aliases (`staging`, `production`) live in `<model_dir>/aliases.json`, written by `kfx rollout`:
``{"production": {"version": N, "updated": "<UTC time>", "by": "..."}, ...,
"history": [{"alias", "from", "to", "time", "by", "note"}, ...]}``.

No TensorFlow import: the push image carries none.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import datetime
import errno
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

from kfx_formats import s3

_VERSION_RE = re.compile(r"^v([1-9][0-9]*)$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MARKER = s3.MARKER
CLAIM = "_CLAIM"
STAGING_PREFIX = ".staging-"
ALIASES_FILE = "aliases.json"
ALIAS_NAMES = ("staging", "production")
MAX_ATTEMPTS = 1000
STALE_STAGING_SECONDS = 24 * 3600
# What a version holds (push publishes it; resolve, serving, the monitor and the UI read it).
SAVED_MODEL = "saved_model"                                  # the SavedModel, TFT graph inside
TFLITE = "tflite"                                            # the TFLite variants (quantize's)
STATISTICS = "statistics"                                    # the training data's TFDV statistics...
TRAIN_STATISTICS = "statistics/train/FeatureStats.pb"        # ...of its train split
SCHEMA_DIR = "schema"
SCHEMA = "schema/schema.pbtxt"                               # the schema the model was validated with
CARD_MD, CARD_JSON, CARD_HTML = "model_card.md", "model_card.json", "model_card.html"
CONTRACT = "contract.json"                                   # the request contract (kfx_formats.contract)


class RegistryError(RuntimeError):
    """The registry could not complete an operation, or a model URI names nothing (one line)."""


@dataclasses.dataclass(frozen=True)
class Version:
    number: int
    uri: str

    @property
    def name(self) -> str:
        return f"v{self.number}"


# ------------------------------------------------------------------ names and URIs

def parse_version(name: str) -> Optional[int]:
    """N for a version directory name `v<N>` (N >= 1), else None."""
    m = _VERSION_RE.match(name)
    return int(m.group(1)) if m else None


def model_dir(registry_uri: str, model_name: str) -> str:
    """`<registry_uri>/<model_name>`; a model name that is not [A-Za-z0-9][A-Za-z0-9._-]* is a ValueError."""
    _check_name(model_name)
    return f"{registry_uri.rstrip('/')}/{model_name}"


def split_model_uri(uri: str) -> Tuple[str, Optional[int], str]:
    """'<model_dir>/vN' -> (model_dir, N, ''); '<model_dir>@alias' -> (model_dir, None, alias);
    '<model_dir>' -> (model_dir, None, '')."""
    uri = uri.rstrip("/")
    if "@" in uri.rsplit("/", 1)[-1]:
        head, alias = uri.rsplit("@", 1)
        return head, None, alias
    head, _, last = uri.rpartition("/")
    number = parse_version(last)
    if number is not None:
        return head, number, ""
    return uri, None, ""


def _check_name(model_name: str) -> None:
    if not isinstance(model_name, str) or not _NAME_RE.match(model_name):
        raise ValueError(f"model_name {model_name!r} must match {_NAME_RE.pattern}")


def _local(uri: str) -> str:
    """The path of a filesystem registry URI (a path or file://path)."""
    if uri.startswith("file://"):
        return uri[len("file://"):]
    if "://" in uri:
        raise RegistryError(f"registry URI {uri!r}: only filesystem paths, file:// and s3:// are supported")
    return uri


def _version_uri(model: str, number: int) -> str:
    return f"{model.rstrip('/')}/v{number}"


# ------------------------------------------------------------------ JSON files of a registry

def read_json(uri: str) -> Optional[Any]:
    """The JSON document at a local path, file:// or s3:// URI; None when it does not exist."""
    if s3.is_s3(uri):
        raw = s3.read(s3.client(), *s3.split_uri(uri))
        return None if raw is None else json.loads(raw)
    path = _local(uri)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_json(uri: str, data: Any) -> None:
    """Write a JSON document (indented, sorted keys) to a local path (atomically: readers see the old
    or the new file, never half of one), file:// or s3:// URI."""
    raw = json.dumps(data, indent=2, sort_keys=True, default=str).encode()
    if s3.is_s3(uri):
        bucket, key = s3.split_uri(uri)
        s3.put(s3.client(), bucket, key, raw, "application/json")
        return
    path = _local(uri)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "wb") as f:
        f.write(raw)
    os.replace(tmp, path)


# ------------------------------------------------------------------ listing versions

def version_numbers(model: str) -> List[int]:
    """The complete versions of a model directory (`<registry_uri>/<model_name>`), ascending:
    local `v<N>` directories (complete by the atomic rename), S3 `v<N>/` prefixes with `_COMPLETE`."""
    if s3.is_s3(model):
        bucket, prefix = s3.split_uri(model)
        client = s3.client()
        if not s3.with_retries(f"bucket_exists {bucket}", lambda: client.bucket_exists(bucket)):
            return []
        found = _s3_versions(client, bucket, f"{prefix}/" if prefix else "")
        return sorted(n for n, complete in found.items() if complete)
    d = _local(model)
    if not os.path.isdir(d):
        return []
    return sorted(n for e in os.listdir(d)
                  if (n := parse_version(e)) is not None and os.path.isdir(os.path.join(d, e)))


def versions(registry_uri: str, model_name: str) -> List[Version]:
    """Every complete version of a model, oldest first."""
    model = model_dir(registry_uri, model_name)
    return [Version(n, _version_uri(model, n)) for n in version_numbers(model)]


def latest(registry_uri: str, model_name: str) -> Optional[Version]:
    """The highest complete version, or None when the model has none."""
    found = versions(registry_uri, model_name)
    return found[-1] if found else None


def _s3_versions(client, bucket: str, model_prefix: str) -> Dict[int, bool]:
    """{N: complete?} for every claimed version below `model_prefix` (ending in '/', or '')."""
    out: Dict[int, bool] = {}
    for obj in s3.with_retries(f"listing of s3://{bucket}/{model_prefix}", lambda: list(
            client.list_objects(bucket, prefix=model_prefix, recursive=True))):
        head, _, tail = obj.object_name[len(model_prefix):].partition("/")
        n = parse_version(head)
        if n is not None:
            out[n] = out.get(n, False) or tail == MARKER
    return out


# ------------------------------------------------------------------ aliases

def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def aliases(model: str) -> dict:
    """The model directory's aliases.json as written (``{}`` when there is none)."""
    return read_json(f"{model.rstrip('/')}/{ALIASES_FILE}") or {}


def alias_versions(model: str) -> Set[int]:
    """The versions any alias of the model directory points to. An aliases.json that is not
    ``{alias: {"version": N, ...}, "history": [...]}`` is a ValueError naming it."""
    try:
        return {int(entry["version"]) for name, entry in aliases(model).items() if name != "history"}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{model.rstrip('/')}/{ALIASES_FILE}: not {{alias: {{\"version\": N}}}} JSON ({e})") from e


def read_alias(registry_uri: str, model_name: str, alias: str) -> Optional[int]:
    """The version number an alias (``staging``, ``production``) points to, or None when it is not set.
    An entry that is not ``{"version": N}`` is a ValueError naming the file."""
    model = model_dir(registry_uri, model_name)
    try:
        entry = aliases(model).get(alias)
        return None if entry is None else int(entry["version"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{model}/{ALIASES_FILE}: alias {alias!r} is not "
                         f'{{"{alias}": {{"version": N}}}} JSON ({e})') from e


def set_alias(model: str, alias: str, version: int, by: str = "", note: str = "") -> dict:
    """Point `alias` (one of ALIAS_NAMES) of a model directory at complete version `version`; record
    ``{"version", "updated", "by"}`` under the alias and append ``{"alias", "from", "to", "time", "by",
    "note"}`` to "history". Returns the new aliases.json; RegistryError when the alias or version is unknown."""
    if alias not in ALIAS_NAMES:
        raise RegistryError(f"alias {alias!r}: one of {ALIAS_NAMES}")
    if version not in version_numbers(model):
        raise RegistryError(f"{model}: no version v{version}")
    data = aliases(model)
    previous = (data.get(alias) or {}).get("version")
    data[alias] = {"version": version, "updated": _now(), "by": by}
    data.setdefault("history", []).append({"alias": alias, "from": previous, "to": version, "time": _now(),
                                           "by": by, "note": note})
    write_json(f"{model.rstrip('/')}/{ALIASES_FILE}", data)
    return data


def resolve(uri: str) -> Tuple[str, int]:
    """(model_dir, version number) for a model URI: its version, its alias's version, or the latest
    complete version. RegistryError (one line) when the alias is not set or the version does not exist."""
    model, version, alias = split_model_uri(uri)
    if alias:
        entry = aliases(model).get(alias)
        if not entry:
            raise RegistryError(f"{model}: alias {alias!r} is not set ({ALIASES_FILE})")
        try:
            version = int(entry["version"])
        except (ValueError, KeyError, TypeError) as e:
            raise RegistryError(f"{model}/{ALIASES_FILE}: alias {alias!r} has no version number ({e})") from e
    found = version_numbers(model)
    if version is None:
        if not found:
            raise RegistryError(f"{model}: no versions")
        version = found[-1]
    if version not in found:
        raise RegistryError(f"{model}: no complete version v{version}")
    return model, version


# ------------------------------------------------------------------ reading a version

def read_file(version: Version, name: str) -> Optional[bytes]:
    """One file of a complete version (e.g. its model card), or None when the version has no such file."""
    if s3.is_s3(version.uri):
        bucket, key_prefix = s3.split_uri(version.uri)
        return s3.read(s3.client(), bucket, f"{key_prefix}/{name}")
    path = os.path.join(_local(version.uri), *name.split("/"))
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return f.read()


def fetch(version: Version, dest: str) -> str:
    """Copy a complete version's contents (what its `_COMPLETE` lists, on S3) into `dest` (created);
    return `dest`. A version that does not exist or is not complete is a ValueError naming it."""
    os.makedirs(dest, exist_ok=True)
    if s3.is_s3(version.uri):
        bucket, key_prefix = s3.split_uri(version.uri)
        client = s3.client()
        if s3.committed(client, bucket, key_prefix) is None:
            raise ValueError(f"version {version.uri!r} is not complete (no {MARKER})")
        s3.fetch(client, bucket, key_prefix, dest)
        return dest
    src = _local(version.uri)
    if not os.path.isdir(src):
        raise ValueError(f"version {version.uri!r} does not exist")
    shutil.copytree(src, dest, dirs_exist_ok=True)
    return dest


def local_version_dir(model: str, version: int, cache: Optional[str] = None) -> str:
    """A local directory holding version `version` of a model directory: the version itself on a
    filesystem; an S3 version downloaded once into `cache` (default: <tmp>/kfx-serving-cache) and
    reused while its `.complete` stamp is there."""
    if not s3.is_s3(model):
        return os.path.join(_local(model), f"v{version}")
    bucket, prefix = s3.split_uri(model)
    dest = os.path.join(cache or os.path.join(tempfile.gettempdir(), "kfx-serving-cache"),
                        bucket, prefix, f"v{version}")
    if not os.path.isfile(os.path.join(dest, ".complete")):
        fetch(Version(version, _version_uri(model, version)), dest)
        Path(dest, ".complete").touch()
    return dest


# ------------------------------------------------------------------ publishing

def publish(source_dirs: Mapping[str, str], files: Mapping[str, bytes], registry_uri: str,
            model_name: str,
            versioned_files: Optional[Callable[[int], Mapping[str, bytes]]] = None) -> Version:
    """Publish directories and in-memory files as the next version `v<N>`; return it.

    `versioned_files(N)`, when given, returns more files whose content depends on the
    version number (a model card naming its version); it is called once N is chosen
    (again with N+1 if N turns out to be taken) and its files are part of the version
    from the moment it becomes visible.
    """
    model = model_dir(registry_uri, model_name)
    source_dirs, files = dict(source_dirs or {}), dict(files or {})
    _check_sources(source_dirs, files, allow_empty=versioned_files is not None)
    if s3.is_s3(registry_uri):
        return _s3_publish(source_dirs, files, registry_uri, model, versioned_files)
    return _local_publish(source_dirs, files, model, versioned_files)


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


def _clean_stale_staging(directory: str) -> None:
    now = time.time()
    for entry in os.listdir(directory):
        path = os.path.join(directory, entry)
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


def _local_publish(source_dirs, files, model: str, versioned_files) -> Version:
    directory = _local(model)
    os.makedirs(directory, exist_ok=True)
    _clean_stale_staging(directory)
    staging = os.path.join(directory, f"{STAGING_PREFIX}{uuid.uuid4().hex}")
    os.mkdir(staging)
    try:
        for name, src in source_dirs.items():
            shutil.copytree(src, os.path.join(staging, name))
        _write_files(staging, files)
        existing = version_numbers(model)
        number = (existing[-1] if existing else 0) + 1
        for _ in range(MAX_ATTEMPTS):
            if versioned_files is not None:
                extra = dict(versioned_files(number))
                _check_sources({}, extra)
                _write_files(staging, extra)
            try:
                _rename_noreplace(staging, os.path.join(directory, f"v{number}"))
            except FileExistsError:
                number += 1
                continue
            return Version(number, _version_uri(model, number))
        raise RegistryError(f"could not claim a version under {directory!r} after {MAX_ATTEMPTS} attempts")
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging, ignore_errors=True)


def _s3_claim(client, bucket: str, key: str, token: bytes) -> bool:
    """Create `key` only if absent (If-None-Match: *), then verify it holds our token."""
    from minio.error import S3Error

    try:
        # The public put_object turns unknown headers into user metadata; the conditional
        # header must go out as is.
        s3.with_retries(f"claim of s3://{bucket}/{key}", lambda: client._put_object(  # pylint: disable=protected-access
            bucket, key, token, headers={"If-None-Match": "*", "Content-Type": "application/octet-stream"}))
    except S3Error as e:
        if e.code in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False     # taken (also when a retried claim of ours had got through: N+1 is tried)
        raise
    return s3.read(client, bucket, key) == token


def _s3_publish(source_dirs, files, registry_uri: str, model: str, versioned_files) -> Version:
    bucket, prefix = s3.split_uri(model)
    client = s3.client()
    if not s3.with_retries(f"bucket_exists {bucket}", lambda: client.bucket_exists(bucket)):
        raise ValueError(f"registry_uri {registry_uri!r}: bucket {bucket!r} does not exist")
    model_prefix = f"{prefix}/"
    token = uuid.uuid4().hex.encode()
    number = max(_s3_versions(client, bucket, model_prefix), default=0) + 1
    for _ in range(MAX_ATTEMPTS):
        if _s3_claim(client, bucket, f"{model_prefix}v{number}/{CLAIM}", token):
            break
        number += 1
    else:
        raise RegistryError(f"could not claim a version under s3://{bucket}/{model_prefix}")
    if versioned_files is not None:
        extra = dict(versioned_files(number))
        _check_sources({}, extra)
        files = {**files, **extra}
    s3.commit(client, bucket, f"{model_prefix}v{number}/", source_dirs, files)
    return Version(number, _version_uri(model, number))
