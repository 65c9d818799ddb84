"""The message classes of the ROS installation as a convert.MessageTypes (the only place
the converters' classes come from rclpy's generated modules)."""

from __future__ import annotations

from ..messages.convert import MessageTypes


def ros_message_types() -> MessageTypes:
    """The classes of the ROS installation (or of the stand-in modules in tests)."""
    from geometry_msgs.msg import Point, Pose, PoseWithCovariance, Quaternion, Vector3
    from sensor_msgs.msg import Image, RegionOfInterest
    from std_msgs.msg import ColorRGBA
    from vision_msgs.msg import (
        BoundingBox2D,
        BoundingBox3D,
        Detection2D,
        Detection2DArray,
        Detection3D,
        Detection3DArray,
        LabelInfo,
        ObjectHypothesis,
        ObjectHypothesisWithPose,
        Point2D,
        Pose2D,
        VisionClass,
    )
    from visualization_msgs.msg import Marker, MarkerArray

    from ovseg_ros.msg import PanopticSegmentation, SegmentedInstance

    return MessageTypes(
        Image=Image,
        RegionOfInterest=RegionOfInterest,
        Point=Point,
        Vector3=Vector3,
        PanopticSegmentation=PanopticSegmentation,
        SegmentedInstance=SegmentedInstance,
        Detection2DArray=Detection2DArray,
        Detection2D=Detection2D,
        ObjectHypothesisWithPose=ObjectHypothesisWithPose,
        ObjectHypothesis=ObjectHypothesis,
        BoundingBox2D=BoundingBox2D,
        Pose2D=Pose2D,
        Point2D=Point2D,
        LabelInfo=LabelInfo,
        VisionClass=VisionClass,
        Pose=Pose,
        Quaternion=Quaternion,
        PoseWithCovariance=PoseWithCovariance,
        ColorRGBA=ColorRGBA,
        Marker=Marker,
        MarkerArray=MarkerArray,
        Detection3DArray=Detection3DArray,
        Detection3D=Detection3D,
        BoundingBox3D=BoundingBox3D,
    )
