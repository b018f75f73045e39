"""Which files the UI may serve: only regular files under ROOT, named by a path relative to it.

A request names a file by a relative path taken from a run record or an artifact URI. Refused:
absolute paths, any `..` segment, a path whose percent-decoding (once or twice: a proxy may have
decoded once) differs in segments from what was asked, and anything whose real path (symlinks
followed) leaves ROOT."""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote


class Refused(ValueError):
    """A path the UI does not serve."""


def _segments_ok(text: str) -> bool:
    """Relative, and no segment is `..` (with either slash)."""
    if not text or "\x00" in text or text.startswith(("/", "\\")) or text[1:2] == ":":
        return False
    return ".." not in text.replace("\\", "/").split("/")


def resolve(root: Path, relative: str) -> Path:
    """The real file `relative` names under `root`; Refused otherwise."""
    root = Path(root).resolve()
    once = unquote(relative)
    for form in {relative, once, unquote(once)}:
        if not _segments_ok(form):
            raise Refused(f"{relative!r}: not a path under the root")
    path = Path(os.path.realpath(root / relative))
    if path != root and root not in path.parents:
        raise Refused(f"{relative!r}: outside the root")
    if not path.is_file():
        raise Refused(f"{relative!r}: no such file")
    return path

