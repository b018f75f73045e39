"""The pipelines kfx ships (kfx_pipelines: pipelines/tabular.py, the lifecycle; pipelines/monitor.py,
the monitor), compiled to IR. The one place the platform imports kfx_pipelines: `kfx compile`,
`kfx run` and `kfx submit` without --ir, and `kfx monitor` compile through here.

Compiling imports kfp and every component (about 2.5 s), so an unchanged rerun would spend more
time compiling than running. The IR is therefore kept in a cache keyed by everything it is made
of: the source of kfx_pipelines and kfx_components, the kfp version, the image names, the profile
and the defaults. Any change to one of them is a new key; a cached IR is the same bytes the
compiler wrote."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib import metadata, util
from pathlib import Path
from typing import Callable, Optional

from kfx.errors import UsageError

IR_CACHE_ENV = "KFX_IR_CACHE"     # a directory; "off" compiles every time


def lifecycle_parameters(profile: str) -> dict:
    """The lifecycle pipeline's parameters as its IR declares them: name -> {parameterType, ...}."""
    from kfx.runner import ir
    with tempfile.TemporaryDirectory() as tmp:
        spec, _ = ir.read_spec(Path(compile_lifecycle(str(Path(tmp) / "pipeline.yaml"), profile)))
    return ir.root_parameters(spec)


def compile_lifecycle(output: str, profile: str, defaults: Optional[dict] = None) -> str:
    """The lifecycle pipeline's IR at `output`; `defaults` (checked names) become its parameter defaults."""
    def compile_it(path: str) -> None:
        from kfx_pipelines.tabular import compile_pipeline
        if defaults:
            check_parameters(defaults, lifecycle_parameters(profile))
        compile_pipeline(path, profile=profile, defaults=defaults or None)
    return _cached("tabular", profile, defaults, output, compile_it)


def compile_monitor(output: str, profile: str = "local", defaults: Optional[dict] = None) -> str:
    def compile_it(path: str) -> None:
        from kfx_pipelines.monitor import compile_pipeline
        compile_pipeline(path, profile=profile, defaults=defaults)
    return _cached("monitor", profile, defaults, output, compile_it)


def _cached(pipeline: str, profile: str, defaults: Optional[dict], output: str,
            compile_it: Callable[[str], None]) -> str:
    """`output` holds the pipeline's IR: copied from the cache when its key is there, else compiled
    (and then kept in the cache, written atomically so a concurrent run never reads half a file)."""
    where = os.environ.get(IR_CACHE_ENV) or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kfx" / "ir")
    if where == "off":
        compile_it(output)
        return output
    key = _source_key(pipeline, profile, defaults)
    cached = Path(where) / f"{pipeline}-{key}.yaml"
    if cached.is_file():
        shutil.copyfile(cached, output)
        return output
    compile_it(output)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cached.parent, suffix=".part")
        os.close(fd)
        shutil.copyfile(output, tmp)
        os.replace(tmp, cached)
    except OSError:   # a read-only home: compiling every time is still correct
        pass
    return output


def _sources() -> list:
    """(name, path) of every .py file of the packages a compiled pipeline is made from."""
    found = []
    for package in ("kfx_pipelines", "kfx_components"):
        root = Path(util.find_spec(package).origin).parent
        found += [(f"{package}/{p.relative_to(root)}", p) for p in sorted(root.rglob("*.py"))]
    return found


def _source_key(pipeline: str, profile: str, defaults: Optional[dict]) -> str:
    """What the compiled IR depends on, hashed: the .py sources of the pipelines and components
    packages, the kfp and kfx versions, the image registry and tag, the profile and the defaults."""
    digest = hashlib.sha256()
    for name, path in _sources():
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(json.dumps({
        "pipeline": pipeline, "profile": profile, "defaults": defaults or {},
        "kfp": metadata.version("kfp"), "kfx": metadata.version("kfx"),
        "images": [os.environ.get("KFX_IMAGE_REGISTRY", ""), os.environ.get("KFX_IMAGE_TAG", "")],
    }, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]


def check_parameters(params: dict, known) -> None:
    """A misspelt --param or config key is an error, never silently dropped."""
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise UsageError(f"unknown pipeline parameter(s) {unknown}; the pipeline takes: {', '.join(sorted(known))}")
