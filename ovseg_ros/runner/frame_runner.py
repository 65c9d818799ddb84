"""The node's threads and state, without ROS: newest frame in, segmentation out, settings and
vocabularies changed between frames.

A FrameRunner is handed frames (``submit_frame``) and accepted settings (``submit_settings``)
by whoever receives them (the node's callbacks), and gives its results to an ``Outputs``
object; decoding, logging, the clock and the roll-back of a vocabulary that could not be
encoded are injected as plain callables, so the runner runs and is tested without rclpy.

Stages. A frame goes through two stages, each in its own thread (``stages=2``, the default):

1. *segment*: apply the newest settings, decode the newest frame, segment it (on a GPU this
   thread mostly waits for CUDA, without the GIL);
2. *output*: track, place in 3D, build the messages and publish them.

So the GPU segments frame N while the CPU finishes frame N-1. Every hand-off keeps only the
newest item: a frame that waits for stage 1 is replaced by a newer frame (counted as dropped
before segmentation), a result that waits for stage 2 by a newer result (counted as dropped
after it). Stage 2 takes results in the order stage 1 made them, so frames are published in
the order they arrived, and a dropped result never reaches the tracker. Each result carries
the settings and the one vocabulary it was segmented with; stage 2 uses those, so every
message of a frame comes from one result and one vocabulary. ``stages=1`` runs both stages
one after the other in one thread (the serial path, for debugging and comparison).

The vocabulary thread computes text embeddings and swaps the EncodedVocabulary in as one
reference; a frame reads that reference once, and frames keep flowing (with the old
vocabulary) while a new one is encoded. Tests may drive ``process_pending``,
``process_segmented`` and ``process_vocabulary`` directly instead of starting the threads.

Every output goes through ``Outputs`` under one lock with a closed flag: nothing is published
after ``stop()`` returns, and the label map is published from one place, so the last one
published names the vocabulary in use. ``pause()`` (a managed node's inactive state) stops
taking frames and publishing them until ``resume()``; a frame taken before a pause is never
published.

Files: this one holds the intake (frames and settings handed in, pause and resume), the
vocabulary thread, the health and the threads; stages.py the two stages; interfaces.py the
types they share; frame_stats.py the counters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..scene.tracking import Tracker
from ..segmentation.vocabulary import EncodedVocabulary, Vocabulary
from ..settings.config import Settings
from .frame_stats import FrameStats, Throttle
from .interfaces import (
    HINT_REPEAT_S,
    STAGES,
    STATS_LOG_PERIOD_S,
    STOP_JOIN_S,
    DepthOf,
    Health,
    Level,
    Logger,
    Outputs,
    Segmented,
    SegmenterLike,
    VocabularyKey,
    no_roll_back,
)
from .stages import FrameStages


class FrameRunner(FrameStages):
    """The stage and vocabulary threads and the state they share (see the module docstring).

    segmenter: the pipeline. settings, vocabulary: the accepted start values (vocabulary None
    while none is set); a vocabulary given here is encoded first. outputs: where results go.
    decode: frame -> [H, W, 3] uint8 RGB; raises FrameError (or anything else) for a frame that
    cannot be used. source: what frames come from, for messages (the image topic).
    how_to_set_vocabulary: the command a user types to set one, for the hint. depth_of: where
    frames carry depth, what gives a frame's depth and K (DepthOf); each result is then placed
    in 3D (scene.locate) and the points handed to the outputs. roll_back:
    called from the vocabulary thread when ``failed`` could not be encoded, with the key in
    use (None: none yet); the node sets its parameters back and returns True when it did.
    stages: 2 (segment and output stages in threads of their own) or 1 (serial).
    clock: monotonic seconds, for the statistics window, stage busy times and log throttling.
    """

    def __init__(
        self,
        segmenter: SegmenterLike,
        settings: Settings,
        vocabulary: Vocabulary | None,
        outputs: Outputs,
        *,
        decode: Callable[[Any], np.ndarray],
        log: Logger,
        source: str = "the input",
        how_to_set_vocabulary: str = "set the vocabulary",
        depth_of: DepthOf | None = None,
        roll_back: Callable[[VocabularyKey, VocabularyKey | None], bool] = no_roll_back,
        stages: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ):
        if stages not in STAGES:
            raise ValueError(f"stages must be one of {STAGES}, got {stages!r}")
        self._segmenter = segmenter
        self._outputs = outputs
        self._decode = decode
        self._log = log
        self._source = source
        self._how_to_set_vocabulary = how_to_set_vocabulary
        self._depth_of = depth_of
        self._roll_back = roll_back
        self._stages = stages
        self._clock = clock
        self._device = str(segmenter.device)
        self._throttle = Throttle(clock)
        self._stats = FrameStats(clock)

        # Handed from submit_* to the segment stage, guarded by _work.
        self._work = threading.Condition()
        self._frame: tuple[Any, float] | None = None  # newest unprocessed frame, its arrival
        self._pending: tuple[Settings, Vocabulary | None] | None = None
        # Segment stage state.
        self._applied = settings
        # Handed from the segment stage to the output stage, guarded by _segmented_work.
        self._segmented_work = threading.Condition()
        self._segmented: Segmented | None = None
        # Output stage state.
        self._tracker: Tracker | None = None  # see _track
        # Handed from the segment stage to the vocabulary thread, guarded by
        # _vocabulary_work. The requested key is the one last asked for; after a failed
        # encode it falls back to the one in use, so asking again retries.
        self._vocabulary_work = threading.Condition()
        self._vocabulary_job: VocabularyKey | None = (
            (vocabulary, settings.templates) if vocabulary is not None else None
        )
        self._requested_key: VocabularyKey | None = self._vocabulary_job
        # The vocabulary frames are labelled with: replaced as one reference, never mutated;
        # _encoded_key is its (vocabulary, templates).
        self._encoded: EncodedVocabulary | None = None
        self._encoded_key: VocabularyKey | None = None

        # Every output holds this lock and checks _closed, so nothing goes out after stop();
        # frames are published only while not _paused (a lifecycle node's inactive state).
        self._publishing = threading.Lock()
        self._closed = False
        self._paused = False
        self._generation = 0  # pauses so far: a frame taken before one is never published
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def received(self) -> int:
        """Frames submitted so far."""
        return self._stats.received

    @property
    def stages(self) -> int:
        """2: segment and output stages in threads of their own; 1: serial."""
        return self._stages

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        """The threads start() started (empty before)."""
        return tuple(self._threads)

    # -------------------------------------------------------------------------- inputs
    def submit_frame(self, frame: Any) -> None:
        """Keep ``frame`` as the newest one; an older unprocessed one is dropped. Ignored
        while paused."""
        if self._paused:
            return
        with self._work:
            replaced = self._frame is not None
            self._frame = (frame, self._clock())
            self._work.notify_all()
        self._stats.frame_received(replaced)

    def pause(self) -> None:
        """Stop taking frames: frames waiting for a stage are dropped, and nothing is
        published from when this returns (a frame being built then is discarded) until
        resume(). Settings and vocabularies are still applied and encoded."""
        with self._work, self._publishing:  # waits for a publish in progress
            self._paused = True
            self._generation += 1
            self._frame = None
        with self._segmented_work:
            self._segmented = None

    def resume(self) -> None:
        """Take frames again and publish the label map of the vocabulary in use."""
        with self._publishing:
            self._paused = False
        self.publish_label_info()

    @property
    def paused(self) -> bool:
        return self._paused

    def submit_settings(self, settings: Settings, vocabulary: Vocabulary | None) -> None:
        """Hand over validated settings and the vocabulary they describe (None: none set);
        the segment stage applies the newest between frames."""
        with self._work:
            self._pending = (settings, vocabulary)
            self._work.notify_all()

    # -------------------------------------------------------------------- vocabulary
    def process_vocabulary(self) -> bool:
        """One vocabulary-thread step: encode the newest requested vocabulary and swap it in.
        Returns True when there was one to encode."""
        with self._vocabulary_work:
            key, self._vocabulary_job = self._vocabulary_job, None
        if key is None:
            return False
        try:
            encoded = self._segmenter.encode_vocabulary(key[0])
        except Exception as err:  # the previous vocabulary stays in use
            self._vocabulary_failed(key, err)
            return True
        with self._vocabulary_work:
            self._encoded, self._encoded_key = encoded, key
        self.publish_label_info()
        self._log.info(
            f"vocabulary version {encoded.version} in use: {', '.join(encoded.vocabulary.names)}"
        )
        return True

    def _vocabulary_failed(self, key: VocabularyKey, err: Exception) -> None:
        """Keep the vocabulary in use, let a later request for ``key`` retry, and let
        roll_back set the parameters back to what is in use."""
        with self._vocabulary_work:
            in_use = self._encoded_key
            if self._requested_key == key:
                self._requested_key = in_use
        try:
            rolled_back = self._roll_back(key, in_use)
        except Exception as roll_back_err:  # the vocabulary in use stays; say so below
            rolled_back = False
            self._log.error(
                f"could not set the vocabulary parameter back: "
                f"{type(roll_back_err).__name__}: {roll_back_err}"
            )
        names = list(in_use[0].names) if in_use else []
        self._log.error(
            f"could not encode the vocabulary ({', '.join(key[0].names)}): "
            f"{type(err).__name__}: {err}; frames keep "
            + (
                f"the previous vocabulary ({', '.join(names)})"
                if names
                else "being published unlabelled"
            )
            + (", and the vocabulary parameter was set back to it" if rolled_back else "")
            + ". Setting it again retries"
        )

    def publish_label_info(self) -> None:
        """Give the class map of the vocabulary in use, with the applied unknown_thresh.

        Both the worker (a threshold change) and the vocabulary thread (a swap) call this;
        the state is read under the publishing lock, so whichever publishes last names the
        current vocabulary and threshold.
        """
        with self._publishing:
            if self._closed or self._paused:
                return
            encoded = self._encoded
            self._outputs.publish_label_info(
                encoded.vocabulary if encoded else Vocabulary(()), self._applied.unknown_thresh
            )

    # -------------------------------------------------------------------- diagnostics
    def health(self) -> Health:
        """The report since the last one (fps, latencies, counts) and what it means: WARN
        while no frame arrived, when none arrived in this window although some did before,
        when every frame of the window was skipped, and while no vocabulary is in use; ERROR
        when a frame failed in the window; OK "inactive" while paused. Starts a new window."""
        report = self._stats.report()
        encoded = self._encoded
        level, message = Level.OK, f"{report['fps']:.1f} fps"
        if report["window_failed"]:
            level, message = (
                Level.ERROR,
                (f"{report['window_failed']} frame(s) failed, see the log"),
            )
        elif self._paused:
            message = "inactive: not taking frames"
        elif not report["received"]:
            level, message = Level.WARN, f"no image received on {self._source}"
        elif not report["window_received"]:
            level, message = (
                Level.WARN,
                (
                    f"no image received on {self._source} in the last "
                    f"{report['window_s']:.0f} s ({report['received']} before)"
                ),
            )
        elif report["window_skipped"] and not report["window_frames"]:
            level, message = (
                Level.WARN,
                (
                    "every frame was skipped (bad input: "
                    + ", ".join(sorted(report["window_skipped"]))
                    + "), see the log"
                ),
            )
        elif encoded is None:
            level, message = (
                Level.WARN,
                (
                    "no vocabulary: nothing is labelled"
                    if self._requested_key is None
                    else "the vocabulary is being encoded: nothing is labelled yet"
                ),
            )
        values = {
            "fps": f"{report['fps']:.2f}",
            "input fps": f"{report['input_fps']:.2f}",
            "frames received": str(report["received"]),
            "frames processed": str(report["processed"]),
            "frames dropped (a newer one arrived)": str(report["dropped"]),
            "results dropped (a newer one was segmented)": str(report["results_dropped"]),
            "frames skipped (bad input)": str(report["skipped"]),
            "frames failed": str(report["failed"]),
            **(
                {"frames without 3D (unusable depth)": str(report["without_3d"])}
                if self._depth_of is not None
                else {}
            ),
            "vocabulary version": str(encoded.version if encoded else 0),
            "classes": str(len(encoded.vocabulary) if encoded else 0),
            "device": self._device,
            "input topic": self._source,
        }
        values["stages"] = str(self._stages)
        for stage, milliseconds in report["stages_ms"].items():
            values[f"latency {stage} (ms)"] = f"{milliseconds:.1f}"
        for stage, fraction in report["busy"].items():
            values[f"busy {stage} stage (%)"] = f"{100.0 * fraction:.0f}"
        if report["window_frames"] and self._throttle.allow("stats", STATS_LOG_PERIOD_S):
            stages = report["stages_ms"]
            self._log.info(
                f"{report['fps']:.1f} fps, {stages.get('total', 0.0):.0f} ms from arrival to "
                "publication ("
                + ", ".join(f"{name} {ms:.0f}" for name, ms in stages.items() if name != "total")
                + "; busy "
                + ", ".join(
                    f"{stage} {100.0 * fraction:.0f}%" for stage, fraction in report["busy"].items()
                )
                + f"); dropped {report['dropped']} before and {report['results_dropped']} "
                f"after segmentation, skipped {report['skipped']}, failed "
                f"{report['failed']} so far"
            )
        return Health(level, message, values)

    def report_error(self, reason: str) -> None:
        """Publish an ERROR diagnostics report with ``reason`` now (a failed lifecycle
        transition, before the outputs go)."""
        with self._publishing:
            if not self._closed:
                self._outputs.publish_diagnostics(
                    Health(Level.ERROR, reason, {"device": self._device})
                )

    def publish_diagnostics(self) -> None:
        """Report health() through the outputs (the diagnostics timer calls this)."""
        health = self.health()
        with self._publishing:
            if self._closed:
                return
            self._outputs.publish_diagnostics(health)

    # --------------------------------------------------------------------------- threads
    def start(self) -> None:
        """Start the stage threads (one with ``stages=1``) and the vocabulary thread."""
        self._threads = [
            threading.Thread(
                target=self._loop,
                name="ovseg-segment",
                daemon=True,
                args=(
                    self.process_pending,
                    self._work,
                    lambda: self._frame is not None or self._pending is not None,
                ),
            ),
            threading.Thread(
                target=self._loop,
                name="ovseg-vocabulary",
                daemon=True,
                args=(
                    self.process_vocabulary,
                    self._vocabulary_work,
                    lambda: self._vocabulary_job is not None,
                ),
            ),
        ]
        if self._stages == 2:
            self._threads.append(
                threading.Thread(
                    target=self._loop,
                    name="ovseg-output",
                    daemon=True,
                    args=(
                        self.process_segmented,
                        self._segmented_work,
                        lambda: self._segmented is not None,
                    ),
                )
            )
        for thread in self._threads:
            thread.start()

    def stop(self, join_s: float | None = None) -> bool:
        """Stop the threads; returns within ``join_s`` (default STOP_JOIN_S), and nothing is
        given to the outputs after.

        A frame or an encode still running then (a CPU frame can take tens of seconds) is
        left to finish in its daemon thread and its results are discarded. Returns True when
        such a thread is still running.
        """
        self._stopping.set()
        for condition in (self._work, self._segmented_work, self._vocabulary_work):
            with condition:
                condition.notify_all()
        with self._publishing:  # waits for an output in progress
            self._closed = True
        deadline = time.monotonic() + (STOP_JOIN_S if join_s is None else join_s)
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        busy = [thread.name for thread in self._threads if thread.is_alive()]
        if busy:
            self._log.info(f"stopped; {', '.join(busy)} still busy, its result is discarded")
        return bool(busy)

    def _loop(
        self, step: Callable[[], bool], condition: threading.Condition, has_work: Callable[[], bool]
    ) -> None:
        while not self._stopping.is_set():
            with condition:
                condition.wait_for(lambda: has_work() or self._stopping.is_set())
            if self._stopping.is_set():
                return
            try:
                step()
            except Exception as err:  # keep the thread alive, whatever happened
                if self._throttle.allow(threading.current_thread().name, HINT_REPEAT_S):
                    self._log.error(
                        f"{threading.current_thread().name}: {type(err).__name__}: {err}"
                    )
