"""What a run's fork server preloads, and which steps need it: `kfx run`'s default preload for a
pipeline (`preload_for`) and, per step, whether its code reaches a preloaded library
(`uses_preload`: its embedded source and, through them, the first-party modules it imports are
read, never imported), so a step that needs none is forked from the light server (forkserver).
"""
from __future__ import annotations

import ast
import functools
import importlib.util
import sysconfig
from pathlib import Path
from typing import Mapping, Optional, Sequence

# What the lifecycle's steps import: `kfx run`'s default preload (`--preload`). The launcher's own
# default is none (kfp's executor only), for pipelines of light components. A module that is not
# installed is skipped: its steps import it themselves.
TF_STACK = ("tensorflow", "tensorflow_data_validation", "tensorflow_transform",
            "tensorflow_model_analysis", "apache_beam")
# What the stack is imported under, as the stage images set it (images/Dockerfile.runtime): TFT,
# TFMA and keras-tuner 1.3 need tf.keras to be Keras 2, and a server that preloads TensorFlow has
# bound Keras before any step could ask for it. A value already in the environment wins.
TF_STACK_ENV = {"TF_USE_LEGACY_KERAS": "1"}
# A step whose embedded source, command or image names one of these needs the TF stack (kfx's own
# stages import kfx_components; their images are kfx-<stage>).
_TF_MARKERS = ("kfx_components", "kfx-", "tensorflow", "tfx", "keras", "apache_beam")
# kfp 2.13's lightweight-component command (kfp/dsl/component_factory.py), whitespace-normalised.
_KFP_SCRIPT = ('program_path=$(mktemp -d) printf "%s" "$0" > "$program_path/ephemeral_component.py" '
               '_KFP_RUNTIME=true python3 -m kfp.dsl.executor_main --component_module_path '
               '"$program_path/ephemeral_component.py" "$@"')


def preload_for(tasks) -> tuple[str, ...]:
    """`kfx run`'s default preload for a pipeline's container tasks: the TF stack when a step
    would import it (a light pipeline then starts in ~1 s, not after ~15 s of TensorFlow
    imports), else nothing but kfp's executor."""
    for task in tasks:
        container = task.container
        text = " ".join([container.get("image", ""), *container.get("command", []), *container.get("args", [])])
        if any(marker in text for marker in _TF_MARKERS):
            return TF_STACK
    return ()


# Installed packages that import TensorFlow themselves: a step importing one uses a TF preload.
_TF_DEPENDENT = ("keras", "tf_keras", "keras_tuner", "tfx", "tfx_bsl", "tensorflow_hub")
_INSTALLED = {Path(sysconfig.get_paths()[k]).resolve() for k in ("stdlib", "platstdlib", "purelib", "platlib")}


def lightweight_source(argv: list[str]) -> Optional[str]:
    """The embedded source of a KFP lightweight component's command, else None."""
    if len(argv) >= 4 and argv[:2] == ["sh", "-ec"] and " ".join(argv[2].split()) == _KFP_SCRIPT:
        return argv[3]
    return None


def uses_preload(argv: list[str], preload: Sequence[str]) -> bool:
    """Whether the step would use what the server preloads: a lightweight component whose source,
    or a first-party module it imports (transitively, function-level imports included), imports
    a preloaded package (or, with TensorFlow preloaded, a package that imports it). Any other
    command is exec'd as it is and uses nothing of the server's."""
    source = lightweight_source(argv)
    if source is None or not preload:
        return False
    return _reaches(source, frozenset(m.split(".")[0] for m in preload))


@functools.lru_cache(maxsize=256)
def _reaches(source: str, preloaded: frozenset) -> bool:
    def heavy(top: str) -> bool:
        return top in preloaded or ("tensorflow" in preloaded and (top.startswith("tensorflow")
                                                                   or top in _TF_DEPENDENT))
    try:
        todo = _imports(ast.parse(source), "")
    except SyntaxError:
        return True     # cannot tell: wait for the preload, as every step used to
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if heavy(name.split(".")[0]):
            return True
        try:
            todo |= _module_imports(name)
        except (OSError, SyntaxError, ValueError):
            return True
    return False


@functools.lru_cache(maxsize=None)
def _module_imports(name: str) -> frozenset:
    """What first-party module `name` imports; nothing for an installed or unknown one."""
    path = _first_party_file(name)
    if path is None:
        return frozenset()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return frozenset(_imports(ast.parse(path.read_text()), package))


def _imports(tree: ast.AST, package: str) -> set[str]:
    """Every module a source imports (its parent packages, and `from M import N`'s M.N, included)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[:len(parts) - node.level + 1]
                if not parts:
                    continue
                base = ".".join([*parts, base] if base else parts)
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    for name in list(names):
        parts = name.split(".")
        names |= {".".join(parts[:i]) for i in range(1, len(parts))}
    return names


def _first_party_file(name: str) -> Optional[Path]:
    """The source file of module `name` when its package is not installed with Python or in the
    environment's site-packages (kfx's own packages, a user's), found without importing it."""
    top, *rest = name.split(".")
    where = _package_dir(top)
    if where is None:
        return None
    base, origin = where
    if not rest:
        return origin
    for candidate in (base.joinpath(*rest) / "__init__.py", base.joinpath(*rest[:-1], rest[-1] + ".py")):
        if candidate.is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=None)
def _package_dir(top: str) -> Optional[tuple[Path, Path]]:
    try:
        spec = importlib.util.find_spec(top)   # a top-level name: nothing is imported
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    origin = Path(spec.origin).resolve()
    if any(origin.is_relative_to(installed) for installed in _INSTALLED):
        return None
    return (Path(spec.submodule_search_locations[0]) if spec.submodule_search_locations else origin.parent,
            origin)


# =================================================================== launcher

def stack_env(preload: Sequence[str], outer: Mapping[str, str]) -> dict[str, str]:
    """What a server preloading `preload`, and the steps forked from it, add to the run's
    environment: with TensorFlow, the stack's own switches (TF_STACK_ENV) that `outer` (the
    process environment) does not set already."""
    if "tensorflow" not in preload:
        return {}
    return {k: v for k, v in TF_STACK_ENV.items() if k not in outer}
