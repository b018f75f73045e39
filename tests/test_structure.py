"""The house's structure, read from the code's imports (ast): no import cycle anywhere, and the
boundaries hold. The platform (kfx) and the stages (kfx_components) never import each other; the
serving runtime (kfx_serving) imports neither; the shared formats (kfx_formats) import none of
them and no TensorFlow; the platform sees the pipelines (kfx_pipelines) only through kfx.bundled.
Every import counts, the ones inside functions too: a lazy import is still a dependency."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Import name -> folder, as pyproject.toml maps them.
PACKAGES = {"kfx": REPO / "kfx", "kfx_components": REPO / "components", "kfx_pipelines": REPO / "pipelines",
            "kfx_formats": REPO / "formats", "kfx_serving": REPO / "serving" / "kfx_serving"}
# (importer, forbidden prefixes, the one importer allowed anyway)
RULES = [
    ("kfx", ("kfx_components", "kfx_serving"), None),
    ("kfx", ("kfx_pipelines",), "kfx.bundled"),
    ("kfx_components", ("kfx", "kfx_pipelines", "kfx_serving"), None),
    ("kfx_pipelines", ("kfx", "kfx_serving"), None),
    ("kfx_serving", ("kfx", "kfx_components", "kfx_pipelines"), None),
    ("kfx_formats", ("kfx", "kfx_components", "kfx_pipelines", "kfx_serving", "tensorflow", "tf_keras", "keras"), None),
]


# Inside the platform, each part (a sub-package or a top-level module) may import only the parts
# named here (and kfx_formats); the commands sit on top, the stores and errors at the bottom.
PLATFORM = {
    "kfx.cli": {"kfx.commands", "kfx.errors", "kfx.runner", "kfx.stores", "kfx.submit"},
    "kfx.commands": {"kfx.bundled", "kfx.errors", "kfx.gc", "kfx.monitor", "kfx.report", "kfx.runner",
                     "kfx.serving", "kfx.stores", "kfx.submit", "kfx.ui"},
    "kfx.ui": {"kfx.errors", "kfx.gc", "kfx.runner", "kfx.stores", "kfx.views"},
    "kfx.report": {"kfx.runner", "kfx.views"},
    "kfx.monitor": {"kfx.bundled", "kfx.errors", "kfx.runner", "kfx.submit"},
    "kfx.views": {"kfx.gc", "kfx.runner", "kfx.stores"},
    "kfx.gc": {"kfx.errors", "kfx.runner", "kfx.stores"},
    "kfx.submit": {"kfx.errors", "kfx.runner"},
    "kfx.bundled": {"kfx.errors", "kfx.runner"},
    "kfx.serving": {"kfx.errors"},
    "kfx.runner": {"kfx.errors", "kfx.stores"},
    "kfx.stores": {"kfx.errors"},
    "kfx.errors": set(),
}


def _part(module: str) -> str:
    """kfx.runner.ir -> kfx.runner; kfx.cli -> kfx.cli."""
    return ".".join(module.split(".")[:2])


def _modules() -> dict[str, Path]:
    found = {}
    for name, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([name, *parts])] = path
    return found


def _imports(module: str, path: Path, modules: dict) -> set[str]:
    """The modules (of this repo or not) that `module` imports, by their full names."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:   # `from a import b`: the module a.b when there is one, else a
                names.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return names


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_layers_import_only_what_they_may():
    graph = _graph()
    broken = [f"{importer} imports {name}"
              for importer, names in graph.items() for name in sorted(names)
              for owner, forbidden, allowed in RULES
              if _within(importer, owner) and importer != allowed and any(_within(name, f) for f in forbidden)]
    assert not broken, "\n".join(broken)


def test_the_platform_is_layered():
    graph = _graph()
    parts = {_part(m) for m in graph if m.startswith("kfx.")}
    assert parts == set(PLATFORM), f"a platform part without a layer: {sorted(parts ^ set(PLATFORM))}"
    broken = [f"{importer} imports {name}" for importer, names in graph.items() if importer.startswith("kfx.")
              for name in sorted(names) if name.startswith("kfx.") and _part(name) != _part(importer)
              and _part(name) not in PLATFORM[_part(importer)]]
    assert not broken, "\n".join(broken)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (or a module importing itself)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = [0]

    def visit(v):   # iterative enough for a repo this size: recursion depth is the longest import chain
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    graph = _graph()
    # A package's __init__ that names its own submodules is not a cycle of the code that imports them.
    cycles = _cycles({m: {n for n in names if not (m in n and n.startswith(m + "."))} for m, names in graph.items()})
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}, "c": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"a"}}, [["a"]]),
])
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert _cycles(graph) == expected


def test_the_import_reader_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "kfx"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from . import b\n\ndef f():\n    from kfx_components.x import y\n")
    (pkg / "sub" / "b.py").write_text("")
    monkeypatch.setitem(PACKAGES, "kfx", pkg)
    modules = _modules()
    assert _imports("kfx.sub.a", pkg / "sub" / "a.py", modules) == {"kfx.sub.b", "kfx_components.x"}


def test_no_platform_module_is_longer_than_one_sitting():
    long = [f"{p.relative_to(REPO)}: {n} lines" for p in (REPO / "kfx").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500]
    assert not long, "\n".join(long)


# ---------------------------------------------------------------- the layout table of docs/design.md
DESIGN = REPO / "docs" / "design.md"
BEGIN, END = "<!-- layout:begin", "<!-- layout:end -->"


def _first_line(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return " ".join(doc.split("\n\n")[0].split()).replace("|", "\\|")


def _may_import(importer: str) -> str:
    ours = [n for n in PACKAGES if n != importer.split(".")[0]]
    if importer.startswith("kfx."):
        allowed = sorted(PLATFORM[importer]) + ["kfx_formats"] + (["kfx_pipelines"] if importer == "kfx.bundled" else [])
        return ", ".join(f"`{a}`" for a in allowed) or "-"
    forbidden = [f for owner, fs, _ in RULES if owner == importer for f in fs]
    return ", ".join(f"`{n}`" for n in ours if not any(_within(n, f) for f in forbidden)) or "-"


def layout_table() -> str:
    rows = ["| folder | import name | what it is | may import (of this repo) |", "| --- | --- | --- | --- |"]
    for name, folder in PACKAGES.items():
        if name == "kfx":
            for part in sorted(PLATFORM):
                sub = part.split(".")[1]
                path = folder / sub / "__init__.py" if (folder / sub).is_dir() else folder / f"{sub}.py"
                shown = f"kfx/{sub}/" if path.name == "__init__.py" else f"kfx/{sub}.py"
                rows.append(f"| `{shown}` | `{part}` | {_first_line(path)} | {_may_import(part)} |")
            continue
        rows.append(f"| `{folder.relative_to(REPO)}/` | `{name}` | {_first_line(folder / '__init__.py')} "
                    f"| {_may_import(name)} |")
    return "\n".join(rows)


def _documented() -> str:
    text = DESIGN.read_text()
    begin = text.index("\n", text.index(BEGIN)) + 1
    return text[begin:text.index(END)].strip()


def test_design_md_shows_the_layout_of_the_code():
    assert _documented() == layout_table(), "docs/design.md's layout is stale: python -m tests.test_structure --write"


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    text = DESIGN.read_text()
    begin = text.index("\n", text.index(BEGIN)) + 1
    DESIGN.write_text(text[:begin] + layout_table() + "\n" + text[text.index(END):])
