"""What the frame runner counts and times, and how often it may say something in the log.

FrameStats is written by the runner's stage threads and by whoever submits frames, and read
by the diagnostics report: counters that never reset, and a window (reset at each report) of
per-step times and of how long each stage thread was busy. Throttle lets one log message
through per period, on an injected clock.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any


class Throttle:
    """Lets a message with a given key through at most once per period, on the given clock
    (what rclpy's throttle_duration_sec does, without ROS time)."""

    def __init__(self, clock: Callable[[], float]):
        self._clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def allow(self, key: str, period_s: float) -> bool:
        with self._lock:
            now = self._clock()
            last = self._last.get(key)
            if last is not None and now < last + period_s:
                return False
            self._last[key] = now
            return True


class FrameStats:
    """Counters, per-step latencies and per-stage busy time. Totals never reset; the window
    resets at each report.

    A received frame ends as exactly one of: published (``processed``), skipped (bad input),
    failed, dropped before segmentation (a newer frame arrived while it waited) or dropped
    after it (a newer result was segmented while it waited to be published).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.dropped = 0
        self.results_dropped = 0
        self.failed = 0
        self.skipped: Counter[str] = Counter()
        self.without_3d: Counter[str] = Counter()
        self._window_start = clock()
        self._window_received = 0
        self._window_frames = 0
        self._window_failed = 0
        self._window_skipped: Counter[str] = Counter()
        self._step_sums: Counter[str] = Counter()
        self._busy_s: dict[str, float] = {}

    def frame_received(self, replaced_unprocessed: bool) -> None:
        with self._lock:
            self.received += 1
            self._window_received += 1
            self.dropped += int(replaced_unprocessed)

    def result_dropped(self) -> None:
        """A segmented frame was replaced by a newer one before it could be published."""
        with self._lock:
            self.results_dropped += 1

    def frame_done(self, steps_ms: dict[str, float]) -> None:
        with self._lock:
            self.processed += 1
            self._window_frames += 1
            self._step_sums.update(steps_ms)

    def stage_busy(self, stage: str, seconds: float) -> None:
        """``stage``'s thread worked ``seconds`` (on one frame, whatever became of it)."""
        with self._lock:
            self._busy_s[stage] = self._busy_s.get(stage, 0.0) + seconds

    def frame_skipped(self, cause: str) -> bool:
        """Count a bad frame; True when it is the first with this cause."""
        with self._lock:
            self.skipped[cause] += 1
            self._window_skipped[cause] += 1
            return self.skipped[cause] == 1

    def frame_without_3d(self, cause: str) -> bool:
        """Count a frame whose depth could not be used; True when it is the first with this
        cause."""
        with self._lock:
            self.without_3d[cause] += 1
            return self.without_3d[cause] == 1

    def frame_failed(self) -> None:
        with self._lock:
            self.failed += 1
            self._window_failed += 1

    def report(self) -> dict[str, Any]:
        """Rates, mean step latencies and stage busy fractions since the last report, with
        the totals."""
        with self._lock:
            now = self._clock()
            elapsed = max(now - self._window_start, 1e-9)
            frames = self._window_frames
            report = {
                "fps": frames / elapsed,
                "input_fps": self._window_received / elapsed,
                "window_frames": frames,
                "window_s": elapsed,
                "window_received": self._window_received,
                "window_failed": self._window_failed,
                "window_skipped": dict(self._window_skipped),
                "stages_ms": {name: total / frames for name, total in self._step_sums.items()}
                if frames
                else {},
                "busy": {
                    stage: min(seconds / elapsed, 1.0) for stage, seconds in self._busy_s.items()
                },
                "received": self.received,
                "processed": self.processed,
                "dropped": self.dropped,
                "results_dropped": self.results_dropped,
                "failed": self.failed,
                "skipped": sum(self.skipped.values()),
                "without_3d": sum(self.without_3d.values()),
            }
            self._window_start = now
            self._window_received = self._window_frames = self._window_failed = 0
            self._window_skipped = Counter()
            self._step_sums = Counter()
            self._busy_s = {}
            return report
