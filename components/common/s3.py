"""S3/MinIO access for stages (the registry, the TFJob staging prefix).

Endpoint and credentials come from the environment only (`KFX_S3_ENDPOINT`,
`KFX_S3_SECURE`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`);
on Kubernetes from a Secret. Never from the IR or an image.
"""
import os
from typing import Optional, Tuple

# What "not found" is, for the stages: a missing object or a missing bucket.
NOT_FOUND = ("NoSuchKey", "NoSuchObject", "NoSuchBucket")


def client():
    """A minio client from the environment settings (never literal credentials)."""
    from minio import Minio
    endpoint = os.environ.get("KFX_S3_ENDPOINT", "")
    if not endpoint:
        raise ValueError("KFX_S3_ENDPOINT is not set (host:port of the S3/MinIO server)")
    missing = [v for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not os.environ.get(v)]
    if missing:
        raise ValueError(f"{' and '.join(missing)} not set: S3 credentials come from the environment")
    return Minio(endpoint, access_key=os.environ["AWS_ACCESS_KEY_ID"],
                 secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                 secure=os.environ.get("KFX_S3_SECURE", "0") == "1",
                 region=os.environ.get("AWS_REGION", "us-east-1"), http_client=_http_client())


def _http_client():
    """Bounded waits: a server that stops answering fails a stage in about a minute (5 tries with
    backoff, 10 s to connect, 60 s per read), not after the SDK's default five minutes per request."""
    import certifi
    import urllib3
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=10, read=60), maxsize=10, cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=5, backoff_factor=0.5, status_forcelist=[500, 502, 503, 504]))


def split_uri(uri: str) -> Tuple[str, str]:
    """``s3://bucket/key`` (or KFP's ``minio://bucket/key``) -> (bucket, key without slashes at the ends)."""
    for scheme in ("s3://", "minio://"):
        if uri.startswith(scheme):
            bucket, _, key = uri[len(scheme):].partition("/")
            if bucket:
                return bucket, key.strip("/")
    raise ValueError(f"{uri!r} is not s3://bucket/prefix (or minio://bucket/prefix)")


def read(s3_client, bucket: str, key: str) -> Optional[bytes]:
    """An object's bytes, or None when it (or its bucket) does not exist."""
    from minio.error import S3Error
    try:
        response = s3_client.get_object(bucket, key)
    except S3Error as e:
        if e.code in NOT_FOUND:
            return None
        raise
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def is_s3(uri: str) -> bool:
    return uri.startswith(("s3://", "minio://"))


def local_copy(uri: str, scratch: str) -> str:
    """A local path holding ``uri``: the path itself, or the S3 object or prefix downloaded below
    ``scratch`` (a prefix keeps its layout). A URI that names nothing is a ValueError naming it."""
    if not is_s3(uri):
        if not os.path.exists(uri):
            raise ValueError(f"{uri}: no such file or directory")
        return uri
    bucket, key = split_uri(uri)
    s3 = client()
    names = [o.object_name for o in s3.list_objects(bucket, prefix=key + "/", recursive=True)]
    if not names:   # a single object
        dest = os.path.join(scratch, os.path.basename(key))
        from minio.error import S3Error
        try:
            s3.fget_object(bucket, key, dest)
        except S3Error as e:
            raise ValueError(f"{uri}: no such object or prefix ({e.code})") from e
        return dest
    dest = os.path.join(scratch, os.path.basename(key))
    for name in names:
        s3.fget_object(bucket, name, os.path.join(dest, *name[len(key) + 1:].split("/")))
    return dest
