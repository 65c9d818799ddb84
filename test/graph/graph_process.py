"""Real-graph support for the stress tests: a node process per test, log lines as they come.

Needs a sourced ROS 2 (Humble or Jazzy) and the package built and sourced (test/graph/run.sh
does both); every test here is skipped, with the reason, where rclpy cannot be imported.
The node runs from test/launch_tiny_node.py with the tiny random-weight models saved in the
real checkpoint formats. Each test process should get its own ROS_DOMAIN_ID (run.sh sets one).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SKIP_REASON = (
    "rclpy is not importable: ROS 2 is not installed or not sourced, so the "
    "real-graph tests cannot run here (bash test/graph/run.sh builds and sources it)"
)
rclpy = pytest.importorskip("rclpy", reason=SKIP_REASON)

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

import ovseg_ros  # noqa: E402

# The source tree has no generated ovseg_ros.msg: let the package search the built copies too.
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
pytest.importorskip("ovseg_ros.msg", reason="the package is not built: run test/graph/run.sh")

TEST_DIR = Path(__file__).resolve().parent.parent

STARTUP_TIMEOUT_S = 240.0  # model loading and the first CPU frame on a busy 2-core machine
HEIGHT, WIDTH = 48, 64


class NodeProcess:
    """The real ovseg node in a child process; its log lines are collected as they come."""

    def __init__(
        self,
        config_dir: Path,
        parameters: dict[str, str],
        *,
        name: str = "ovseg",
        namespace: str = "",
        remaps: dict[str, str] | None = None,
        lifecycle: bool = False,
    ):
        arguments = ["--ros-args", "-r", f"__node:={name}"]
        if namespace:
            arguments += ["-r", f"__ns:={namespace}"]
        for source, target in (remaps or {}).items():
            arguments += ["-r", f"{source}:={target}"]
        for key, value in parameters.items():
            arguments += ["-p", f"{key}:={value}"]
        self.fqn = f"{namespace.rstrip('/')}/{name}" if namespace else f"/{name}"
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(TEST_DIR / "launch_tiny_node.py"),
                str(config_dir),
                *(["--lifecycle"] if lifecycle else []),
                *arguments,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "RCUTILS_COLORIZED_OUTPUT": "0"},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def log(self) -> str:
        return "\n".join(self.lines)

    def alive(self) -> bool:
        return self.process.poll() is None

    def interrupt(self, timeout_s: float) -> tuple[int | None, float]:
        """SIGINT, as Ctrl-C does; (exit code or None if still alive, seconds it took)."""
        start = time.monotonic()
        if self.alive():
            self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        self._reader.join(timeout=5.0)
        return code, time.monotonic() - start

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait(timeout=10.0)


@pytest.fixture
def start_node(tiny_setup) -> Iterator[Callable[..., NodeProcess]]:
    """start_node(parameters=..., name=..., namespace=..., remaps=..., lifecycle=False) ->
    NodeProcess (with lifecycle: the managed node, unconfigured)."""
    config_dir, base = tiny_setup  # graph_support's tiny checkpoints and parameters
    started: list[NodeProcess] = []

    def start(parameters: dict[str, str] | None = None, **kwargs: Any) -> NodeProcess:
        node = NodeProcess(config_dir, {**base, **(parameters or {})}, **kwargs)
        started.append(node)
        return node

    yield start
    for node in started:
        if node.interrupt(15.0)[0] is None:
            node.kill()


class Graph:
    """A test-side rclpy node with helpers that spin until something happens."""

    def __init__(self, name: str):
        self.node = rclpy.create_node(name)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)

    def spin_until(
        self,
        condition: Callable[[], bool],
        timeout_s: float,
        every: Callable[[], None] | None = None,
        every_s: float = 0.5,
        what: str = "the condition",
    ) -> None:
        deadline = time.monotonic() + timeout_s
        last = 0.0
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            if every is not None and time.monotonic() - last > every_s:
                every()
                last = time.monotonic()
            self.executor.spin_once(timeout_sec=0.05)

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)

    def collect(self, msg_type: Any, topic: str, qos: Any) -> list:
        received: list = []
        self.node.create_subscription(msg_type, topic, received.append, qos)
        return received

    def close(self) -> None:
        self.executor.remove_node(self.node)
        self.node.destroy_node()


@pytest.fixture(scope="module")
def ros_context() -> Iterator[None]:
    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.fixture
def graph(ros_context, request) -> Iterator[Graph]:
    g = Graph("ovseg_graph_test_" + request.node.name.replace("[", "_").replace("]", "")[:40])
    yield g
    g.close()


def camera_image(
    sec: int,
    nanosec: int = 7,
    frame_id: str = "graph_test_camera",
    colour: tuple[int, int, int] = (0, 0, 220),
) -> Image:
    """A small bgr8 frame with one coloured rectangle."""
    image = np.full((HEIGHT, WIDTH, 3), 20, dtype=np.uint8)
    image[5:25, 5:30] = colour
    msg = Image(height=HEIGHT, width=WIDTH, encoding="bgr8", is_bigendian=0, step=WIDTH * 3)
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
    msg.header.frame_id = frame_id
    msg.data.frombytes(image.tobytes())
    return msg


def wait_for_log(node: NodeProcess, graph: Graph, text: str, timeout_s: float) -> str:
    """The first log line containing text (spinning the test node meanwhile)."""
    found: list[str] = []

    def seen() -> bool:
        found[:] = [line for line in list(node.lines) if text in line]
        return bool(found)

    graph.spin_until(
        lambda: seen() or not node.alive(), timeout_s, what=f"log line containing {text!r}"
    )
    assert found, f"node exited before logging {text!r}:\n{node.log()[-3000:]}"
    return found[0]
