"""A launch prefix that runs an installed executable with the tiny test CLIP registered.

    ros2 launch ovseg_ros segment.launch.py ... \\
        --launch-prefix "python3 test/graph/tiny_clip_prefix.py CLIP_CONFIG_DIR"

launch puts the prefix before the node's command, so this gets CLIP_CONFIG_DIR, then the
installed lib/ovseg_ros/ovseg_node and its ROS arguments. The tiny CLIP is not one of
open_clip's architectures and only a registration in the node's own process makes it known;
the node itself is the installed executable, run unchanged as __main__.
"""

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tiny_models

if __name__ == "__main__":
    tiny_models.register_tiny_clip(Path(sys.argv[1]))
    executable = sys.argv[2]
    sys.argv = sys.argv[2:]
    runpy.run_path(executable, run_name="__main__")
