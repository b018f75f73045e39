"""Formats the platform (kfx), the stages (kfx_components) and the serving runtime (kfx_serving) share.

    s3.py           the one S3 client: endpoint settings, retry policy, URIs, commit markers
    registry.py     the model registry layout: v<N> versions, aliases.json, model URIs, publish, fetch
    payload_log.py  the serving payload-log records, late labels and the online metric
    features.py     the serving feature spec of a model signature
    protos.py       the few TensorFlow / TF Metadata protos read without TensorFlow (SavedModel graph, schema)
    contract.py     the request contract of a version (contract.json) and what breaks its clients

No TensorFlow and nothing of kfx, kfx_components or kfx_serving is imported here; every image ships it
(images/build.py, images/serve/build.sh; tests/formats/test_imports.py checks the imports).
"""
