"""Writing one file per split from a Beam pipeline without grouping the records.

Beam's sharded writers (WriteToTFRecord with num_shards) group every record by
shard key, and the DirectRunner holds a grouped PCollection in memory: memory
would grow with the data. Instead each bundle writes its own GZIP part file as
its records stream by, and the driver concatenates the parts into the one file
the examples contract names (GZIP members concatenate into a valid file). A
split read from one GZIP file (not splittable) is one bundle on the
DirectRunner, so its part keeps the records in input order.

apache_beam is imported inside the functions: importing this module stays cheap.
"""
import gzip
import os
import shutil
import tempfile
import uuid


class PartWriter:
    """A DoFn (built lazily: apache_beam is imported at run time) writing its bundle's records."""

    def __new__(cls, directory: str):
        import apache_beam as beam

        class PartWriter(beam.DoFn):
            def __init__(self, directory):
                self.directory = directory

            def start_bundle(self):
                self.handle = None

            def process(self, record):
                from apache_beam.io.tfrecordio import _TFRecordUtil
                if self.handle is None:
                    from apache_beam.io.filesystem import CompressionTypes
                    from apache_beam.io.filesystems import FileSystems
                    path = FileSystems.join(self.directory, f"part-{uuid.uuid4().hex}.tfrecord.gz")
                    self.handle = FileSystems.create(path, compression_type=CompressionTypes.GZIP)
                _TFRecordUtil.write_record(self.handle, record)

            def finish_bundle(self):
                if self.handle is not None:
                    self.handle.close()
                    self.handle = None

        return PartWriter(directory)


def concatenate(parts_dir: str, out_path: str) -> None:
    """The part files' bytes, one after another, into out_path (an empty GZIP file if none)."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    pattern = FileSystems.join(parts_dir, "part-*.tfrecord.gz")
    parts = sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list)
    with open(out_path, "wb") as out:
        if not parts:
            out.write(gzip.compress(b""))
        for part in parts:
            with FileSystems.open(part, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                shutil.copyfileobj(f, out, 8 * 2 ** 20)


def remove_tree(path: str) -> None:
    from apache_beam.io.filesystems import FileSystems
    try:
        if FileSystems.exists(path):
            FileSystems.delete([path])
    except Exception:  # noqa: BLE001 - scratch: leaving it behind is harmless
        pass


def scratch(options) -> str:
    """Where a pipeline leaves files for the driver: Beam's temp_location when set (shared
    storage on a distributed runner), else this machine's temp directory."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions
    return options.view_as(GoogleCloudOptions).temp_location or tempfile.gettempdir()
