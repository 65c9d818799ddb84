"""The runner's two stages: *segment* (apply the newest settings, decode the newest frame,
segment it) and *output* (place in 3D, track, build and publish), with the newest-only
hand-off between them. A mixin of FrameRunner: the state it uses (the hand-off conditions
and slots, the applied settings, the tracker, the encoded vocabulary, the publishing lock and
the counters) is made in FrameRunner.__init__, where each is described."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..messages.convert import FrameError
from ..scene.geometry import DepthError, depth_settings
from ..scene.placement import locate, track
from ..scene.tracking import Tracker, tracking_settings
from ..segmentation.panoptic import SegmentationResult
from ..segmentation.vocabulary import EncodedVocabulary, Vocabulary
from ..settings.config import Settings
from .frame_stats import FrameStats, Throttle
from .interfaces import (
    HINT_REPEAT_S,
    DepthOf,
    Logger,
    Outputs,
    Segmented,
    SegmenterLike,
    VocabularyKey,
    frame_stamp,
    unlabelled_result,
)


class FrameStages:
    """process_pending (the segment stage's step) and process_segmented (the output stage's
    step), and what they do for one frame."""

    # The runner's state the stages use (made and described in FrameRunner.__init__).
    _segmenter: SegmenterLike
    _outputs: Outputs
    _decode: Callable[[Any], np.ndarray]
    _log: Logger
    _source: str
    _how_to_set_vocabulary: str
    _depth_of: DepthOf | None
    _stages: int
    _clock: Callable[[], float]
    _throttle: Throttle
    _stats: FrameStats
    _work: threading.Condition
    _frame: tuple[Any, float] | None
    _pending: tuple[Settings, Vocabulary | None] | None
    _applied: Settings
    _segmented_work: threading.Condition
    _segmented: Segmented | None
    _tracker: Tracker | None
    _vocabulary_work: threading.Condition
    _vocabulary_job: VocabularyKey | None
    _requested_key: VocabularyKey | None
    _encoded: EncodedVocabulary | None
    _publishing: threading.Lock
    _closed: bool
    _paused: bool
    _generation: int

    def publish_label_info(self) -> None:  # FrameRunner's
        raise NotImplementedError

    def process_pending(self) -> bool:
        """One segment-stage step: apply submitted settings, then segment the newest frame
        and hand the result to the output stage (with ``stages=1``: finish it here).

        Returns True when there was a frame. Never raises: a bad frame, a failing pipeline
        or settings the pipeline refuses are logged and counted.
        """
        with self._work:
            pending, self._pending = self._pending, None
            taken, self._frame = self._frame, None
            generation = self._generation
        if pending is not None:
            try:
                self._apply(*pending)
            except Exception as err:  # the pipeline keeps the settings it had
                if self._throttle.allow("apply", HINT_REPEAT_S):
                    self._log.error(f"could not apply the settings: {type(err).__name__}: {err}")
        if taken is None:
            return False
        began = self._clock()
        segmented = self._segment(*taken, generation)
        if self._stages == 1:
            self._stats.stage_busy("segment", self._clock() - began)
            if segmented is not None:
                self._finish(segmented)
            return True
        if segmented is not None:
            with self._segmented_work:
                replaced = self._segmented is not None
                self._segmented = segmented
                self._segmented_work.notify_all()
            if replaced:
                self._stats.result_dropped()
        self._stats.stage_busy("segment", self._clock() - began)
        return True

    def _apply(self, settings: Settings, vocabulary: Vocabulary | None) -> None:
        """Between frames: live settings into the pipeline, a new vocabulary to be encoded."""
        previous = self._applied
        self._segmenter.update_settings(settings)
        self._applied = settings
        with self._vocabulary_work:
            request = False
            if vocabulary is not None:
                key = (vocabulary, settings.templates)
                request = key != self._requested_key
                if request:
                    self._requested_key = self._vocabulary_job = key
                    self._vocabulary_work.notify_all()
        if not request and settings.unknown_thresh != previous.unknown_thresh:
            self.publish_label_info()

    def _segment(self, frame: Any, received: float, generation: int) -> Segmented | None:
        """Decode and segment one frame taken in pause ``generation``; None when it was
        skipped or failed (counted)."""
        start = time.perf_counter()
        try:
            rgb = self._decode(frame)
        except Exception as err:  # a frame that cannot be decoded is skipped, whatever it is
            if isinstance(err, FrameError):
                cause, reason = err.cause, str(err)
            else:  # e.g. cv2.error for an image over OpenCV's pixel limit
                cause = f"decoding ({type(err).__name__})"
                reason = f"it could not be decoded: {type(err).__name__}: " + " ".join(
                    str(err).split()
                )
            if self._stats.frame_skipped(cause):
                self._log.warning(
                    f"skipping a frame from {self._source}: {reason}. Further frames with "
                    f"this problem ({cause}) are skipped without a message and counted in "
                    "/diagnostics"
                )
            return None
        decoded = time.perf_counter()
        encoded = self._encoded  # read once: the whole frame uses this vocabulary
        try:
            if encoded is None:
                if self._requested_key is None:
                    if self._throttle.allow("no vocabulary", HINT_REPEAT_S):
                        self._log.warning(
                            "no vocabulary set, frames are published "
                            f"unlabelled: {self._how_to_set_vocabulary}"
                        )
                elif self._throttle.allow("encoding", HINT_REPEAT_S):
                    self._log.info(
                        "the vocabulary is still being encoded; frames are "
                        "published unlabelled until it is ready"
                    )
                result = unlabelled_result(*rgb.shape[:2])
            else:
                result = self._segmenter.segment(rgb, encoded)
        except Exception as err:  # one failing frame must not stop the runner
            self._frame_failed(err)
            return None
        steps = {"decode": (decoded - start) * 1000.0}
        steps.update(
            {("segment" if name == "total" else name): ms for name, ms in result.timings_ms.items()}
        )
        steps.setdefault("segment", (time.perf_counter() - decoded) * 1000.0)
        return Segmented(
            frame, rgb, result, self._applied, encoded is not None, received, steps, generation
        )

    def _frame_failed(self, err: Exception) -> None:
        if self._closed or self._outputs.closing():
            return  # abandoned at shutdown: not a failure of the frame
        self._stats.frame_failed()
        if self._throttle.allow("frame failed", HINT_REPEAT_S):
            self._log.error(f"frame failed and was skipped: {type(err).__name__}: {err}")

    # --------------------------------------------------------------------- output stage
    def process_segmented(self) -> bool:
        """One output-stage step: track, place in 3D, build and publish the newest segmented
        frame. Returns True when there was one. Never raises."""
        with self._segmented_work:
            segmented, self._segmented = self._segmented, None
        if segmented is None:
            return False
        began = self._clock()
        self._finish(segmented)
        self._stats.stage_busy("output", self._clock() - began)
        return True

    def _finish(self, segmented: Segmented) -> None:
        """Track, locate, build and publish one segmented frame (counted either way)."""
        result, steps = segmented.result, dict(segmented.steps_ms)
        try:
            start = time.perf_counter()
            points = None
            if self._depth_of is not None:  # first: tracking gates on the 3D centroids
                points = self._locate(segmented.frame, result, segmented.settings)
            located = time.perf_counter()
            if self._depth_of is not None:
                steps["locate"] = (located - start) * 1000.0
            if segmented.labelled:
                self._track(result, segmented.settings, frame_stamp(segmented.frame))
                tracked = time.perf_counter()
                steps["track"] = (tracked - located) * 1000.0
            else:
                tracked = located
            publish = self._outputs.prepare_result(segmented.frame, segmented.rgb, result, points)
            built = time.perf_counter()
            with self._publishing:
                if self._closed or self._paused or segmented.generation != self._generation:
                    return
                publish()
        except Exception as err:  # one failing frame must not stop the runner
            self._frame_failed(err)
            return
        steps["build"] = (built - tracked) * 1000.0
        steps["publish"] = (time.perf_counter() - built) * 1000.0
        steps["total"] = (self._clock() - segmented.received) * 1000.0
        self._stats.frame_done(steps)

    def _track(self, result: SegmentationResult, settings: Settings, stamp: float | None) -> None:
        """Track ids while the frame's track setting is on (the output stage only); turning
        it off ends every track, and turning it on again continues with ids never used."""
        if not settings.track:
            if self._tracker is not None:
                self._tracker.reset()
            return
        if self._tracker is None:
            self._tracker = Tracker(tracking_settings(settings))
        self._tracker.settings = tracking_settings(settings)
        track(result, self._tracker, stamp)

    def _locate(
        self, frame: Any, result: SegmentationResult, settings: Settings
    ) -> np.ndarray | None:
        """Place the result's instances in 3D from the frame's depth; the points, or None
        (logged once per cause, counted) when the frame's depth cannot be used."""
        if self._depth_of is None:
            return None
        height, width = result.instance_map.shape
        depth = depth_settings(settings)
        try:
            depth_m, k = self._depth_of(frame, width, height, depth)
            return locate(result, depth_m, k, depth)
        except DepthError as err:
            if self._stats.frame_without_3d(err.cause):
                self._log.warning(
                    f"no 3D for a frame from {self._source}: {err}. Further frames with this "
                    f"problem ({err.cause}) are segmented without 3D, without a message, and "
                    "counted in /diagnostics"
                )
            return None
