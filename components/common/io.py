"""Helpers shared by the stages: the examples layout, GZIP TFRecord IO, staged outputs.

The examples layout (docs/design.md): ``<dir>/{train,eval,test}/data.tfrecord.gz``, GZIP TFRecords of ``tf.train.Example``.
TensorFlow is imported inside the functions that need it so that importing this
module stays cheap.
"""
import contextlib
import os
import shutil
import uuid
from typing import Dict, Iterable, Iterator, List

# train fits the model; eval tunes it (search, early stopping, distillation);
# test, which nothing trains or tunes on, judges it (blessing, card, report).
TRAIN, EVAL, TEST = "train", "eval", "test"
SPLITS = (TRAIN, EVAL, TEST)
# With a window of spans (train_spans), ingest also writes the newest span, which nothing trains
# on, as this split: the temporal backtest. Not one of SPLITS, which every stage iterates: only
# evaluate reads it (split_file(root, BACKTEST)), and only when it exists.
BACKTEST = "backtest"
DATA_FILE = "data.tfrecord.gz"
# Beside the splits, ingest lists every source column and its type: a column
# with no value in any row (all cells missing) appears in no record, yet is a
# known column, not a typo, to a later stage.
COLUMNS_FILE = "columns.json"


def split_file(root: str, split: str) -> str:
    """Path of one split's TFRecord file below an examples directory."""
    return os.path.join(root, split, DATA_FILE)


def require_examples(root: str, what: str = "examples_dir") -> None:
    """Raise ValueError naming the parameter and file if a split file is missing."""
    for split in SPLITS:
        path = split_file(root, split)
        if not os.path.isfile(path):
            raise ValueError(f"{what}: {path} not found (expected {'/'.join(SPLITS)} GZIP TFRecords)")


def read_columns(root: str) -> Dict[str, str]:
    """{column: "int64"|"float"|"bytes"} written by ingest; {} when absent."""
    import json
    path = os.path.join(root, COLUMNS_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return dict(json.load(f))


def write_records(path: str, records: Iterable[bytes]) -> int:
    """Write serialised records to a GZIP TFRecord file; returns the count."""
    import tensorflow as tf
    os.makedirs(os.path.dirname(path), exist_ok=True)
    n = 0
    with tf.io.TFRecordWriter(path, options=tf.io.TFRecordOptions(compression_type="GZIP")) as w:
        for record in records:
            w.write(record)
            n += 1
    return n


def read_records(path: str) -> Iterator[bytes]:
    """Serialised records of a GZIP TFRecord file, in file order."""
    import tensorflow as tf
    for record in tf.data.TFRecordDataset(path, compression_type="GZIP"):
        yield record.numpy()


def read_examples(path: str) -> List[Dict[str, list]]:
    """A GZIP TFRecord file of tf.train.Example as a list of {feature: [values]} dicts.

    Small-data helper for tests and reports; bytes values are decoded as UTF-8.
    """
    import tensorflow as tf
    rows = []
    for record in read_records(path):
        ex = tf.train.Example.FromString(record)
        row = {}
        for name, feature in ex.features.feature.items():
            kind = feature.WhichOneof("kind")
            if kind == "int64_list":
                row[name] = list(feature.int64_list.value)
            elif kind == "float_list":
                row[name] = list(feature.float_list.value)
            elif kind == "bytes_list":
                row[name] = [v.decode("utf-8") for v in feature.bytes_list.value]
        rows.append(row)
    return rows


class Staging:
    """Write outputs aside and move them into place only when everything succeeded.

    A directory output is built in ``<dir>/.kfx-partial`` and its children are
    renamed into ``<dir>`` on commit, so a crash never leaves files that look
    complete. A file output is written to a hidden sibling and renamed. On
    failure everything staged is removed, and so is an output directory that
    did not exist before.
    """

    PARTIAL = ".kfx-partial"

    def __init__(self):
        self._dirs = []   # (final, staging, created)
        self._files = []  # (final, staging)

    def dir(self, final: str) -> str:
        final = os.path.abspath(final)
        created = not os.path.exists(final)
        if not created and not os.path.isdir(final):
            raise ValueError(f"output path {final} exists and is not a directory")
        staging = os.path.join(final, self.PARTIAL)
        self._dirs.append((final, staging, created))
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        return staging

    def file(self, final: str) -> str:
        final = os.path.abspath(final)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        staging = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.{uuid.uuid4().hex[:8]}.partial")
        self._files.append((final, staging))
        return staging

    def commit(self) -> None:
        for final, staging, _ in self._dirs:
            for name in sorted(os.listdir(staging)):
                target = os.path.join(final, name)
                if os.path.isdir(target) and not os.path.islink(target):
                    shutil.rmtree(target)
                elif os.path.lexists(target):
                    os.remove(target)
                os.replace(os.path.join(staging, name), target)
            os.rmdir(staging)
        for final, staging in self._files:
            os.replace(staging, final)
        self._dirs, self._files = [], []

    def abort(self) -> None:
        for final, staging, created in self._dirs:
            shutil.rmtree(final if created else staging, ignore_errors=True)
        for _, staging in self._files:
            with contextlib.suppress(FileNotFoundError):
                os.remove(staging)
        self._dirs, self._files = [], []

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False
