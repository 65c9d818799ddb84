"""Bad parameter values at start, as a user types them: `ros2 run ovseg_ros ovseg_node
--ros-args -p granularity:=1` (an integer where a double is declared) and an out-of-range
granularity. The README promises one line, `cannot start: ...`, exit status 1 and no
traceback (parameters are strictly typed: 1 is not taken as 1.0)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from graph_support import rclpy  # noqa: F401  skips without ROS 2 or the built package

# isort: split

if shutil.which("ros2") is None:
    pytest.skip("needs the ros2 command", allow_module_level=True)

START_TIMEOUT_S = 120.0  # the node's imports on a busy 2-core machine; it stops before models
CASES = {  # value: words the one line must hold
    "1": ("granularity", "INTEGER", "DOUBLE", "granularity:=1.0"),
    "1.5": ("granularity", "out of range", "1.5"),
}


def test_int_for_double_and_out_of_range_stop_the_node_with_one_line():
    # offline, so that a value wrongly accepted ends in a quick missing-weights error
    # instead of a download; both start at once to save time.
    runs = {
        value: subprocess.Popen(
            [
                "ros2",
                "run",
                "ovseg_ros",
                "ovseg_node",
                "--ros-args",
                "-r",
                "__node:=start_check",
                "-p",
                "offline:=true",
                "-p",
                "cache_dir:=/nonexistent/ovseg_start_check",
                "-p",
                f"granularity:={value}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=dict(os.environ, RCUTILS_COLORIZED_OUTPUT="0"),
        )
        for value in CASES
    }
    for value, words in CASES.items():
        output, _ = runs[value].communicate(timeout=START_TIMEOUT_S)
        assert runs[value].returncode == 1, output
        lines = [
            line
            for line in output.splitlines()
            if line.strip() and not line.startswith("[ros2run]")
        ]
        assert len(lines) == 1, output
        assert "[FATAL]" in lines[0] and "cannot start: " in lines[0], output
        for word in words:
            assert word in lines[0], (word, output)
        assert "Traceback" not in output and "weights" not in output.lower(), output
