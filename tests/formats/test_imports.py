"""kfx_formats is shipped in every image and imported by all sides: it imports no TensorFlow (the
push and CLI images carry none) and nothing of kfx, kfx_components, kfx_serving or kfx_pipelines."""
import subprocess
import sys
from pathlib import Path

import kfx_formats

# numpy too: the payload log is read by the serving sink and the CLI, which must start fast; only
# scoring the online metric imports it.
FORBIDDEN = ("tensorflow", "numpy", "sklearn", "kfx", "kfx_components", "kfx_serving", "kfx_pipelines")


def test_every_format_module_imports_alone_without_tensorflow_or_kfx_packages():
    modules = sorted(f"kfx_formats.{p.stem}" for p in Path(kfx_formats.__file__).parent.glob("*.py"))
    assert "kfx_formats.registry" in modules and "kfx_formats.s3" in modules
    script = (f"import importlib, sys\n"
              f"for name in {modules!r}:\n"
              f"    importlib.import_module(name)\n"
              f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
              f"print(loaded)\n")
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]", out
