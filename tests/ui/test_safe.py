"""kfx.ui.safe: the UI serves only regular files under ROOT."""
import os

import pytest

from kfx.ui import safe
from kfx.views import run_records


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "root"
    (root / "runs" / "r1").mkdir(parents=True)
    (root / "runs" / "r1" / "run.json").write_text("{}")
    (tmp_path / "secret.txt").write_text("outside")
    os.symlink(tmp_path / "secret.txt", root / "runs" / "r1" / "link-out")
    os.symlink(root / "runs" / "r1" / "run.json", root / "runs" / "r1" / "link-in")
    os.symlink(tmp_path, root / "runs" / "up")
    return root


def test_a_file_under_the_root_resolves(root):
    assert safe.resolve(root, "runs/r1/run.json") == (root / "runs/r1/run.json").resolve()
    assert safe.resolve(root, "runs/r1/link-in") == (root / "runs/r1/run.json").resolve()   # a link that stays in


@pytest.mark.parametrize("relative", [
    "../secret.txt", "runs/../../secret.txt", "runs/r1/../../../secret.txt", "..\\secret.txt",
    "%2e%2e/secret.txt", "%2E%2E%2Fsecret.txt", "runs/%2e%2e/%2e%2e/secret.txt", "%252e%252e/secret.txt",
    "/etc/passwd", "//etc/passwd", "\\etc\\passwd", "C:/Windows/win.ini",
    "runs/r1/link-out", "runs/up/secret.txt", "runs/r1", "runs/r1/missing.json", "", "runs/r1/run.json\x00.html",
])
def test_traversal_absolute_symlinks_and_encodings_are_refused(root, relative):
    with pytest.raises(safe.Refused):
        safe.resolve(root, relative)


def test_relative_to_root_links_only_what_it_can_serve(root, tmp_path):
    assert run_records.relative_to_root(root, str(root / "runs/r1/run.json")) == "runs/r1/run.json"
    assert run_records.relative_to_root(root, f"file://{root}/runs/r1/run.json") == "runs/r1/run.json"
    assert run_records.relative_to_root(root, str(tmp_path / "secret.txt")) is None
    assert run_records.relative_to_root(root, str(root / "runs/r1/link-out")) is None
    assert run_records.relative_to_root(root, "s3://bucket/key") is None
