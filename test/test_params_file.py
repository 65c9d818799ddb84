"""--config / settings_from_yaml on ordinary ROS 2 parameters files."""

import json
from pathlib import Path

import pytest

from ovseg_ros.settings.config import Settings, SettingsError, settings_fields
from ovseg_ros.settings.node_options import NODE_OPTION_NAMES, NODE_OPTIONS
from ovseg_ros.settings.params_file import node_settings, read_settings_file, settings_from_yaml

REPO = Path(__file__).resolve().parent.parent


def load(tmp_path, text, **kwargs):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return read_settings_file(path, **kwargs)


def test_the_shipped_params_file_loads_as_the_defaults():
    assert settings_from_yaml(REPO / "config" / "params.yaml") == Settings()


def test_ros_level_parameters_and_node_options_are_ignored(tmp_path):
    assert load(
        tmp_path,
        """
/**:
  ros__parameters:
    use_sim_time: true
    start_type_description_service: false
    image_transport: compressed
    image_reliability: reliable
    qos_overrides:
      /parameter_events:
        publisher:
          depth: 1000
    granularity: 0.5
""",
    ) == {"granularity": 0.5}


def test_nested_namespace_and_spelled_out_paths(tmp_path):
    nested = "/robot:\n  ovseg:\n    ros__parameters:\n      points_per_side: 12\n"
    assert load(tmp_path, nested) == {"points_per_side": 12}
    spelled = "/robot/arm/ovseg:\n  ros__parameters:\n    points_per_side: 8\n"
    assert load(tmp_path, spelled) == {"points_per_side": 8}
    assert load(tmp_path, spelled.replace("ovseg", "left_cam"), node_name="left_cam") == {
        "points_per_side": 8
    }


def test_other_nodes_are_ignored_and_sections_merge_in_file_order(tmp_path):
    assert load(
        tmp_path,
        """
/**:
  ros__parameters:
    use_sim_time: true
    frame_id: map
    granularity: 0.4
camera_driver:
  ros__parameters:
    width: 640
    granularity: 0.9
/robot:
  ovseg:
    ros__parameters:
      granularity: 0.6
      device: cpu
""",
    ) == {"granularity": 0.6, "device": "cpu"}


def test_unknown_keys_of_our_section_are_refused_with_a_suggestion(tmp_path):
    with pytest.raises(
        SettingsError,
        match=r"unknown setting 'granularty' in the section "
        r"/robot/ovseg \(did you mean 'granularity'\?\)",
    ):
        load(tmp_path, "/robot:\n  ovseg:\n    ros__parameters:\n      granularty: 0.5\n")
    with pytest.raises(
        SettingsError,
        match=r"'pointz_per_side' in the section /\*\* "
        r"\(did you mean 'points_per_side'\?\)",
    ):
        load(tmp_path, "/**:\n  ros__parameters:\n    pointz_per_side: 8\n")
    with pytest.raises(SettingsError, match=r"'devise' in the file \(did you mean 'device'"):
        load(tmp_path, "devise: cpu\n")


def test_a_section_for_another_node_name_is_not_ours(tmp_path):
    text = "left_cam:\n  ros__parameters:\n    granularity: 0.5\n"
    assert load(tmp_path, text) == {}
    assert load(tmp_path, text, node_name="left_cam") == {"granularity": 0.5}


def test_malformed_params_files_are_refused_with_the_place(tmp_path):
    with pytest.raises(SettingsError, match="ros__parameters of /ovseg must be a mapping"):
        node_settings({"ovseg": {"ros__parameters": [1, 2]}})
    with pytest.raises(SettingsError, match="expected a mapping"):
        node_settings([1, 2])


def test_every_node_option_is_ignored_and_no_setting_is_one(tmp_path):
    section = "".join(
        f"    {option.name}: {json.dumps(option.default)}\n" for option in NODE_OPTIONS
    )
    assert load(tmp_path, f"/**:\n  ros__parameters:\n{section}    granularity: 0.5\n") == {
        "granularity": 0.5
    }
    assert not set(NODE_OPTION_NAMES) & {f.name for f in settings_fields()}
