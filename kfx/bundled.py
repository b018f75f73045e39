"""The pipelines kfx ships (kfx_pipelines: pipelines/tabular.py, the lifecycle; pipelines/monitor.py,
the monitor), compiled to IR. The one place the platform imports kfx_pipelines: `kfx compile`,
`kfx run` and `kfx submit` without --ir, and `kfx monitor` compile through here."""
from __future__ import annotations

from typing import Optional

from kfx.errors import UsageError


def lifecycle_inputs(profile: str) -> dict:
    """The lifecycle pipeline's parameters: name -> KFP input spec (its `.type`)."""
    from kfx_pipelines.tabular import build_pipeline
    return dict(build_pipeline(profile).component_spec.inputs)


def compile_lifecycle(output: str, profile: str, defaults: Optional[dict] = None) -> str:
    """The lifecycle pipeline's IR at `output`; `defaults` (checked names) become its parameter defaults."""
    from kfx_pipelines.tabular import compile_pipeline
    if defaults:
        check_parameters(defaults, lifecycle_inputs(profile))
    return compile_pipeline(output, profile=profile, defaults=defaults or None)


def compile_monitor(output: str, profile: str = "local", defaults: Optional[dict] = None) -> str:
    from kfx_pipelines.monitor import compile_pipeline
    return compile_pipeline(output, profile=profile, defaults=defaults)


def check_parameters(params: dict, known) -> None:
    """A misspelt --param or config key is an error, never silently dropped."""
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise UsageError(f"unknown pipeline parameter(s) {unknown}; the pipeline takes: {', '.join(sorted(known))}")
