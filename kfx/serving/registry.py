"""What serving needs of the model registry on top of its one layout, kfx_formats.registry (versions,
aliases.json, resolve, fetch): the version a model URI names, as a local directory to serve or score."""
from __future__ import annotations

import dataclasses
import os
from typing import Optional

from kfx_formats import registry


@dataclasses.dataclass(frozen=True)
class LocalVersion:
    model_dir: str      # <registry_uri>/<model_name>
    number: int
    path: str           # a local directory (an S3 version is downloaded into a cache once)

    @property
    def uri(self) -> str:
        return f"{self.model_dir}/v{self.number}"

    def model_card(self) -> dict:
        return registry.read_json(os.path.join(self.path, registry.CARD_JSON)) or {}


def local_version(model_uri: str, cache: Optional[str] = None) -> LocalVersion:
    """`<model_dir>/vN`, `<model_dir>@alias` or `<model_dir>` (latest) as a local directory;
    kfx_formats.registry.RegistryError (one line) when it names no complete version."""
    model_dir, number = registry.resolve(model_uri)
    return LocalVersion(model_dir, number, registry.local_version_dir(model_dir, number, cache))


def local_path(uri: str) -> str:
    """The filesystem path of a local registry URI (a path or file://path)."""
    return uri[len("file://"):] if uri.startswith("file://") else uri
