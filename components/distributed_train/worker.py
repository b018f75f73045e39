"""One TFJob worker of a multi-worker distributed_train step, and the S3 staging it shares with the step.

The distributed_train step with ``workers > 1`` runs on the cluster but does not
train itself (see ``tfjob.train_with_tfjob``). Its local input directories are not
visible to other pods, so everything travels through a run-scoped S3 prefix, the
*staging URI* ``<root>/tfjobs/<job-name>``::

    <staging>/inputs/transformed_examples/...   uploaded by the step before the TFJob exists
    <staging>/inputs/transform_graph/...
    <staging>/inputs/hyperparameters/...
    <staging>/inputs/_COMPLETE                  written last by the step (manifest of the above)
    <staging>/outputs/model/...                 uploaded by the chief (worker 0) after training
    <staging>/outputs/checkpoints/...
    <staging>/outputs/facts.json                the chief's executor.run facts
    <staging>/outputs/_COMPLETE                 written last by the chief (manifest of the above)

Each folder follows the stages' commit-marker convention (``kfx_formats.s3.commit``,
``committed``, ``fetch``): a reader trusts a folder only once its ``_COMPLETE``
marker exists and reads exactly the objects the marker lists, so a crash
mid-upload (or a stale object from an earlier attempt) is never read as a result.

Each worker pod runs::

    python3 -m kfx_components.distributed_train.worker --staging-uri s3://... --epochs N \\
        --label-key K --problem-type P --num-classes C [--seed S]

It downloads the inputs, calls ``executor.run`` under the ``TF_CONFIG`` the Training
Operator set for it (``MultiWorkerMirroredStrategy``; worker 0 is the chief), and the
chief publishes the outputs. A worker that fails writes ``<Error>: <message>`` to
the container's termination-message file (``/dev/termination-log``, or
``KFX_TERMINATION_MESSAGE_PATH``) so the step's error names it, and exits non-zero.

S3 endpoint and credentials come from the environment only (``KFX_S3_ENDPOINT``,
``KFX_S3_SECURE``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``);
on the cluster the workers get them from the same Secret/ConfigMap references as the
step's pod. This module imports TensorFlow only inside :func:`main` (through the executor).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from typing import Dict, Mapping, Optional, Sequence

from kfx_formats import s3
from kfx_formats.s3 import client as s3_client, split_uri  # noqa: F401 - tfjob and tests use them here

INPUTS = ("transformed_examples", "transform_graph", "hyperparameters")
FACTS_FILE = "facts.json"
TERMINATION_LOG = "/dev/termination-log"


class StagingError(RuntimeError):
    """The staging prefix is missing something a reader needs."""


# ------------------------------------------------------------------ staging (kfx_formats.s3's commit convention)

def _publish(client, staging_uri: str, folder: str, trees: Mapping[str, str],
             files: Mapping[str, bytes] = None) -> Dict:
    """Upload local dirs (and small files) under ``<staging>/<folder>/``, then its marker last."""
    bucket, key = split_uri(staging_uri)
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)
    return s3.commit(client, bucket, f"{key}/{folder}", trees, files)


def _fetch(client, staging_uri: str, folder: str, targets: Mapping[str, str], who: str) -> Dict:
    """Download the trees ``<staging>/<folder>/_COMPLETE`` lists into ``targets[name]``."""
    bucket, key = split_uri(staging_uri)
    manifest = s3.committed(client, bucket, f"{key}/{folder}")
    if manifest is None:
        raise StagingError(f"{staging_uri}/{folder}/{s3.MARKER} is missing: {who} did not finish uploading")
    for name, target in targets.items():
        if not any(r.split("/", 1)[0] == name for r in manifest["objects"]):
            raise StagingError(f"{staging_uri}/{folder}/{name} is empty in the {s3.MARKER} manifest")
        s3.fetch(client, bucket, f"{key}/{folder}", target, under=name, manifest=manifest)
    return manifest


def stage_inputs(staging_uri: str, dirs: Mapping[str, str], client=None) -> Dict:
    """Step side: upload the input directories (``INPUTS`` names) to ``<staging>/inputs``."""
    unknown = set(dirs) - set(INPUTS)
    if unknown:
        raise ValueError(f"unknown staged inputs {sorted(unknown)}; expected {INPUTS}")
    return _publish(client or s3_client(), staging_uri, "inputs", dirs)


def fetch_inputs(staging_uri: str, local_root: str, client=None) -> Dict[str, str]:
    """Worker side: download the staged inputs; returns ``{name: local dir}``."""
    targets = {name: os.path.join(local_root, "inputs", name) for name in INPUTS}
    _fetch(client or s3_client(), staging_uri, "inputs", targets, "the distributed_train step")
    return targets


def publish_outputs(staging_uri: str, model_dir: str, checkpoint_dir: str, facts: dict, client=None) -> Dict:
    """Chief side: upload model + checkpoints + facts.json to ``<staging>/outputs``, marker last."""
    return _publish(client or s3_client(), staging_uri, "outputs",
                    {"model": model_dir, "checkpoints": checkpoint_dir},
                    {FACTS_FILE: json.dumps(facts, sort_keys=True).encode()})


def fetch_outputs(staging_uri: str, model_dir: str, checkpoint_dir: str, client=None) -> dict:
    """Step side: download the chief's model and checkpoints into the step's output paths; its facts."""
    client = client or s3_client()
    _fetch(client, staging_uri, "outputs", {"model": model_dir, "checkpoints": checkpoint_dir},
           "the TFJob's chief (worker 0)")
    bucket, key = split_uri(staging_uri)
    facts = s3.read(client, bucket, f"{key}/outputs/{FACTS_FILE}")
    if facts is None:
        raise StagingError(f"{staging_uri}/outputs/{FACTS_FILE} is missing")
    return json.loads(facts)


def delete_staging(staging_uri: str, client=None) -> int:
    """Remove every object below the staging prefix; returns how many."""
    from minio.deleteobjects import DeleteObject
    client = client or s3_client()
    bucket, key = split_uri(staging_uri)
    names = [o.object_name for o in s3.with_retries(f"listing of {staging_uri}", lambda: list(
        client.list_objects(bucket, prefix=key + "/", recursive=True)))]
    errors = s3.with_retries(f"delete of {staging_uri}", lambda: list(
        client.remove_objects(bucket, (DeleteObject(n) for n in names))))
    if errors:
        raise StagingError(f"could not delete {len(errors)} staging objects below {staging_uri}: {errors[0]}")
    return len(names)


# ------------------------------------------------------------------ worker entry point

def worker_args(staging_uri: str, epochs: int, label_key: str, problem_type: str, num_classes: int,
                seed: int = 42) -> list:
    """The command-line arguments :func:`main` takes (what the step puts into the TFJob)."""
    return ["--staging-uri", staging_uri, "--epochs", str(int(epochs)), "--label-key", label_key,
            "--problem-type", problem_type, "--num-classes", str(int(num_classes)),
            "--seed", str(int(seed))]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m kfx_components.distributed_train.worker",
                                description="One multi-worker distributed_train worker (TFJob replica).")
    p.add_argument("--staging-uri", required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--label-key", required=True)
    p.add_argument("--problem-type", required=True)
    p.add_argument("--num-classes", type=int, required=True)
    p.add_argument("--seed", type=int, default=42)
    return p


def _termination_message(exc: BaseException) -> None:
    path = os.environ.get("KFX_TERMINATION_MESSAGE_PATH", TERMINATION_LOG)
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(f"{type(exc).__name__}: {exc}"[-4000:])  # the kubelet keeps at most 4096 bytes
    except OSError:
        pass


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = _parser().parse_args(argv)
    scratch = tempfile.mkdtemp(prefix="kfx-worker-")
    try:
        from kfx_components.distributed_train import executor
        client = s3_client()
        inputs = fetch_inputs(args.staging_uri, scratch, client)
        model_dir, ckpt_dir = os.path.join(scratch, "model"), os.path.join(scratch, "checkpoints")
        facts = executor.run(transformed_examples_dir=inputs["transformed_examples"],
                             transform_graph_dir=inputs["transform_graph"],
                             hyperparameters_dir=inputs["hyperparameters"],
                             model_dir=model_dir, checkpoint_dir=ckpt_dir, label_key=args.label_key,
                             problem_type=args.problem_type, num_classes=args.num_classes,
                             epochs=args.epochs, seed=args.seed)
        if facts["is_chief"]:
            publish_outputs(args.staging_uri, model_dir, ckpt_dir, facts, client)
        print("KFX_WORKER_FACTS " + json.dumps(facts, sort_keys=True), flush=True)
        return facts
    except BaseException as exc:
        _termination_message(exc)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
