"""The ROS 2 node: camera frames in, segmentation out, vocabulary and thresholds live.

Topics (relative names; the launch file remaps ``image``):

- in:  ``image`` (sensor_msgs/Image) or ``image/compressed`` (sensor_msgs/CompressedImage),
       ``~/vocabulary`` (std_msgs/String, comma separated: sets the ``vocabulary`` parameter)
- out: ``~/semantic``, ``~/instances`` (16UC1 Image), ``~/panoptic``
       (ovseg_ros/PanopticSegmentation), ``~/detections`` (vision_msgs/Detection2DArray),
       ``~/label_info`` (vision_msgs/LabelInfo, transient local), ``~/overlay`` (rgb8, only
       while subscribed), ``/diagnostics``. Every output carries the input frame's header.

Threads. The executor runs the callbacks, which only store and validate: the image callback
keeps the newest frame (an older unprocessed one is dropped and counted), the parameter
callback validates a change and hands it over. The worker thread applies accepted settings
between frames and segments the newest frame. The vocabulary thread computes text embeddings
and swaps the EncodedVocabulary in as one reference; a frame reads that reference once, so it
is labelled with exactly one vocabulary, and frames keep flowing (with the old vocabulary)
while a new one is encoded. Tests drive ``process_pending`` and ``process_vocabulary``
directly instead of starting the threads.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String
from vision_msgs.msg import Detection2DArray, LabelInfo

from ovseg_ros.msg import PanopticSegmentation

from . import convert
from .config import Settings, SettingsError, settings_fields
from .panoptic import UNLABELLED, SegmentationResult
from .scene import track
from .tracking import Tracker, tracking_settings
from .visualize import overlay
from .vocabulary import EncodedVocabulary, Vocabulary, VocabularyError, stuff_names
from .vocabulary_text import parse_names

NODE_NAME = "ovseg"
OUTPUT_DEPTH = 5  # reliable outputs; a slow subscriber holds at most this many frames
NO_FRAME_HINT_S = 5.0
DIAGNOSTICS_PERIOD_S = 1.0
STATS_LOG_PERIOD_S = 30.0
HINT_REPEAT_S = 30.0
STOP_JOIN_S = 2.0  # stop() waits this long for the threads; a frame still running is dropped

SETTING_NAMES = frozenset(f.name for f in settings_fields())
LIST_SETTINGS = frozenset(f.name for f in settings_fields() if f.type == "list")
ARRAY_TYPES = frozenset({Parameter.Type.BYTE_ARRAY, Parameter.Type.BOOL_ARRAY,
                         Parameter.Type.INTEGER_ARRAY, Parameter.Type.DOUBLE_ARRAY,
                         Parameter.Type.STRING_ARRAY})


@dataclass(frozen=True)
class NodeOption:
    """A node parameter that is not a pipeline setting (how frames arrive); read at start."""

    name: str
    default: str
    description: str
    choices: tuple[str, ...]


NODE_OPTIONS = (
    NodeOption("image_transport", "raw",
               "'raw': sensor_msgs/Image on 'image'; 'compressed': sensor_msgs/CompressedImage "
               "on 'image/compressed' (JPEG or PNG).", ("raw", "compressed")),
    NodeOption("image_reliability", "best_effort",
               "QoS reliability of the image subscription: 'best_effort' (SensorDataQoS, "
               "matches every publisher) or 'reliable' (matches reliable publishers only).",
               ("best_effort", "reliable")),
)


class SegmenterLike:
    """What the node needs from ovseg_ros.pipeline.Segmenter (tests pass fakes)."""

    settings: Settings
    device: Any  # where the models run, for diagnostics

    def update_settings(self, settings: Settings) -> None: ...

    def encode_vocabulary(self, vocabulary: Vocabulary) -> EncodedVocabulary: ...

    def segment(self, image: np.ndarray, vocabulary: EncodedVocabulary) -> SegmentationResult:
        ...


def load_segmenter(settings: Settings) -> SegmenterLike:
    """The real pipeline; imported here so that importing the node loads no model code."""
    from .pipeline import Segmenter

    return Segmenter(settings)


def setting_descriptor(setting: dataclasses.Field) -> ParameterDescriptor:
    """A parameter descriptor from a Settings field's metadata."""
    meta = setting.metadata
    descriptor = ParameterDescriptor(description=meta["description"],
                                     read_only=not meta["live"])
    constraints = []
    if "choices" in meta:
        constraints.append("one of: " + ", ".join(meta["choices"]))
    if "minimum" in meta and "maximum" in meta:
        constraints.append(f"from {meta['minimum']} to {meta['maximum']}")
        if setting.type == "int":
            descriptor.integer_range = [IntegerRange(from_value=meta["minimum"],
                                                     to_value=meta["maximum"], step=1)]
        else:
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(meta["minimum"]), to_value=float(meta["maximum"]), step=0.0)]
    if not meta["live"]:
        constraints.append("read at start (params file or launch argument)")
    descriptor.additional_constraints = "; ".join(constraints)
    return descriptor


def vocabulary_for(settings: Settings, changed: set[str]) -> Vocabulary | None:
    """The Vocabulary the settings describe (None while none is set), or VocabularyError.

    Setting an empty vocabulary is refused (the node keeps the one it has); before any is
    set the vocabulary is simply empty. stuff_classes apply to whichever vocabulary is in
    use: names that are not in it are ignored (Vocabulary.parse).
    """
    stuff_names(settings.stuff_classes, max_classes=settings.max_classes)
    if not settings.vocabulary:
        if "vocabulary" in changed:
            return Vocabulary.parse([])  # raises: the vocabulary is empty
        return None
    return Vocabulary.from_settings(settings.vocabulary, settings)


def unlabelled_result(height: int, width: int) -> SegmentationResult:
    """What a frame gives while no vocabulary is set: every pixel unlabelled."""
    return SegmentationResult(np.full((height, width), UNLABELLED, dtype=np.uint16),
                              np.zeros((height, width), dtype=np.uint16), [], Vocabulary(()))


class FrameStats:
    """Counters and per-stage latencies, written by the worker and the image callback and
    read by the diagnostics timer. Totals never reset; the window resets at each report."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.dropped = 0
        self.failed = 0
        self.skipped: Counter[str] = Counter()
        self._window_start = time.monotonic()
        self._window_received = 0
        self._window_frames = 0
        self._window_failed = 0
        self._window_skipped: Counter[str] = Counter()
        self._stage_sums: Counter[str] = Counter()

    def frame_received(self, replaced_unprocessed: bool) -> None:
        with self._lock:
            self.received += 1
            self._window_received += 1
            self.dropped += int(replaced_unprocessed)

    def frame_done(self, stages_ms: dict[str, float]) -> None:
        with self._lock:
            self.processed += 1
            self._window_frames += 1
            self._stage_sums.update(stages_ms)

    def frame_skipped(self, cause: str) -> bool:
        """Count a bad frame; True when it is the first with this cause."""
        with self._lock:
            self.skipped[cause] += 1
            self._window_skipped[cause] += 1
            return self.skipped[cause] == 1

    def frame_failed(self) -> None:
        with self._lock:
            self.failed += 1
            self._window_failed += 1

    def report(self) -> dict[str, Any]:
        """Rates and mean stage latencies since the last report, with the totals."""
        with self._lock:
            now = time.monotonic()
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
                "stages_ms": {name: total / frames for name, total in self._stage_sums.items()}
                if frames else {},
                "received": self.received, "processed": self.processed,
                "dropped": self.dropped, "failed": self.failed,
                "skipped": sum(self.skipped.values()),
            }
            self._window_start = now
            self._window_received = self._window_frames = self._window_failed = 0
            self._window_skipped = Counter()
            self._stage_sums = Counter()
            return report


class OvsegNode(Node):
    """Open-vocabulary segmentation of a camera stream (see the module docstring)."""

    def __init__(self, *, make_segmenter: Callable[[Settings], SegmenterLike] = load_segmenter,
                 **node_options: Any):
        super().__init__(NODE_NAME, **node_options)
        settings = self._declare_settings()
        vocabulary = vocabulary_for(settings, changed=set())
        options = {option.name: self._declare_option(option) for option in NODE_OPTIONS}
        self._compressed = options["image_transport"] == "compressed"
        self._reliable = options["image_reliability"] == "reliable"
        self._segmenter = make_segmenter(settings)
        self._device = str(self._segmenter.device)
        self._types = convert.MessageTypes.from_ros()
        self._stats = FrameStats()

        # Handed from the callbacks to the worker, guarded by _work.
        self._work = threading.Condition()
        self._frame: Any = None  # newest unprocessed image message
        self._pending: tuple[Settings, Vocabulary | None] | None = None
        # Latest accepted settings, guarded by _accepting (the set-parameters callback, and
        # the vocabulary thread when it rolls back a vocabulary that could not be encoded).
        self._accepting = threading.RLock()
        self._accepted = (settings, vocabulary)
        self._rolling_back = False
        # Worker state.
        self._applied = settings
        self._tracker: Tracker | None = None  # the worker thread's; see _track
        # Handed from the worker to the vocabulary thread, guarded by _vocabulary_work. The
        # requested key is the (vocabulary, templates) last asked for; after a failed encode
        # it falls back to the one in use, so asking again retries.
        self._vocabulary_work = threading.Condition()
        self._vocabulary_job: tuple[Vocabulary, str] | None = \
            (vocabulary, settings.templates) if vocabulary is not None else None
        self._requested_key: tuple[Vocabulary, str] | None = self._vocabulary_job
        # The vocabulary frames are labelled with: replaced as one reference, never mutated;
        # _encoded_key is its (vocabulary, templates).
        self._encoded: EncodedVocabulary | None = None
        self._encoded_key: tuple[Vocabulary, str] | None = None

        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

        reliable = QoSProfile(depth=OUTPUT_DEPTH, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._pub_semantic = self.create_publisher(Image, "~/semantic", reliable)
        self._pub_instances = self.create_publisher(Image, "~/instances", reliable)
        self._pub_panoptic = self.create_publisher(PanopticSegmentation, "~/panoptic",
                                                   reliable)
        self._pub_detections = self.create_publisher(Detection2DArray, "~/detections",
                                                     reliable)
        self._pub_overlay = self.create_publisher(Image, "~/overlay", reliable)
        self._pub_label_info = self.create_publisher(LabelInfo, "~/label_info", latched)
        self._pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        image_qos = QoSProfile(depth=qos_profile_sensor_data.depth,
                               reliability=ReliabilityPolicy.RELIABLE) if self._reliable \
            else qos_profile_sensor_data
        if self._compressed:
            self._image_sub = self.create_subscription(
                CompressedImage, "image/compressed", self._on_image, image_qos)
        else:
            self._image_sub = self.create_subscription(Image, "image", self._on_image,
                                                       image_qos)
        self._vocabulary_sub = self.create_subscription(
            String, "~/vocabulary", self._on_vocabulary_message, 10)

        self.add_on_set_parameters_callback(self._on_set_parameters)
        if hasattr(self, "add_pre_set_parameters_callback"):  # Iron and later
            self.add_pre_set_parameters_callback(self._empty_lists_as_string_arrays)

        self._started = time.monotonic()
        self._no_frame_timer = self.create_timer(NO_FRAME_HINT_S, self._hint_if_no_frames)
        self._diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S,
                                                    self._publish_diagnostics)
        # Every publish holds this lock and checks _closed, so nothing goes out after stop().
        self._publishing = threading.Lock()
        self._closed = False
        self._publish_label_info()
        self.get_logger().info(
            f"listening on {self._image_sub.topic_name} "
            f"({'compressed' if self._compressed else 'raw'}, "
            f"{'reliable' if self._reliable else 'best effort'}); "
            + (f"vocabulary: {', '.join(vocabulary.names)}" if vocabulary else
               "no vocabulary yet: ros2 param set "
               f"{self.get_fully_qualified_name()} vocabulary \"[mug, door handle]\""))

    # ------------------------------------------------------------------------ parameters
    def _declare_settings(self) -> Settings:
        """Declare one typed, described parameter per setting; the validated Settings."""
        defaults = Settings()
        values: dict[str, Any] = {}
        for setting in settings_fields():
            descriptor = setting_descriptor(setting)
            if setting.type == "list":
                # An empty list default would be typed BYTE_ARRAY: declare the type, then
                # give it its (empty) value unless an override already did.
                self.declare_parameter(setting.name, Parameter.Type.STRING_ARRAY, descriptor)
                if self.get_parameter_or(setting.name).type_ == Parameter.Type.NOT_SET:
                    self.set_parameters([Parameter(setting.name, Parameter.Type.STRING_ARRAY,
                                                   list(getattr(defaults, setting.name)))])
                values[setting.name] = list(self.get_parameter(setting.name).value)
            else:
                values[setting.name] = self.declare_parameter(
                    setting.name, getattr(defaults, setting.name), descriptor).value
        return defaults.replace(**values)

    def _declare_option(self, option: NodeOption) -> str:
        descriptor = ParameterDescriptor(
            description=option.description, read_only=True,
            additional_constraints="one of: " + ", ".join(option.choices))
        value = self.declare_parameter(option.name, option.default, descriptor).value
        if value not in option.choices:
            raise SettingsError(f"{option.name} must be one of {', '.join(option.choices)}, "
                                f"got {value!r}")
        return value

    def _empty_lists_as_string_arrays(self, parameters: list[Parameter]) -> list[Parameter]:
        """``ros2 param set /ovseg stuff_classes "[]"`` sends an empty BOOL_ARRAY (an empty
        YAML list has no element type); make it an empty string array so it is validated
        like any other value instead of failing the type check."""
        return [Parameter(p.name, Parameter.Type.STRING_ARRAY, [])
                if p.name in LIST_SETTINGS and p.type_ in ARRAY_TYPES and len(p.value) == 0
                else p for p in parameters]

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Validate a change (refusals carry the reason) and hand it to the worker.

        Runs in the executor: no model call here. Start-only settings never get here, their
        parameters are read-only.
        """
        changes = {p.name: p.value for p in parameters if p.name in SETTING_NAMES}
        if not changes:
            return SetParametersResult(successful=True)
        with self._accepting:
            settings, _ = self._accepted
            # A rollback may restore "no vocabulary yet", which a user may not set.
            changed = set(changes) - ({"vocabulary"} if self._rolling_back else set())
            try:
                candidate = settings.replace(**changes)
                vocabulary = vocabulary_for(candidate, changed)
            except (SettingsError, VocabularyError) as err:
                return SetParametersResult(successful=False, reason=str(err))
            self._accepted = (candidate, vocabulary)
            with self._work:
                self._pending = self._accepted
                self._work.notify_all()
        return SetParametersResult(successful=True)

    def _on_vocabulary_message(self, msg: String) -> None:
        """Set the vocabulary parameter from text as ``parse_names`` reads it (ros2 param get
        then tells the truth)."""
        topic = self._vocabulary_sub.topic_name
        try:
            names = parse_names(msg.data)
        except VocabularyError as err:
            reason = str(err)
        else:
            result = self.set_parameters(
                [Parameter("vocabulary", Parameter.Type.STRING_ARRAY, names)])[0]
            if result.successful:
                self.get_logger().info(f"vocabulary from {topic}: {', '.join(names)}")
                return
            reason = result.reason
        self.get_logger().warning(f"vocabulary from {topic} refused: {reason}; "
                                  "the previous vocabulary stays")

    # -------------------------------------------------------------------------- frames
    def _on_image(self, msg: Any) -> None:
        with self._work:
            replaced = self._frame is not None
            self._frame = msg
            self._work.notify_all()
        self._stats.frame_received(replaced)

    def process_pending(self) -> bool:
        """One worker step: apply accepted settings, then segment the newest frame.

        Returns True when there was a frame. Never raises for a bad frame or a failing
        pipeline: those are logged and counted.
        """
        with self._work:
            pending, self._pending = self._pending, None
            frame, self._frame = self._frame, None
        if pending is not None:
            self._apply(*pending)
        if frame is None:
            return False
        self._process(frame)
        return True

    def _apply(self, settings: Settings, vocabulary: Vocabulary | None) -> None:
        """Between frames: live settings into the pipeline, a new vocabulary to be encoded."""
        previous = self._applied
        self._segmenter.update_settings(settings)
        self._applied = settings
        key = (vocabulary, settings.templates)
        with self._vocabulary_work:
            request = vocabulary is not None and key != self._requested_key
            if request:
                self._requested_key = self._vocabulary_job = key
                self._vocabulary_work.notify_all()
        if not request and settings.unknown_thresh != previous.unknown_thresh:
            self._publish_label_info()

    def _process(self, msg: Any) -> None:
        start = time.perf_counter()
        try:
            rgb = convert.compressed_to_rgb(msg) if self._compressed \
                else convert.image_to_rgb(msg)
        except Exception as err:  # a frame that cannot be decoded is skipped, whatever it is
            if isinstance(err, convert.FrameError):
                cause, reason = err.cause, str(err)
            else:  # e.g. cv2.error for an image over OpenCV's pixel limit
                cause = f"decoding ({type(err).__name__})"
                reason = f"it could not be decoded: {type(err).__name__}: " \
                         + " ".join(str(err).split())
            if self._stats.frame_skipped(cause):
                self.get_logger().warning(
                    f"skipping a frame from {self._image_sub.topic_name}: {reason}. Further "
                    f"frames with this problem ({cause}) are skipped without a message "
                    "and counted in /diagnostics")
            return
        decoded = time.perf_counter()
        encoded = self._encoded  # read once: the whole frame uses this vocabulary
        try:
            if encoded is None:
                if self._requested_key is None:
                    self.get_logger().warning(
                        "no vocabulary set, frames are published unlabelled: ros2 param set "
                        f"{self.get_fully_qualified_name()} vocabulary \"[mug, door handle]\"",
                        throttle_duration_sec=HINT_REPEAT_S)
                else:
                    self.get_logger().info(
                        "the vocabulary is still being encoded; frames are published "
                        "unlabelled until it is ready", throttle_duration_sec=HINT_REPEAT_S)
                result = unlabelled_result(*rgb.shape[:2])
            else:
                result = self._segmenter.segment(rgb, encoded)
                self._track(result)
            segmented = time.perf_counter()
            self._publish_result(msg.header, rgb, result)
        except Exception as err:  # one failing frame must not stop the node
            self._stats.frame_failed()
            self.get_logger().error(f"frame failed and was skipped: {type(err).__name__}: "
                                    f"{err}", throttle_duration_sec=HINT_REPEAT_S)
            return
        stages = {"decode": (decoded - start) * 1000.0,
                  "publish": (time.perf_counter() - segmented) * 1000.0}
        stages.update(result.timings_ms)
        stages["total"] = (time.perf_counter() - start) * 1000.0
        self._stats.frame_done(stages)

    def _track(self, result: SegmentationResult) -> None:
        """Track ids while the track parameter is on (the worker's thread only); turning it
        off ends every track, and turning it on again continues with ids never used."""
        if not self._applied.track:
            if self._tracker is not None:
                self._tracker.reset()
            return
        if self._tracker is None:
            self._tracker = Tracker(tracking_settings(self._applied))
        self._tracker.settings = tracking_settings(self._applied)
        track(result, self._tracker)

    def _publish_result(self, header: Any, rgb: np.ndarray, result: SegmentationResult) -> None:
        types = self._types
        panoptic = convert.panoptic_message(types, header, result)
        detections = convert.detections_message(types, header, result)
        with self._publishing:
            if self._closed:
                return
            self._pub_semantic.publish(panoptic.semantic)
            self._pub_instances.publish(panoptic.instance)
            self._pub_panoptic.publish(panoptic)
            self._pub_detections.publish(detections)
            if self._pub_overlay.get_subscription_count() > 0:
                self._pub_overlay.publish(
                    convert.image_message(types, header, overlay(rgb, result), "rgb8"))

    # ---------------------------------------------------------------------- vocabulary
    def process_vocabulary(self) -> bool:
        """One vocabulary-thread step: encode the newest requested vocabulary and swap it in.
        Returns True when there was one to encode."""
        with self._vocabulary_work:
            key, self._vocabulary_job = self._vocabulary_job, None
        if key is None:
            return False
        vocabulary = key[0]
        try:
            encoded = self._segmenter.encode_vocabulary(vocabulary)
        except Exception as err:  # the previous vocabulary stays in use
            self._vocabulary_failed(key, err)
            return True
        with self._vocabulary_work:
            self._encoded, self._encoded_key = encoded, key
        self._publish_label_info()
        self.get_logger().info(f"vocabulary version {encoded.version} in use: "
                               f"{', '.join(encoded.vocabulary.names)}")
        return True

    def _vocabulary_failed(self, key: tuple[Vocabulary, str], err: Exception) -> None:
        """Keep the vocabulary in use, let a later request for ``key`` retry, and roll the
        vocabulary (and templates) parameters back to what is in use, so that
        ``ros2 param get`` never names a vocabulary the frames are not labelled with."""
        with self._vocabulary_work:
            in_use = self._encoded_key
            if self._requested_key == key:
                self._requested_key = in_use
        names = list(in_use[0].names) if in_use else []
        templates = in_use[1] if in_use else key[1]
        with self._accepting:  # not if the user has asked for something else meanwhile
            current, _ = self._accepted
            rollback = list(current.vocabulary) == list(key[0].names)
            if rollback:
                self._rolling_back = True
                try:
                    self.set_parameters([
                        Parameter("vocabulary", Parameter.Type.STRING_ARRAY, names),
                        Parameter("templates", Parameter.Type.STRING, templates)])
                finally:
                    self._rolling_back = False
        self.get_logger().error(
            f"could not encode the vocabulary ({', '.join(key[0].names)}): "
            f"{type(err).__name__}: {err}; frames keep "
            + (f"the previous vocabulary ({', '.join(names)})" if names else
               "being published unlabelled")
            + (", and the vocabulary parameter was set back to it" if rollback else "")
            + ". Setting it again retries")

    def _publish_label_info(self) -> None:
        """Latch the class map of the vocabulary in use with the applied unknown_thresh.

        Both the worker (a threshold change) and the vocabulary thread (a swap) call this;
        the state is read under the lock, so whichever publishes last names the current
        vocabulary and threshold.
        """
        with self._publishing:
            if self._closed:
                return
            encoded = self._encoded
            header = Header(stamp=self.get_clock().now().to_msg())
            self._pub_label_info.publish(convert.label_info_message(
                self._types, header, encoded.vocabulary if encoded else Vocabulary(()),
                self._applied.unknown_thresh))

    # ------------------------------------------------------------------ hints, diagnostics
    def _hint_if_no_frames(self) -> None:
        """Say why no frame arrives: nothing publishes, wrong type, or incompatible QoS."""
        if self._stats.received:
            self._no_frame_timer.cancel()
            return
        topic = self._image_sub.topic_name
        wanted = "sensor_msgs/msg/CompressedImage" if self._compressed \
            else "sensor_msgs/msg/Image"
        waited = f"no image on {topic} after {time.monotonic() - self._started:.0f} s"
        publishers = self.get_publishers_info_by_topic(topic)
        other_types = sorted({p.topic_type for p in publishers if p.topic_type != wanted})
        best_effort = [p for p in publishers
                       if p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT]
        if not publishers:
            hint = (f"{waited}: nothing publishes it. Check the topic (launch argument "
                    "image:=/your/camera/topic, or remap 'image'"
                    + (" / 'image/compressed'" if self._compressed else "") + ")")
        elif other_types:
            argument, transport = ("compressed:=false", "raw") if self._compressed \
                else ("compressed:=true", "compressed")
            hint = (f"{waited}: it carries {', '.join(other_types)}, this node expects "
                    f"{wanted}. Use the launch argument {argument} (parameter "
                    f"image_transport:={transport}), or another topic")
        elif self._reliable and best_effort:
            hint = (f"{waited}: {len(best_effort)} publisher(s) offer best-effort QoS, "
                    "which a reliable subscription does not accept. Use the launch argument "
                    "reliability:=best_effort (parameter image_reliability:=best_effort)")
        else:
            hint = (f"{waited} although {len(publishers)} publisher(s) exist: is the camera "
                    "streaming? (ros2 topic hz " + topic + ")")
        self.get_logger().warning(hint, throttle_duration_sec=HINT_REPEAT_S)

    def _publish_diagnostics(self) -> None:
        report = self._stats.report()
        encoded = self._encoded
        level, message = DiagnosticStatus.OK, f"{report['fps']:.1f} fps"
        if report["window_failed"]:
            level, message = DiagnosticStatus.ERROR, (f"{report['window_failed']} frame(s) "
                                                      "failed, see the log")
        elif not report["received"]:
            level, message = DiagnosticStatus.WARN, \
                f"no image received on {self._image_sub.topic_name}"
        elif not report["window_received"]:
            level, message = DiagnosticStatus.WARN, (
                f"no image received on {self._image_sub.topic_name} in the last "
                f"{report['window_s']:.0f} s ({report['received']} before)")
        elif report["window_skipped"] and not report["window_frames"]:
            level, message = DiagnosticStatus.WARN, (
                "every frame was skipped (bad input: "
                + ", ".join(sorted(report["window_skipped"])) + "), see the log")
        elif encoded is None:
            level, message = DiagnosticStatus.WARN, (
                "no vocabulary: nothing is labelled" if self._requested_key is None else
                "the vocabulary is being encoded: nothing is labelled yet")
        values = {
            "fps": f"{report['fps']:.2f}",
            "input fps": f"{report['input_fps']:.2f}",
            "frames received": str(report["received"]),
            "frames processed": str(report["processed"]),
            "frames dropped (a newer one arrived)": str(report["dropped"]),
            "frames skipped (bad input)": str(report["skipped"]),
            "frames failed": str(report["failed"]),
            "vocabulary version": str(encoded.version if encoded else 0),
            "classes": str(len(encoded.vocabulary) if encoded else 0),
            "device": self._device,
            "input topic": self._image_sub.topic_name,
        }
        for stage, milliseconds in report["stages_ms"].items():
            values[f"latency {stage} (ms)"] = f"{milliseconds:.1f}"
        header = Header(stamp=self.get_clock().now().to_msg())
        status = DiagnosticStatus(
            level=level, name=f"{self.get_name()}: segmentation", message=message,
            hardware_id=self._device,
            values=[KeyValue(key=key, value=value) for key, value in values.items()])
        with self._publishing:
            if self._closed:
                return
            self._pub_diagnostics.publish(DiagnosticArray(header=header, status=[status]))
        if report["window_frames"]:
            stages = report["stages_ms"]
            self.get_logger().info(
                f"{report['fps']:.1f} fps, {stages.get('total', 0.0):.0f} ms per frame ("
                + ", ".join(f"{name} {ms:.0f}" for name, ms in stages.items()
                            if name != "total")
                + f"); dropped {report['dropped']}, skipped {report['skipped']}, failed "
                f"{report['failed']} so far", throttle_duration_sec=STATS_LOG_PERIOD_S)

    # --------------------------------------------------------------------------- threads
    def start(self) -> None:
        """Start the worker and vocabulary threads (main() does; tests call the steps)."""
        self._threads = [
            threading.Thread(target=self._loop, name="ovseg-worker", daemon=True,
                             args=(self.process_pending, self._work,
                                   lambda: self._frame is not None
                                   or self._pending is not None)),
            threading.Thread(target=self._loop, name="ovseg-vocabulary", daemon=True,
                             args=(self.process_vocabulary, self._vocabulary_work,
                                   lambda: self._vocabulary_job is not None)),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> bool:
        """Stop the threads; returns within STOP_JOIN_S, and nothing is published after.

        A frame or an encode still running then (a CPU frame can take tens of seconds) is
        left to finish in its daemon thread and its results are discarded. Returns True when
        such a thread is still running.
        """
        self._stopping.set()
        for condition in (self._work, self._vocabulary_work):
            with condition:
                condition.notify_all()
        with self._publishing:  # waits for a publish in progress
            self._closed = True
        deadline = time.monotonic() + STOP_JOIN_S
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        busy = [thread.name for thread in self._threads if thread.is_alive()]
        if busy:
            self.get_logger().info(f"stopped; {', '.join(busy)} still busy, its result is "
                                   "discarded")
        return bool(busy)

    def _loop(self, step: Callable[[], bool], condition: threading.Condition,
              has_work: Callable[[], bool]) -> None:
        while not self._stopping.is_set():
            with condition:
                condition.wait_for(lambda: has_work() or self._stopping.is_set())
            if self._stopping.is_set():
                return
            try:
                step()
            except Exception as err:  # keep the thread alive, whatever happened
                self.get_logger().error(f"{threading.current_thread().name}: "
                                        f"{type(err).__name__}: {err}",
                                        throttle_duration_sec=HINT_REPEAT_S)


def start_error(err: Exception) -> str:
    """The one line main() logs for an exception that stops the node from starting."""
    if isinstance(err, (InvalidParameterTypeException, InvalidParameterValueException)):
        # rclpy's parameter exceptions carry (message, parameter name) as their args.
        message = str(err.args[0]) if err.args else str(err)
        if len(err.args) > 1 and str(err.args[1]) not in message:
            message = f"parameter {err.args[1]}: {message}"
        if isinstance(err, InvalidParameterTypeException):
            message += " (parameters are strictly typed: write floats with a decimal " \
                       "point, e.g. granularity:=1.0)"
        return message
    return str(err)


def main(args: list[str] | None = None) -> int:
    """ros2 run ovseg_ros ovseg_node: start, spin until Ctrl-C, stop cleanly."""
    from .weights import WeightsError  # the model code is needed from here on anyway

    rclpy.init(args=args)
    node = None
    try:
        node = OvsegNode()
        node.start()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (SettingsError, VocabularyError, WeightsError, InvalidParameterTypeException,
            InvalidParameterValueException) as err:
        # Bad settings and missing weights end here with one clear line, no traceback.
        get_logger(NODE_NAME).fatal(f"cannot start: {start_error(err)}")
        return 1
    finally:
        busy = False
        if node is not None:
            busy = node.stop()
            node.destroy_node()
        rclpy.try_shutdown()
        if busy:
            # A daemon thread still inside torch aborts the interpreter's own shutdown
            # (std::terminate); its result is discarded anyway, so leave at once.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
