"""The real-graph tests' fixtures (graph_support.py). Without ROS 2 there are none, and each
test module skips, with the reason, when it imports graph_support."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    from graph_support import ros, start_node, tiny_setup  # noqa: F401
except pytest.skip.Exception:
    pass
