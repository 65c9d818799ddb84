"""Start the ovseg segmentation node, and rviz if asked.

    ros2 launch ovseg_ros segment.launch.py image:=/camera/color/image_raw \\
        vocabulary:="[mug, kettle, person]" rviz:=true
    ros2 launch ovseg_ros segment.launch.py image:=/camera/color/image_raw \\
        depth:=/camera/aligned_depth_to_color/image_raw vocabulary:="[mug, chair]"
    ros2 launch ovseg_ros segment.launch.py lifecycle:=true autostart:=true   # managed node
    ros2 launch ovseg_ros segment.launch.py --show-args     # every argument, described

Settings come from params_file (config/params.yaml by default); the vocabulary, device and
model arguments override it when given. Node settings not listed here: edit a copy of the
params file, or change live ones with ros2 param set.
"""

import tempfile
from pathlib import Path

import yaml
from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

from launch import LaunchDescription
from ovseg_ros.segmentation.vocabulary_text import parse_names
from ovseg_ros.settings.config import settings_fields

PACKAGE = "ovseg_ros"
SHARE = Path(get_package_share_directory(PACKAGE))
SETTINGS = {f.name: f for f in settings_fields()}
# Settings that are launch arguments; empty means "as in the params file".
SETTING_ARGUMENTS = (
    "device",
    "sam_model",
    "sam_checkpoint",
    "clip_model",
    "clip_pretrained",
    "ovseg_checkpoint",
    "classifier_mode",
    "precision",
)
TRUE = ("true", "1", "yes", "on")


def setting_help(name: str) -> str:
    meta = SETTINGS[name].metadata
    choices = f" One of: {', '.join(meta['choices'])}." if "choices" in meta else ""
    return f"{meta['description']}{choices} Empty: the params file's value."


ARGUMENTS = [
    DeclareLaunchArgument(
        "image",
        default_value="/camera/image_raw",
        description="Camera image topic (sensor_msgs/Image). With compressed:=true the node "
        "subscribes to <image>/compressed instead.",
    ),
    DeclareLaunchArgument(
        "compressed",
        default_value="false",
        choices=["true", "false"],
        description="true: read sensor_msgs/CompressedImage (JPEG/PNG) from <image>/compressed.",
    ),
    DeclareLaunchArgument(
        "depth",
        default_value="",
        description="Depth image topic (sensor_msgs/Image, 16UC1 millimetres or 32FC1 metres) "
        "registered to the colour image, e.g. "
        "/camera/aligned_depth_to_color/image_raw. Given: 3D per instance, "
        "<node>/points, <node>/markers and <node>/detections_3d. Empty: no depth.",
    ),
    DeclareLaunchArgument(
        "camera_info",
        default_value="",
        description="The colour camera's CameraInfo topic, used with depth. Empty: "
        "camera_info next to the image topic (/camera/color/image_raw -> "
        "/camera/color/camera_info).",
    ),
    DeclareLaunchArgument(
        "vocabulary",
        default_value="",
        description="Classes to segment: '[mug, door handle]' or 'mug, door handle'. Empty: "
        'none yet (set later with ros2 param set NODE vocabulary "[...]" or on '
        "the <node>/vocabulary topic).",
    ),
    DeclareLaunchArgument(
        "params_file",
        default_value=str(SHARE / "config" / "params.yaml"),
        description="ROS parameters file with the node's settings (see config/params.yaml).",
    ),
    DeclareLaunchArgument(
        "namespace", default_value="", description="Namespace of the node and of its topics."
    ),
    DeclareLaunchArgument(
        "node_name",
        default_value="ovseg",
        description="Node name; topics are <namespace>/<node_name>/semantic etc.",
    ),
    DeclareLaunchArgument(
        "reliability",
        default_value="best_effort",
        choices=["best_effort", "reliable"],
        description="QoS reliability of the image, depth and camera_info subscriptions. "
        "best_effort (SensorDataQoS) matches every camera; reliable receives "
        "nothing from best-effort publishers.",
    ),
    DeclareLaunchArgument(
        "lifecycle",
        default_value="false",
        choices=["true", "false"],
        description="true: a managed (lifecycle) node, unconfigured at start: configure "
        "loads the models, activate starts the frames, deactivate stops them, "
        "cleanup frees the models (ros2 lifecycle set NODE configure, or a "
        "lifecycle manager). false: a plain node that runs from start to exit.",
    ),
    DeclareLaunchArgument(
        "autostart",
        default_value="false",
        choices=["true", "false"],
        description="With lifecycle:=true: configure, then activate, the node at launch (as "
        "nav2's lifecycle manager does with autostart).",
    ),
    DeclareLaunchArgument(
        "rviz",
        default_value="false",
        choices=["true", "false"],
        description="true: also start rviz2 showing the camera image, the overlay and the "
        "semantic image.",
    ),
    *[
        DeclareLaunchArgument(name, default_value="", description=setting_help(name))
        for name in SETTING_ARGUMENTS
    ],
]


def vocabulary_argument(text: str) -> list[str]:
    """'[mug, door handle]' (YAML list), 'mug, door handle' or '' -> the names, read by the
    same parser as the CLI and the vocabulary topic (a class called yes stays 'yes')."""
    return parse_names(text)


def node_path(namespace: str, node_name: str) -> str:
    namespace = namespace.strip("/")
    return f"/{namespace}/{node_name}" if namespace else f"/{node_name}"


def write_temporary(text: str, suffix: str) -> str:
    with tempfile.NamedTemporaryFile("w", prefix="ovseg_", suffix=suffix, delete=False) as handle:
        handle.write(text)
        return handle.name


def rviz_config(image_topic: str, node: str, depth: bool) -> str:
    """config/ovseg.rviz with its displays pointed at this launch's topics (the 3D ones
    enabled with depth only)."""
    config = yaml.safe_load((SHARE / "config" / "ovseg.rviz").read_text())
    topics = {
        "Camera": image_topic,
        "Overlay": f"{node}/overlay",
        "Semantic": f"{node}/semantic",
        "Points": f"{node}/points",
        "Markers": f"{node}/markers",
    }
    for display in config["Visualization Manager"]["Displays"]:
        if display.get("Name") in topics:
            display["Topic"]["Value"] = topics[display["Name"]]
        if display.get("Name") in ("Points", "Markers"):
            display["Enabled"] = display["Value"] = depth
    return write_temporary(yaml.safe_dump(config, sort_keys=False), ".rviz")


def autostart(node: LifecycleNode) -> list:
    """Configure the managed node at once, and activate it when it reaches inactive."""

    def transition(transition_id: int) -> EmitEvent:
        return EmitEvent(
            event=ChangeState(
                lifecycle_node_matcher=matches_action(node), transition_id=transition_id
            )
        )

    return [
        RegisterEventHandler(
            OnStateTransition(
                target_lifecycle_node=node,
                goal_state="inactive",
                entities=[transition(Transition.TRANSITION_ACTIVATE)],
            )
        ),
        transition(Transition.TRANSITION_CONFIGURE),
    ]


def launch_setup(context, *args, **kwargs):
    def argument(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    compressed = argument("compressed").lower() in TRUE
    image = argument("image")
    overrides = {name: argument(name) for name in SETTING_ARGUMENTS if argument(name)}
    vocabulary = vocabulary_argument(argument("vocabulary"))
    if vocabulary:
        overrides["vocabulary"] = vocabulary
    overrides["image_transport"] = "compressed" if compressed else "raw"
    overrides["image_reliability"] = argument("reliability")
    depth = argument("depth")
    overrides["use_depth"] = bool(depth)
    if argument("camera_info"):
        overrides["camera_info_topic"] = argument("camera_info")
    # A params file keeps strings strings (a class called 'yes' stays a string).
    overrides_file = write_temporary(
        yaml.safe_dump({"/**": {"ros__parameters": overrides}}), ".yaml"
    )

    common = dict(
        package=PACKAGE,
        name=argument("node_name"),
        namespace=argument("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[argument("params_file"), overrides_file],
        remappings=[
            ("image", image),
            ("image/compressed", f"{image}/compressed"),
            *([("depth", depth)] if depth else []),
        ],
    )
    if argument("lifecycle").lower() in TRUE:
        node = LifecycleNode(executable="ovseg_lifecycle_node", **common)
        actions = [node]
        if argument("autostart").lower() in TRUE:
            actions += autostart(node)
    else:
        actions = [Node(executable="ovseg_node", **common)]
    if argument("rviz").lower() in TRUE:
        config = rviz_config(
            image, node_path(argument("namespace"), argument("node_name")), bool(depth)
        )
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                arguments=["-d", config],
                output="screen",
            )
        )
    return actions


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([*ARGUMENTS, OpaqueFunction(function=launch_setup)])
