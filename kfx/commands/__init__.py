"""kfx's commands, one module per command group (as kfp/cli/ has them): each defines its
arguments and a thin function per command that calls the domain code elsewhere in kfx and prints
its result. Each module's `register(subparsers)` adds its commands; kfx/cli.py lists the modules."""
