"""The node through the rclpy stand-in (no ROS needed): parameters, vocabulary, frames in,
every output out, bad input, dropped frames and the worker threads; plus the params file and
the launch file's arguments. One test runs the real Segmenter with the tiny models."""

import array
import ast
import dataclasses
import math
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("rosbags", reason="the ROS stand-in builds its message classes with rosbags")

import ros_standin
from ros_standin import GRAPH, Parameter, QoSProfile, ReliabilityPolicy, ros2_param_set

from ovseg_ros.segmentation import panoptic
from ovseg_ros.segmentation.vocabulary import EncodedVocabulary
from ovseg_ros.segmentation.vocabulary_text import parse_names
from ovseg_ros.settings.config import Settings, SettingsError, settings_fields
from ovseg_ros.settings.params_file import settings_from_yaml

REPO = Path(__file__).resolve().parent.parent
WAIT_S = 30.0  # generous bound for thread hand-offs on a loaded machine (not a timing check)


class FakeSegmenter:
    """The Segmenter surface without models. Every frame gets two square masks fused by the
    real panoptic code: top-left is class 0, bottom-right class 1 (class 0 when only one)."""

    device = "cpu"
    encode_failures = 0

    def __init__(self, settings):
        self._settings = settings
        self.applied = []
        self.encoded = []
        self.frames = []  # (image, EncodedVocabulary) per segment call
        self.gate = None  # callable run inside segment (to make the pipeline slow)
        self.fail_next = False
        self.encode_failures = type(self).encode_failures  # this many encodes raise first
        self.encode_delay_s = 0.0
        self._version = 0
        self._lock = threading.Lock()

    @property
    def settings(self):
        return self._settings

    def update_settings(self, settings):
        self._settings = settings
        self.applied.append(settings)

    def encode_vocabulary(self, vocabulary):
        time.sleep(self.encode_delay_s)
        if self.encode_failures:
            self.encode_failures -= 1
            raise RuntimeError("CUDA out of memory (pretend)")
        with self._lock:
            self._version += 1
            encoded = EncodedVocabulary(vocabulary, torch.zeros(len(vocabulary), 4), self._version)
        self.encoded.append(encoded)
        return encoded

    def segment(self, image, vocabulary):
        self.frames.append((image, vocabulary))
        if self.gate is not None:
            self.gate()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("CUDA out of memory (pretend)")
        height, width = image.shape[:2]
        masks = torch.zeros(2, height, width, dtype=torch.bool)
        masks[0, : height // 2, : width // 2] = True
        masks[1, height // 2 :, width // 2 :] = True
        classes = vocabulary.embeddings.shape[0]
        probs = torch.full((2, classes), 0.05)
        probs[0, 0] = 1.0
        probs[1, min(1, classes - 1)] = 1.0
        probs = probs / probs.sum(dim=1, keepdim=True)
        result = panoptic.fuse(
            masks,
            probs,
            torch.tensor([0.95, 0.9]),
            vocabulary.vocabulary,
            granularity=self._settings.granularity,
            vocabulary_version=vocabulary.version,
        )
        result.timings_ms = {"proposals": 1.0, "classify": 2.0, "fuse": 0.5, "total": 3.5}
        return result


# The outputs a downstream planner usually subscribes to; make_node subscribes to them.
PLANNER_OUTPUTS = ("semantic", "instances", "panoptic", "detections")


@pytest.fixture
def make_node(monkeypatch):
    """make_node(distro='humble', subscribed=PLANNER_OUTPUTS, **parameter_overrides) ->
    (node, fake segmenter); ``subscribed``: the outputs (names under ~/) that have a
    subscriber (the others have none: they are not built)."""
    nodes = []

    def make(distro="humble", segmenter=FakeSegmenter, subscribed=PLANNER_OUTPUTS, **parameters):
        ros_standin.install(monkeypatch, distro)
        from ovseg_ros.node.node import OvsegNode

        made = []
        node = OvsegNode(
            make_segmenter=lambda s: made.append(segmenter(s)) or made[-1],
            parameter_overrides=[
                Parameter(name, value=value) for name, value in parameters.items()
            ],
        )
        for publisher in node.publishers:
            if publisher.topic_name.rpartition("/")[2] in subscribed:
                publisher.subscription_count = 1
        nodes.append(node)
        return node, made[0]

    yield make
    for node in nodes:
        node.stop()
        node.destroy_node()


def publishers(node):
    return {p.topic_name: p for p in node.publishers}


def subscription(node, topic):
    return next(s for s in node.subscriptions if s.topic_name == topic)


def timer(node, period_s):
    return next(t for t in node.timers if t.timer_period_ns == int(period_s * 1e9))


def frame(height=24, width=32, stamp=(100, 5), frame_id="camera", encoding="bgr8"):
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    rng = np.random.default_rng(stamp[0])
    channels = {"bgr8": 3, "rgb8": 3, "mono8": 1}.get(encoding, 3)
    pixels = rng.integers(0, 256, (height, width * channels), dtype=np.uint8)
    return Image(
        header=Header(stamp=Time(sec=stamp[0], nanosec=stamp[1]), frame_id=frame_id),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * channels,
        data=array.array("B", pixels.tobytes()),
    )


def label_image(msg):
    assert msg.encoding == "16UC1" and msg.step == msg.width * 2 and msg.is_bigendian == 0
    return np.frombuffer(msg.data, dtype="<u2").reshape(msg.height, msg.width)


def warnings(node):
    return node.get_logger().messages("WARN")


def wait_until(condition):
    """Poll until condition() holds; fail after WAIT_S (a hang, not a slow machine)."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the node's threads"
        time.sleep(0.005)


def set_vocabulary(node, text):
    result = ros2_param_set(node, "vocabulary", text)
    assert result.successful, result.reason
    node.process_pending()
    assert node.process_vocabulary()


# ---------------------------------------------------------------------------- parameters
def test_every_setting_is_a_typed_described_parameter(make_node):
    node, _ = make_node()
    kinds = {
        "bool": Parameter.Type.BOOL,
        "int": Parameter.Type.INTEGER,
        "float": Parameter.Type.DOUBLE,
        "str": Parameter.Type.STRING,
        "list": Parameter.Type.STRING_ARRAY,
    }
    defaults = Settings()
    for setting in settings_fields():
        descriptor = node.describe_parameter(setting.name)
        assert descriptor.type == kinds[setting.type].value, setting.name
        assert descriptor.description == setting.metadata["description"]
        assert descriptor.read_only is (not setting.metadata["live"]), setting.name
        assert node.get_parameter(setting.name).value == getattr(defaults, setting.name)
    assert node.describe_parameter("granularity").floating_point_range[0].to_value == 1.0
    assert node.describe_parameter("points_per_side").integer_range[0].to_value == 128
    assert (
        "one of: crop, mask_token"
        in node.describe_parameter("classifier_mode").additional_constraints
    )
    from ovseg_ros.settings.node_options import NODE_OPTIONS

    option_kinds = {
        bool: Parameter.Type.BOOL,
        int: Parameter.Type.INTEGER,
        str: Parameter.Type.STRING,
    }
    for option in NODE_OPTIONS:
        descriptor = node.describe_parameter(option.name)
        assert descriptor.read_only and descriptor.description == option.description
        assert descriptor.type == option_kinds[type(option.default)].value, option.name
        assert node.get_parameter(option.name).value == option.default
    assert node.describe_parameter("points_stride").integer_range[0].to_value == 64


def test_node_options_out_of_range_stop_the_start_with_the_reason(make_node):
    # rclpy refuses it against the descriptor's range (main() logs "cannot start: ...")
    with pytest.raises(Exception, match="sync_queue_size out of range. Min: 1, Max: 1000"):
        make_node(sync_queue_size=0)
    with pytest.raises(SettingsError, match="image_reliability must be one of"):
        make_node(image_reliability="sometimes")


def test_vocabulary_is_a_string_array_even_when_empty(make_node):
    node, _ = make_node()
    vocabulary = node.get_parameter("vocabulary")
    assert vocabulary.type_ == Parameter.Type.STRING_ARRAY and vocabulary.value == []
    assert ros2_param_set(node, "vocabulary", "[door handle, backpack]").successful
    assert node.get_parameter("vocabulary").value == ["door handle", "backpack"]


def test_start_values_come_from_overrides_and_are_validated(make_node):
    node, fake = make_node(vocabulary=["mug", "kettle"], granularity=0.5, stuff_classes=["kettle"])
    assert fake.settings.granularity == 0.5 and fake.settings.vocabulary == ["mug", "kettle"]
    assert node.process_vocabulary()
    assert fake.encoded[-1].vocabulary.names == ("mug", "kettle")
    assert fake.encoded[-1].vocabulary.stuff == frozenset({"kettle"})
    from ovseg_ros.segmentation.vocabulary import VocabularyError

    with pytest.raises(VocabularyError, match="appears twice"):
        make_node(vocabulary=["mug", "MUG"])


def test_a_float_setting_given_as_an_integer_fails_at_start_like_rclpy(make_node):
    with pytest.raises(Exception, match="expecting type 'DOUBLE'"):
        make_node(granularity=1)


def test_live_change_reaches_the_pipeline_between_frames(make_node):
    node, fake = make_node()
    result = ros2_param_set(node, "granularity", "0.5")
    assert result.successful, result.reason
    assert fake.settings.granularity == 0.8  # not applied inside the callback
    node.process_pending()
    assert fake.settings.granularity == 0.5
    assert node.get_parameter("granularity").value == 0.5
    assert ros2_param_set(node, "unknown_thresh", "0.3").successful
    node.process_pending()
    assert publishers(node)["/ovseg/label_info"].messages[-1].threshold == pytest.approx(0.3)


@pytest.mark.parametrize(
    "name, text, reason",
    [
        ("granularity", "1.5", "out of range"),
        ("granularity", "1", "Wrong parameter type"),
        ("classifier_mode", "fancy", "classifier_mode must be one of crop, mask_token"),
        ("sam_model", "vit_h", "read-only"),
        ("device", "cpu", "read-only"),
        ("vocabulary", "[mug, Mug]", "'Mug' appears twice"),
        ("vocabulary", "[mug, '  ']", "entry 2 is blank"),
        ("vocabulary", "[" + "x" * 300 + "]", "300 characters long"),
        ("vocabulary", "[mug, '\t']", "entry 2 is blank"),
        ("max_classes", "1", "at most 1 are allowed"),
    ],
)
def test_refused_changes_carry_the_reason_and_keep_the_old_values(make_node, name, text, reason):
    node, fake = make_node(vocabulary=["mug", "kettle"])
    before = node.get_parameter(name).value
    result = ros2_param_set(node, name, text)
    assert not result.successful
    assert reason in result.reason
    assert node.get_parameter(name).value == before
    node.process_pending()
    assert fake.applied == []  # nothing reached the pipeline
    assert fake.settings.vocabulary == ["mug", "kettle"]


def test_after_a_refused_change_the_next_valid_one_succeeds(make_node):
    node, fake = make_node(vocabulary=["mug", "kettle"])
    node.process_vocabulary()
    assert not ros2_param_set(node, "vocabulary", "[mug, Mug]").successful
    assert not ros2_param_set(node, "granularity", "1.5").successful
    result = ros2_param_set(node, "granularity", "0.5")
    assert result.successful, result.reason
    node.process_pending()
    assert fake.settings.granularity == 0.5 and fake.settings.vocabulary == ["mug", "kettle"]
    assert not node.process_vocabulary()  # the vocabulary did not change
    assert ros2_param_set(node, "vocabulary", "[door handle]").successful
    node.process_pending()
    assert node.process_vocabulary()
    assert fake.encoded[-1].vocabulary.names == ("door handle",)


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_empty_vocabulary_is_refused_and_the_old_one_stays(make_node, distro):
    """'ros2 param set' sends "[]" as an empty BOOL_ARRAY; on both distributions the node,
    not rclpy's type check, refuses it, with its own reason."""
    node, fake = make_node(distro, vocabulary=["mug", "kettle"])
    result = ros2_param_set(node, "vocabulary", "[]")
    assert not result.successful and "vocabulary is empty" in result.reason
    typed = node.set_parameters([Parameter("vocabulary", Parameter.Type.STRING_ARRAY, [])])[0]
    assert not typed.successful and "vocabulary is empty" in typed.reason
    assert node.get_parameter("vocabulary").value == ["mug", "kettle"]


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_stuff_classes_can_be_cleared_with_an_empty_list(make_node, distro):
    node, fake = make_node(distro, vocabulary=["floor", "mug"], stuff_classes=["floor"])
    assert ros2_param_set(node, "stuff_classes", "[]").successful
    assert node.get_parameter("stuff_classes").value == []
    assert node.get_parameter("stuff_classes").type_ == Parameter.Type.STRING_ARRAY


@pytest.mark.parametrize(
    "text, reason",
    [
        ('["mug\\nkettle"]', "control characters"),
        ("[" + "x" * 10_000 + "]", "10000 characters long"),
        ("[floor, FLOOR]", "appears twice"),
        ("[" + ", ".join(f"c{i}" for i in range(300)) + "]", "at most 256"),
    ],
)
def test_stuff_classes_are_refused_like_a_vocabulary(make_node, text, reason):
    node, fake = make_node(vocabulary=["floor", "mug"], stuff_classes=["floor"])
    result = ros2_param_set(node, "stuff_classes", text)
    assert not result.successful and "stuff_classes" in result.reason
    assert reason in result.reason
    assert node.get_parameter("stuff_classes").value == ["floor"]


def test_bad_stuff_classes_at_start_are_refused(make_node):
    from ovseg_ros.segmentation.vocabulary import VocabularyError

    with pytest.raises(VocabularyError, match="stuff_classes entry 1"):
        make_node(stuff_classes=["mug\tkettle"])


def test_one_stuff_list_serves_every_vocabulary(make_node):
    node, fake = make_node(vocabulary=["floor", "mug"], stuff_classes=["floor", "sky"])
    node.process_vocabulary()
    assert fake.encoded[-1].vocabulary.stuff == frozenset({"floor"})
    set_vocabulary(node, "[door handle, backpack]")
    assert fake.encoded[-1].vocabulary.names == ("door handle", "backpack")
    assert fake.encoded[-1].vocabulary.stuff == frozenset()
    set_vocabulary(node, "[Sky, chair]")
    assert fake.encoded[-1].vocabulary.stuff == frozenset({"Sky"})
    assert ros2_param_set(node, "stuff_classes", "[chair]").successful
    node.process_pending()
    assert node.process_vocabulary()  # stuff changes the fusion: a new EncodedVocabulary
    assert fake.encoded[-1].vocabulary.stuff == frozenset({"chair"})


def test_vocabulary_topic_sets_the_parameter(make_node):
    node, fake = make_node()
    from std_msgs.msg import String

    topic = subscription(node, "/ovseg/vocabulary")
    topic.deliver(String(data="chair, table"))
    assert node.get_parameter("vocabulary").value == ["chair", "table"]
    node.process_pending()
    node.process_vocabulary()
    assert fake.encoded[-1].vocabulary.names == ("chair", "table")
    topic.deliver(String(data="chair,, table"))
    assert node.get_parameter("vocabulary").value == ["chair", "table"]
    assert any("refused: entry 2 is blank" in w for w in warnings(node))
    topic.deliver(String(data=""))
    assert any("vocabulary is empty" in w for w in warnings(node))
    assert node.get_parameter("vocabulary").value == ["chair", "table"]


@pytest.mark.parametrize(
    "text", ["\ufeffmug, door handle\n\n", '[yes, "door handle"]\n', "null\r\nkettle\r\n"]
)
def test_topic_launch_argument_and_cli_read_a_vocabulary_list_alike(make_node, tmp_path, text):
    import argparse

    from ovseg_ros.offline.cli import read_vocabulary

    node, fake = make_node()
    from std_msgs.msg import String

    subscription(node, "/ovseg/vocabulary").deliver(String(data=text))
    from_topic = node.get_parameter("vocabulary").value
    from_launch = launch_function("vocabulary_argument")(text)
    vocab_file = tmp_path / "classes.txt"
    vocab_file.write_bytes(text.encode("utf-8"))
    from_file = read_vocabulary(
        argparse.Namespace(vocab=None, vocab_file=str(vocab_file)), Settings()
    )
    assert from_topic == from_launch == list(from_file.names)
    assert from_topic[0] in ("mug", "yes", "null") and len(from_topic) == 2


def test_topic_refuses_a_name_holding_a_hidden_control_character(make_node):
    node, fake = make_node(vocabulary=["chair"])
    from std_msgs.msg import String

    subscription(node, "/ovseg/vocabulary").deliver(String(data="mug\x0bkettle"))
    assert node.get_parameter("vocabulary").value == ["chair"]
    assert any("refused" in w and "control characters" in w for w in warnings(node))


def test_track_parameter_gives_ids_that_last_across_frames_and_restart_after_off(make_node):
    node, fake = make_node(vocabulary=["mug", "kettle"], track=True)
    node.process_vocabulary()
    pubs = publishers(node)

    def next_ids():
        subscription(node, "/image").deliver(frame())
        assert node.process_pending()
        panoptic_msg = pubs["/ovseg/panoptic"].messages[-1]
        detections = pubs["/ovseg/detections"].messages[-1]
        ids = [instance.track_id for instance in panoptic_msg.instances]
        assert [d.id for d in detections.detections] == [str(i or n + 1) for n, i in enumerate(ids)]
        return ids

    assert next_ids() == [1, 2] and next_ids() == [1, 2]
    assert ros2_param_set(node, "track", "false").successful
    assert next_ids() == [0, 0]
    assert ros2_param_set(node, "track", "true").successful
    assert next_ids() == [3, 4]  # ids are never reused
    assert not ros2_param_set(node, "track_min_iou", "0.0").successful


# --------------------------------------------------------------------------------- frames
def test_one_frame_gives_every_output_with_the_input_header(make_node):
    node, fake = make_node(vocabulary=["mug", "kettle", "person"])
    node.process_vocabulary()
    pubs = publishers(node)
    label_info = pubs["/ovseg/label_info"].messages[-1]
    assert [(c.class_id, c.class_name) for c in label_info.class_map] == [
        (0, "mug"),
        (1, "kettle"),
        (2, "person"),
        (65535, "unlabelled"),
    ]

    image = frame(height=24, width=32, stamp=(100, 5), frame_id="camera_optical")
    subscription(node, "/image").deliver(image)
    assert node.process_pending()

    ((seen, vocabulary),) = fake.frames
    bgr = np.frombuffer(image.data, dtype=np.uint8).reshape(24, 32, 3)
    np.testing.assert_array_equal(seen, bgr[..., ::-1])  # the pipeline gets RGB
    (semantic_msg,) = pubs["/ovseg/semantic"].messages
    (instances_msg,) = pubs["/ovseg/instances"].messages
    (panoptic_msg,) = pubs["/ovseg/panoptic"].messages
    (detections,) = pubs["/ovseg/detections"].messages
    for msg in (
        semantic_msg,
        instances_msg,
        panoptic_msg,
        detections,
        panoptic_msg.semantic,
        panoptic_msg.instance,
        *detections.detections,
    ):
        assert msg.header == image.header
    assert (semantic_msg.height, semantic_msg.width) == (24, 32)
    semantic, instance_ids = label_image(semantic_msg), label_image(instances_msg)
    np.testing.assert_array_equal(semantic, label_image(panoptic_msg.semantic))
    np.testing.assert_array_equal(instance_ids, label_image(panoptic_msg.instance))

    assert list(panoptic_msg.vocabulary) == ["mug", "kettle", "person"]
    assert panoptic_msg.vocabulary_version == vocabulary.version
    assert set(np.unique(instance_ids)) == {0} | {i.id for i in panoptic_msg.instances}
    for index, instance in enumerate(panoptic_msg.instances):
        assert instance.id == index + 1
        pixels = instance_ids == instance.id
        assert instance.area == pixels.sum() > 0
        assert np.all(semantic[pixels] == instance.class_index)
        assert instance.label == panoptic_msg.vocabulary[instance.class_index]
        assert math.isnan(instance.centroid.z)
    assert [i.label for i in panoptic_msg.instances] == ["mug", "kettle"]
    assert [(d.results[0].hypothesis.class_id, d.id) for d in detections.detections] == [
        ("mug", "1"),
        ("kettle", "2"),
    ]
    for detection, instance in zip(detections.detections, panoptic_msg.instances):
        assert detection.results[0].hypothesis.score == pytest.approx(instance.score)
        assert 0.0 < instance.score <= 1.0
        assert detection.bbox.size_x == instance.bbox.width

    assert pubs["/ovseg/overlay"].messages == []  # nobody subscribed
    pubs["/ovseg/overlay"].subscription_count = 1
    subscription(node, "/image").deliver(frame(stamp=(101, 0)))
    node.process_pending()
    (overlay,) = pubs["/ovseg/overlay"].messages
    assert (overlay.encoding, overlay.height, overlay.width, overlay.step) == ("rgb8", 24, 32, 96)
    assert overlay.header.stamp.sec == 101


def test_the_overlay_is_drawn_only_for_a_subscriber(make_node, monkeypatch):
    node, fake = make_node(vocabulary=["mug"])
    node.process_vocabulary()
    import sys

    drawn = []
    draw = sys.modules["ovseg_ros.node.outputs"].overlay
    monkeypatch.setattr(
        sys.modules["ovseg_ros.node.outputs"],
        "overlay",
        lambda rgb, result: drawn.append(rgb.shape) or draw(rgb, result),
    )
    overlay_pub = publishers(node)["/ovseg/overlay"]
    for second in (1, 2):
        subscription(node, "/image").deliver(frame(stamp=(second, 0)))
        assert node.process_pending()
    assert drawn == [] and overlay_pub.messages == []
    assert len(publishers(node)["/ovseg/panoptic"].messages) == 2
    overlay_pub.subscription_count = 1
    subscription(node, "/image").deliver(frame(stamp=(3, 0)))
    node.process_pending()
    assert drawn == [(24, 32, 3)] and len(overlay_pub.messages) == 1


def test_output_and_input_qos(make_node):
    node, _ = make_node()
    pubs = publishers(node)
    for topic in ("semantic", "instances", "panoptic", "detections", "overlay"):
        qos = pubs[f"/ovseg/{topic}"].qos_profile
        assert qos.reliability == ReliabilityPolicy.RELIABLE, topic
        assert qos.history.name == "KEEP_LAST" and qos.depth == 5, topic  # the last 5 frames
    latched = pubs["/ovseg/label_info"].qos_profile
    assert latched.durability.name == "TRANSIENT_LOCAL" and latched.depth == 1
    image_qos = subscription(node, "/image").qos_profile
    assert image_qos.reliability == ReliabilityPolicy.BEST_EFFORT  # SensorDataQoS
    assert "/diagnostics" in pubs

    reliable, _ = make_node(image_reliability="reliable")
    assert subscription(reliable, "/image").qos_profile.reliability == ReliabilityPolicy.RELIABLE
    with pytest.raises(Exception, match="image_transport must be one of raw, compressed"):
        make_node(image_transport="theora")


def test_compressed_input(make_node):
    node, fake = make_node(image_transport="compressed", vocabulary=["mug"])
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import Header

    node.process_vocabulary()
    topics = [s.topic_name for s in node.subscriptions]
    assert "/image/compressed" in topics and "/image" not in topics
    rgb = np.zeros((20, 28, 3), dtype=np.uint8)
    rgb[:, :14] = (250, 0, 0)
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    msg = CompressedImage(
        header=Header(frame_id="cam"), format="png", data=array.array("B", png.tobytes())
    )
    subscription(node, "/image/compressed").deliver(msg)
    node.process_pending()
    np.testing.assert_array_equal(fake.frames[-1][0], rgb)
    (semantic,) = publishers(node)["/ovseg/semantic"].messages
    assert (semantic.height, semantic.width, semantic.header.frame_id) == (20, 28, "cam")
    msg.data = array.array("B", b"garbage")
    subscription(node, "/image/compressed").deliver(msg)
    node.process_pending()
    assert any("could not decode the compressed image" in w for w in warnings(node))


def test_bad_frames_are_skipped_and_logged_once_per_cause(make_node):
    node, fake = make_node(vocabulary=["mug"])
    node.process_vocabulary()
    image_topic = subscription(node, "/image")
    bad = [frame(encoding="32FC1"), frame(encoding="32FC1"), frame(), frame(), frame()]
    bad[2].step = 10  # smaller than a row
    bad[3].data = array.array("B", bytes(50))  # truncated
    bad[4].width = 0
    for msg in bad:
        image_topic.deliver(msg)
        assert node.process_pending()
    skipped = [w for w in warnings(node) if w.startswith("skipping a frame")]
    assert len(skipped) == 4  # encoding (twice, logged once), step, truncated, size
    assert "unsupported encoding '32FC1'" in skipped[0]
    assert "step 10 is smaller than a row" in skipped[1]
    assert "truncated" in skipped[2] and "zero size" in skipped[3]
    assert fake.frames == [] and publishers(node)["/ovseg/semantic"].messages == []

    image_topic.deliver(frame())
    node.process_pending()
    assert len(publishers(node)["/ovseg/semantic"].messages) == 1
    timer(node, 1.0).fire()
    status = publishers(node)["/diagnostics"].messages[-1].status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert values["frames skipped (bad input)"] == "5"
    assert values["frames processed"] == "1"


def test_any_decoding_error_is_a_counted_skip(make_node, monkeypatch):
    node, fake = make_node(vocabulary=["mug"])
    node.process_vocabulary()
    from ovseg_ros.messages import convert

    def over_the_pixel_limit(msg):
        raise cv2.error("OpenCV(4.11) error: (-215:Assertion failed) pixels <= limit")

    decode = convert.image_to_rgb
    monkeypatch.setattr(convert, "image_to_rgb", over_the_pixel_limit)
    for _ in range(2):
        subscription(node, "/image").deliver(frame())
        assert node.process_pending()  # does not raise
    skipped = [w for w in warnings(node) if w.startswith("skipping a frame")]
    assert len(skipped) == 1 and "error" in skipped[0] and "\n" not in skipped[0]
    monkeypatch.setattr(convert, "image_to_rgb", decode)
    subscription(node, "/image").deliver(frame())
    node.process_pending()
    assert len(publishers(node)["/ovseg/panoptic"].messages) == 1
    values = {kv.key: kv.value for kv in diagnostics(node).values}
    assert values["frames skipped (bad input)"] == "2" and values["frames failed"] == "0"


def test_a_failing_pipeline_skips_the_frame_and_the_node_continues(make_node):
    node, fake = make_node(vocabulary=["mug"])
    node.process_vocabulary()
    fake.fail_next = True
    subscription(node, "/image").deliver(frame())
    node.process_pending()
    assert any("CUDA out of memory" in m for m in node.get_logger().messages("ERROR"))
    timer(node, 1.0).fire()
    from diagnostic_msgs.msg import DiagnosticStatus

    status = publishers(node)["/diagnostics"].messages[-1].status[0]
    assert status.level == DiagnosticStatus.ERROR
    subscription(node, "/image").deliver(frame())
    node.process_pending()
    assert len(publishers(node)["/ovseg/panoptic"].messages) == 1


def test_without_vocabulary_frames_are_published_unlabelled(make_node):
    node, fake = make_node()
    subscription(node, "/image").deliver(frame())
    node.process_pending()
    assert fake.frames == []  # no model run without classes
    (panoptic_msg,) = publishers(node)["/ovseg/panoptic"].messages
    assert list(panoptic_msg.vocabulary) == [] and panoptic_msg.vocabulary_version == 0
    assert np.all(label_image(panoptic_msg.semantic) == panoptic.UNLABELLED)
    assert any("no vocabulary set" in w for w in warnings(node))
    timer(node, 1.0).fire()
    status = publishers(node)["/diagnostics"].messages[-1].status[0]
    assert status.message == "no vocabulary: nothing is labelled"


def test_no_vocabulary_warning_while_the_initial_one_is_being_encoded(make_node):
    node, fake = make_node(vocabulary=["mug"])
    subscription(node, "/image").deliver(frame())
    node.process_pending()  # before the vocabulary thread has run
    assert not any("no vocabulary set" in w for w in warnings(node))
    assert any("still being encoded" in m for m in node.get_logger().messages("INFO"))
    timer(node, 1.0).fire()
    status = publishers(node)["/diagnostics"].messages[-1].status[0]
    assert status.message == "the vocabulary is being encoded: nothing is labelled yet"


def test_only_the_newest_frame_is_processed_and_drops_are_counted(make_node):
    node, fake = make_node(vocabulary=["mug"])
    node.process_vocabulary()
    for second in (1, 2, 3):
        subscription(node, "/image").deliver(frame(stamp=(second, 0)))
    assert node.process_pending()
    assert not node.process_pending()  # nothing queued behind it
    (panoptic_msg,) = publishers(node)["/ovseg/panoptic"].messages
    assert panoptic_msg.header.stamp.sec == 3
    timer(node, 1.0).fire()
    values = {
        kv.key: kv.value for kv in publishers(node)["/diagnostics"].messages[-1].status[0].values
    }
    assert values["frames dropped (a newer one arrived)"] == "2"
    assert values["frames received"] == "3"


def test_diagnostics_report_latency_fps_and_drops(make_node):
    node, fake = make_node(vocabulary=["mug"])
    from diagnostic_msgs.msg import DiagnosticStatus

    node.process_vocabulary()
    for second in range(3):
        subscription(node, "/image").deliver(frame(stamp=(second, 0)))
        node.process_pending()
    timer(node, 1.0).fire()
    array_msg = publishers(node)["/diagnostics"].messages[-1]
    (status,) = array_msg.status
    assert status.level == DiagnosticStatus.OK and status.name == "ovseg: segmentation"
    values = {kv.key: kv.value for kv in status.values}
    for stage in ("decode", "proposals", "classify", "fuse", "publish", "total"):
        assert float(values[f"latency {stage} (ms)"]) >= 0.0
    assert float(values["latency proposals (ms)"]) == pytest.approx(1.0)
    assert float(values["fps"]) > 0 and values["frames processed"] == "3"
    assert values["vocabulary version"] == "1" and values["classes"] == "1"
    assert values["device"] == "cpu" and values["input topic"] == "/image"
    assert any(" fps, " in m for m in node.get_logger().messages("INFO"))


def diagnostics(node):
    timer(node, 1.0).fire()
    return publishers(node)["/diagnostics"].messages[-1].status[0]


def test_diagnostics_warn_when_every_frame_is_skipped_and_when_frames_stop(make_node):
    node, fake = make_node(vocabulary=["mug"])
    from diagnostic_msgs.msg import DiagnosticStatus

    node.process_vocabulary()
    image_topic = subscription(node, "/image")
    for _ in range(3):
        image_topic.deliver(frame(encoding="32FC1"))
        node.process_pending()
    status = diagnostics(node)
    assert status.level == DiagnosticStatus.WARN
    assert "every frame was skipped" in status.message and "encoding" in status.message
    image_topic.deliver(frame())
    node.process_pending()
    assert diagnostics(node).level == DiagnosticStatus.OK  # a good frame in the window
    status = diagnostics(node)  # no frame since the last report
    assert status.level == DiagnosticStatus.WARN
    assert "no image received on /image in the last" in status.message
    values = {kv.key: kv.value for kv in status.values}
    assert values["frames received"] == "4" and values["fps"] == "0.00"


def test_no_frame_hint_names_the_likely_cause(make_node):
    from ros_standin.rclpy_standin import HistoryPolicy

    node, _ = make_node(image_reliability="reliable")
    hint_timer = timer(node, 5.0)
    hint_timer.fire()
    assert "nothing publishes it" in warnings(node)[-1]

    node, _ = make_node(image_reliability="reliable")
    best_effort = QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.BEST_EFFORT
    )
    GRAPH.add_publisher("/image", "sensor_msgs/msg/Image", best_effort)
    timer(node, 5.0).fire()
    assert (
        "reliability:=best_effort (parameter image_reliability:=best_effort)" in warnings(node)[-1]
    )

    GRAPH.publishers.clear()
    node, _ = make_node()
    GRAPH.add_publisher("/image", "sensor_msgs/msg/CompressedImage", best_effort)
    timer(node, 5.0).fire()
    assert "compressed:=true (parameter image_transport:=compressed)" in warnings(node)[-1]

    node_compressed, _ = make_node(image_transport="compressed")
    GRAPH.add_publisher("/image/compressed", "sensor_msgs/msg/Image", best_effort)
    timer(node_compressed, 5.0).fire()
    assert "compressed:=false (parameter image_transport:=raw)" in warnings(node_compressed)[-1]

    subscription(node, "/image").deliver(frame())
    timer(node, 5.0).fire()  # a frame arrived: the hint stops
    assert timer(node, 5.0).is_canceled()


# --------------------------------------------------------------------------- vocabularies
def test_a_new_vocabulary_is_used_from_the_frame_after_it_is_encoded(make_node):
    node, fake = make_node(vocabulary=["mug", "kettle"])
    node.process_vocabulary()
    image_topic = subscription(node, "/image")
    assert ros2_param_set(node, "vocabulary", "[door handle, backpack]").successful
    image_topic.deliver(frame(stamp=(1, 0)))
    node.process_pending()  # applies the change and asks for an encoding, labels with the old
    image_topic.deliver(frame(stamp=(2, 0)))
    node.process_pending()
    node.process_vocabulary()
    image_topic.deliver(frame(stamp=(3, 0)))
    node.process_pending()
    vocabularies = [list(m.vocabulary) for m in publishers(node)["/ovseg/panoptic"].messages]
    assert vocabularies == [["mug", "kettle"], ["mug", "kettle"], ["door handle", "backpack"]]
    label_info = publishers(node)["/ovseg/label_info"].messages[-1]
    assert [c.class_name for c in label_info.class_map] == ["door handle", "backpack", "unlabelled"]


def published_vocabulary(node):
    subscription(node, "/image").deliver(frame())
    assert node.process_pending()
    return list(publishers(node)["/ovseg/panoptic"].messages[-1].vocabulary)


def test_a_failed_encode_keeps_the_old_vocabulary_rolls_back_and_can_be_retried(make_node):
    node, fake = make_node(vocabulary=["mug"])
    assert node.process_vocabulary()
    fake.encode_failures = 1
    assert ros2_param_set(node, "vocabulary", "[kettle]").successful
    node.process_pending()
    assert node.process_vocabulary()
    assert any(
        "could not encode the vocabulary (kettle)" in m for m in node.get_logger().messages("ERROR")
    )
    assert node.get_parameter("vocabulary").value == ["mug"]  # the vocabulary in use
    assert published_vocabulary(node) == ["mug"]
    assert not node.process_vocabulary()  # the rollback asks for no encode
    set_vocabulary(node, "[kettle]")  # asking again retries
    assert published_vocabulary(node) == ["kettle"]
    assert node.get_parameter("vocabulary").value == ["kettle"]


def test_a_failed_initial_encode_rolls_back_to_none_and_can_be_retried(make_node):
    class FailingOnce(FakeSegmenter):
        encode_failures = 1

    node, fake = make_node(segmenter=FailingOnce, vocabulary=["mug", "kettle"])
    assert node.process_vocabulary()
    assert node.get_parameter("vocabulary").value == []
    assert published_vocabulary(node) == []
    set_vocabulary(node, "[mug, kettle]")
    assert published_vocabulary(node) == ["mug", "kettle"]


def test_label_info_names_the_vocabulary_in_use_whichever_thread_publishes_last(make_node):
    node, fake = make_node(vocabulary=["mug"])
    node.process_vocabulary()
    set_vocabulary_later = ros2_param_set(node, "vocabulary", "[kettle]")
    assert set_vocabulary_later.successful
    node.process_pending()  # kettle waits for the vocabulary thread
    label_info = publishers(node)["/ovseg/label_info"]
    publish = label_info.publish
    swap = threading.Thread(target=node.process_vocabulary)

    def worker_publish(msg):
        # While the worker publishes a threshold change, the vocabulary thread swaps kettle
        # in and publishes; give it the chance to publish first.
        if swap.ident is None:
            swap.start()
            swap.join(timeout=0.5)
        publish(msg)

    label_info.publish = worker_publish
    assert ros2_param_set(node, "unknown_thresh", "0.3").successful
    node.process_pending()
    swap.join(timeout=WAIT_S)
    assert swap.ident is not None and not swap.is_alive()
    latched = label_info.messages[-1]
    assert [c.class_name for c in latched.class_map][:-1] == ["kettle"]
    assert latched.threshold == pytest.approx(0.3)


def test_template_change_encodes_the_vocabulary_again(make_node):
    node, fake = make_node(vocabulary=["mug"])
    node.process_vocabulary()
    assert ros2_param_set(node, "templates", "single").successful
    node.process_pending()
    assert fake.settings.templates == "single"  # set before the encoding is asked for
    assert node.process_vocabulary()
    assert len(fake.encoded) == 2


def test_vocabulary_changes_never_mix_within_a_frame(make_node):
    """Worker and vocabulary threads run for real while the vocabulary keeps changing."""
    node, fake = make_node(vocabulary=["a0", "b0"])
    node.process_vocabulary()
    fake.encode_delay_s = 0.002
    node.start()
    image_topic = subscription(node, "/image")
    for step in range(1, 40):
        image_topic.deliver(frame(height=8, width=8, stamp=(step, 0)))
        result = ros2_param_set(
            node,
            "vocabulary",
            f"[a{step}, b{step}, c{step}]" if step % 2 else f"[a{step}, b{step}]",
        )
        assert result.successful
        time.sleep(0.001)
    panoptic_pub = publishers(node)["/ovseg/panoptic"]
    wait_until(lambda: fake.encoded[-1].vocabulary.names == ("a39", "b39", "c39"))
    image_topic.deliver(frame(height=8, width=8, stamp=(100, 0)))
    wait_until(lambda: any(m.header.stamp.sec == 100 for m in panoptic_pub.messages))
    node.stop()
    pubs = publishers(node)
    detections = {
        (d.header.stamp.sec, d.header.stamp.nanosec): d for d in pubs["/ovseg/detections"].messages
    }
    names_of_version = {}
    for msg in pubs["/ovseg/panoptic"].messages:
        names = list(msg.vocabulary)
        assert names_of_version.setdefault(msg.vocabulary_version, names) == names
        suffixes = {name[1:] for name in names}
        assert len(suffixes) == 1, f"one frame mixed vocabularies: {names}"
        semantic = label_image(msg.semantic)
        assert semantic[semantic != panoptic.UNLABELLED].max() < len(names)
        for instance in msg.instances:
            assert instance.label == names[instance.class_index]
        labels = [
            d.results[0].hypothesis.class_id
            for d in detections[(msg.header.stamp.sec, msg.header.stamp.nanosec)].detections
        ]
        assert set(labels) <= set(names)
    assert len(names_of_version) >= 2 and list(msg.vocabulary) == ["a39", "b39", "c39"]


def test_the_worker_thread_drops_stale_frames_under_a_slow_pipeline(make_node):
    node, fake = make_node(vocabulary=["mug"])
    node.process_vocabulary()
    entered, release = threading.Event(), threading.Event()

    def slow():
        entered.set()
        assert release.wait(WAIT_S)

    fake.gate = slow
    node.start()
    image_topic = subscription(node, "/image")
    image_topic.deliver(frame(stamp=(1, 0)))
    assert entered.wait(WAIT_S)  # frame 1 is being segmented
    for second in (2, 3, 4, 5):
        image_topic.deliver(frame(stamp=(second, 0)))
    fake.gate = None
    release.set()
    panoptic_pub = publishers(node)["/ovseg/panoptic"]
    wait_until(lambda: panoptic_pub.messages and panoptic_pub.messages[-1].header.stamp.sec == 5)
    timer(node, 1.0).fire()
    node.stop()
    # Frame 1's result is published, or replaced by frame 5's if that was segmented before
    # the output stage took frame 1's.
    published = [m.header.stamp.sec for m in panoptic_pub.messages]
    assert published in ([1, 5], [5])
    values = {
        kv.key: kv.value for kv in publishers(node)["/diagnostics"].messages[-1].status[0].values
    }
    assert values["frames dropped (a newer one arrived)"] == "3"
    assert values["results dropped (a newer one was segmented)"] == str(2 - len(published))


# ----------------------------------------------------------------- the real Segmenter
def test_nothing_is_published_after_stop_returns(make_node, monkeypatch):
    node, fake = make_node(vocabulary=["mug"])
    from ovseg_ros.runner import frame_runner

    monkeypatch.setattr(frame_runner, "STOP_JOIN_S", 0.1)
    node.process_vocabulary()
    entered, release = threading.Event(), threading.Event()
    fake.gate = lambda: entered.set() or release.wait(WAIT_S)
    node.start()
    subscription(node, "/image").deliver(frame())
    assert entered.wait(WAIT_S)  # the worker is inside a (slow) frame
    counts = {topic: len(p.messages) for topic, p in publishers(node).items()}
    node.stop()
    release.set()  # the frame finishes after stop() returned
    for thread in node._runner.threads:
        thread.join(WAIT_S)
        assert not thread.is_alive()
    timer(node, 1.0).fire()
    assert {topic: len(p.messages) for topic, p in publishers(node).items()} == counts


def real_segmenter(settings):
    from ovseg_ros.node.node import load_segmenter  # the node's own factory, once ROS is in place

    return load_segmenter(settings)


def test_real_segmenter_with_tiny_models_end_to_end(make_node, tiny_settings):
    defaults = Settings()
    tiny = tiny_settings.replace(points_per_side=4, templates="single")  # fewer CPU seconds
    overrides = {
        f.name: getattr(tiny, f.name)
        for f in dataclasses.fields(Settings)
        if getattr(tiny, f.name) != getattr(defaults, f.name)
    }
    node, segmenter = make_node(segmenter=real_segmenter, **overrides)
    assert type(segmenter).__name__ == "Segmenter"
    set_vocabulary(node, "[red square, blue square, background]")
    image = np.full((48, 64, 3), 20, dtype=np.uint8)
    image[5:25, 5:30] = (0, 0, 220)  # BGR: red
    image[25:45, 35:60] = (220, 60, 0)
    msg = frame(height=48, width=64)
    msg.data = array.array("B", image.tobytes())
    subscription(node, "/image").deliver(msg)
    assert node.process_pending()
    assert node.get_logger().messages("ERROR") == []
    pubs = publishers(node)
    (panoptic_msg,) = pubs["/ovseg/panoptic"].messages
    assert list(panoptic_msg.vocabulary) == ["red square", "blue square", "background"]
    semantic = label_image(panoptic_msg.semantic)
    instance_ids = label_image(panoptic_msg.instance)
    assert semantic.shape == instance_ids.shape == (48, 64)
    for instance in panoptic_msg.instances:
        pixels = instance_ids == instance.id
        assert instance.area == pixels.sum()
        if instance.area:
            assert np.all(semantic[pixels] == instance.class_index)
    (detections,) = pubs["/ovseg/detections"].messages
    assert {d.results[0].hypothesis.class_id for d in detections.detections} <= set(
        panoptic_msg.vocabulary
    )


def run_main(monkeypatch, ros_arguments, spin=None):
    """ovseg_ros.node.node.main as `ros2 run ovseg_ros ovseg_node --ros-args ...` runs it; spin is
    what happens while the node spins (then Ctrl-C)."""
    ros_standin.install(monkeypatch)
    from ros_standin import rclpy_standin

    if spin is not None:
        rclpy_standin.SPIN.append(spin)
    from ovseg_ros.node.node import main

    return main(["ovseg_node", "--ros-args", *ros_arguments])


def test_main_reports_missing_weights_in_one_line(monkeypatch, tmp_path):
    code = run_main(
        monkeypatch, ["-p", "offline:=true", "-p", f"cache_dir:={tmp_path}", "-p", "device:=cpu"]
    )
    assert code == 1
    fatal = [r.message for r in ros_standin.LOG if r.severity == "FATAL"]
    assert len(fatal) == 1 and fatal[0].startswith("cannot start: ")
    assert "sam_vit_b_01ec64.pth" in fatal[0] and str(tmp_path) in fatal[0]


@pytest.mark.parametrize(
    "argument, says",
    [
        ("granularity:=1", "expecting type 'DOUBLE'"),
        ("granularity:=1.5", "out of range"),
        ("max_classes:=0", "max_classes"),
    ],
)
def test_main_refuses_a_bad_start_parameter_in_one_line(monkeypatch, argument, says):
    assert run_main(monkeypatch, ["-p", argument]) == 1
    fatal = [r.message for r in ros_standin.LOG if r.severity == "FATAL"]
    assert len(fatal) == 1 and fatal[0].startswith("cannot start: ") and says in fatal[0]
    assert "\n" not in fatal[0]


def test_main_runs_the_threads_until_ctrl_c(monkeypatch, tiny_settings):
    tiny = tiny_settings.replace(points_per_side=4, templates="single")
    arguments = ["-p", "vocabulary:=[mug, kettle]"]
    for setting in settings_fields():
        value = getattr(tiny, setting.name)
        if value != getattr(Settings(), setting.name) and setting.type != "list":
            text = str(value).lower() if isinstance(value, bool) else str(value)
            arguments += ["-p", f"{setting.name}:={text}"]
    seen = {}

    def spin(node):
        panoptic_pub = publishers(node)["/ovseg/panoptic"]
        panoptic_pub.subscription_count = 1
        for second in range(1, 50):  # until the vocabulary thread has encoded the classes
            subscription(node, "/image").deliver(frame(stamp=(second, 0)))
            wait_until(lambda: len(panoptic_pub.messages) >= second)
            if panoptic_pub.messages[-1].vocabulary:
                break
        seen["node"], seen["panoptic"] = node, panoptic_pub.messages[-1]

    assert run_main(monkeypatch, arguments, spin) == 0
    assert list(seen["panoptic"].vocabulary) == ["mug", "kettle"]
    assert type(seen["node"]._segmenter).__name__ == "Segmenter"
    assert seen["node"].destroyed
    assert not any(thread.is_alive() for thread in seen["node"]._runner.threads)


# --------------------------------------------------------------- params file, launch file
def params_file():
    return REPO / "config" / "params.yaml"


def test_params_yaml_holds_the_settings_defaults_and_nothing_else():
    data = yaml.safe_load(params_file().read_text())
    assert list(data) == ["/**"], "one wildcard section, so any node name gets it"
    values = data["/**"]["ros__parameters"]
    defaults = Settings()
    for name, value in values.items():
        default = getattr(defaults, name)
        assert value == default, f"{name}: params.yaml has {value!r}, Settings {default!r}"
        assert type(value) is type(default), f"{name} must be written as {type(default)}"
    missing = {f.name for f in settings_fields()} - set(values)
    assert missing == {"vocabulary", "stuff_classes"}  # empty lists cannot be written
    assert settings_from_yaml(params_file()) == defaults


def test_params_yaml_documents_every_setting():
    lines = params_file().read_text().splitlines()
    for setting in settings_fields():
        key = next(
            i
            for i, line in enumerate(lines)
            if line.strip().lstrip("# ").startswith(f"{setting.name}:")
        )
        assert lines[key - 1].strip().startswith("#"), f"{setting.name} has no comment"
        comment = " ".join(line.strip("# ") for line in lines[max(0, key - 6) : key])
        assert ("[live" if setting.metadata["live"] else "[start") in comment, setting.name


def test_launch_file_declares_described_arguments():
    tree = ast.parse((REPO / "launch" / "segment.launch.py").read_text())
    declared = {}
    for call in ast.walk(tree):
        if (
            isinstance(call, ast.Call)
            and getattr(call.func, "id", "") == "DeclareLaunchArgument"
            and isinstance(call.args[0], ast.Constant)
        ):
            keywords = {k.arg for k in call.keywords}
            assert {"default_value", "description"} <= keywords, call.args[0].value
            declared[call.args[0].value] = keywords
    settings_arguments = next(
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and getattr(node.targets[0], "id", "") == "SETTING_ARGUMENTS"
    )
    declared.update({e.value: set() for e in settings_arguments.elts})
    assert {
        "image",
        "compressed",
        "vocabulary",
        "params_file",
        "namespace",
        "node_name",
        "reliability",
        "rviz",
        "device",
        "sam_model",
        "clip_model",
        "ovseg_checkpoint",
        "classifier_mode",
    } <= set(declared)
    assert {e.value for e in settings_arguments.elts} <= {f.name for f in settings_fields()}


def launch_function(name):
    """A function of launch/segment.launch.py, loaded without ROS (the file's imports need
    ament_index and launch; its functions need only yaml and the vocabulary reader)."""
    tree = ast.parse((REPO / "launch" / "segment.launch.py").read_text())
    function = next(
        node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == name
    )
    namespace = {"yaml": yaml, "parse_names": parse_names}
    exec(compile(ast.Module([function], type_ignores=[]), "segment.launch.py", "exec"), namespace)
    return namespace[name]


def test_launch_vocabulary_argument_keeps_every_class_name_a_string():
    vocabulary_argument = launch_function("vocabulary_argument")
    assert vocabulary_argument("[yes, no, null, true, off, 1.5, door handle]") == [
        "yes",
        "no",
        "null",
        "true",
        "off",
        "1.5",
        "door handle",
    ]
    assert vocabulary_argument("yes, no") == ["yes", "no"]
    assert vocabulary_argument("[]") == [] and vocabulary_argument("") == []


def test_launch_points_rviz_at_the_nodes_topics_and_shows_3d_with_depth_only(tmp_path):
    tree = ast.parse((REPO / "launch" / "segment.launch.py").read_text())
    namespace = {"yaml": yaml, "SHARE": REPO, "tempfile": tempfile}
    functions = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name in ("write_temporary", "rviz_config")
    ]
    exec(compile(ast.Module(functions, type_ignores=[]), "segment.launch.py", "exec"), namespace)
    for depth in (True, False):
        path = Path(namespace["rviz_config"]("/cam/color/image_raw", "/robot/seg", depth))
        displays = {
            d["Name"]: d
            for d in yaml.safe_load(path.read_text())["Visualization Manager"]["Displays"]
        }
        path.unlink()
        assert displays["Camera"]["Topic"]["Value"] == "/cam/color/image_raw"
        assert displays["Points"]["Topic"]["Value"] == "/robot/seg/points"
        assert displays["Markers"]["Topic"]["Value"] == "/robot/seg/markers"
        assert displays["Points"]["Enabled"] is displays["Markers"]["Value"] is depth
        assert displays["Overlay"]["Enabled"] is True


def test_rviz_config_shows_camera_overlay_and_semantic():
    config = yaml.safe_load((REPO / "config" / "ovseg.rviz").read_text())
    displays = {d["Name"]: d for d in config["Visualization Manager"]["Displays"]}
    assert set(displays) == {"Camera", "Overlay", "Semantic", "Points", "Markers"}
    for name in ("Camera", "Overlay", "Semantic"):
        assert displays[name]["Class"] == "rviz_default_plugins/Image"
    assert displays["Points"]["Class"] == "rviz_default_plugins/PointCloud2"
    assert displays["Markers"]["Class"] == "rviz_default_plugins/MarkerArray"
    for display in displays.values():
        assert display["Topic"]["Value"].startswith("/")
    assert displays["Camera"]["Topic"]["Reliability Policy"] == "Best Effort"
    assert displays["Overlay"]["Topic"]["Value"] == "/ovseg/overlay"


def test_outputs_nobody_subscribes_to_are_not_built(make_node, monkeypatch):
    """Only ~/label_info and /diagnostics go out for everyone; ~/semantic alone is built
    without the panoptic message around it."""
    node, fake = make_node(vocabulary=["mug"], subscribed=())
    node.process_vocabulary()
    outputs = sys.modules["ovseg_ros.node.outputs"]
    built = []
    for name in ("panoptic_message", "detections_message", "image_message"):
        original = getattr(outputs.convert, name)
        monkeypatch.setattr(
            outputs.convert,
            name,
            lambda *args, _name=name, _original=original, **kwargs: (
                built.append(_name) or _original(*args, **kwargs)
            ),
        )
    pubs = publishers(node)
    subscription(node, "/image").deliver(frame(stamp=(1, 0)))
    assert node.process_pending()
    timer(node, 1.0).fire()
    assert built == []
    assert {topic for topic, p in pubs.items() if p.messages} == {
        "/ovseg/label_info",
        "/diagnostics",
    }
    pubs["/ovseg/semantic"].subscription_count = 1
    subscription(node, "/image").deliver(frame(stamp=(2, 0)))
    assert node.process_pending()
    assert built == ["image_message"]
    (semantic,) = pubs["/ovseg/semantic"].messages
    assert semantic.header.stamp.sec == 2 and pubs["/ovseg/panoptic"].messages == []
