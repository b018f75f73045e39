"""The registry layout (kfx_formats.registry): filesystem always, S3 against the session's moto server."""
import os
import uuid

import pytest

from kfx_formats import registry, s3


def _source(tmp_path, name="src", content=b"weights"):
    src = tmp_path / name
    (src / "variables").mkdir(parents=True)
    (src / "saved_model.pb").write_bytes(content)
    (src / "variables" / "v.data").write_bytes(content * 3)
    return str(src)


def test_versions_increment_and_fetch(tmp_path):
    reg = str(tmp_path / "reg")
    assert registry.latest(reg, "m") is None
    v1 = registry.publish({"saved_model": _source(tmp_path, content=b"one")}, {"card.md": b"# one"}, reg, "m")
    v2 = registry.publish({"saved_model": _source(tmp_path, "s2", b"two")}, {"card.md": b"# two"}, reg, "m")
    assert (v1.number, v2.number) == (1, 2)
    assert v2.uri == f"{reg}/m/v2"
    assert registry.latest(reg, "m") == v2
    assert [v.number for v in registry.versions(reg, "m")] == [1, 2]
    # v1 is untouched by the second publish.
    assert (tmp_path / "reg/m/v1/saved_model/saved_model.pb").read_bytes() == b"one"
    assert (tmp_path / "reg/m/v1/card.md").read_bytes() == b"# one"
    dest = registry.fetch(v1, str(tmp_path / "fetched"))
    assert open(os.path.join(dest, "saved_model/variables/v.data"), "rb").read() == b"one" * 3
    # Nothing but the version directories is left behind.
    assert sorted(os.listdir(tmp_path / "reg/m")) == ["v1", "v2"]


def test_file_uri(tmp_path):
    uri = f"file://{tmp_path}/reg"
    v = registry.publish({}, {"a.txt": b"x"}, uri, "m")
    assert v.uri == f"{uri}/m/v1" and registry.latest(uri, "m") == v
    assert (tmp_path / "reg/m/v1/a.txt").read_bytes() == b"x"


def test_existing_version_is_never_overwritten(tmp_path):
    """A concurrent publisher already claimed v1 (and even v3): publish takes the next free N."""
    reg = tmp_path / "reg"
    (reg / "m" / "v1").mkdir(parents=True)
    (reg / "m" / "v1" / "mine.txt").write_bytes(b"other publisher")
    v = registry.publish({}, {"mine.txt": b"new"}, str(reg), "m")
    assert v.number == 2
    assert (reg / "m" / "v1" / "mine.txt").read_bytes() == b"other publisher"


def test_claim_race_moves_on(tmp_path, monkeypatch):
    """Another publisher wins v1 between our listing and our rename: we get v2, theirs stays."""
    reg = tmp_path / "reg"
    real = registry._rename_noreplace

    def racing(src, dst):
        if dst.endswith("/v1") and not os.path.exists(dst):
            os.mkdir(dst)
            (tmp_path / "reg/m/v1/theirs").write_bytes(b"theirs")
        return real(src, dst)

    monkeypatch.setattr(registry, "_rename_noreplace", racing)
    v = registry.publish({}, {"ours": b"ours"}, str(reg), "m")
    assert v.number == 2
    assert os.listdir(reg / "m" / "v1") == ["theirs"]
    assert (reg / "m" / "v2" / "ours").read_bytes() == b"ours"


def test_rename_noreplace_refuses_empty_target(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"1")
    (tmp_path / "dst").mkdir()
    with pytest.raises(FileExistsError):
        registry._rename_noreplace(str(tmp_path / "src"), str(tmp_path / "dst"))


def test_failed_publish_leaves_no_version(tmp_path, monkeypatch):
    reg = tmp_path / "reg"
    registry.publish({}, {"a": b"1"}, str(reg), "m")
    real_copytree = registry.shutil.copytree
    calls = []

    def failing(src, dst, *a, **kw):
        calls.append(src)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_copytree(src, dst, *a, **kw)

    monkeypatch.setattr(registry.shutil, "copytree", failing)
    with pytest.raises(OSError, match="disk full"):
        registry.publish({"saved_model": _source(tmp_path), "tflite": _source(tmp_path, "t")},
                         {"card.md": b"x"}, str(reg), "m")
    assert registry.latest(str(reg), "m").number == 1
    assert os.listdir(reg / "m") == ["v1"], "a staging or partial version directory was left"


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="model_name"):
        registry.publish({}, {"a": b"1"}, str(tmp_path), "../escape")
    with pytest.raises(ValueError, match="nothing to publish"):
        registry.publish({}, {}, str(tmp_path), "m")
    with pytest.raises(ValueError, match="missing"):
        registry.publish({"saved_model": str(tmp_path / "missing")}, {}, str(tmp_path), "m")
    with pytest.raises(registry.RegistryError, match="gs://"):
        registry.latest("gs://bucket/x", "m")


# ---------------------------------------------------------------- S3 (the session's moto server)

@pytest.fixture
def bucket(s3_server):
    name = f"reg-{uuid.uuid4().hex[:8]}"
    s3.client().make_bucket(name)
    return name


@pytest.mark.s3
def test_s3_publish_latest_fetch(tmp_path, bucket):
    uri = f"s3://{bucket}/models"
    assert registry.latest(uri, "m") is None
    v1 = registry.publish({"saved_model": _source(tmp_path, content=b"one")}, {"card.md": b"# one"}, uri, "m")
    v2 = registry.publish({"saved_model": _source(tmp_path, "s2", b"two")}, {"card.md": b"# two"}, uri, "m")
    assert (v1.number, v2.number) == (1, 2) and v2.uri == f"{uri}/m/v2"
    assert registry.latest(uri, "m") == v2
    dest = registry.fetch(v1, str(tmp_path / "fetched"))
    assert open(os.path.join(dest, "saved_model/variables/v.data"), "rb").read() == b"one" * 3
    assert open(os.path.join(dest, "card.md"), "rb").read() == b"# one"
    assert not os.path.exists(os.path.join(dest, s3.MARKER))


@pytest.mark.s3
def test_s3_version_is_read_through_its_marker_only(tmp_path, bucket):
    """The marker lists what it vouches for: an object that is not listed (left by no publisher kfx
    knows of) is never fetched."""
    import io
    uri = f"s3://{bucket}"
    v1 = registry.publish({"saved_model": _source(tmp_path, content=b"one")}, {"card.md": b"# one"}, uri, "m")
    s3.client().put_object(bucket, "m/v1/stray.bin", io.BytesIO(b"x"), 1)
    dest = registry.fetch(v1, str(tmp_path / "fetched"))
    assert sorted(os.listdir(dest)) == ["card.md", "saved_model"]


@pytest.mark.s3
def test_s3_version_pushed_before_manifests_stays_readable(tmp_path, bucket):
    """A version as the registry wrote it before its marker listed the objects (3df31fe..a209083:
    `_CLAIM` and `_COMPLETE` both held the publisher's token) is listed and fetched whole."""
    import io
    client = s3.client()
    for name, data in (("v1/_CLAIM", b"token"), ("v1/saved_model/saved_model.pb", b"pb"),
                       ("v1/model_card.json", b"{}"), ("v1/_COMPLETE", b"token")):
        client.put_object(bucket, f"reg/m/{name}", io.BytesIO(data), len(data))
    uri = f"s3://{bucket}/reg"
    assert registry.latest(uri, "m") == registry.Version(1, f"{uri}/m/v1")
    dest = registry.fetch(registry.latest(uri, "m"), str(tmp_path / "old"))
    assert sorted(os.listdir(dest)) == ["model_card.json", "saved_model"]
    assert open(os.path.join(dest, "saved_model", "saved_model.pb"), "rb").read() == b"pb"
    assert registry.publish({}, {"a": b"1"}, uri, "m").number == 2


@pytest.mark.s3
def test_s3_claimed_version_is_skipped_and_incomplete_invisible(tmp_path, bucket):
    """A concurrent publisher holds the v1 claim (not complete yet): we take v2; v1 stays invisible."""
    import io
    client = s3.client()
    client.put_object(bucket, "m/v1/_CLAIM", io.BytesIO(b"other"), 5)
    client.put_object(bucket, "m/v1/partial.bin", io.BytesIO(b"p"), 1)
    uri = f"s3://{bucket}"
    assert registry.latest(uri, "m") is None
    v = registry.publish({}, {"a": b"1"}, uri, "m")
    assert v.number == 2 and registry.latest(uri, "m").number == 2
    assert s3.read(client, bucket, "m/v1/_CLAIM") == b"other"
    with pytest.raises(ValueError, match="not complete"):
        registry.fetch(registry.Version(1, f"{uri}/m/v1"), str(tmp_path / "x"))


@pytest.mark.s3
def test_s3_failed_publish_is_invisible(tmp_path, bucket, monkeypatch):
    uri = f"s3://{bucket}"
    registry.publish({}, {"a": b"1"}, uri, "m")

    def broken(*a, **kw):
        raise OSError("connection reset")

    import minio
    monkeypatch.setattr(minio.Minio, "fput_object", broken)
    with pytest.raises(OSError):
        registry.publish({"saved_model": _source(tmp_path)}, {}, uri, "m")
    assert registry.latest(uri, "m").number == 1
    monkeypatch.undo()
    assert registry.publish({}, {"b": b"2"}, uri, "m").number == 3


@pytest.mark.s3
def test_s3_claim_is_conditional(bucket):
    """The claim marker is created only if absent: a second claimant of the same N loses."""
    client = s3.client()
    assert registry._s3_claim(client, bucket, "m/v7/_CLAIM", b"first")
    assert not registry._s3_claim(client, bucket, "m/v7/_CLAIM", b"second")
    assert s3.read(client, bucket, "m/v7/_CLAIM") == b"first"


# ---------------------------------------------------------------- model URIs and aliases

@pytest.mark.parametrize("uri, expected", [
    ("/r/m/v3", ("/r/m", 3, "")),
    ("s3://b/r/m/v12/", ("s3://b/r/m", 12, "")),
    ("/r/m@production", ("/r/m", None, "production")),
    ("file:///r/m", ("file:///r/m", None, "")),
    ("/r/m/v0", ("/r/m/v0", None, "")),          # v0 is no version: the model directory is "v0"
])
def test_split_model_uri(uri, expected):
    assert registry.split_model_uri(uri) == expected


def test_set_alias_writes_what_kfx_rollout_wrote(tmp_path):
    """The aliases.json of roots written before kfx_formats (kfx/serving.py's set_alias) and the one
    written now have the same fields; the stages' read_alias and gc's alias_versions read both."""
    reg = str(tmp_path / "reg")
    for _ in range(3):
        registry.publish({}, {"a": b"1"}, reg, "m")
    model = registry.model_dir(reg, "m")
    (tmp_path / "reg/m/aliases.json").write_text(   # as an older kfx rollout left it
        '{"production": {"version": 1, "updated": "2026-01-01T00:00:00.000Z", "by": "rollout"},\n'
        ' "history": [{"alias": "production", "from": null, "to": 1, "time": "2026-01-01T00:00:00.000Z",'
        ' "by": "rollout", "note": ""}]}')
    assert registry.read_alias(reg, "m", "production") == 1
    data = registry.set_alias(model, "production", 3, by="alice", note="canary passed")
    assert data["production"]["version"] == 3 and data["production"]["by"] == "alice"
    assert data["production"]["updated"].endswith("Z")
    assert data["history"][-1] == {"alias": "production", "from": 1, "to": 3, "by": "alice",
                                   "note": "canary passed", "time": data["history"][-1]["time"]}
    assert len(data["history"]) == 2 and registry.aliases(model) == data
    registry.set_alias(model, "staging", 2)
    assert registry.alias_versions(model) == {2, 3}
    assert registry.resolve(f"{model}@production") == (model, 3)
    assert registry.resolve(f"{model}/v1") == (model, 1)
    assert registry.resolve(model) == (model, 3)
    with pytest.raises(registry.RegistryError, match="no version v9"):
        registry.set_alias(model, "production", 9)
    with pytest.raises(registry.RegistryError, match="alias 'canary'"):
        registry.set_alias(model, "canary", 1)
    with pytest.raises(registry.RegistryError, match="no complete version v7"):
        registry.resolve(f"{model}/v7")


def test_unset_alias_and_unreadable_aliases_are_one_line(tmp_path):
    reg = str(tmp_path / "reg")
    registry.publish({}, {"a": b"1"}, reg, "m")
    model = registry.model_dir(reg, "m")
    assert registry.read_alias(reg, "m", "production") is None
    with pytest.raises(registry.RegistryError, match=r"alias 'production' is not set \(aliases.json\)$"):
        registry.resolve(f"{model}@production")
    (tmp_path / "reg/m/aliases.json").write_text('{"production": 1}')
    with pytest.raises(ValueError, match=r"/m/aliases.json: not \{alias"):
        registry.alias_versions(model)
    with pytest.raises(ValueError, match=r"alias 'production' is not"):
        registry.read_alias(reg, "m", "production")


@pytest.mark.s3
def test_s3_aliases_resolve_and_local_copy(tmp_path, bucket):
    uri = f"s3://{bucket}/reg"
    registry.publish({"saved_model": _source(tmp_path, content=b"one")}, {"card.md": b"# one"}, uri, "m")
    registry.publish({"saved_model": _source(tmp_path, "s2", b"two")}, {}, uri, "m")
    model = registry.model_dir(uri, "m")
    assert registry.version_numbers(model) == [1, 2]
    registry.set_alias(model, "production", 1, by="test")
    assert registry.read_alias(uri, "m", "production") == 1
    assert registry.resolve(f"{model}@production") == (model, 1)
    cache = str(tmp_path / "cache")
    local = registry.local_version_dir(model, 1, cache)
    assert open(os.path.join(local, "saved_model", "saved_model.pb"), "rb").read() == b"one"
    assert not os.path.exists(os.path.join(local, s3.MARKER))
    os.remove(os.path.join(local, "card.md"))
    assert registry.local_version_dir(model, 1, cache) == local      # downloaded once, then reused
    assert not os.path.exists(os.path.join(local, "card.md"))
    assert registry.read_file(registry.Version(1, f"{model}/v1"), "card.md") == b"# one"
    assert registry.version_numbers(f"s3://{bucket}-absent/reg/m") == []
