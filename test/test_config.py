"""Settings: defaults valid, validation refuses with reasons, YAML in both layouts."""

import pytest

from ovseg_ros.settings.config import Settings, SettingsError, settings_fields
from ovseg_ros.settings.params_file import settings_from_yaml


def test_defaults_are_valid_and_every_field_is_described():
    Settings().validate()
    for f in settings_fields():
        assert f.metadata["description"], f.name
        assert isinstance(f.metadata["live"], bool), f.name


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"sam_model": "vit_x"}, "sam_model must be one of vit_b, vit_l, vit_h"),
        ({"granularity": 1.5}, "granularity must be <= 1.0"),
        ({"points_per_side": 0}, "points_per_side must be >= 1"),
        ({"points_per_side": 2.5}, "points_per_side must be an integer"),
        ({"pred_iou_thresh": float("nan")}, "pred_iou_thresh must be finite"),
        ({"device": "gpu"}, "device must be"),
        ({"device": "cuda:one"}, "device must be"),
        ({"vocabulary": ["mug", 3]}, "vocabulary must be a list of strings"),
        ({"offline": "yes"}, "offline must be true or false"),
        ({"no_such_setting": 1}, "unknown setting(s): no_such_setting"),
    ],
)
def test_bad_values_are_refused_with_the_reason(changes, words):
    with pytest.raises(SettingsError) as err:
        Settings().replace(**changes)
    assert words in str(err.value)


def test_replace_coerces_yaml_and_ros_types():
    settings = Settings().replace(granularity=1, vocabulary=("mug", "cup"))
    assert settings.granularity == 1.0 and isinstance(settings.granularity, float)
    assert settings.vocabulary == ["mug", "cup"]


def test_yaml_flat_and_ros_params_layouts(tmp_path):
    flat = tmp_path / "flat.yaml"
    flat.write_text("points_per_side: 16\ngranularity: 0.5\n")
    assert settings_from_yaml(flat).points_per_side == 16
    ros = tmp_path / "ros.yaml"
    ros.write_text("ovseg:\n  ros__parameters:\n    points_per_side: 12\n    device: cpu\n")
    loaded = settings_from_yaml(ros, granularity=0.3)
    assert (loaded.points_per_side, loaded.device, loaded.granularity) == (12, "cpu", 0.3)


def test_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(SettingsError, match="config file not found"):
        settings_from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("points_per_side: [unclosed\n")
    with pytest.raises(SettingsError, match="bad.yaml is not valid YAML"):
        settings_from_yaml(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("points_per_side: many\n")
    with pytest.raises(SettingsError, match="points_per_side must be an integer"):
        settings_from_yaml(wrong)


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("OVSEG_CACHE", str(tmp_path / "env"))
    assert Settings().resolved_cache_dir() == tmp_path / "env"
    assert Settings(cache_dir=str(tmp_path / "x")).resolved_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("OVSEG_CACHE")
    assert Settings().resolved_cache_dir().parts[-2:] == (".cache", "ovseg_ros")


def test_readme_settings_table_matches_the_defaults():
    """The README's table is the user's view of Settings: no default may drift."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| \w+ \| `([^`]*)` \|", readme, flags=re.M))
    defaults = Settings()
    for f in settings_fields():
        value = getattr(defaults, f.name)
        shown = (
            {True: "true", False: "false"}.get(value, value) if isinstance(value, bool) else value
        )
        expected = "[]" if value == [] else ('""' if value == "" else str(shown))
        assert rows.get(f.name) == expected, f"README row for {f.name}"
