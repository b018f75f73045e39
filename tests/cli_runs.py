"""`kfx run` as a person runs it, in a subprocess, and the contract of a run that refuses its
input: one `error:` line naming what to change, no traceback, nothing half-written. Shared by
tests/test_bad_input.py and tests/wild/ (the compiled IR: the `lifecycle_ir` fixture, conftest.py);
and the shared taxi lifecycle run's budget and helpers (the `taxi_run` fixture, conftest.py)."""
import pathlib
import re
import subprocess
import sys


def kfx_run(ir_file, root, data, label, task, extra, preload=False):
    # --preload= : the failures here happen before any TensorFlow import, so a fork
    # server that imports the TF stack first (~8 s) would only slow each case down;
    # one test below keeps the default to cover the path a person runs.
    argv = [sys.executable, "-m", "kfx.cli", "run", "--ir", str(ir_file), "--data", str(data),
            "--label", label, "--task", task, "--root", str(root), *extra]
    if not preload:
        argv.append("--preload=")
    return subprocess.run(argv, cwd=root.parent, capture_output=True, text=True, timeout=300)


def assert_one_clear_error(done, root, must_name):
    """The contract of a failed run; returns the error line."""
    assert done.returncode != 0, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    line = lines[0]
    for fragment in must_name:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert "Traceback" not in done.stdout + done.stderr
    log = re.search(r"\(log: (\S+)\)", line)
    if log:   # a step failed: the full story is in its log, where the line says
        assert pathlib.Path(log.group(1)).is_file()
    artifacts = root / "artifacts"
    written = [p for p in artifacts.rglob("*") if p.is_file()] if artifacts.exists() else []
    assert written == [], f"the failed run left artifacts: {written[:5]}"
    registry = root / "registry"
    assert not registry.exists() or not any(registry.iterdir()), "a model was pushed"
    return line


# The shared taxi lifecycle run's budget (tests/conftest.py `taxi_run`, tests/test_e2e.py): a smaller
# search and fewer epochs than the defaults, to keep CI short; every stage still runs.
FAST = ["--param", "max_trials=2", "--param", "tune_epochs=2", "--param", "train_epochs=4",
        "--param", "distill_epochs=4", "--param", "explain_rows=60", "--param", "finetune_epochs=1"]


def kfx(*args, check=True):
    """`kfx ARGS` in a subprocess; with check, a non-zero exit fails with the end of its output."""
    proc = subprocess.run([sys.executable, "-m", "kfx.cli", *args], capture_output=True, text=True, timeout=1800)
    if check and proc.returncode != 0:
        raise AssertionError(f"kfx {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def land_span(incoming: pathlib.Path, number: int, source: pathlib.Path, shift=None) -> None:
    """Land a span where the pattern looks: incoming/span-N/data.csv (optionally with a column changed)."""
    import pandas as pd
    frame = pd.read_csv(source)
    if shift:
        column, change = shift
        frame[column] = change(frame[column])
    (incoming / f"span-{number}").mkdir(parents=True)
    frame.to_csv(incoming / f"span-{number}" / "data.csv", index=False)


def pushed_uri(proc) -> str:
    """The version a run published (its `published: URI` line)."""
    match = re.search(r"^published: (\S+)$", proc.stdout, re.M)
    assert match, proc.stdout
    return match.group(1)
