"""The one registry/tag setting that names every stage's image.

The compiled IR names, for each step, the image its stage is built into:
``{KFX_IMAGE_REGISTRY}/kfx-{stage}:{KFX_IMAGE_TAG}``. Both are read when a
pipeline is compiled, so one compile targets one image set.
"""
import os
from importlib import metadata

DEFAULT_REGISTRY = "kfx"


def image_tag() -> str:
    return os.environ.get("KFX_IMAGE_TAG") or metadata.version("kfx")


def stage_image(stage: str) -> str:
    registry = os.environ.get("KFX_IMAGE_REGISTRY", DEFAULT_REGISTRY).rstrip("/")
    return f"{registry}/kfx-{stage.replace('_', '-')}:{image_tag()}"
