"""Spans: a data pattern resolves to the newest span (or the one asked for) before anything is
imported; `kfx history` lists the runs of a root (the lifecycle's history is tested end to end in
tests/test_e2e.py)."""
import subprocess
import sys

import pytest

from kfx.runner import spans


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("a,b\n1,2\n")
    return path


def test_newest_span_and_version_or_the_one_asked_for(tmp_path):
    for span, version in ((1, 1), (2, 1), (2, 3), (10, 1)):
        _touch(tmp_path / f"incoming/span-{span}/v{version}.csv")
    pattern = str(tmp_path / "incoming/span-{SPAN}/v{VERSION}.csv")
    newest = spans.resolve(pattern)
    assert (newest.span, newest.version) == (10, 1)   # numbers, not text: 10 > 2
    assert newest.path.endswith("span-10/v1.csv")
    two = spans.resolve(pattern, span=2)
    assert (two.span, two.version) == (2, 3) and two.path.endswith("span-2/v3.csv")
    with pytest.raises(spans.SpanError, match=r"no span 7 \(spans found: 1, 2, 10\)"):
        spans.resolve(pattern, span=7)


def test_a_pattern_that_matches_nothing_or_too_much_is_one_clear_error(tmp_path):
    with pytest.raises(spans.SpanError, match="no file matches"):
        spans.resolve(str(tmp_path / "nothing/span-{SPAN}.csv"))
    _touch(tmp_path / "d/span-1/a.csv")
    _touch(tmp_path / "d/span-1/b.csv")
    with pytest.raises(spans.SpanError, match="span 1 has 2 files"):
        spans.resolve(str(tmp_path / "d/span-{SPAN}/*.csv"))
    proc = subprocess.run([sys.executable, "-m", "kfx.cli", "run", "--data", str(tmp_path / "x/span-{SPAN}.csv"),
                           "--label", "b", "--task", "binary", "--root", str(tmp_path / "root")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --data ") and "no file matches" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
