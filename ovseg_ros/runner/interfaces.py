"""What a FrameRunner is given and hands on: the segmenter, outputs and logger it drives
(protocols), the health it reports, a frame after the segment stage (Segmented), and the
constants and small helpers the runner and its stages share."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..scene.geometry import DepthSettings
from ..segmentation.panoptic import UNLABELLED, SegmentationResult
from ..segmentation.vocabulary import EncodedVocabulary, Vocabulary
from ..settings.config import Settings

STATS_LOG_PERIOD_S = 30.0
HINT_REPEAT_S = 30.0
STOP_JOIN_S = 2.0  # stop() waits this long for the threads; a frame still running is dropped
STAGES = (1, 2)  # serial, or segment and output in threads of their own

VocabularyKey = tuple[Vocabulary, str]  # a vocabulary and the prompt templates it is encoded with
# A frame, its width and height and the depth settings -> its registered depth in metres (NaN
# invalid) and the colour camera's 3x3 K; raises DepthError when the frame has no usable depth.
DepthOf = Callable[[Any, int, int, DepthSettings], tuple[np.ndarray, np.ndarray]]


class SegmenterLike(Protocol):
    """What the runner needs from ovseg_ros.segmentation.pipeline.Segmenter (tests pass fakes)."""

    settings: Settings
    device: Any  # where the models run, for diagnostics

    def update_settings(self, settings: Settings) -> None: ...

    def encode_vocabulary(self, vocabulary: Vocabulary) -> EncodedVocabulary: ...

    def segment(self, image: np.ndarray, vocabulary: EncodedVocabulary) -> SegmentationResult: ...


class Level(enum.IntEnum):
    """Health levels, numbered as diagnostic_msgs/DiagnosticStatus numbers them."""

    OK = 0
    WARN = 1
    ERROR = 2


@dataclass(frozen=True)
class Health:
    """One diagnostics report: a level, a one-line message, and named values as text."""

    level: Level
    message: str
    values: dict[str, str] = field(default_factory=dict)


class Outputs(Protocol):
    """Where the runner's results go (the node: its publishers). The publish methods, and
    what prepare_result returns, are called under the runner's publishing lock, never after
    stop(); ``frame`` is the object given to submit_frame."""

    def prepare_result(
        self, frame: Any, rgb: np.ndarray, result: SegmentationResult, points: np.ndarray | None
    ) -> Callable[[], None]:
        """Build a frame's messages (outside the lock, so stop() does not wait for it);
        returns what publishes them. ``points``: the frame's [H, W, 3] back-projected depth
        (NaN: none), or None when the frame has no 3D."""
        ...

    def publish_label_info(self, vocabulary: Vocabulary, unknown_thresh: float) -> None: ...

    def publish_diagnostics(self, health: Health) -> None: ...

    def closing(self) -> bool:
        """True once the transport is being shut down (Ctrl-C tears the ROS context down
        before stop() runs): a frame failing then fails because of the shutdown."""
        ...


class Logger(Protocol):
    """The logging the runner uses (rclpy's node logger has these methods)."""

    def info(self, message: str) -> Any: ...

    def warning(self, message: str) -> Any: ...

    def error(self, message: str) -> Any: ...


def unlabelled_result(height: int, width: int) -> SegmentationResult:
    """What a frame gives while no vocabulary is set: every pixel unlabelled."""
    return SegmentationResult(
        np.full((height, width), UNLABELLED, dtype=np.uint16),
        np.zeros((height, width), dtype=np.uint16),
        [],
        Vocabulary(()),
    )


@dataclass
class Segmented:
    """A frame after the segment stage, waiting for the output stage.

    frame: as submitted; rgb: its decoded image; result: its segmentation; settings: those
    applied when it was segmented (its tracking and depth settings); labelled: segmented with
    a vocabulary (unlabelled frames are not tracked); received: clock time of its arrival;
    steps_ms: the segment stage's step times.
    """

    frame: Any
    rgb: np.ndarray
    result: SegmentationResult
    settings: Settings
    labelled: bool
    received: float
    steps_ms: dict[str, float] = field(default_factory=dict)
    generation: int = 0  # the runner's pause count when the frame was taken


def frame_stamp(frame: Any) -> float | None:
    """A frame message's header stamp in seconds; None when it has no (or a zero) stamp."""
    stamp = getattr(getattr(frame, "header", None), "stamp", None)
    if stamp is None:
        return None
    seconds = stamp.sec + stamp.nanosec * 1e-9
    return seconds if seconds > 0 else None


def no_roll_back(failed: VocabularyKey, in_use: VocabularyKey | None) -> bool:
    """The default roll_back: nothing outside the runner names the vocabulary."""
    return False
