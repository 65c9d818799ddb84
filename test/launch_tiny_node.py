"""Run the real ovseg node with the tiny test models; started by test_launch.py.

    python3 launch_tiny_node.py CLIP_CONFIG_DIR [--lifecycle] --ros-args -p clip_model:=...

With --lifecycle, the managed node (ovseg_ros.node.lifecycle_node.lifecycle_main), unconfigured at
start.

The tiny CLIP is not one of open_clip's architectures: registering its config here (in the
node's own process) is what the installed ovseg_node executable cannot do. Everything else is
the real node: ovseg_ros.node.node.main with rclpy and the generated messages.
"""

import sys
from pathlib import Path

import tiny_models

from ovseg_ros.node.lifecycle_node import lifecycle_main
from ovseg_ros.node.node import main

if __name__ == "__main__":
    tiny_models.register_tiny_clip(Path(sys.argv[1]))
    arguments = sys.argv[2:]
    managed = arguments[:1] == ["--lifecycle"]
    run = lifecycle_main if managed else main
    sys.exit(run([sys.argv[0], *arguments[managed:]]))
