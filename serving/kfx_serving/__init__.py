"""kfx serving runtime: a pushed kfx SavedModel behind KServe's model server.

    python -m kfx_serving serve --model-dir REGISTRY/MODEL/vN [--http-port 8080] [--log-url URL]
    python -m kfx_serving sink  --port 9090 --out DIR|s3://bucket/prefix

Runs in its own environment (requirements/serving.lock: kserve 0.15.2 + TF 2.16.2):
the venv `.venv-serving` (`make serving-venv`) or the image kfx/kfx-serve
(`make serving-image`). Never imported by the kfx platform package or the stages.
"""
__all__ = ["features", "payload", "normalize"]
