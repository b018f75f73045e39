"""The one S3 client (kfx_formats.s3): its endpoint parser, its retry policy, its commit markers."""
import socket
import time
import uuid

import pytest

from kfx_formats import s3


@pytest.fixture
def env(monkeypatch):
    for name in ("KFX_S3_ENDPOINT", "KFX_S3_SECURE", "KFX_S3_ATTEMPTS", "KFX_S3_BACKOFF"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("raw, secure, expected", [
    ("minio:9000", "", ("minio:9000", False)),
    ("http://minio:9000/", "", ("minio:9000", False)),
    ("https://minio:9000", "", ("minio:9000", True)),
    ("https://minio:9000", "off", ("minio:9000", False)),
    ("minio:9000", "on", ("minio:9000", True)),
    ("minio:9000", "Yes", ("minio:9000", True)),
    ("minio:9000", "1", ("minio:9000", True)),
    ("https://10.0.0.1:443", "false", ("10.0.0.1:443", False)),
    ("http://minio:9000", "no", ("minio:9000", False)),
])
def test_endpoint_forms(env, raw, secure, expected):
    env.setenv("KFX_S3_ENDPOINT", raw)
    env.setenv("KFX_S3_SECURE", secure)
    assert s3.endpoint() == expected
    assert s3.endpoint_url() == f"{'https' if expected[1] else 'http'}://{expected[0]}"


@pytest.mark.parametrize("name, value, says", [
    ("KFX_S3_ENDPOINT", "", "is not set"),
    ("KFX_S3_ENDPOINT", "garbage endpoint", "no valid host name"),
    ("KFX_S3_ENDPOINT", "http://minio:9000/bucket", "a path (/bucket) is not allowed"),
    ("KFX_S3_ENDPOINT", "minio:notaport", "Port could not be cast"),
    ("KFX_S3_ENDPOINT", "minio:0", "port 0 is not a port"),
    ("KFX_S3_ENDPOINT", "ftp://minio:21", "the scheme must be http or https"),
    ("KFX_S3_ENDPOINT", "http://key:secret@minio:9000", "credentials do not belong in it"),
    ("KFX_S3_SECURE", "maybe", "is not a boolean"),
])
def test_a_bad_endpoint_setting_is_one_line_naming_it(env, name, value, says):
    env.setenv("KFX_S3_ENDPOINT", "minio:9000")
    env.setenv(name, value)
    with pytest.raises(s3.S3ConfigError) as err:
        s3.endpoint()
    message = str(err.value)
    assert "\n" not in message and message.startswith(name) and says in message
    assert isinstance(err.value, ValueError)     # stages report a ValueError as one line


@pytest.mark.parametrize("name, value", [("KFX_S3_ATTEMPTS", "0"), ("KFX_S3_ATTEMPTS", "2.5"),
                                         ("KFX_S3_BACKOFF", "soon"), ("KFX_S3_BACKOFF", "-1")])
def test_a_bad_retry_setting_is_one_line_naming_it(env, name, value):
    env.setenv(name, value)
    with pytest.raises(s3.S3ConfigError, match=f"^{name}='{value}'"):
        s3.with_retries("nothing", lambda: None, url="http://x")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]       # free once closed: connecting is refused


def test_an_unreachable_server_fails_after_the_attempts_in_one_line(env):
    """A real connection refused, through the real client: retried KFX_S3_ATTEMPTS times, then
    S3Unavailable naming the endpoint, the operation and the count."""
    endpoint = f"127.0.0.1:{_closed_port()}"
    env.setenv("KFX_S3_ENDPOINT", endpoint)
    env.setenv("AWS_ACCESS_KEY_ID", "k")
    env.setenv("AWS_SECRET_ACCESS_KEY", "s")
    env.setenv("KFX_S3_ATTEMPTS", "3")
    env.setenv("KFX_S3_BACKOFF", "0.05")
    started = time.monotonic()
    with pytest.raises(s3.S3Unavailable) as err:
        s3.read(s3.client(), "bucket", "key")
    assert time.monotonic() - started < 5
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"S3 endpoint http://{endpoint} unreachable: read of s3://bucket/key failed 3 times")


def _s3_error(code: str):
    from minio.error import S3Error
    return S3Error(None, code, "message", "/bucket/key", "request", "host")


def test_transient_failures_are_retried_and_others_are_not(env):
    import urllib3
    from minio.error import S3Error
    env.setenv("KFX_S3_BACKOFF", "0")
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise urllib3.exceptions.ProtocolError("connection reset")
        return "done"
    assert s3.with_retries("flaky", flaky, url="http://x") == "done" and len(calls) == 3

    def refused_request():
        calls.append(1)
        raise _s3_error("AccessDenied")
    calls.clear()
    with pytest.raises(S3Error):
        s3.with_retries("denied", refused_request, url="http://x")
    assert len(calls) == 1, "a request the server refuses is not retried"
    assert s3.transient(_s3_error("SlowDown"))
    assert not s3.transient(ValueError("bad"))


def test_split_uri():
    assert s3.split_uri("s3://bucket/a/b/") == ("bucket", "a/b")
    assert s3.split_uri("minio://bucket") == ("bucket", "")
    assert s3.is_s3("minio://b/k") and not s3.is_s3("/tmp/s3://x")
    with pytest.raises(s3.S3ConfigError, match=r"^.gs://bucket/k. is not s3://bucket/key"):
        s3.split_uri("gs://bucket/k")


# ---------------------------------------------------------------- commit markers (the session's moto server)

@pytest.mark.s3
def test_commit_fetch_and_local_copy(s3_server, tmp_path):
    client = s3.client()
    bucket = f"fmt-{uuid.uuid4().hex[:8]}"
    client.make_bucket(bucket)
    tree = tmp_path / "tree"
    (tree / "assets").mkdir(parents=True)
    (tree / "sub").mkdir()
    (tree / "sub" / "x.bin").write_bytes(b"xx")
    assert s3.committed(client, bucket, "p") is None
    manifest = s3.commit(client, bucket, "p", {"model": str(tree)}, {"facts.json": b"{}"})
    assert manifest == {"objects": {"model/sub/x.bin": 2, "facts.json": 2}, "dirs": ["model/assets"]}
    assert s3.committed(client, bucket, "p") == manifest
    s3.put(client, bucket, "p/model/stray", b"never listed")
    out = tmp_path / "out"
    s3.fetch(client, bucket, "p", str(out), under="model")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["assets", "sub", "sub/x.bin"]
    with pytest.raises(ValueError, match=r"s3://.*/q/_COMPLETE is missing: not committed"):
        s3.fetch(client, bucket, "q", str(tmp_path / "q"))
    copy = s3.local_copy(f"s3://{bucket}/p/model/sub", str(tmp_path / "scratch"))
    assert open(f"{copy}/x.bin", "rb").read() == b"xx"
    single = s3.local_copy(f"s3://{bucket}/p/facts.json", str(tmp_path / "scratch2"))
    assert single.endswith("facts.json") and open(single, "rb").read() == b"{}"
    with pytest.raises(ValueError, match="no such object or prefix"):
        s3.local_copy(f"s3://{bucket}/nothing", str(tmp_path / "scratch3"))
