"""`kfx ui`: registered in the CLI without importing Flask; a missing root is one line, exit 2."""
import subprocess
import sys

from kfx.cli import main


def test_a_missing_root_is_one_line(tmp_path, capsys):
    assert main(["ui", "--root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --root {tmp_path / 'nowhere'}: no such directory"]


def test_the_other_commands_do_not_pay_for_flask():
    code = "import sys, kfx.cli; kfx.cli.build_parser(); print('flask' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
