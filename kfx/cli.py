"""kfx: the ML lifecycle as a KFP pipeline, on this machine or a KFP cluster.

    kfx compile [--config FILE] [--profile cpu|gpu|tpu] [-o pipeline.yaml]
    kfx run     [--config FILE] --data CSV|PATTERN-WITH-{SPAN} --label COL|EXPR --task binary --root DIR
    kfx lineage URI --root DIR
    kfx history --root DIR
    kfx schema export --root DIR -o schema.pbtxt
    kfx submit  --host URL --ir pipeline.yaml ...
    kfx serve | rollout | predict | monitor | gc | ui    (see each command's --help)

The commands live in kfx/commands/, one module per group (COMMANDS below); what they do lives
elsewhere in kfx. Every refusal is one `error:` line and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from kfx.commands import gc, monitor, pipeline, serving, ui
from kfx.errors import UsageError

EXIT_FAILED, EXIT_USAGE = 1, 2

# The command groups, in the order `kfx --help` lists them; each module's register() adds its commands.
COMMANDS = (pipeline, serving, monitor, gc, ui)


class _Parser(argparse.ArgumentParser):
    """A bad option (a missing one, a number that is none, an unknown choice) is one `error:`
    line and exit 2, as every other refusal, instead of argparse's usage block."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kfx", description="The ML lifecycle as a KFP pipeline.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for group in COMMANDS:
        group.register(sub)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from kfx.runner.ir import IRError
    from kfx.stores.lineage import LineageError
    from kfx.stores.s3 import S3ConfigError   # a KFX_S3_* setting read by any command (serve, gc, monitor...)
    try:
        return args.func(args)
    except (UsageError, IRError, LineageError, S3ConfigError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)   # one line
        return EXIT_USAGE
    except Exception as err:
        from kfx.submit import SubmitError   # light: no kfp import until a submission is made
        if not isinstance(err, SubmitError):
            raise
        print(f"kfx submit: {err}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
