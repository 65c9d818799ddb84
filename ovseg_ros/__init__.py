"""ovseg_ros: open-vocabulary segmentation (SAM proposals + mask-adapted CLIP) for ROS 2.

Subpackages, from the bottom layer up (each may import only those below it):
settings, models, segmentation, scene, messages, runner, then node (the only one that
imports ROS), offline (ovseg-segment) and evaluation (ovseg-eval), which do not import each
other. The rules are import-linter contracts in pyproject.toml, checked in CI.
"""

__version__ = "0.1.0"
