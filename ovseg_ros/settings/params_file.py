"""Settings out of a YAML file: a ROS 2 parameters file as the node reads it, or a flat mapping.

A ROS 2 parameters file maps node paths to ``ros__parameters`` sections, either spelled out
(``/robot/ovseg:``) or nested one namespace per level (``/robot: ovseg: ros__parameters:``),
with ``*`` / ``**`` wildcards (``/**:`` applies to every node). The sections that apply to
the node named ``node_name`` (in any namespace) are merged in file order, later values
winning. Sections of other nodes are ignored, and so are the parameters every ROS node has
(``use_sim_time``, ``qos_overrides...``) and the node's own options that are not settings
(node_options.py: ``image_transport``, ``use_depth``, ...). Any other unknown name is
refused with the closest known one, in a section naming our node, in a flat file, and in a
wildcard section of a file that has no other node's section (then the file is ours, like
config/params.yaml).
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .config import Settings, field_names
from .errors import SettingsError
from .node_options import NODE_OPTION_NAMES

PARAMETERS_KEY = "ros__parameters"
DEFAULT_NODE_NAME = "ovseg"
# Parameters of every rclpy node (the node's own options are NODE_OPTION_NAMES).
ROS_PARAMETERS = ("use_sim_time", "start_type_description_service", "qos_overrides")


def settings_from_yaml(
    path: str | os.PathLike, node_name: str = DEFAULT_NODE_NAME, **overrides: Any
) -> Settings:
    """Settings from a YAML file (a flat mapping, or a ROS 2 params file: the sections for
    node_name), then ``overrides``; validated."""
    return Settings().replace(**{**read_settings_file(path, node_name), **overrides})


def read_settings_file(
    path: str | os.PathLike, node_name: str = DEFAULT_NODE_NAME
) -> dict[str, Any]:
    """The settings (name -> value, not yet validated) that a YAML file gives node_name;
    SettingsError when the file is missing, not YAML, or names an unknown setting."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SettingsError(f"config file not found: {path}") from None
    except OSError as err:
        raise SettingsError(f"cannot read config file {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise SettingsError(f"config file {path} is not valid YAML: {err}") from None
    return node_settings(data or {}, node_name, source=str(path))


def node_settings(
    data: Any, node_name: str = DEFAULT_NODE_NAME, source: str = "config"
) -> dict[str, Any]:
    """The settings that parsed YAML (a params file structure or a flat mapping) gives
    node_name; see the module docstring for the rules."""
    if not isinstance(data, Mapping):
        raise SettingsError(
            f"{source}: expected a mapping of setting names to values, or a "
            f"ROS 2 parameters file (node: {PARAMETERS_KEY}: ...)"
        )
    if not _is_params_file(data):
        return _checked(_flatten(data), source, "the file", strict=True)
    sections = list(_sections(data, (), source))
    if not sections:
        raise SettingsError(f"{source}: no {PARAMETERS_KEY} section")
    ours = [(path, params) for path, params in sections if _matches(path, node_name)]
    others = any(not _matches(path, node_name) for path, _ in sections)
    merged: dict[str, Any] = {}
    for path, params in ours:
        wildcard = "*" in path[-1]
        section = "/" + "/".join(path)
        merged.update(
            _checked(params, source, f"the section {section}", strict=not (wildcard and others))
        )
    return merged


def _is_params_file(data: Mapping) -> bool:
    """True when some value, at any depth below the top, has a ros__parameters key."""

    def has_key(value: Any) -> bool:
        return isinstance(value, Mapping) and (
            PARAMETERS_KEY in value or any(has_key(v) for v in value.values())
        )

    return any(has_key(value) for value in data.values())


def _sections(
    data: Mapping, path: tuple[str, ...], source: str
) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """(node path tokens, flattened parameters) of every ros__parameters section."""
    for key, value in data.items():
        if key == PARAMETERS_KEY:
            if not path:
                raise SettingsError(f"{source}: {PARAMETERS_KEY} must be under a node name")
            if value is not None and not isinstance(value, Mapping):
                raise SettingsError(
                    f"{source}: {PARAMETERS_KEY} of /{'/'.join(path)} must be "
                    "a mapping of parameter names to values"
                )
            yield path, _flatten(value or {})
        elif isinstance(value, Mapping):
            tokens = tuple(t for t in str(key).split("/") if t)
            yield from _sections(value, path + tokens, source)
        else:
            raise SettingsError(
                f"{source}: {'/'.join(path + (str(key),))} is neither a "
                f"namespace nor a node with {PARAMETERS_KEY}"
            )


def _matches(path: tuple[str, ...], node_name: str) -> bool:
    """Whether a section's node path applies to node_name (in any namespace)."""
    return bool(path) and fnmatch.fnmatchcase(node_name, path[-1])


def _flatten(params: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested parameter mappings as ROS names them: {a: {b: 1}} -> {'a.b': 1}."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _checked(params: dict[str, Any], source: str, where: str, strict: bool) -> dict[str, Any]:
    """The settings among params; ROS parameters and node options dropped; other unknown
    names refused when strict (dropped otherwise)."""
    known = field_names()
    settings: dict[str, Any] = {}
    for name, value in params.items():
        if name in known:
            settings[name] = value
        elif name.split(".")[0] in ROS_PARAMETERS or name in NODE_OPTION_NAMES:
            continue
        elif strict:
            close = difflib.get_close_matches(name, known + list(NODE_OPTION_NAMES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SettingsError(
                f"{source}: unknown setting {name!r} in {where}{hint}; known: {', '.join(known)}"
            )
    return settings
