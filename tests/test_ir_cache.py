"""The compiled lifecycle IR is cached by what it is made of (kfx/bundled.py): an unchanged rerun
copies the bytes the compiler wrote; any change to a source, the profile or the defaults compiles anew."""
import pytest

from kfx import bundled


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(bundled.IR_CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_an_unchanged_compile_is_the_cached_bytes_and_a_change_compiles_anew(cache, tmp_path, monkeypatch):
    first = bundled.compile_lifecycle(str(tmp_path / "a.yaml"), "local", {"label": "y"})
    assert list(cache.glob("tabular-*.yaml"))

    import kfx_pipelines.tabular as tabular

    def no_compiler(*_, **__):
        raise AssertionError("compiled although nothing changed")
    monkeypatch.setattr(tabular, "compile_pipeline", no_compiler)
    second = bundled.compile_lifecycle(str(tmp_path / "b.yaml"), "local", {"label": "y"})
    assert open(first, "rb").read() == open(second, "rb").read()

    # Other defaults, another profile: another key, so the compiler is called.
    for profile, defaults in (("local", {"label": "z"}), ("gpu", {"label": "y"})):
        with pytest.raises(AssertionError, match="compiled although"):
            bundled.compile_lifecycle(str(tmp_path / "c.yaml"), profile, defaults)


def test_the_key_follows_every_source_file(tmp_path, monkeypatch):
    source = tmp_path / "component.py"
    source.write_text("A = 1\n")
    monkeypatch.setattr(bundled, "_sources", lambda: [("kfx_components/x/component.py", source)])
    before = bundled._source_key("tabular", "local", None)
    assert bundled._source_key("tabular", "local", None) == before
    source.write_text("A = 2\n")
    assert bundled._source_key("tabular", "local", None) != before


def test_off_compiles_every_time(tmp_path, monkeypatch):
    monkeypatch.setenv(bundled.IR_CACHE_ENV, "off")
    calls = []
    monkeypatch.setattr(bundled, "_source_key", lambda *a: calls.append(a) or "k")
    bundled.compile_monitor(str(tmp_path / "m.yaml"))
    assert calls == [] and (tmp_path / "m.yaml").stat().st_size > 0
