"""Bag out: a camera bag segmented into a rosbag2 bag, read back with rosbags: topics, types,
QoS, counts, headers and contents; mcap and sqlite3; a corrupt message skipped and counted;
an interrupted run leaves a readable bag."""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags")

from rosbags.highlevel import AnyReader
from rosbags.interfaces import QosDurability, QosReliability
from rosbags.rosbag2 import StoragePlugin, Writer

from ovseg_ros.offline import bag_types
from ovseg_ros.offline.bag_writer import BagWriter, segment_bag

REPO = Path(__file__).resolve().parent.parent
TOPIC = "/camera/color/image_raw"


def test_shipped_message_definitions_equal_the_package_msg_folder():
    shipped = bag_types.MSGDEFS_DIR / "ovseg_ros"
    names = sorted(p.name for p in (REPO / "msg").glob("*.msg"))
    assert names and sorted(p.name for p in shipped.glob("*.msg")) == names
    for name in names:
        assert (shipped / name).read_text() == (REPO / "msg" / name).read_text()


def camera_bag(path: Path, frames: int = 3, corrupt: int | None = None) -> list[np.ndarray]:
    """A bag of rgb8 images at stamps k s + 7 ns (log time k s + 1000 ns); message
    ``corrupt`` is cut short so it cannot be deserialized. Returns the images."""
    store = bag_types.typestore()
    types = bag_types.message_types(store)
    rng = np.random.default_rng(4)
    images = []
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection(TOPIC, "sensor_msgs/msg/Image", typestore=store)
        for k in range(frames):
            rgb = rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)
            images.append(rgb)
            msg = types.Image(
                header=bag_types.header(store, k * 10**9 + 7, "cam_optical"),
                height=20,
                width=28,
                encoding="rgb8",
                step=28 * 3,
                data=rgb.tobytes(),
            )
            raw = bytes(store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
            writer.write(connection, k * 10**9 + 1000, raw[:30] if k == corrupt else raw)
    return images


@pytest.fixture(scope="module")
def segmenter(tiny_settings):
    from ovseg_ros.segmentation.pipeline import Segmenter
    from ovseg_ros.segmentation.vocabulary import Vocabulary

    settings = tiny_settings.replace(templates="single")
    segmenter = Segmenter(settings)
    return segmenter, segmenter.encode_vocabulary(Vocabulary.from_settings("mug, chair", settings))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_segmented_bag_reads_back_like_the_live_node(tmp_path, segmenter, storage):
    seg, encoded = segmenter
    images = camera_bag(tmp_path / "in", corrupt=1)
    with BagWriter(tmp_path / "out", storage=storage, write_overlay=True) as writer:
        stats = segment_bag(seg, encoded, tmp_path / "in", TOPIC, writer, passthrough=True)
    assert stats.complete and stats.frames == 2
    assert len(stats.skipped) == 1 and "cannot deserialize" in stats.skipped[0]
    assert f"{TOPIC}@1000001000" in stats.skipped[0]

    expected_types = {
        "/ovseg/panoptic": "ovseg_ros/msg/PanopticSegmentation",
        "/ovseg/semantic": "sensor_msgs/msg/Image",
        "/ovseg/instances": "sensor_msgs/msg/Image",
        "/ovseg/detections": "vision_msgs/msg/Detection2DArray",
        "/ovseg/overlay": "sensor_msgs/msg/Image",
        "/ovseg/label_info": "vision_msgs/msg/LabelInfo",
        TOPIC: "sensor_msgs/msg/Image",
    }
    suffix = {"mcap": ".mcap", "sqlite3": ".db3"}[storage]
    assert any(p.suffix == suffix for p in (tmp_path / "out").iterdir())
    with AnyReader([tmp_path / "out"], default_typestore=bag_types.typestore()) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == expected_types
        counts = {c.topic: c.msgcount for c in reader.connections}
        assert counts == {**dict.fromkeys(expected_types, 2), "/ovseg/label_info": 1, TOPIC: 3}
        qos = {
            c.topic: c.ext.offered_qos_profiles[0] for c in reader.connections if c.topic != TOPIC
        }
        assert qos["/ovseg/label_info"].durability == QosDurability.TRANSIENT_LOCAL
        assert qos["/ovseg/label_info"].depth == 1
        assert all(q.reliability == QosReliability.RELIABLE for q in qos.values())
        assert qos["/ovseg/panoptic"].durability == QosDurability.VOLATILE
        by_topic: dict[str, list] = {}
        outputs = [c for c in reader.connections if c.topic != TOPIC]  # input passed as it was
        for connection, log_time, raw in reader.messages(connections=outputs):
            by_topic.setdefault(connection.topic, []).append(
                (log_time, reader.deserialize(raw, connection.msgtype))
            )

    label_info = by_topic["/ovseg/label_info"][0][1]
    assert [c.class_name for c in label_info.class_map] == ["mug", "chair", "unlabelled"]
    for (log_time, panoptic), k in zip(by_topic["/ovseg/panoptic"], (0, 2)):
        assert log_time == k * 10**9 + 1000
        assert (panoptic.header.stamp.sec, panoptic.header.stamp.nanosec) == (k, 7)
        assert panoptic.header.frame_id == "cam_optical"
        result = seg.segment(images[k], encoded)  # the oracle: the pipeline itself
        semantic = np.frombuffer(panoptic.semantic.data.tobytes(), "<u2").reshape(20, 28)
        np.testing.assert_array_equal(semantic, result.semantic)
        assert list(panoptic.vocabulary) == ["mug", "chair"]
        assert len(panoptic.instances) == len(result.instances)
    detections = [m for _, m in by_topic["/ovseg/detections"]]
    assert all(d.header.frame_id == "cam_optical" for d in detections)
    overlay = by_topic["/ovseg/overlay"][0][1]
    assert (overlay.encoding, overlay.height, overlay.width) == ("rgb8", 20, 28)


def test_interrupted_run_leaves_a_readable_bag(tmp_path, segmenter):
    seg, encoded = segmenter

    class Interrupting:
        settings = seg.settings
        calls = 0

        def segment(self, rgb, vocabulary):
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt
            return seg.segment(rgb, vocabulary)

    camera_bag(tmp_path / "in")
    writer = BagWriter(tmp_path / "out")
    with pytest.raises(KeyboardInterrupt):
        with writer:
            segment_bag(Interrupting(), encoded, tmp_path / "in", TOPIC, writer)
    assert not writer.stats.complete and "interrupted" in writer.stats.summary()
    with AnyReader([tmp_path / "out"], default_typestore=bag_types.typestore()) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts["/ovseg/panoptic"] == 1 and counts["/ovseg/label_info"] == 1


def test_existing_output_folder_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="remove it or choose another"):
        BagWriter(tmp_path / "out")


def test_ovseg_segment_bag_out(tmp_path, tiny_settings, capsys):
    """--bag-out: one input bag -> that folder is the bag (sqlite3 on request), the corrupt
    message reported; an existing output or a non-bag input is refused before any work."""
    from ovseg_ros.offline import cli

    s = tiny_settings
    flags = [
        "--cache-dir",
        s.cache_dir,
        "--clip-model",
        s.clip_model,
        "--clip-pretrained",
        s.clip_pretrained,
        "--offline",
        "--device",
        "cpu",
        "--points-per-side",
        str(s.points_per_side),
        "--pred-iou-thresh",
        "0",
        "--stability-score-thresh",
        "0",
        "--templates",
        "single",
        "--vocab",
        "mug, chair",
        "--quiet",
    ]
    camera_bag(tmp_path / "in", corrupt=2)
    out = tmp_path / "seg"
    assert (
        cli.main([str(tmp_path / "in"), "--bag-out", str(out), "--bag-storage", "sqlite3", *flags])
        == 0
    )
    err = capsys.readouterr().err
    assert "2 frame(s) written, 1 input message(s) skipped" in err
    with AnyReader([out], default_typestore=bag_types.typestore()) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts["/ovseg/panoptic"] == 2 and TOPIC not in counts
    assert any(p.suffix == ".db3" for p in out.iterdir())
    assert cli.main([str(tmp_path / "in"), "--bag-out", str(out), *flags]) == 2
    assert "exists; rosbag2 writes a new folder" in capsys.readouterr().err
    picture = tmp_path / "a.png"
    picture.write_bytes((REPO / "examples" / "desk.jpg").read_bytes())
    assert cli.main([str(picture), "--bag-out", str(tmp_path / "x"), *flags]) == 2
    assert "every input must be a rosbag2 bag" in capsys.readouterr().err
    # An input bag that yields no frame (its only image cannot be read) fails the run
    # (exit 1), and the other bag is still written.
    camera_bag(tmp_path / "dead", frames=1, corrupt=0)
    both = tmp_path / "both"
    assert (
        cli.main([str(tmp_path / "in"), str(tmp_path / "dead"), "--bag-out", str(both), *flags])
        == 1
    )
    capsys.readouterr()
    with AnyReader([both / "in"], default_typestore=bag_types.typestore()) as reader:
        assert {c.topic: c.msgcount for c in reader.connections}["/ovseg/panoptic"] == 2
