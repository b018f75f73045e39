"""The Docker engine the container tests use: a client that answers, or the test is skipped
(under `make test`, KFX_NO_SKIP=1, a skip is a failure: tests/conftest.py)."""
import pytest


def client():
    docker = pytest.importorskip("docker")
    try:
        engine = docker.from_env()
        engine.ping()
    except Exception as err:  # noqa: BLE001 - no engine answers
        pytest.skip(f"no Docker engine: {err}")
    return engine
