"""Support of the real-graph tests: the real node (built package, tiny models) over DDS.

Needs a sourced ROS 2 (Humble or Jazzy) and the package built by colcon and sourced
(test/graph/run.sh does both); every test here is skipped, with the reason, elsewhere.
Each node runs in its own process from test/launch_tiny_node.py, its log captured to a file
so that tests can read the hints it gives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

rclpy = pytest.importorskip(
    "rclpy",
    reason="rclpy is not importable: ROS 2 (Humble/Jazzy) is not sourced, so the "
    "real-graph tests cannot run here (test/graph/run.sh builds and runs them)",
)

import ovseg_ros  # noqa: E402

# The source tree has no generated ovseg_ros.msg; let the package search the built copies.
ovseg_ros.__path__[:] = list(
    dict.fromkeys(
        [
            *ovseg_ros.__path__,
            *(
                str(Path(entry) / "ovseg_ros")
                for entry in sys.path
                if (Path(entry) / "ovseg_ros" / "msg").is_dir()
            ),
        ]
    )
)
try:
    from ovseg_ros.msg import PanopticSegmentation  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment
    pytest.skip(
        f"the built ovseg_ros messages are not importable ({error}): colcon build "
        "the package and source its install/setup.bash (test/graph/run.sh)",
        allow_module_level=True,
    )

TEST_DIR = Path(__file__).resolve().parents[1]
if str(TEST_DIR) not in sys.path:
    sys.path.insert(0, str(TEST_DIR))
import tiny_models  # noqa: E402

STARTUP_TIMEOUT_S = 240.0  # model loading and the first CPU frame on a busy 2-core machine
STOP_TIMEOUT_S = 15.0


class NodeProcess:
    """One real ovseg node in its own process; `log()` is what it has printed so far."""

    def __init__(self, command: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")
        env = dict(
            os.environ,
            PYTHONUNBUFFERED="1",
            RCUTILS_LOGGING_BUFFERED_STREAM="0",
            RCUTILS_COLORIZED_OUTPUT="0",
        )
        # Default SIGINT handling in the child even where the runner ignores it.
        self.process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> tuple[int, float]:
        """SIGINT, then wait: (exit code, seconds it took)."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode, time.monotonic() - started


@pytest.fixture(scope="session")
def tiny_setup() -> tuple[Path, dict[str, str]]:
    """The tiny checkpoints in the real formats and the node parameters that load them."""
    return tiny_models.node_parameters(Path(tempfile.mkdtemp(prefix="ovseg_graph_")))


@pytest.fixture(scope="session")
def start_node(tiny_setup, tmp_path_factory) -> Iterator[Callable[..., NodeProcess]]:
    """start_node(name, image_topic, namespace="", remaps=None, **parameters) -> a running
    NodeProcess; remaps: more topic remappings (e.g. {"depth": "/camera/depth"})."""
    config_dir, defaults = tiny_setup
    started: list[NodeProcess] = []

    def start(
        name: str,
        image_topic: str,
        namespace: str = "",
        remaps: dict[str, str] | None = None,
        **parameters: str,
    ) -> NodeProcess:
        arguments = ["--ros-args", "-r", f"__node:={name}", "-r", f"image:={image_topic}"]
        if image_topic.endswith("/compressed"):
            arguments[-1] = f"image/compressed:={image_topic}"
        if namespace:
            arguments += ["-r", f"__ns:={namespace}"]
        for source, target in (remaps or {}).items():
            arguments += ["-r", f"{source}:={target}"]
        for key, value in {**defaults, **parameters}.items():
            arguments += ["-p", f"{key}:={value}"]
        node = NodeProcess(
            [sys.executable, str(TEST_DIR / "launch_tiny_node.py"), str(config_dir), *arguments],
            tmp_path_factory.mktemp("node_log") / f"{name}.log",
        )
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


@pytest.fixture(scope="module")
def ros() -> Iterator[object]:
    """An rclpy test node on the same domain (ROS_DOMAIN_ID from the environment)."""
    rclpy.init()
    node = rclpy.create_node(f"graph_test_{os.getpid()}")
    yield node
    node.destroy_node()
    rclpy.shutdown()


def spin_until(
    node,
    condition: Callable[[], bool],
    timeout_s: float,
    every: Callable[[], None] | None = None,
    every_s: float = 0.5,
) -> bool:
    """Spin `node` until `condition()` or `timeout_s`; call `every()` every `every_s`."""
    deadline = time.monotonic() + timeout_s
    last = 0.0
    while not condition():
        if time.monotonic() > deadline:
            return False
        if every is not None and time.monotonic() - last > every_s:
            every()
            last = time.monotonic()
        rclpy.spin_once(node, timeout_sec=0.05)
    return True
