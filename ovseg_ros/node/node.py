"""The ROS 2 node: camera frames in, segmentation out, vocabulary and thresholds live.

Topics (relative names; the launch file remaps ``image``):

- in:  ``image`` (sensor_msgs/Image) or ``image/compressed`` (sensor_msgs/CompressedImage),
       ``~/vocabulary`` (std_msgs/String, comma separated: sets the ``vocabulary`` parameter)
- with use_depth: ``depth`` (sensor_msgs/Image registered to the colour image) and the colour
       camera's CameraInfo, paired with the colour frames by time (ovseg_ros.node.depth_input)
- out: ``~/semantic``, ``~/instances`` (16UC1 Image), ``~/panoptic``
       (ovseg_ros/PanopticSegmentation), ``~/detections`` (vision_msgs/Detection2DArray),
       ``~/label_info`` (vision_msgs/LabelInfo, transient local), ``~/overlay`` (rgb8, only
       while subscribed), ``/diagnostics``; with use_depth also ``~/points``, ``~/markers``
       and ``~/detections_3d``. Every output carries the input frame's header.

Two nodes share one implementation (OvsegWork, here): OvsegNode (``ovseg_node``) loads the
models and runs from construction to exit; OvsegLifecycleNode (ovseg_ros.node.lifecycle_node,
``ovseg_lifecycle_node``) is managed: models at configure, frames while active, models
released at cleanup. This file is past 450 lines because the parameters, the
subscriptions, the hints and the callbacks that use them are one piece of state.

The node is ROS glue: parameters, subscriptions, publishers (all in ovseg_ros.node.outputs) and the
diagnostics timer. The threads and the state they share (newest frame, pending settings,
vocabulary encoding and swap, statistics) are a FrameRunner (ovseg_ros.runner.frame_runner). The
executor runs the callbacks, which only validate and hand over: no model call in a callback.
Tests drive ``process_pending`` (both frame stages) and ``process_vocabulary`` directly
instead of starting the threads.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import rclpy
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from ..messages import convert
from ..runner.frame_runner import FrameRunner
from ..runner.interfaces import SegmenterLike, VocabularyKey
from ..segmentation.vocabulary import Vocabulary, VocabularyError, stuff_names
from ..segmentation.vocabulary_text import parse_names
from ..settings.config import Settings, SettingsError, settings_fields
from ..settings.node_options import NODE_OPTIONS, NodeOption
from .outputs import OutputPublishers
from .publishers import publishers_of

NODE_NAME = "ovseg"
NO_FRAME_HINT_S = 5.0
DIAGNOSTICS_PERIOD_S = 1.0
HINT_REPEAT_S = 30.0

SETTING_NAMES = frozenset(f.name for f in settings_fields())
LIST_SETTINGS = frozenset(f.name for f in settings_fields() if f.type == "list")
ARRAY_TYPES = frozenset(
    {
        Parameter.Type.BYTE_ARRAY,
        Parameter.Type.BOOL_ARRAY,
        Parameter.Type.INTEGER_ARRAY,
        Parameter.Type.DOUBLE_ARRAY,
        Parameter.Type.STRING_ARRAY,
    }
)


def load_segmenter(settings: Settings) -> SegmenterLike:
    """The real pipeline; imported here so that importing the node loads no model code."""
    from ..segmentation.pipeline import Segmenter

    return Segmenter(settings)


def setting_descriptor(setting: dataclasses.Field) -> ParameterDescriptor:
    """A parameter descriptor from a Settings field's metadata."""
    meta = setting.metadata
    descriptor = ParameterDescriptor(description=meta["description"], read_only=not meta["live"])
    constraints = []
    if "choices" in meta:
        constraints.append("one of: " + ", ".join(meta["choices"]))
    if "minimum" in meta and "maximum" in meta:
        constraints.append(f"from {meta['minimum']} to {meta['maximum']}")
        if setting.type == "int":
            descriptor.integer_range = [
                IntegerRange(from_value=meta["minimum"], to_value=meta["maximum"], step=1)
            ]
        else:
            descriptor.floating_point_range = [
                FloatingPointRange(
                    from_value=float(meta["minimum"]), to_value=float(meta["maximum"]), step=0.0
                )
            ]
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


class OvsegWork:
    """The node's work, shared by OvsegNode and OvsegLifecycleNode (mixed in before rclpy's
    Node or LifecycleNode): parameters (declared at construction, so they can be set in
    every state), then ``_configure`` (the segmenter, publishers, subscriptions, the
    FrameRunner and the timers) and ``_teardown`` (all of that released)."""

    def _declare(self, make_segmenter: Callable[[Settings], SegmenterLike]) -> None:
        settings = self._declare_settings()
        vocabulary = vocabulary_for(settings, changed=set())
        self._options = {option.name: self._declare_option(option) for option in NODE_OPTIONS}
        self._make_segmenter = make_segmenter
        # Latest accepted settings, guarded by _accepting (the set-parameters callback, and
        # the vocabulary thread when it rolls back a vocabulary that could not be encoded).
        self._accepting = threading.RLock()
        self._accepted = (settings, vocabulary)
        self._rolling_back = False
        # Made by _configure, released by _teardown.
        self._runner: FrameRunner | None = None
        self._segmenter: SegmenterLike | None = None
        self._outputs: OutputPublishers | None = None
        self._depth_input: Any = None
        self._image_sub: Any = None
        self._no_frame_timer: Any = None
        self._diagnostics_timer: Any = None
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._vocabulary_sub = self.create_subscription(
            String, "~/vocabulary", self._on_vocabulary_message, 10
        )

    def _configure(self) -> None:
        """Load the models and create the frame path; raises what keeps it from working
        (SettingsError, VocabularyError, WeightsError), with nothing left half made."""
        options = self._options
        with self._accepting:
            settings, vocabulary = self._accepted
        self._compressed = options["image_transport"] == "compressed"
        self._reliable = options["image_reliability"] == "reliable"
        use_depth = options["use_depth"]
        self._segmenter = self._make_segmenter(settings)
        self._outputs = OutputPublishers(
            self, scene=use_depth, points_stride=options["points_stride"]
        )
        image_qos = (
            QoSProfile(depth=qos_profile_sensor_data.depth, reliability=ReliabilityPolicy.RELIABLE)
            if self._reliable
            else qos_profile_sensor_data
        )
        colour_type, colour_topic = (
            (CompressedImage, "image/compressed") if self._compressed else (Image, "image")
        )
        self._depth_input = depth_of = None
        if use_depth:
            from . import depth_input  # message_filters: needed with depth only

            self._depth_input = depth_input.DepthInput(
                self,
                colour_type,
                colour_topic,
                image_qos,
                camera_info_topic=options["camera_info_topic"],
                queue_size=options["sync_queue_size"],
                slop=settings.sync_slop,
                on_frame=self._on_image,
            )
            depth_of = self._depth_input.depth_of
            self._image_topic = self._depth_input.colour_topic
        else:
            self._image_sub = self.create_subscription(
                colour_type, colour_topic, self._on_image, image_qos
            )
            self._image_topic = self._image_sub.topic_name
        how_to_set = (
            f'ros2 param set {self.get_fully_qualified_name()} vocabulary "[mug, door handle]"'
        )
        self._runner = FrameRunner(
            self._segmenter,
            settings,
            vocabulary,
            self._outputs,
            decode=self._decode,
            log=self.get_logger(),
            source=self._image_topic
            if depth_of is None
            else f"{self._image_topic} paired with {self._depth_input.depth_topic}",
            how_to_set_vocabulary=how_to_set,
            roll_back=self._roll_back_vocabulary,
            depth_of=depth_of,
            stages=options["pipeline_depth"],
        )
        self._started = time.monotonic()
        self._no_frame_timer = self.create_timer(NO_FRAME_HINT_S, self._hint_if_no_frames)
        self._diagnostics_timer = self.create_timer(
            DIAGNOSTICS_PERIOD_S, self._runner.publish_diagnostics
        )
        depth = self._depth_input
        self.get_logger().info(
            f"listening on {self._image_topic} "
            f"({'compressed' if self._compressed else 'raw'}, "
            f"{'reliable' if self._reliable else 'best effort'}"
            + (
                f"; with depth {depth.depth_topic} and CameraInfo {depth.camera_info_topic}, "
                f"paired within {settings.sync_slop} s"
                if depth
                else ""
            )
            + "); "
            + (
                f"vocabulary: {', '.join(vocabulary.names)}"
                if vocabulary
                else f"no vocabulary yet: {how_to_set}"
            )
        )

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
                    self.set_parameters(
                        [
                            Parameter(
                                setting.name,
                                Parameter.Type.STRING_ARRAY,
                                list(getattr(defaults, setting.name)),
                            )
                        ]
                    )
                values[setting.name] = list(self.get_parameter(setting.name).value)
            else:
                values[setting.name] = self.declare_parameter(
                    setting.name, getattr(defaults, setting.name), descriptor
                ).value
        return defaults.replace(**values)

    def _declare_option(self, option: NodeOption) -> Any:
        """Declare a node option as a read-only parameter; its checked value."""
        descriptor = ParameterDescriptor(description=option.description, read_only=True)
        if option.choices:
            descriptor.additional_constraints = "one of: " + ", ".join(option.choices)
        if option.minimum is not None:
            descriptor.integer_range = [
                IntegerRange(from_value=option.minimum, to_value=option.maximum, step=1)
            ]
        return option.check(self.declare_parameter(option.name, option.default, descriptor).value)

    def set_parameters_atomically(self, parameter_list: list[Parameter]) -> SetParametersResult:
        """What the parameter service calls for ``ros2 param set`` (rclpy's
        parameter_service.py, Humble and Jazzy alike).

        ``ros2 param set /ovseg vocabulary "[]"`` sends an empty BOOL_ARRAY (an empty YAML
        list has no element type): it is made an empty string array here, before rclpy's type
        check, so it is validated like any other value and refused or accepted with the
        node's own reason ("the vocabulary is empty"; stuff_classes cleared). Humble has no
        pre-set callbacks, so this is the one place that works on both.
        """
        return super().set_parameters_atomically(
            [
                Parameter(p.name, Parameter.Type.STRING_ARRAY, [])
                if p.name in LIST_SETTINGS and p.type_ in ARRAY_TYPES and len(p.value) == 0
                else p
                for p in parameter_list
            ]
        )

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Validate a change (refusals carry the reason) and hand it to the runner.

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
            if self._runner is not None:  # else configuring reads _accepted
                self._runner.submit_settings(candidate, vocabulary)
        return SetParametersResult(successful=True)

    def _roll_back_vocabulary(self, failed: VocabularyKey, in_use: VocabularyKey | None) -> bool:
        """After ``failed`` could not be encoded: set the vocabulary (and templates)
        parameters back to the ones in use (None: no vocabulary yet), so that
        ``ros2 param get`` never names a vocabulary the frames are not labelled with; not if
        the user has asked for another one meanwhile. True when they were set back."""
        names = list(in_use[0].names) if in_use else []
        templates = in_use[1] if in_use else failed[1]
        with self._accepting:
            current, _ = self._accepted
            if list(current.vocabulary) != list(failed[0].names):
                return False
            self._rolling_back = True
            try:
                self.set_parameters(
                    [
                        Parameter("vocabulary", Parameter.Type.STRING_ARRAY, names),
                        Parameter("templates", Parameter.Type.STRING, templates),
                    ]
                )
            finally:
                self._rolling_back = False
        return True

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
                [Parameter("vocabulary", Parameter.Type.STRING_ARRAY, names)]
            )[0]
            if result.successful:
                self.get_logger().info(f"vocabulary from {topic}: {', '.join(names)}")
                return
            reason = result.reason
        self.get_logger().warning(
            f"vocabulary from {topic} refused: {reason}; the previous vocabulary stays"
        )

    # -------------------------------------------------------------------------- frames
    def _on_image(self, msg: Any) -> None:
        self._runner.submit_frame(msg)

    def _decode(self, frame: Any) -> np.ndarray:
        """An image message (with depth: a SyncedFrame) -> its RGB, or FrameError (the runner
        skips and counts it)."""
        msg = frame.colour if self._depth_input is not None else frame
        return convert.compressed_to_rgb(msg) if self._compressed else convert.image_to_rgb(msg)

    def process_pending(self) -> bool:
        """One frame through both stages (FrameRunner.process_pending, then
        process_segmented), for tests; True when there was a frame."""
        had_frame = self._runner.process_pending()
        self._runner.process_segmented()
        return had_frame

    def process_vocabulary(self) -> bool:
        """One vocabulary-thread step (FrameRunner.process_vocabulary)."""
        return self._runner.process_vocabulary()

    # ---------------------------------------------------------------------------- hints
    def _hint_if_no_frames(self) -> None:
        """Say why no frame arrives: nothing publishes, wrong type, or incompatible QoS; with
        depth, why no colour frame pairs with a depth image, or no CameraInfo arrives."""
        depth = self._depth_input
        if depth is not None:
            waited = f"after {time.monotonic() - self._started:.0f} s"
            hint = depth.hint(waited) or depth.camera_info_hint(waited)
            if hint:
                self.get_logger().warning(hint, throttle_duration_sec=HINT_REPEAT_S)
                return
            if depth.pairs:  # and CameraInfo arrives: nothing to say any more
                self._no_frame_timer.cancel()
                return
        elif self._runner.received:
            self._no_frame_timer.cancel()
            return
        topic = self._image_topic
        wanted = "sensor_msgs/msg/CompressedImage" if self._compressed else "sensor_msgs/msg/Image"
        waited = f"no image on {topic} after {time.monotonic() - self._started:.0f} s"
        publishers = publishers_of(self, topic, wanted)
        if not publishers.count:
            hint = (
                f"{waited}: nothing publishes it. Check the topic (launch argument "
                "image:=/your/camera/topic, or remap 'image'"
                + (" / 'image/compressed'" if self._compressed else "")
                + ")"
            )
        elif publishers.other_types:
            argument, transport = (
                ("compressed:=false", "raw")
                if self._compressed
                else ("compressed:=true", "compressed")
            )
            hint = (
                f"{waited}: it carries {', '.join(publishers.other_types)}, this node expects "
                f"{wanted}. Use the launch argument {argument} (parameter "
                f"image_transport:={transport}), or another topic"
            )
        elif self._reliable and publishers.best_effort:
            hint = (
                f"{waited}: {publishers.best_effort} publisher(s) offer best-effort QoS, "
                "which a reliable subscription does not accept. Use the launch argument "
                "reliability:=best_effort (parameter image_reliability:=best_effort)"
            )
        else:
            hint = (
                f"{waited} although {publishers.count} publisher(s) exist: is the camera "
                "streaming? (ros2 topic hz " + topic + ")"
            )
        self.get_logger().warning(hint, throttle_duration_sec=HINT_REPEAT_S)

    # --------------------------------------------------------------------------- threads
    def start(self) -> None:
        """Start the runner's stage and vocabulary threads (main() does; tests call the
        steps)."""
        self._runner.start()

    def stop(self) -> bool:
        """Stop the runner's threads (FrameRunner.stop): returns within STOP_JOIN_S, nothing
        is published after, and True when a frame or an encode is still running."""
        return self._runner.stop() if self._runner is not None else False

    def _teardown(self) -> bool:
        """Undo _configure: stop the threads, destroy the publishers, subscriptions and
        timers, and let the models go (their GPU memory back to CUDA's cache, then to the
        device). True when a thread was still busy (its result is discarded)."""
        busy = self.stop()
        for timer in (self._no_frame_timer, self._diagnostics_timer):
            if timer is not None:
                self.destroy_timer(timer)
        self._no_frame_timer = self._diagnostics_timer = None
        if self._depth_input is not None:
            self._depth_input.destroy()
        elif self._image_sub is not None:
            self.destroy_subscription(self._image_sub)
        self._depth_input = self._image_sub = None
        if self._outputs is not None:
            self._outputs.destroy()
        self._outputs = self._runner = self._segmenter = None
        gc.collect()
        release_device_memory()
        return busy


def release_device_memory() -> None:
    """Give CUDA's cached blocks back to the device, and the C heap's free pages back to the
    system (glibc keeps freed model tensors in its heap once its mmap threshold has grown;
    malloc_trim hands them back). Each is skipped where it does not exist."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class OvsegNode(OvsegWork, Node):
    """Open-vocabulary segmentation of a camera stream (see the module docstring): models
    loaded and the frame path made at construction, frames taken once start() runs."""

    def __init__(
        self,
        *,
        make_segmenter: Callable[[Settings], SegmenterLike] = load_segmenter,
        **node_options: Any,
    ):
        super().__init__(NODE_NAME, **node_options)
        self._declare(make_segmenter)
        self._configure()
        self._runner.publish_label_info()


def start_error(err: Exception) -> str:
    """The one line main() logs for an exception that stops the node from starting."""
    if isinstance(err, (InvalidParameterTypeException, InvalidParameterValueException)):
        # rclpy's parameter exceptions carry (message, parameter name) as their args.
        message = str(err.args[0]) if err.args else str(err)
        if len(err.args) > 1 and str(err.args[1]) not in message:
            message = f"parameter {err.args[1]}: {message}"
        if isinstance(err, InvalidParameterTypeException):
            message += (
                " (parameters are strictly typed: write floats with a decimal "
                "point, e.g. granularity:=1.0)"
            )
        return message
    return str(err)


def main(args: list[str] | None = None) -> int:
    """ros2 run ovseg_ros ovseg_node: start, spin until Ctrl-C, stop cleanly."""
    from ..models.weights import WeightsError  # the model code is needed from here on anyway

    rclpy.init(args=args)
    node = None
    try:
        node = OvsegNode()
        node.start()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (
        SettingsError,
        VocabularyError,
        WeightsError,
        InvalidParameterTypeException,
        InvalidParameterValueException,
    ) as err:
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
