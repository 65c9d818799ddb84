"""The real node with depth on a real graph: colour (best effort), registered depth (reliable:
another QoS) and CameraInfo (the colour topic's sibling, found without being named) published
with the clock's stamps and a few milliseconds of jitter, in varying order. The synchroniser
pairs them (also JPEG colour on <image>/compressed with raw depth); ~/panoptic carries centroids
in metres, ~/points is read back with sensor_msgs_py's reader, ~/markers and ~/detections_3d
follow the instances. Then what users get wrong: depth stamped from another clock (the hint
names the clocks), no depth publisher, best-effort depth for a reliable node (the QoS hint), no
CameraInfo, and depth of another size (refused with one line, frames still published). Tracking
ids ride along, and turning the live track parameter off and on again gives ids never used. The
nodes start in parallel and share the module."""

from __future__ import annotations

import math
import random
import subprocess

import cv2
import numpy as np
import pytest
from graph_support import STARTUP_TIMEOUT_S, spin_until  # skips without ROS 2

# isort: split
from rclpy.duration import Duration
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from sensor_msgs_py import point_cloud2
from vision_msgs.msg import Detection2DArray, Detection3DArray
from visualization_msgs.msg import Marker, MarkerArray

from ovseg_ros.msg import PanopticSegmentation

HEIGHT, WIDTH = 48, 64
FRAME_ID = "graph_depth_optical_frame"
FX, FY, CX, CY = 60.0, 60.0, 32.0, 24.0
DEPTH_MM = 1500
HINT_TIMEOUT_S = STARTUP_TIMEOUT_S + 30.0
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# name: (node parameters, what is published: depth size, depth clock offset s, CameraInfo)
CASES = {
    "graph_depth": ({"track": "true"}, (HEIGHT, WIDTH), 0.0, True),
    "graph_depth_clock": ({}, (HEIGHT, WIDTH), 3.0, True),
    "graph_depth_none": ({}, None, 0.0, True),
    "graph_depth_noinfo": ({}, (HEIGHT, WIDTH), 0.0, False),
    "graph_depth_size": ({}, (HEIGHT // 2, WIDTH // 2), 0.0, True),
    # a reliable node, a reliable colour camera, and best-effort depth: no depth arrives
    "graph_depth_qos": ({"image_reliability": "reliable"}, (HEIGHT, WIDTH), 0.0, True),
    # JPEG colour on <image>/compressed with raw depth; CameraInfo next to the base topic
    "graph_depth_jpeg": ({"image_transport": "compressed"}, (HEIGHT, WIDTH), 0.0, True),
}


def colour_image(compressed: bool = False) -> Image | CompressedImage:
    image = np.full((HEIGHT, WIDTH, 3), 20, dtype=np.uint8)
    image[5:25, 5:30] = (0, 0, 220)
    image[28:44, 34:60] = (30, 200, 30)
    if compressed:
        msg = CompressedImage(format="bgr8; jpeg compressed bgr8")
        msg.data.frombytes(cv2.imencode(".jpg", image)[1].tobytes())
    else:
        msg = Image(height=HEIGHT, width=WIDTH, encoding="bgr8", step=WIDTH * 3)
        msg.data.frombytes(image.tobytes())
    msg.header.frame_id = FRAME_ID
    return msg


def depth_image(height: int, width: int) -> Image:
    millimetres = np.full((height, width), DEPTH_MM, dtype=np.uint16)
    millimetres[::7, ::5] = 0  # holes: no reading
    msg = Image(height=height, width=width, encoding="16UC1", step=width * 2)
    msg.header.frame_id = FRAME_ID
    msg.data.frombytes(millimetres.tobytes())
    return msg


def camera_info() -> CameraInfo:
    msg = CameraInfo(width=WIDTH, height=HEIGHT, distortion_model="plumb_bob")
    msg.header.frame_id = FRAME_ID
    msg.k = [FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]
    msg.p = [FX, 0.0, CX, 0.0, 0.0, FY, CY, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


class Camera:
    """A depth camera driver's publishers for one node: colour best effort, depth and
    CameraInfo reliable; each frame stamped now, depth off by jitter (and a clock offset)."""

    def __init__(
        self,
        ros,
        name: str,
        depth_size,
        clock_offset_s: float,
        info: bool,
        reliable_node: bool = False,
        compressed: bool = False,
    ):
        self.ros = ros
        # A reliable node gets reliable colour and best-effort depth; else the other way.
        colour_qos, depth_qos = (
            (RELIABLE, qos_profile_sensor_data)
            if reliable_node
            else (qos_profile_sensor_data, RELIABLE)
        )
        self.colour = ros.create_publisher(
            CompressedImage if compressed else Image,
            f"/{name}/color/image_raw" + ("/compressed" if compressed else ""),
            colour_qos,
        )
        self.depth = (
            ros.create_publisher(Image, f"/{name}/aligned_depth/image_raw", depth_qos)
            if depth_size
            else None
        )
        self.info = (
            ros.create_publisher(CameraInfo, f"/{name}/color/camera_info", RELIABLE)
            if info
            else None
        )
        self.colour_msg = colour_image(compressed)
        self.depth_msg = depth_image(*depth_size) if depth_size else None
        self.info_msg = camera_info()
        self.offset = Duration(nanoseconds=int(clock_offset_s * 1e9))
        self.random = random.Random(name)
        self.stamps: list[tuple[int, int]] = []

    def publish(self) -> None:
        now = self.ros.get_clock().now()
        jitter = Duration(nanoseconds=int(self.random.uniform(-0.008, 0.008) * 1e9))
        self.colour_msg.header.stamp = self.info_msg.header.stamp = now.to_msg()
        self.stamps.append((now.to_msg().sec, now.to_msg().nanosec))
        sends = [lambda: self.colour.publish(self.colour_msg)]
        if self.depth is not None:
            self.depth_msg.header.stamp = (now + jitter + self.offset).to_msg()
            sends.append(lambda: self.depth.publish(self.depth_msg))
        if self.info is not None:
            sends.append(lambda: self.info.publish(self.info_msg))
        self.random.shuffle(sends)  # drivers publish the three in any order
        for send in sends:
            send()


@pytest.fixture(scope="module")
def graph(start_node, ros):
    nodes, cameras, received = {}, {}, {}
    for name, (parameters, depth_size, offset, info) in CASES.items():
        compressed = parameters.get("image_transport") == "compressed"
        nodes[name] = start_node(
            name,
            f"/{name}/color/image_raw" + ("/compressed" if compressed else ""),
            remaps={"depth": f"/{name}/aligned_depth/image_raw"},
            use_depth="true",
            **parameters,
        )
        cameras[name] = Camera(
            ros,
            name,
            depth_size,
            offset,
            info,
            reliable_node="image_reliability" in parameters,
            compressed=compressed,
        )
        outputs = (
            ("panoptic", PanopticSegmentation),
            ("points", PointCloud2),
            ("markers", MarkerArray),
            ("detections_3d", Detection3DArray),
            ("semantic", Image),
            ("detections", Detection2DArray),
        )
        received[name] = {topic: [] for topic, _ in outputs}
        for topic, msg_type in outputs:
            ros.create_subscription(msg_type, f"/{name}/{topic}", received[name][topic].append, 10)
    assert spin_until(
        ros,
        lambda: all(c.colour.get_subscription_count() for c in cameras.values()),
        STARTUP_TIMEOUT_S,
    ), "a node never subscribed:\n" + "\n".join(n.log()[-2000:] for n in nodes.values())
    # A driver's CameraInfo is out before the first frames (the drivers then publish the
    # three in any order): a pair before any CameraInfo is a start-up case of its own.
    with_info = [c for c in cameras.values() if c.info is not None]
    assert spin_until(
        ros, lambda: all(c.info.get_subscription_count() for c in with_info), STARTUP_TIMEOUT_S
    )
    for camera in with_info:
        camera.info.publish(camera.info_msg)
    spin_until(ros, lambda: False, 0.5)
    yield nodes, cameras, received


def publish_until(ros, cameras, condition, timeout_s=HINT_TIMEOUT_S) -> bool:
    return spin_until(
        ros,
        condition,
        timeout_s,
        every=lambda: [camera.publish() for camera in cameras.values()],
        every_s=0.1,
    )


def test_colour_and_depth_pair_up_and_instances_get_centroids_in_metres(graph, ros):
    nodes, cameras, received = graph
    out = received["graph_depth"]
    assert publish_until(ros, cameras, lambda: all(out[t] for t in out)), nodes[
        "graph_depth"
    ].log()[-3000:]
    panoptic = out["panoptic"][-1]
    stamp = (panoptic.header.stamp.sec, panoptic.header.stamp.nanosec)
    assert stamp in cameras["graph_depth"].stamps  # the colour frame's header, not depth's
    assert panoptic.header.frame_id == FRAME_ID
    located = [i for i in panoptic.instances if i.valid_depth_points]
    assert located, "the tiny models found no instance with depth"
    for instance in located:
        assert instance.centroid.z == pytest.approx(DEPTH_MM / 1000.0)
        box = instance.bbox
        left = (box.x_offset - CX) * 1.5 / FX
        right = (box.x_offset + box.width - 1 - CX) * 1.5 / FX
        assert left - 1e-6 <= instance.centroid.x <= right + 1e-6
        assert 0 < instance.valid_depth_points < instance.area  # the holes are not counted
    log = nodes["graph_depth"].log()
    assert "/graph_depth/color/camera_info" in log  # found as the colour topic's sibling
    assert "none paired" not in log and "no 3D" not in log


def test_points_are_read_back_by_sensor_msgs_py(graph, ros):
    nodes, cameras, received = graph
    out = received["graph_depth"]
    assert publish_until(ros, cameras, lambda: out["points"]), nodes["graph_depth"].log()
    cloud = out["points"][-1]
    assert cloud.header.frame_id == FRAME_ID and cloud.height == 1 and cloud.is_dense
    assert [f.name for f in cloud.fields] == [
        "x",
        "y",
        "z",
        "rgb",
        "class_index",
        "instance_id",
        "track_id",
    ]
    points = point_cloud2.read_points(cloud, skip_nans=True)
    sampled = np.full((HEIGHT, WIDTH), DEPTH_MM)[::4, ::4]  # points_stride 4
    sampled[(np.arange(HEIGHT)[::4] % 7 == 0)[:, None] & (np.arange(WIDTH)[::4] % 5 == 0)] = 0
    assert len(points) == int((sampled > 0).sum())
    assert np.allclose(points["z"], 1.5)
    columns = np.round(points["x"] * FX / 1.5 + CX).astype(int)
    rows = np.round(points["y"] * FY / 1.5 + CY).astype(int)
    assert set(columns) <= set(range(0, WIDTH, 4)) and set(rows) <= set(range(0, HEIGHT, 4))
    red = points[(rows == 8) & (columns == 8)]  # inside the red patch (BGR 0, 0, 220)
    assert red["rgb"].view(np.uint32)[0] == 220 << 16
    panoptic = next(p for p in reversed(out["panoptic"]) if p.header == cloud.header)
    instance_image = np.frombuffer(panoptic.instance.data, np.uint16).reshape(HEIGHT, WIDTH)
    np.testing.assert_array_equal(points["instance_id"], instance_image[rows, columns])


def test_markers_and_3d_detections_follow_the_located_instances(graph, ros):
    nodes, cameras, received = graph
    out = received["graph_depth"]
    assert publish_until(ros, cameras, lambda: out["markers"] and out["detections_3d"])
    markers = out["markers"][-1]
    panoptic = next(p for p in reversed(out["panoptic"]) if p.header == markers.markers[0].header)
    located = {i.track_id: i for i in panoptic.instances if not math.isnan(i.centroid.z)}
    assert markers.markers[0].action == Marker.DELETEALL
    boxes = [m for m in markers.markers if m.ns == "boxes"]
    assert {m.id for m in boxes} == set(located)  # tracking is on: the track ids
    for box in boxes:
        assert box.pose.position.z == pytest.approx(located[box.id].centroid.z)
    detections = next(d for d in reversed(out["detections_3d"]) if d.header == panoptic.header)
    assert {d.id for d in detections.detections} == {str(i) for i in located}


def test_depth_from_another_clock_gives_a_hint_naming_the_clocks(graph, ros):
    nodes, cameras, received = graph
    node = nodes["graph_depth_clock"]
    assert publish_until(ros, cameras, lambda: "none paired" in node.log()), node.log()[-3000:]
    assert "different clocks" in node.log() and "use_sim_time" in node.log()
    assert not received["graph_depth_clock"]["panoptic"]


def test_no_depth_publisher_gives_a_hint(graph, ros):
    nodes, cameras, _received = graph
    node = nodes["graph_depth_none"]
    assert publish_until(ros, cameras, lambda: "no depth image on" in node.log()), node.log()[
        -3000:
    ]
    assert "/graph_depth_none/aligned_depth/image_raw: nothing publishes it" in node.log()


def test_no_camera_info_gives_a_hint_and_frames_without_3d(graph, ros):
    nodes, cameras, received = graph
    node = nodes["graph_depth_noinfo"]
    out = received["graph_depth_noinfo"]
    assert publish_until(
        ros, cameras, lambda: "no CameraInfo on" in node.log() and out["panoptic"]
    ), node.log()[-3000:]
    assert (
        "no CameraInfo on /graph_depth_noinfo/color/camera_info, so nothing is placed in "
        "3D: nothing publishes it" in node.log()
    )
    # Each pair is segmented and published without 3D; the cause is logged once.
    assert node.log().count("no CameraInfo has arrived yet") == 1, node.log()[-3000:]
    assert all(math.isnan(i.centroid.z) for i in out["panoptic"][-1].instances)
    every_output_but_points(ros, cameras, out)


def every_output_but_points(ros, cameras, out) -> None:
    """A frame without 3D, with ~/points subscribed: its semantic image, panoptic,
    detections, markers (DELETEALL: the last boxes go) and 3D detections (none) are
    published; only the point cloud is left out."""
    topics = ("panoptic", "semantic", "detections", "markers", "detections_3d")

    def stamp_of(msg) -> tuple[int, int]:
        header = msg.markers[0].header if isinstance(msg, MarkerArray) else msg.header
        return header.stamp.sec, header.stamp.nanosec

    def common() -> set[tuple[int, int]]:
        stamps = [
            {stamp_of(m) for m in out[t] if not isinstance(m, MarkerArray) or m.markers}
            for t in topics
        ]
        return set.intersection(*stamps)

    assert publish_until(ros, cameras, lambda: common())
    stamp = max(common())
    markers = next(m for m in out["markers"] if m.markers and stamp_of(m) == stamp)
    assert [m.action for m in markers.markers] == [Marker.DELETEALL]
    assert all(not d.detections for d in out["detections_3d"])
    assert not out["points"]


def test_depth_of_another_size_is_refused_once_and_frames_go_on(graph, ros):
    nodes, cameras, received = graph
    node = nodes["graph_depth_size"]
    out = received["graph_depth_size"]
    assert publish_until(ros, cameras, lambda: len(out["panoptic"]) >= 3), node.log()[-3000:]
    assert node.log().count("depth is 32x24 but colour is 64x48") == 1
    assert all(math.isnan(i.centroid.z) for p in out["panoptic"] for i in p.instances)
    every_output_but_points(ros, cameras, out)
    assert node.process.poll() is None  # still running


def test_track_ids_stay_with_the_objects_of_a_still_scene(graph, ros):
    nodes, cameras, received = graph
    out = received["graph_depth"]
    count = len(out["panoptic"])
    assert publish_until(ros, cameras, lambda: len(out["panoptic"]) >= count + 3)
    first, *later = out["panoptic"][count:]
    ids = [i.track_id for i in first.instances]
    assert ids and all(ids) and len(set(ids)) == len(ids)
    for panoptic in later:  # the same image every frame: the same objects, the same ids
        assert [i.track_id for i in panoptic.instances] == ids


def ros2_param_set(node: str, name: str, value: str) -> None:
    done = subprocess.run(
        ["ros2", "param", "set", node, name, value], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "Set parameter successful" in done.stdout, done


def test_track_off_then_on_again_gives_ids_never_used(graph, ros):
    nodes, cameras, received = graph
    out = received["graph_depth"]
    assert publish_until(ros, cameras, lambda: out["panoptic"] and out["panoptic"][-1].instances)
    used = max(i.track_id for p in out["panoptic"] for i in p.instances)
    ros2_param_set("/graph_depth", "track", "false")
    assert publish_until(
        ros,
        cameras,
        lambda: (
            out["panoptic"][-1].instances
            and all(i.track_id == 0 for i in out["panoptic"][-1].instances)
        ),
    ), nodes["graph_depth"].log()
    ros2_param_set("/graph_depth", "track", "true")
    assert publish_until(
        ros,
        cameras,
        lambda: (
            out["panoptic"][-1].instances and all(i.track_id for i in out["panoptic"][-1].instances)
        ),
    ), nodes["graph_depth"].log()
    assert min(i.track_id for i in out["panoptic"][-1].instances) > used


def test_best_effort_depth_for_a_reliable_node_gives_the_qos_hint(graph, ros):
    nodes, cameras, received = graph
    node = nodes["graph_depth_qos"]
    assert publish_until(ros, cameras, lambda: "offer best-effort QoS" in node.log()), node.log()[
        -3000:
    ]
    assert "no depth image on /graph_depth_qos/aligned_depth/image_raw" in node.log()
    assert "reliability:=best_effort" in node.log()
    assert not received["graph_depth_qos"]["panoptic"]


def test_compressed_colour_pairs_with_raw_depth(graph, ros):
    nodes, cameras, received = graph
    out = received["graph_depth_jpeg"]
    assert publish_until(
        ros,
        cameras,
        lambda: any(i.valid_depth_points for p in out["panoptic"] for i in p.instances),
    ), nodes["graph_depth_jpeg"].log()[-3000:]
    located = [i for p in out["panoptic"] for i in p.instances if i.valid_depth_points]
    assert all(i.centroid.z == pytest.approx(DEPTH_MM / 1000.0) for i in located)
    assert "CameraInfo /graph_depth_jpeg/color/camera_info" in nodes["graph_depth_jpeg"].log()
