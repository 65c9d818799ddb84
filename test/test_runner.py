"""The FrameRunner on plain threads, without rclpy or its stand-in: vocabulary encoding and
retries, the order of label maps, stop() during a frame, diagnostics windows, log throttling
on an injected clock. Timing is controlled with threading.Event; every wait is bounded."""

import math
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
import torch

from ovseg_ros.messages.convert import FrameError
from ovseg_ros.runner.frame_runner import FrameRunner, Level
from ovseg_ros.scene.geometry import DepthError
from ovseg_ros.segmentation.panoptic import UNLABELLED, Instance, SegmentationResult
from ovseg_ros.segmentation.vocabulary import EncodedVocabulary, Vocabulary
from ovseg_ros.settings.config import Settings

WAIT_S = 30.0  # bound for thread hand-offs on a loaded machine (a hang, not a timing check)
SOURCE = "/camera/image"


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


class Log:
    def __init__(self):
        self.records = []

    def info(self, message):
        self.records.append(("INFO", message))

    def warning(self, message):
        self.records.append(("WARN", message))

    def error(self, message):
        self.records.append(("ERROR", message))

    def messages(self, level):
        return [message for severity, message in self.records if severity == level]


class Outputs:
    """Records what the runner gives out; ``on_label_info`` runs inside publish_label_info."""

    def __init__(self):
        self.results = []  # (frame, vocabulary names)
        self.scenes = []  # (result, points) of each frame, as prepared
        self.label_infos = []  # (vocabulary names, unknown_thresh)
        self.health = []
        self.on_label_info = None
        self.on_prepare = None  # called with the frame when its messages are built
        self.fail_results = False
        self.shutting_down = False

    def closing(self):
        return self.shutting_down

    def prepare_result(self, frame, rgb, result, points):
        if self.on_prepare is not None:
            self.on_prepare(frame)
        self.scenes.append((result, points))

        def publish():
            if self.fail_results:
                raise RuntimeError("publisher is gone (pretend)")
            self.results.append((frame, result.vocabulary.names))

        return publish

    def publish_label_info(self, vocabulary, unknown_thresh):
        if self.on_label_info is not None:
            self.on_label_info()
        self.label_infos.append((vocabulary.names, unknown_thresh))

    def publish_diagnostics(self, health):
        self.health.append(health)


class Frame:
    """What the runner is handed; decode() turns it into RGB or refuses it."""

    def __init__(self, number, error=None):
        self.number = number
        self.error = error

    def rgb(self):
        if self.error is not None:
            raise self.error
        return np.full((6, 8, 3), self.number % 256, dtype=np.uint8)


def decode(frame):
    return frame.rgb()


class FakeSegmenter:
    """The Segmenter surface without models; Events make encodes and frames wait."""

    device = "cpu"

    def __init__(self, settings):
        self.settings = settings
        self.encode_failures = 0
        self.encodes = []  # vocabulary names per encode call
        self.encoded = threading.Event()  # set when an encode has returned
        self.in_segment = threading.Event()
        self.release_segment = None  # an Event segment() waits for, when set
        self.fail_next_frame = False
        self.fail_update = False
        self.mug_box = None  # (rows, columns) slices: the result has one mug there
        self.on_segment = None  # called inside segment()
        self._version = 0

    def update_settings(self, settings):
        if self.fail_update:
            raise ValueError("this pipeline refuses the settings (pretend)")
        self.settings = settings

    def encode_vocabulary(self, vocabulary):
        self.encodes.append(vocabulary.names)
        if self.encode_failures:
            self.encode_failures -= 1
            raise RuntimeError("CUDA out of memory (pretend)")
        self._version += 1
        self.encoded.set()
        return EncodedVocabulary(vocabulary, torch.zeros(len(vocabulary), 4), self._version)

    def segment(self, image, vocabulary):
        self.in_segment.set()
        if self.on_segment is not None:
            self.on_segment()
        if self.release_segment is not None:
            assert self.release_segment.wait(WAIT_S)
        if self.fail_next_frame:
            self.fail_next_frame = False
            raise RuntimeError("CUDA out of memory (pretend)")
        height, width = image.shape[:2]
        semantic = np.full((height, width), UNLABELLED, dtype=np.uint16)
        instance_map = np.zeros((height, width), dtype=np.uint16)
        instances = []
        if self.mug_box is not None:
            rows, columns = self.mug_box
            semantic[rows, columns], instance_map[rows, columns] = 0, 1
            instances = [
                Instance(
                    1,
                    0,
                    vocabulary.vocabulary.names[0],
                    0.9,
                    0.95,
                    True,
                    (
                        columns.start,
                        rows.start,
                        columns.stop - columns.start,
                        rows.stop - rows.start,
                    ),
                    int(instance_map.sum()),
                )
            ]
        return SegmentationResult(
            semantic,
            instance_map,
            instances,
            vocabulary.vocabulary,
            vocabulary.version,
            {"proposals": 1.0, "total": 2.0},
        )


class Harness:
    """A runner with a fake segmenter, recorded outputs and log, a fake clock and a
    recording roll_back."""

    def __init__(self, vocabulary=None, roll_back=None, depth_of=None, stages=2, **settings):
        self.settings = Settings().replace(vocabulary=list(vocabulary or []), **settings)
        self.segmenter = FakeSegmenter(self.settings)
        self.outputs = Outputs()
        self.log = Log()
        self.clock = FakeClock()
        self.roll_backs = []
        self.roll_back_result = True

        def record_roll_back(failed, in_use):
            self.roll_backs.append((failed[0].names, in_use[0].names if in_use else None))
            return self.roll_back_result

        self.runner = FrameRunner(
            self.segmenter,
            self.settings,
            self.vocabulary(vocabulary),
            self.outputs,
            decode=decode,
            log=self.log,
            source=SOURCE,
            how_to_set_vocabulary='ros2 param set /ovseg vocabulary "[mug]"',
            roll_back=roll_back or record_roll_back,
            clock=self.clock,
            depth_of=depth_of,
            stages=stages,
        )

    def vocabulary(self, names):
        return Vocabulary.parse(names) if names else None

    def change(self, vocabulary=None, **settings):
        """Submit settings as the node's parameter callback does."""
        if vocabulary is not None:
            settings["vocabulary"] = list(vocabulary)
        self.settings = self.settings.replace(**settings)
        self.runner.submit_settings(self.settings, self.vocabulary(self.settings.vocabulary))

    def frame(self, number=0, error=None):
        """One frame through the worker step; the vocabulary names it was labelled with."""
        self.runner.submit_frame(Frame(number, error))
        before = len(self.outputs.results)
        assert self.runner.process_pending()
        self.runner.process_segmented()
        return self.outputs.results[-1][1] if len(self.outputs.results) > before else None

    def health(self):
        self.runner.publish_diagnostics()
        return self.outputs.health[-1]


@pytest.fixture
def started():
    """started(harness): start its runner's threads; stopped at the end of the test."""
    runners = []

    def start(harness):
        harness.runner.start()
        runners.append(harness.runner)
        return harness

    yield start
    for runner in runners:
        runner.stop()


def test_the_runner_imports_no_ros():
    check = (
        "import sys, ovseg_ros.runner.frame_runner; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('rclpy', 'sensor_msgs', 'std_msgs', 'diagnostic_msgs', 'vision_msgs')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", check],
        capture_output=True,
        text=True,
        timeout=WAIT_S * 4,
        check=True,
    )
    assert done.stdout.strip() == "[]"


# --------------------------------------------------------------------------- vocabulary
def test_a_failed_encode_keeps_the_vocabulary_in_use_and_setting_it_again_retries():
    h = Harness(vocabulary=["mug"])
    assert h.runner.process_vocabulary()
    h.segmenter.encode_failures = 1
    h.change(vocabulary=["kettle"])
    assert h.frame() == ("mug",)  # applied, kettle asked for, still labelled with mug
    assert h.runner.process_vocabulary()
    assert h.roll_backs == [(("kettle",), ("mug",))]
    (error,) = h.log.messages("ERROR")
    assert "could not encode the vocabulary (kettle)" in error
    assert "previous vocabulary (mug)" in error and "set back to it" in error
    assert h.frame() == ("mug",)
    assert h.outputs.label_infos[-1][0] == ("mug",)

    h.change(vocabulary=["kettle"])  # the same vocabulary again: encoded again
    h.runner.process_pending()
    assert h.runner.process_vocabulary()
    assert h.segmenter.encodes == [("mug",), ("kettle",), ("kettle",)]
    assert h.frame() == ("kettle",)
    assert h.outputs.label_infos[-1][0] == ("kettle",)


def test_a_failed_initial_encode_can_be_retried():
    h = Harness(vocabulary=["mug", "kettle"])
    h.segmenter.encode_failures = 1
    assert h.runner.process_vocabulary()
    assert h.roll_backs == [(("mug", "kettle"), None)]
    assert "being published unlabelled" in h.log.messages("ERROR")[0]
    assert h.frame() == ()
    # The node's roll-back submits "no vocabulary", then the user sets the same one again.
    h.runner.submit_settings(h.settings.replace(vocabulary=[]), None)
    h.runner.process_pending()
    assert not h.runner.process_vocabulary()  # nothing to encode for the roll-back
    h.change(vocabulary=["mug", "kettle"])
    h.runner.process_pending()
    assert h.runner.process_vocabulary()
    assert h.frame() == ("mug", "kettle")


def test_a_failing_roll_back_is_logged_and_the_vocabulary_thread_goes_on():
    def roll_back(failed, in_use):
        raise RuntimeError("parameter service is gone (pretend)")

    h = Harness(vocabulary=["mug"], roll_back=roll_back)
    h.segmenter.encode_failures = 1
    assert h.runner.process_vocabulary()  # does not raise
    errors = h.log.messages("ERROR")
    assert any("could not set the vocabulary parameter back" in e for e in errors)
    assert any("could not encode the vocabulary (mug)" in e and "set back" not in e for e in errors)


def test_label_info_names_the_vocabulary_in_use_whichever_thread_publishes_last():
    """The worker publishes a threshold change while the vocabulary thread swaps kettle in."""
    h = Harness(vocabulary=["mug"])
    assert h.runner.process_vocabulary()
    h.change(vocabulary=["kettle"])
    h.runner.process_pending()  # kettle waits for the vocabulary thread
    swap = threading.Thread(target=h.runner.process_vocabulary)

    def while_the_worker_publishes():
        if swap.ident is None:
            swap.start()
            assert h.segmenter.encoded.wait(WAIT_S)
            # A chance for the swap to publish now; it may not, while this publish runs.
            swap.join(timeout=0.2)

    h.segmenter.encoded.clear()
    h.outputs.on_label_info = while_the_worker_publishes
    h.change(unknown_thresh=0.3)
    h.runner.process_pending()
    swap.join(timeout=WAIT_S)
    assert swap.ident is not None and not swap.is_alive()
    assert h.outputs.label_infos[-1] == (("kettle",), 0.3)
    assert h.outputs.label_infos[-2] == (("mug",), 0.3)


def test_the_threads_follow_a_stream_of_vocabulary_changes_to_the_last_one(started):
    h = started(Harness(vocabulary=["a0", "b0"]))
    for step in range(1, 30):
        h.runner.submit_frame(Frame(step))
        h.change(vocabulary=[f"a{step}", f"b{step}"] + ([f"c{step}"] if step % 2 else []))
    deadline = time.monotonic() + WAIT_S
    while h.outputs.label_infos[-1:] != [(("a29", "b29", "c29"), 0.0)]:
        assert time.monotonic() < deadline, "the last vocabulary never came into use"
        h.segmenter.encoded.wait(0.01)
    h.runner.submit_frame(Frame(100))
    while not h.outputs.results or h.outputs.results[-1][0].number != 100:
        assert time.monotonic() < deadline, "the last frame was never published"
        h.segmenter.encoded.wait(0.01)
    assert h.outputs.results[-1][1] == ("a29", "b29", "c29")
    assert not h.runner.stop()
    assert h.log.messages("ERROR") == []


# ---------------------------------------------------------------------------- frames
def test_without_vocabulary_frames_are_unlabelled_with_a_hint_but_not_while_encoding():
    h = Harness()
    assert h.frame() == ()
    assert any(
        "no vocabulary set" in w and "ros2 param set /ovseg vocabulary" in w
        for w in h.log.messages("WARN")
    )
    assert h.health().message == "no vocabulary: nothing is labelled"

    h = Harness(vocabulary=["mug"])
    assert h.frame() == ()  # before the vocabulary thread has run
    assert not any("no vocabulary set" in w for w in h.log.messages("WARN"))
    assert any("still being encoded" in m for m in h.log.messages("INFO"))
    health = h.health()
    assert health.level == Level.WARN
    assert health.message == "the vocabulary is being encoded: nothing is labelled yet"
    assert h.segmenter.in_segment.is_set() is False


def test_only_the_newest_frame_is_processed_and_drops_are_counted():
    h = Harness(vocabulary=["mug"])
    h.runner.process_vocabulary()
    for number in (1, 2, 3):
        h.runner.submit_frame(Frame(number))
    assert h.runner.process_pending()
    assert not h.runner.process_pending()
    assert h.runner.process_segmented()
    assert [frame.number for frame, _ in h.outputs.results] == [3]
    values = h.health().values
    assert values["frames dropped (a newer one arrived)"] == "2"
    assert values["frames received"] == "3" and h.runner.received == 3


def test_bad_frames_and_decoder_errors_are_counted_skips_logged_once_per_cause():
    h = Harness(vocabulary=["mug"])
    h.runner.process_vocabulary()
    pixel_limit = cv2.error("OpenCV(4.11) error: (-215:Assertion failed)\n pixels <= limit")
    for error in (
        FrameError("encoding", "unsupported encoding '32FC1'"),
        FrameError("encoding", "unsupported encoding '32FC1'"),
        pixel_limit,
        pixel_limit,
    ):
        assert h.frame(error=error) is None  # process_pending does not raise
    skipped = [w for w in h.log.messages("WARN") if w.startswith("skipping a frame")]
    assert len(skipped) == 2
    assert f"from {SOURCE}: unsupported encoding '32FC1'" in skipped[0]
    assert "error" in skipped[1] and "\n" not in skipped[1]
    assert h.frame() == ("mug",)
    values = h.health().values
    assert values["frames skipped (bad input)"] == "4" and values["frames failed"] == "0"


def test_process_pending_never_raises():
    h = Harness(vocabulary=["mug"])
    h.runner.process_vocabulary()
    h.segmenter.fail_update = True
    h.change(granularity=0.5)
    assert h.frame() == ("mug",)  # refused settings: logged, the frame still runs
    assert any("could not apply the settings" in e for e in h.log.messages("ERROR"))
    h.segmenter.fail_next_frame = True
    assert h.frame() is None
    h.outputs.fail_results = True
    assert h.frame() is None
    assert h.health().values["frames failed"] == "2"


def test_a_failing_frame_is_logged_at_most_every_30_s():
    h = Harness(vocabulary=["mug"])
    h.runner.process_vocabulary()
    for advance in (0.0, 10.0, 19.0):  # 0 s, 10 s, 29 s
        h.clock.advance(advance)
        h.segmenter.fail_next_frame = True
        h.frame()
    assert len(h.log.messages("ERROR")) == 1
    assert (
        "frame failed and was skipped: RuntimeError: CUDA out of memory"
        in h.log.messages("ERROR")[0]
    )
    h.clock.advance(1.5)  # 30.5 s after the first
    h.segmenter.fail_next_frame = True
    h.frame()
    assert len(h.log.messages("ERROR")) == 2
    assert h.health().values["frames failed"] == "4"


# ------------------------------------------------------------------------ diagnostics
def test_diagnostics_are_ok_again_after_a_window_without_failures():
    h = Harness(vocabulary=["mug"])
    h.runner.process_vocabulary()
    h.segmenter.fail_next_frame = True
    h.frame()
    health = h.health()
    assert health.level == Level.ERROR and health.message == "1 frame(s) failed, see the log"
    h.clock.advance(1.0)
    h.frame()
    health = h.health()
    assert health.level == Level.OK, health.message
    assert health.values["frames failed"] == "1"  # the total stays


def test_fps_is_the_rate_since_the_last_report():
    h = Harness(vocabulary=["mug"])
    h.runner.process_vocabulary()
    for _ in range(3):
        h.frame()
    h.clock.advance(2.0)
    health = h.health()
    assert (health.values["fps"], health.values["input fps"]) == ("1.50", "1.50")
    assert health.message == "1.5 fps"
    assert float(health.values["latency proposals (ms)"]) == pytest.approx(1.0)
    h.frame()
    h.clock.advance(0.5)
    assert h.health().values["fps"] == "2.00"
    h.clock.advance(1.0)
    health = h.health()  # no new frame
    assert (health.values["fps"], health.values["input fps"]) == ("0.00", "0.00")
    assert "latency proposals (ms)" not in health.values
    assert any(
        " fps, " in m and "ms from arrival to publication" in m for m in h.log.messages("INFO")
    )


def test_diagnostics_warn_while_no_frame_arrived_and_when_the_camera_stops():
    h = Harness(vocabulary=["mug"])
    h.runner.process_vocabulary()
    health = h.health()
    assert health.level == Level.WARN and health.message == f"no image received on {SOURCE}"
    for _ in range(3):
        h.frame()
    h.clock.advance(1.0)
    assert h.health().level == Level.OK
    h.clock.advance(5.0)
    health = h.health()  # no frame in this window
    assert health.level == Level.WARN
    assert health.message == f"no image received on {SOURCE} in the last 5 s (3 before)"
    h.frame()
    h.clock.advance(1.0)
    assert h.health().level == Level.OK  # the camera is back


def test_diagnostics_warn_when_every_frame_of_the_window_is_skipped():
    h = Harness(vocabulary=["mug"])
    h.runner.process_vocabulary()
    bad = FrameError("encoding", "unsupported encoding '32FC1'")
    for _ in range(3):
        h.frame(error=bad)
    health = h.health()
    assert health.level == Level.WARN
    assert health.message == "every frame was skipped (bad input: encoding), see the log"
    h.frame(error=bad)
    h.frame()
    assert h.health().level == Level.OK  # one good frame in the window
    h.frame(error=bad)
    assert h.health().level == Level.WARN  # windowed, not the totals


# -------------------------------------------------------------------------------- stop
def test_stop_during_a_long_frame_returns_and_nothing_is_given_out_after(started):
    h = Harness(vocabulary=["mug"])
    h.runner.process_vocabulary()
    h.segmenter.release_segment = threading.Event()
    started(h)
    h.runner.submit_frame(Frame(1))
    assert h.segmenter.in_segment.wait(WAIT_S)  # the worker is inside a (slow) frame
    label_infos = len(h.outputs.label_infos)
    begun = time.monotonic()
    assert h.runner.stop(join_s=0.1)  # True: the worker is still busy
    assert time.monotonic() - begun < WAIT_S
    assert any("ovseg-segment still busy" in m for m in h.log.messages("INFO"))
    h.segmenter.release_segment.set()  # the frame finishes after stop() returned
    for thread in h.runner.threads:
        thread.join(WAIT_S)
        assert not thread.is_alive()
    h.runner.publish_diagnostics()
    h.runner.publish_label_info()
    assert h.outputs.results == [] and h.outputs.health == []
    assert len(h.outputs.label_infos) == label_infos


def test_stop_of_idle_threads_returns_false_and_ends_them(started):
    h = started(Harness(vocabulary=["mug"]))
    assert h.segmenter.encoded.wait(WAIT_S)  # the vocabulary thread encoded the first one
    assert not h.runner.stop()
    assert all(not thread.is_alive() for thread in h.runner.threads)


def test_a_frame_failing_while_the_transport_shuts_down_is_not_a_failure():
    """Ctrl-C tears the ROS context down before stop(): what then fails is the shutdown."""
    h = Harness(vocabulary=["mug"])
    h.runner.process_vocabulary()
    h.outputs.fail_results = h.outputs.shutting_down = True
    assert h.frame() is None
    assert not h.log.messages("ERROR") and h.health().values["frames failed"] == "0"
    h.outputs.shutting_down = False
    assert h.frame() is None
    assert h.log.messages("ERROR") and h.health().values["frames failed"] == "1"


# ---------------------------------------------------------------------------- depth
K = np.array([[4.0, 0.0, 4.0], [0.0, 4.0, 3.0], [0.0, 0.0, 1.0]])


class Depth:
    """A DepthOf: 2 m everywhere (or the error given), recording the settings it got."""

    def __init__(self, error=None):
        self.error = error
        self.settings = []

    def __call__(self, frame, width, height, settings):
        self.settings.append(settings)
        if self.error is not None:
            raise self.error
        return np.full((height, width), 2.0, np.float32), K


def test_frames_with_depth_are_placed_in_3d_and_their_points_handed_over():
    depth = Depth()
    h = Harness(vocabulary=["mug"], depth_of=depth, depth_max_range=5.0)
    h.runner.process_vocabulary()
    h.segmenter.mug_box = (slice(0, 6), slice(0, 4))
    assert h.frame() == ("mug",)
    result, points = h.outputs.scenes[-1]
    assert points.shape == (6, 8, 3) and np.all(points[..., 2] == 2.0)
    # the mask (rows 0..5, columns 0..3) eroded by 2 px away from the image border: columns
    # 0..1, rows 0..5; medians u = 0.5, v = 2.5: x = (0.5 - 4) * 2 / 4, y = (2.5 - 3) * 2 / 4
    assert result.instances[0].geometry.centroid == pytest.approx((-1.75, -0.25, 2.0))
    assert depth.settings[-1].max_range == 5.0
    h.change(depth_max_range=1.5)  # live: the next frame's depth is read with it
    h.frame()
    assert depth.settings[-1].max_range == 1.5
    values = h.health().values
    assert values["frames without 3D (unusable depth)"] == "0"
    assert float(values["latency locate (ms)"]) >= 0.0


def test_unusable_depth_is_logged_once_per_cause_and_the_frames_still_go_out():
    depth = Depth(DepthError("depth is 4x3 but colour is 8x6: give registered depth", cause="size"))
    h = Harness(vocabulary=["mug"], depth_of=depth)
    h.runner.process_vocabulary()
    h.segmenter.mug_box = (slice(0, 6), slice(0, 4))
    for number in range(3):
        assert h.frame(number) == ("mug",)
    assert [points for _, points in h.outputs.scenes] == [None] * 3
    assert all(
        math.isnan(result.instances[0].geometry.centroid[2]) for result, _ in h.outputs.scenes
    )
    warnings = h.log.messages("WARN")
    assert len(warnings) == 1 and "depth is 4x3 but colour is 8x6" in warnings[0]
    assert "(size)" in warnings[0] and SOURCE in warnings[0]
    depth.error = DepthError("no CameraInfo has arrived yet", cause="camera_info")
    h.frame()
    assert len(h.log.messages("WARN")) == 2
    assert h.health().values["frames without 3D (unusable depth)"] == "4"


def test_without_depth_there_is_no_3d_and_no_count_of_it():
    h = Harness(vocabulary=["mug"])
    h.runner.process_vocabulary()
    h.frame()
    assert h.outputs.scenes[-1][1] is None
    assert not any("3D" in key or "locate" in key for key in h.health().values)


# ---------------------------------------------------------------------------- stages
def test_a_result_waiting_for_the_output_stage_is_replaced_by_a_newer_one_and_counted():
    h = Harness(vocabulary=["mug"])
    h.runner.process_vocabulary()
    for number in (1, 2):
        h.runner.submit_frame(Frame(number))
        assert h.runner.process_pending()  # segmented, waiting for the output stage
    assert h.outputs.results == []
    assert h.runner.process_segmented()
    assert not h.runner.process_segmented()
    assert [frame.number for frame, _ in h.outputs.results] == [2]
    values = h.health().values
    assert values["results dropped (a newer one was segmented)"] == "1"
    assert values["frames dropped (a newer one arrived)"] == "0"
    assert values["frames processed"] == "1" and values["stages"] == "2"


def test_a_dropped_result_does_not_advance_the_tracker():
    """With track_max_age 0 one frame without the mug ends its track; that frame is dropped
    before the output stage, so the mug keeps its id."""
    h = Harness(vocabulary=["mug"], track=True, track_max_age=0)
    h.runner.process_vocabulary()
    h.segmenter.mug_box = (slice(0, 6), slice(0, 4))
    h.frame(0)
    assert h.outputs.scenes[-1][0].instances[0].track_id == 1
    h.segmenter.mug_box = None
    h.runner.submit_frame(Frame(1))
    h.runner.process_pending()  # no mug; replaced below before it is published
    h.segmenter.mug_box = (slice(0, 6), slice(0, 4))
    h.frame(2)
    assert [frame.number for frame, _ in h.outputs.results] == [0, 2]
    assert h.outputs.scenes[-1][0].instances[0].track_id == 1
    h.segmenter.mug_box = None
    h.frame(3)  # published: the track ends
    h.segmenter.mug_box = (slice(0, 6), slice(0, 4))
    h.frame(4)
    assert h.outputs.scenes[-1][0].instances[0].track_id == 2


def test_each_result_keeps_the_settings_it_was_segmented_with():
    """A setting changed while a result waits applies from the next frame segmented."""
    depth = Depth()
    h = Harness(vocabulary=["mug"], depth_of=depth, depth_max_range=5.0)
    h.runner.process_vocabulary()
    h.runner.submit_frame(Frame(1))
    h.runner.process_pending()
    h.change(depth_max_range=1.5)
    h.runner.process_pending()  # applies the change; no new frame
    h.runner.process_segmented()
    assert depth.settings[-1].max_range == 5.0
    h.frame(2)
    assert depth.settings[-1].max_range == 1.5


def test_the_serial_path_finishes_each_frame_in_the_segment_step():
    h = Harness(vocabulary=["mug"], stages=1)
    h.runner.process_vocabulary()
    h.runner.submit_frame(Frame(1))
    assert h.runner.process_pending()
    assert [frame.number for frame, _ in h.outputs.results] == [1]
    assert not h.runner.process_segmented()
    assert h.health().values["stages"] == "1"


def test_the_serial_path_runs_no_output_thread(started):
    h = started(Harness(vocabulary=["mug"], stages=1))
    assert sorted(thread.name for thread in h.runner.threads) == [
        "ovseg-segment",
        "ovseg-vocabulary",
    ]
    h = started(Harness(vocabulary=["mug"]))
    assert sorted(thread.name for thread in h.runner.threads) == [
        "ovseg-output",
        "ovseg-segment",
        "ovseg-vocabulary",
    ]


def test_stages_other_than_1_or_2_are_refused():
    with pytest.raises(ValueError, match="stages must be one of"):
        Harness(stages=3)


def test_diagnostics_report_each_step_and_how_busy_each_stage_was():
    h = Harness(vocabulary=["mug"], track=True)
    h.runner.process_vocabulary()
    h.segmenter.mug_box = (slice(0, 6), slice(0, 4))
    h.segmenter.on_segment = lambda: h.clock.advance(0.5)
    h.outputs.on_prepare = lambda frame: h.clock.advance(0.25)
    h.frame()
    h.clock.advance(0.25)  # a window of 1 s: segment busy 0.5 s, output 0.25 s
    values = h.health().values
    assert values["busy segment stage (%)"] == "50"
    assert values["busy output stage (%)"] == "25"
    for step in ("decode", "proposals", "segment", "track", "build", "publish"):
        assert float(values[f"latency {step} (ms)"]) >= 0.0, step
    # total: from the frame's arrival to its publication, both stages and the wait between
    assert float(values["latency total (ms)"]) == pytest.approx(750.0)


def test_the_stages_publish_frames_in_arrival_order_each_with_one_vocabulary(started):
    """A slow output stage and a stream of frames and vocabulary changes: results are
    dropped between the stages, never reordered, and each is built from one vocabulary."""
    h = Harness(vocabulary=["v0"])
    h.segmenter.mug_box = (slice(0, 6), slice(0, 4))
    h.outputs.on_prepare = lambda frame: time.sleep(0.003)
    started(h)
    assert h.segmenter.encoded.wait(WAIT_S)
    for number in range(1, 120):
        h.runner.submit_frame(Frame(number))
        if number % 10 == 0:
            h.change(vocabulary=[f"v{number}"])
        time.sleep(0.001)
    h.runner.submit_frame(Frame(1000))
    deadline = time.monotonic() + WAIT_S
    while not h.outputs.results or h.outputs.results[-1][0].number != 1000:
        assert time.monotonic() < deadline, "the last frame was never published"
        time.sleep(0.01)
    assert not h.runner.stop()
    numbers = [frame.number for frame, _ in h.outputs.results]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    for result, _ in h.outputs.scenes:  # the fake labels its mug with the first name
        assert [i.label for i in result.instances] == list(result.vocabulary.names)
    assert len({result.vocabulary.names for result, _ in h.outputs.scenes}) > 1
    values = h.runner.health().values
    accounted = sum(
        int(values[key])
        for key in (
            "frames processed",
            "frames dropped (a newer one arrived)",
            "results dropped (a newer one was segmented)",
            "frames skipped (bad input)",
            "frames failed",
        )
    )
    assert accounted == int(values["frames received"]) == 120
    assert int(values["results dropped (a newer one was segmented)"]) > 0


def test_stop_with_both_stages_busy_returns_and_nothing_is_published_after(started):
    h = Harness(vocabulary=["mug"])
    h.runner.process_vocabulary()
    in_output, release_output = threading.Event(), threading.Event()

    def slow_prepare(frame):
        in_output.set()
        assert release_output.wait(WAIT_S)

    h.outputs.on_prepare = slow_prepare
    started(h)
    h.runner.submit_frame(Frame(1))
    assert in_output.wait(WAIT_S)  # frame 1 is being built in the output stage
    h.segmenter.in_segment.clear()
    h.segmenter.release_segment = threading.Event()
    h.runner.submit_frame(Frame(2))
    assert h.segmenter.in_segment.wait(WAIT_S)  # frame 2 is being segmented
    assert h.runner.stop(join_s=0.1)
    busy = next(m for m in h.log.messages("INFO") if "still busy" in m)
    assert "ovseg-segment" in busy and "ovseg-output" in busy
    release_output.set()
    h.segmenter.release_segment.set()
    for thread in h.runner.threads:
        thread.join(WAIT_S)
        assert not thread.is_alive()
    assert h.outputs.results == []
    assert h.log.messages("ERROR") == []


def test_a_frame_whose_depth_fails_is_still_tracked_and_its_ids_continue():
    depth = Depth()
    h = Harness(vocabulary=["mug"], depth_of=depth, track=True)
    h.runner.process_vocabulary()
    h.segmenter.mug_box = (slice(0, 6), slice(0, 4))
    h.frame(1)
    depth.error = DepthError("depth is 4x3 but colour is 8x6", cause="size")
    h.frame(2)
    depth.error = None
    h.frame(3)
    assert [result.instances[0].track_id for result, _ in h.outputs.scenes] == [1, 1, 1]
    assert h.outputs.scenes[1][1] is None  # the middle frame had no 3D


def test_track_settings_changed_while_tracking_apply_from_the_next_frame():
    """min_iou raised above the mug's overlap with its predicted position ends its track at
    once; max_age 0 then ends a track after a single miss."""
    h = Harness(vocabulary=["mug"], track=True)
    h.runner.process_vocabulary()
    h.segmenter.mug_box = (slice(0, 6), slice(0, 4))
    h.frame(1)
    h.segmenter.mug_box = (slice(0, 6), slice(1, 5))  # IoU 3/5 = 0.6 with the last frame
    h.frame(2)
    h.change(track_min_iou=0.7)
    # predicted at columns 2-5 (1 px a frame): IoU 3/5 with columns 3-6
    h.segmenter.mug_box = (slice(0, 6), slice(3, 7))
    h.frame(3)
    h.change(track_min_iou=0.3, track_max_age=0)
    h.segmenter.mug_box = None
    h.frame(4)
    h.segmenter.mug_box = (slice(0, 6), slice(3, 7))
    h.frame(5)
    ids = [
        result.instances[0].track_id if result.instances else None for result, _ in h.outputs.scenes
    ]
    assert ids == [1, 1, 2, None, 3]


# ------------------------------------------------------------------- pause (lifecycle)
def test_paused_the_runner_takes_no_frame_and_publishes_nothing_until_resumed():
    """Frames in flight are dropped, frames submitted meanwhile ignored; a vocabulary set
    while paused is encoded and its label map published on resume."""
    h = Harness(vocabulary=["mug"])
    h.runner.process_vocabulary()
    h.runner.submit_frame(Frame(1))
    h.runner.process_pending()  # segmented, waiting for the output stage
    h.runner.submit_frame(Frame(2))  # waiting to be segmented
    label_infos = len(h.outputs.label_infos)
    h.runner.pause()
    h.runner.submit_frame(Frame(3))
    assert not h.runner.process_pending() and not h.runner.process_segmented()
    h.change(vocabulary=["kettle"])
    h.runner.process_pending()
    assert h.runner.process_vocabulary()
    assert h.outputs.results == [] and len(h.outputs.label_infos) == label_infos
    health = h.health()
    assert health.level == Level.OK and health.message == "inactive: not taking frames"
    h.runner.resume()
    assert h.outputs.label_infos[-1][0] == ("kettle",)
    assert h.frame(4) == ("kettle",)
    assert [frame.number for frame, _ in h.outputs.results] == [4]


def test_a_frame_being_built_when_paused_is_not_published(started):
    h = Harness(vocabulary=["mug"])
    h.runner.process_vocabulary()
    building, release = threading.Event(), threading.Event()
    h.outputs.on_prepare = lambda frame: building.set() or release.wait(WAIT_S)
    started(h)
    h.runner.submit_frame(Frame(1))
    assert building.wait(WAIT_S)
    h.runner.pause()
    release.set()
    h.runner.resume()  # after resume, frame 1's publish may not go out any more
    h.outputs.on_prepare = None
    deadline = time.monotonic() + WAIT_S
    h.runner.submit_frame(Frame(2))
    while not h.outputs.results:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert [frame.number for frame, _ in h.outputs.results] == [2]
