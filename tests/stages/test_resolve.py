"""resolve: the baseline is the model in production (the alias) or the newest version, with the
statistics it was trained on; nothing on a first run."""
import json
import os

import pytest

from kfx_formats import registry
from kfx_components.resolve import executor


def _publish(reg, name, with_statistics=True):
    """A version as push publishes it: saved_model/ and, since resolve exists, statistics/."""
    import tempfile
    model = tempfile.mkdtemp()
    open(os.path.join(model, "saved_model.pb"), "wb").write(b"pb")
    sources = {"saved_model": model}
    if with_statistics:
        stats = tempfile.mkdtemp()
        os.makedirs(os.path.join(stats, "train"))
        open(os.path.join(stats, "train", "FeatureStats.pb"), "wb").write(b"stats")
        sources["statistics"] = stats
    return registry.publish(sources, {"model_card.json": b"{}"}, reg, name)


def test_first_run_has_no_baseline(tmp_path):
    facts = executor.run(str(tmp_path / "registry"), "m")
    assert facts == {"version": 0, "model_uri": "", "statistics_uri": "", "source": "the registry holds no version"}
    assert "no baseline" in executor.describe(facts)


def test_newest_version_unless_production_points_elsewhere(tmp_path):
    reg = str(tmp_path / "registry")
    v1 = _publish(reg, "m")
    v2 = _publish(reg, "m", with_statistics=False)
    facts = executor.run(reg, "m")
    assert facts["version"] == 2 and facts["model_uri"] == f"{v2.uri}/saved_model"
    assert facts["statistics_uri"] == ""   # v2 was published without statistics
    registry.set_alias(f"{reg}/m", "production", 1)   # as `kfx rollout` promotes a version
    facts = executor.run(reg, "m")
    assert facts["version"] == 1 and facts["source"] == "the 'production' alias"
    assert facts["statistics_uri"] == f"{v1.uri}/statistics"
    assert os.path.isfile(os.path.join(facts["statistics_uri"], "train", "FeatureStats.pb"))


def test_an_unreadable_alias_file_is_one_line_naming_it(tmp_path):
    reg = str(tmp_path / "registry")
    _publish(reg, "m")
    with open(os.path.join(reg, "m", "aliases.json"), "w") as f:
        json.dump({"production": "v1"}, f)
    with pytest.raises(ValueError, match=r"m/aliases.json: alias 'production' is not"):
        executor.run(reg, "m")
