"""Shared fixtures: the repo root and the bundled data set's configuration."""
import os
import pathlib

import pytest
import yaml

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo() -> pathlib.Path:
    return REPO


@pytest.fixture(scope="session")
def taxi_config() -> dict:
    """The bundled data set's pipeline configuration (label, columns to drop...)."""
    return yaml.safe_load((REPO / "pipelines/configs/chicago_taxi.yaml").read_text())
