"""Artifact stores: where step outputs live once a step has succeeded.

A step never writes into the store directly. It writes below a local staging
directory; when it succeeds the runner *commits* each output to its final URI,
which appears whole or not at all. Final URIs follow KFP's pipeline-root
layout: ``<root>/<pipeline>/<run_id>/<task>/<output>``, unique per run, so
nothing stored is ever overwritten.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Protocol


class ArtifactStore(Protocol):
    root_uri: str

    def output_uri(self, pipeline: str, run_id: str, task: str, output: str) -> str: ...

    def commit(self, staged: Path, uri: str) -> bool:
        """Makes `staged` visible at `uri` atomically; False when the step wrote nothing there."""

    def exists(self, uri: str) -> bool: ...

    def local_path(self, uri: str, scratch: Path) -> str:
        """A local path holding the artifact for a step to read (downloaded into scratch if remote)."""

    def resolve_import(self, uri: str) -> tuple[str, str]:
        """(canonical URI, content fingerprint) of data a pipeline imports; FileNotFoundError if absent."""


class LocalStore:
    """The embedded default: a directory on this machine."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.root_uri = str(self.root)

    def output_uri(self, pipeline: str, run_id: str, task: str, output: str) -> str:
        return str(self.root / pipeline / run_id / task / output)

    def commit(self, staged: Path, uri: str) -> bool:
        if not staged.exists():
            return False
        final = Path(uri)
        final.parent.mkdir(parents=True, exist_ok=True)
        # Same filesystem, so a rename: the artifact appears complete or not at all.
        os.rename(staged, final)
        return True

    def exists(self, uri: str) -> bool:
        return Path(uri).exists()

    def local_path(self, uri: str, scratch: Path) -> str:
        return uri

    def resolve_import(self, uri: str) -> tuple[str, str]:
        if "://" in uri and not uri.startswith("file://"):
            raise ValueError(f"{uri}: the filesystem store imports local files; "
                             "for s3:// data run with --artifact-store s3://BUCKET/PREFIX")
        return import_local(uri)


def import_local(uri: str) -> tuple[str, str]:
    """A local file or directory a pipeline imports: its absolute path and content hash."""
    path = Path(uri.removeprefix("file://")).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"imported artifact not found: {uri}")
    path = path.resolve()
    return str(path), fingerprint_path(path)


def fingerprint_path(path: Path) -> str:
    """Content hash of a file or a directory tree (for imported data)."""
    import hashlib
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        digest.update(str(f.relative_to(path) if f != path else f.name).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
