"""Build, name and measure the kfx stage images (stdlib only; driven by images/images.mk).

    python images/build.py build  [--stages a,b] [--jobs N] [--no-cli] [--gpu]
                                                              build runtimes, stage images and kfx-cli, tag them
    python images/build.py names  [--all]                     print the stage image names (--all: and kfx-cli)
    python images/build.py sizes  [--doc docs/images.md]      measure, write the figures into the doc

Images (REG = $KFX_IMAGE_REGISTRY, default "kfx"; VER = the kfx package version):

    REG/tf-runtime:VER, REG/tf-runtime:VER-HASH      parent + /opt/venv (requirements/images/tf-runtime.lock)
    REG/push-runtime:VER, REG/push-runtime:VER-HASH  parent + /opt/venv (requirements/images/push.lock)
    REG/kfx-<stage>:TAG, REG/kfx-<stage>:VER-HASH    a runtime + the stage's code and kfx_formats
                                                     (TAG = $KFX_IMAGE_TAG or VER)
    REG/kfx-cli:TAG, REG/kfx-cli:VER-HASH            push-runtime + the kfx platform modules the chart's
                                                     registration Job runs (python -m kfx.submit) and kfx_formats;
                                                     no stage code
    --gpu: REG/tf-runtime-gpu (tf-runtime-gpu.lock, TensorFlow + CUDA wheels) under the TF stages,
           TAG defaulting to VER-gpu (not built or tested on the build machine: no GPU here)

HASH is the first 12 hex digits of a sha256 over the files that go into the
image (Dockerfile, lock, the stage's sources, kfx_formats) and, for a stage, its runtime's
hash: equal hashes mean equal inputs. Every image is built from a staged
context under build/images/ctx/ that holds only those files, so no
.dockerignore is needed and nothing else of the work tree reaches the engine.
"""
from __future__ import annotations

import argparse
import ast
import base64
import concurrent.futures as futures
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "images"
BUILD = REPO / "build" / "images"


def _stage_specs() -> dict:
    """components/stages.py, the one list of stages, loaded by path (plain data: no TF, no KFP)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("kfx_stage_specs", REPO / "components" / "stages.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module.STAGES


_SPECS = _stage_specs()
STAGES = list(_SPECS)
# Which runtime each stage starts from (only push's is TensorFlow-free).
RUNTIME_OF = {name: stage.runtime for name, stage in _SPECS.items()}
RUNTIME_LOCKS = {"tf-runtime": "requirements/images/tf-runtime.lock",
                 "tf-runtime-gpu": "requirements/images/tf-runtime-gpu.lock",
                 "push-runtime": "requirements/images/push.lock"}
# .pyc in the venv: the TF stages import ~12 s CPU of Python without it (4 s
# with); push imports in 2 s without it, and its 300 MB budget wants the 46 MB.
COMPILE_BYTECODE = {"tf-runtime": "1", "tf-runtime-gpu": "1", "push-runtime": "0"}
# The platform image: the kfx package modules that the chart's registration Job
# runs (python -m kfx.submit) and what they import from kfx, on the push runtime
# (kfp + pyyaml, no TensorFlow). Not a pipeline step: the IR never names it.
CLI = "cli"
CLI_RUNTIME = "push-runtime"
CLI_MODULES = ["kfx.submit"]
# Stages whose image adds more than their code to the runtime: infra_validate carries the serving
# venv of the kfx-serve image (make serving-image), whose name is passed as SERVE_IMAGE.
STAGE_DOCKERFILES = {"infra_validate": "Dockerfile.infra-validate"}
DEFAULT_BASE = "kfx/python-base:3.11-bookworm"
HOST_CA = Path(os.environ.get("KFX_BUILD_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt"))
PYVER = "3.11"


def log(msg: str) -> None:
    print(f"images: {msg}", file=sys.stderr, flush=True)


# ---- names ---------------------------------------------------------------------

def version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def registry() -> str:
    return os.environ.get("KFX_IMAGE_REGISTRY", "kfx").rstrip("/") or "kfx"


def image_tag() -> str:
    return os.environ.get("KFX_IMAGE_TAG") or version()


def base_image() -> str:
    return os.environ.get("BASE_IMAGE") or DEFAULT_BASE


def stage_repo(stage: str) -> str:
    """Same rule as components/images.py: stage names with '_' become '-'."""
    return f"{registry()}/kfx-{stage.replace('_', '-')}"


def stage_image(stage: str) -> str:
    return f"{stage_repo(stage)}:{image_tag()}"


def cli_repo() -> str:
    return f"{registry()}/kfx-{CLI}"


def cli_image() -> str:
    """The image helm/kfx's registration Job runs (values pipeline.register.imageName)."""
    return f"{cli_repo()}:{image_tag()}"


def serve_image() -> str:
    """The serving runtime image (images/serve/build.sh) the infra_validate image copies its venv from."""
    return f"{registry()}/kfx-serve:{image_tag()}"


def serve_image_id() -> str:
    """Its image id (part of infra_validate's content hash); one line naming the make target when absent."""
    res = docker("image", "inspect", "--format", "{{.Id}}", serve_image())
    if res.returncode != 0:
        raise SystemExit(f"images: {serve_image()} missing; run `make serving-image` first (infra_validate copies "
                         "its serving venv)")
    return res.stdout.strip()


def runtime_of(stage: str, gpu: bool = False) -> str:
    rt = RUNTIME_OF[stage]
    return "tf-runtime-gpu" if gpu and rt == "tf-runtime" else rt


def runtime_repo(runtime: str) -> str:
    return f"{registry()}/{runtime}"


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def revision(*sources: str) -> str:
    rev = git("rev-parse", "HEAD") or "unknown"
    if git("status", "--porcelain", "--", *(sources or ("components",)), PACKAGE_DIRS[FORMATS], "images",
           "requirements/images"):
        rev += "-dirty"
    return rev


def source_url() -> str:
    return os.environ.get("KFX_IMAGE_SOURCE") or git("remote", "get-url", "origin") or "unknown"


# ---- staged contexts -----------------------------------------------------------

def digest(files: dict[str, bytes], *extra: str) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    for item in extra:
        h.update(b"\0" + item.encode())
    return h.hexdigest()[:12]


def write_context(ctx: Path, files: dict[str, bytes]) -> None:
    if ctx.exists():
        shutil.rmtree(ctx)
    for name, data in files.items():
        path = ctx / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        # Fixed mtimes and modes: the engine's cache keys on content, and so do we.
        os.chmod(path, 0o644)


def runtime_context(runtime: str) -> tuple[Path, str]:
    files = {"Dockerfile": (IMAGES / "Dockerfile.runtime").read_bytes(),
             "requirements.lock": (REPO / RUNTIME_LOCKS[runtime]).read_bytes()}
    content_hash = digest(files, base_image(), COMPILE_BYTECODE[runtime])
    files["host-ca.crt"] = HOST_CA.read_bytes() if HOST_CA.exists() else b""
    ctx = BUILD / "ctx" / runtime
    write_context(ctx, files)
    return ctx, content_hash


def _in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _imports(path: Path, package: str = "kfx_components") -> set[str]:
    """Modules of `package` a source file imports (at any depth of the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if _in_package(a.name, package))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and _in_package(node.module, package):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


# importable package -> its folder in the repository (pyproject.toml package-dir)
PACKAGE_DIRS = {"kfx_components": "components", "kfx": "kfx", "kfx_formats": "formats"}
# The formats every side shares (no TensorFlow, a few kilobytes): in every image, whole.
FORMATS = "kfx_formats"


def _module_file(module: str) -> Path | None:
    parts = module.split(".")
    root = REPO / PACKAGE_DIRS[parts[0]]
    rel = parts[1:]
    base = root / Path(*rel) if rel else root
    if base.is_dir() and (base / "__init__.py").exists():
        return base / "__init__.py"
    if base.with_suffix(".py").exists():
        return base.with_suffix(".py")
    return None


def _import_closure(roots: list[Path], package: str) -> list[Path]:
    """`roots` and every `package` module they import, transitively (parent packages' __init__ too)."""
    todo, seen = list(roots), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imports(path, package):
            parts = module.split(".")
            for i in range(1, len(parts) + 1):
                f = _module_file(".".join(parts[:i]))
                if f and f not in seen:
                    todo.append(f)
    return sorted(seen)


def stage_sources(stage: str) -> list[Path]:
    """components/__init__.py, the stage's folder and the kfx_components modules it imports (transitively)."""
    return _import_closure([*sorted((REPO / "components" / stage).rglob("*.py")),
                            REPO / "components" / "__init__.py"], "kfx_components")


def formats_code() -> dict[str, bytes]:
    """site-packages/kfx_formats/...: the whole kfx_formats package (formats/*.py)."""
    root = REPO / PACKAGE_DIRS[FORMATS]
    return {f"{FORMATS}/{p.relative_to(root).as_posix()}": p.read_bytes() for p in sorted(root.rglob("*.py"))}


def cli_sources() -> list[Path]:
    """kfx/__init__.py, the CLI_MODULES and the kfx modules they import (transitively)."""
    return _import_closure([REPO / "kfx" / "__init__.py", *(_module_file(m) for m in CLI_MODULES)], "kfx")


def dist_info(files: dict[str, bytes], top_level: str = "kfx_components") -> dict[str, bytes]:
    """A kfx-<version>.dist-info so importlib.metadata / pip see kfx installed (--no-deps)."""
    ver = version()
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    info = f"kfx-{ver}.dist-info"
    out = {
        f"{info}/METADATA": (f"Metadata-Version: 2.1\nName: kfx\nVersion: {ver}\n"
                             f"Summary: {meta.get('description', '')}\n"
                             f"License: Apache-2.0\nRequires-Python: {meta.get('requires-python', '')}\n"
                             ).encode(),
        f"{info}/INSTALLER": b"kfx-images\n",
        f"{info}/top_level.txt": f"{top_level}\n{FORMATS}\n".encode(),
    }
    rows = []
    for name, data in sorted({**files, **out}.items()):
        h = hashlib.sha256(data).digest()
        b64 = base64.urlsafe_b64encode(h).rstrip(b"=").decode()
        rows.append(f"{name},sha256={b64},{len(data)}")
    rows.append(f"{info}/RECORD,,")
    out[f"{info}/RECORD"] = ("\n".join(rows) + "\n").encode()
    return out


def stage_context(stage: str, runtime_hash: str) -> tuple[Path, str, list[str]]:
    code: dict[str, bytes] = {}
    for path in stage_sources(stage):
        rel = path.relative_to(REPO / "components")
        code[f"kfx_components/{rel.as_posix()}"] = path.read_bytes()
    if not any(n.startswith(f"kfx_components/{stage}/") and n.endswith("executor.py") for n in code):
        log(f"warning: components/{stage}/executor.py does not exist yet")
    return _context(stage, code, "kfx_components", STAGE_DOCKERFILES.get(stage, "Dockerfile.stage"),
                    runtime_hash + (serve_image_id() if stage in STAGE_DOCKERFILES else ""))


def cli_context(runtime_hash: str) -> tuple[Path, str, list[str]]:
    code = {f"kfx/{p.relative_to(REPO / 'kfx').as_posix()}": p.read_bytes() for p in cli_sources()}
    return _context(CLI, code, "kfx", "Dockerfile.cli", runtime_hash)


def _context(name: str, code: dict[str, bytes], top_level: str, dockerfile: str,
             runtime_hash: str) -> tuple[Path, str, list[str]]:
    """The build context of image `name`: its Dockerfile and `code` installed as a dist; its content hash."""
    code = {**code, **formats_code()}
    site = {**code, **dist_info(code, top_level=top_level)}
    files = {"Dockerfile": (IMAGES / dockerfile).read_bytes()}
    files.update({f"site-packages/{k}": v for k, v in site.items()})
    content_hash = digest(files, runtime_hash, name)
    ctx = BUILD / "ctx" / name
    write_context(ctx, files)
    return ctx, content_hash, sorted(code)


# ---- docker --------------------------------------------------------------------

def docker_env() -> dict[str, str]:
    env = dict(os.environ)
    # The engine here is 20.10 with no buildx plugin: the classic builder. It
    # honours --network host for RUN steps, which the package installs need.
    env.setdefault("DOCKER_BUILDKIT", "0")
    return env


def docker(*args: str, capture: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=capture, text=True, env=docker_env(), **kw)


def image_exists(ref: str) -> bool:
    return docker("image", "inspect", ref).returncode == 0


def docker_build(name: str, ctx: Path, tags: list[str], build_args: dict[str, str]) -> float:
    logs = BUILD / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    cmd = ["docker", "build", "--network", "host", "-f", str(ctx / "Dockerfile")]
    if os.environ.get("KFX_IMAGE_NO_CACHE") == "1":  # a cold build without deleting anything
        cmd.append("--no-cache")
    for k, v in build_args.items():
        cmd += ["--build-arg", f"{k}={v}"]
    for t in tags:
        cmd += ["-t", t]
    cmd.append(str(ctx))
    start = time.monotonic()
    with open(log_path, "w") as out:
        out.write(" ".join(cmd) + "\n")
        out.flush()
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=docker_env(),
                            stdin=subprocess.DEVNULL).returncode
    took = time.monotonic() - start
    if rc != 0:
        tail = log_path.read_text().splitlines()[-40:]
        raise SystemExit(f"images: building {name} failed (exit {rc}); last lines of {log_path}:\n"
                         + "\n".join(tail))
    log(f"built {name} in {took:.0f}s -> {', '.join(tags)}")
    return took


def build(stages: list[str], jobs: int, cli: bool = True, gpu: bool = False) -> dict:
    base = base_image()
    if not image_exists(base):
        if base == DEFAULT_BASE:
            raise SystemExit(f"images: parent {base} missing; run scripts/base-image.sh (make images does)")
        log(f"parent {base} not present locally; the engine will pull it")
    ver, rev, src = version(), revision(), source_url()
    start = time.monotonic()
    runtimes = sorted({runtime_of(s, gpu) for s in stages} | ({CLI_RUNTIME} if cli else set()))
    runtime_refs: dict[str, tuple[str, str]] = {}
    timings: dict[str, float] = {}

    def build_runtime(rt: str):
        ctx, h = runtime_context(rt)
        tags = [f"{runtime_repo(rt)}:{ver}-{h}", f"{runtime_repo(rt)}:{ver}"]
        timings[rt] = docker_build(rt, ctx, tags, {"BASE_IMAGE": base, "RUNTIME": rt, "CONTENT_HASH": h,
                                                   "COMPILE_BYTECODE": COMPILE_BYTECODE[rt]})
        runtime_refs[rt] = (tags[0], h)

    # One after the other, TF first: the runtimes' builder stages begin with the
    # same steps, and the classic builder's cache is a chain of images. Built
    # at once they make two equal chains and a later build may pick the wrong
    # one (a cache miss that reinstalls the whole TF lock); in sequence the
    # second runtime reuses the first one's apt/uv steps.
    for rt in sorted(runtimes, key=lambda r: not r.startswith("tf-runtime")):
        build_runtime(rt)

    built = {}

    def build_stage(stage: str):
        rt_ref, rt_hash = runtime_refs[runtime_of(stage, gpu)]
        ctx, h, code = stage_context(stage, rt_hash)
        tags = [f"{stage_repo(stage)}:{image_tag()}", f"{stage_repo(stage)}:{ver}-{h}"]
        timings[stage] = docker_build(stage, ctx, tags, {
            "RUNTIME_IMAGE": rt_ref, "STAGE": stage, "VERSION": ver, "REVISION": rev,
            "SOURCE": src, "CONTENT_HASH": h, **({"SERVE_IMAGE": serve_image()} if stage in STAGE_DOCKERFILES else {})})
        built[stage] = {"image": tags[0], "content_tag": tags[1], "runtime": rt_ref, "files": code}

    platform = {}

    def build_cli():
        rt_ref, rt_hash = runtime_refs[CLI_RUNTIME]
        ctx, h, code = cli_context(rt_hash)
        tags = [cli_image(), f"{cli_repo()}:{ver}-{h}"]
        timings[CLI] = docker_build(CLI, ctx, tags, {
            "RUNTIME_IMAGE": rt_ref, "VERSION": ver, "REVISION": revision("kfx"),
            "SOURCE": src, "CONTENT_HASH": h})
        platform[CLI] = {"image": tags[0], "content_tag": tags[1], "runtime": rt_ref, "files": code}

    with futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        pending = [pool.submit(build_stage, s) for s in stages]
        if cli:
            pending.append(pool.submit(build_cli))
        for f in pending:
            f.result()
    total = time.monotonic() - start
    record = {"base_image": base, "total_seconds": round(total, 1), "gpu": gpu,
              "seconds": {k: round(v, 1) for k, v in sorted(timings.items())},
              "stages": {s: built[s] for s in stages}, "platform": platform}
    BUILD.mkdir(parents=True, exist_ok=True)
    (BUILD / "last-build.json").write_text(json.dumps(record, indent=2) + "\n")
    log(f"all {len(stages)} stage images{' and kfx-cli' if cli else ''} built in {total:.0f}s")
    for s in stages:
        print(built[s]["image"], built[s]["content_tag"])
    if cli:
        print(platform[CLI]["image"], platform[CLI]["content_tag"])
    return record


# ---- sizes ---------------------------------------------------------------------

def inspect(ref: str) -> dict:
    res = docker("image", "inspect", ref)
    if res.returncode != 0:
        raise SystemExit(f"images: {ref} not built ({res.stderr.strip()}); run `make images`")
    return json.loads(res.stdout)[0]


def saved_layers(refs: list[str]) -> tuple[dict[str, dict], int]:
    """Streams `docker save REFS` (each layer stored once) and returns, per diff id,
    the layer tar's byte count, the bytes of the files in it and the step that made it;
    plus the archive's total byte count."""
    proc = subprocess.Popen(["docker", "save", *refs], stdout=subprocess.PIPE, env=docker_env())

    class Counting(io.RawIOBase):
        def __init__(self, raw):
            self.raw, self.n = raw, 0

        def readable(self):
            return True

        def readinto(self, b):
            data = self.raw.read(len(b))
            self.n += len(data)
            b[:len(data)] = data
            return len(data)

    counting = Counting(proc.stdout)
    stream = io.BufferedReader(counting, 1 << 20)
    layer_tar: dict[str, tuple[int, int, int]] = {}   # member path -> (tar bytes, file bytes, files)
    jsons: dict[str, dict] = {}
    with tarfile.open(fileobj=stream, mode="r|") as outer:
        for m in outer:
            if m.name.endswith("layer.tar") and m.isfile():
                inner_bytes = files = 0
                f = outer.extractfile(m)
                with tarfile.open(fileobj=f, mode="r|") as inner:
                    for im in inner:
                        if im.isfile():
                            inner_bytes += im.size
                            files += 1
                layer_tar[m.name] = (m.size, inner_bytes, files)
            elif m.name.endswith(".json") and m.isfile():
                jsons[m.name] = json.load(outer.extractfile(m))
    if proc.wait() != 0:
        raise SystemExit("images: docker save failed")
    layers: dict[str, dict] = {}
    for entry in jsons["manifest.json"]:
        config = jsons[entry["Config"]]
        history = [h for h in config.get("history", []) if not h.get("empty_layer")]
        for i, (path, diff_id) in enumerate(zip(entry["Layers"], config["rootfs"]["diff_ids"])):
            tar_bytes, file_bytes, files = layer_tar[path]
            step = history[i].get("created_by", "") if i < len(history) else ""
            layers.setdefault(diff_id, {"tar_bytes": tar_bytes, "file_bytes": file_bytes,
                                        "files": files, "created_by": step, "images": []})
            layers[diff_id]["images"].extend(entry.get("RepoTags") or [])
    return layers, counting.n


def name_layers(layers: dict[str, dict], info: dict[str, dict]) -> None:
    """Says what each layer is: the parent, the user, a runtime's venv, one stage's code."""
    parent = set(inspect(base_image())["RootFS"]["Layers"]) if image_exists(base_image()) else set()
    owners: dict[str, list[str]] = {}
    for stage, data in info.items():
        for d in data["RootFS"]["Layers"]:
            owners.setdefault(d, []).append(stage)
    for diff_id, v in layers.items():
        stages = owners.get(diff_id, [])
        step = v["created_by"]
        if diff_id in parent:
            v["what"] = f"parent `{base_image()}`"
        elif "useradd" in step:
            v["what"] = "user kfx (uid 1000)"
        elif stages == [CLI] and v["tar_bytes"] < 10_000_000:
            v["what"] = "kfx platform code of kfx-cli (" + ", ".join(CLI_MODULES) + ")"
        elif len(stages) == 1 and v["tar_bytes"] < 10_000_000:
            v["what"] = f"kfx_components code of {stages[0]}"
        elif set(stages) <= {"push", CLI}:
            v["what"] = "push-runtime /opt/venv (push.lock)"
        elif set(stages) == {s for s in STAGES if RUNTIME_OF[s] == "tf-runtime"}:
            v["what"] = "tf-runtime /opt/venv (tf-runtime.lock)"
        else:
            v["what"] = short_step(step)


def short_step(created_by: str) -> str:
    s = re.sub(r"^/bin/sh -c (#\(nop\) )?", "", created_by).strip()
    s = re.sub(r"\s+", " ", s)
    if "docker import" in s or not s:
        s = s or "(imported parent rootfs)"
    return (s[:70] + "...") if len(s) > 73 else s


def sizes(doc: Path | None) -> dict:
    stages = STAGES + [CLI]
    refs = [stage_image(s) for s in STAGES] + [cli_image()]
    info = {s: inspect(r) for s, r in zip(stages, refs)}
    t0 = time.monotonic()
    layers, archive = saved_layers(refs)
    took = time.monotonic() - t0
    per_image = {}
    for s, ref in zip(stages, refs):
        diff_ids = info[s]["RootFS"]["Layers"]
        per_image[s] = {"image": ref, "size": info[s]["Size"], "layers": len(diff_ids),
                        "tar_bytes": sum(layers[d]["tar_bytes"] for d in diff_ids),
                        "user": info[s]["Config"].get("User", "")}
    name_layers(layers, info)
    distinct_tar = sum(v["tar_bytes"] for v in layers.values())
    distinct_files = sum(v["file_bytes"] for v in layers.values())
    naive = sum(p["size"] for s, p in per_image.items() if s != CLI)
    result = {"per_image": per_image, "distinct_layers": len(layers), "distinct_tar_bytes": distinct_tar,
              "distinct_file_bytes": distinct_files, "docker_save_bytes": archive,
              "sum_of_image_sizes": naive, "layers": layers, "save_seconds": round(took, 1),
              "base_image": base_image()}
    BUILD.mkdir(parents=True, exist_ok=True)
    (BUILD / "sizes.json").write_text(json.dumps(result, indent=2) + "\n")
    table = render(result)
    print(table)
    if doc:
        write_doc(doc, table)
    return result


def gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def render(r: dict) -> str:
    budget, push_budget = 4.1e9, 300e6
    lines = [f"Measured by `make images-sizes` (images/build.py sizes) on "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; parent `{r['base_image']}`.",
             "", "| image | size (`docker image inspect` .Size) | layers |", "| --- | ---: | ---: |"]
    for s, p in r["per_image"].items():
        lines.append(f"| `{p['image']}` | {mb(p['size'])} | {p['layers']} |")
    push = r["per_image"].get("push", {}).get("size", 0)
    cli = r["per_image"].get(CLI, {}).get("size", 0)
    lines += ["", "Distinct layers over the nine stage images and kfx-cli (each layer counted once, keyed by its "
              "diff id, i.e. the sha256 of its uncompressed tar):", "",
              "| layer | what | files | file bytes | tar bytes | in images |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for diff_id, v in sorted(r["layers"].items(), key=lambda kv: -kv[1]["tar_bytes"]):
        lines.append(f"| `{diff_id[7:19]}` | {v.get('what') or short_step(v['created_by']).replace('|', '/')} | {v['files']} | "
                     f"{mb(v['file_bytes'])} | {mb(v['tar_bytes'])} | {len(set(v['images']))} |")
    lines += ["",
              f"- **Sum of distinct layer bytes (uncompressed layer tars): {gb(r['distinct_tar_bytes'])}** "
              f"({r['distinct_tar_bytes']} bytes, {r['distinct_layers']} layers); budget 4.1 GB: "
              f"{'met' if r['distinct_tar_bytes'] <= budget else 'NOT MET'}.",
              f"- Same layers counted as file contents only: {gb(r['distinct_file_bytes'])}; "
              f"one `docker save` archive of all ten images: {gb(r['docker_save_bytes'])}.",
              f"- **push image: {mb(push)}**; budget 300 MB: {'met' if push <= push_budget else 'NOT MET'}.",
              f"- **kfx-cli image: {mb(cli)}** (the push runtime's layers plus its own code layer; "
              "it adds only that code layer to the distinct sum).",
              f"- Summing the nine stage images' sizes as if nothing were shared would give {gb(r['sum_of_image_sizes'])}.",
              f"- For comparison, one `tensorflow/tfx:1.15.1` image is 12.3 GB: the whole kfx stage set is "
              f"{r['distinct_tar_bytes'] / 12.3e9:.0%} of it."]
    return "\n".join(lines)


BEGIN, END = "<!-- sizes:begin (written by make images-sizes) -->", "<!-- sizes:end -->"


def write_doc(doc: Path, table: str) -> None:
    text = doc.read_text() if doc.exists() else f"# Stage images\n\n## Measured sizes\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n## Measured sizes\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    log(f"figures written to {doc}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--stages", default=",".join(STAGES))
    b.add_argument("--jobs", type=int, default=int(os.environ.get("KFX_IMAGE_JOBS", "2")))
    b.add_argument("--no-cli", action="store_true", help="leave out the kfx-cli platform image")
    b.add_argument("--gpu", action="store_true",
                   help="TF stages on tf-runtime-gpu (CUDA); tag defaults to <version>-gpu")
    sub.add_parser("names").add_argument("--all", action="store_true", help="kfx-cli too")
    z = sub.add_parser("sizes")
    z.add_argument("--doc", type=Path, default=None)
    sub.add_parser("sources").add_argument("stage")
    args = ap.parse_args(argv)
    if args.cmd == "build":
        stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        unknown = set(stages) - set(STAGES)
        if unknown:
            ap.error(f"unknown stage(s) {sorted(unknown)}; stages: {STAGES}")
        if args.gpu and not os.environ.get("KFX_IMAGE_TAG"):
            # never the CPU images' tag: the IR selects the GPU set by KFX_IMAGE_TAG
            os.environ["KFX_IMAGE_TAG"] = f"{version()}-gpu"
        build(stages, args.jobs, cli=not args.no_cli, gpu=args.gpu)
    elif args.cmd == "names":
        for s in STAGES:
            print(stage_image(s))
        if args.all:
            print(cli_image())
    elif args.cmd == "sizes":
        sizes(args.doc)
    elif args.cmd == "sources":
        for p in (cli_sources() if args.stage == CLI else stage_sources(args.stage)):
            print(p.relative_to(REPO))
        for name in formats_code():
            print(f"{PACKAGE_DIRS[FORMATS]}/{name.split('/', 1)[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
