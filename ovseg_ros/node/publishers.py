"""What publishes an input topic, as the node's hints need it: why nothing arrives."""

from __future__ import annotations

from dataclasses import dataclass

from rclpy.node import Node
from rclpy.qos import ReliabilityPolicy


@dataclass(frozen=True)
class TopicPublishers:
    """The publishers of a topic seen from the graph: how many, the types other than the
    one wanted, and how many offer best-effort QoS."""

    count: int
    other_types: list[str]
    best_effort: int


def publishers_of(node: Node, topic: str, wanted: str) -> TopicPublishers:
    """The graph's publishers of ``topic`` ('sensor_msgs/msg/Image' style type names)."""
    publishers = node.get_publishers_info_by_topic(topic)
    return TopicPublishers(
        count=len(publishers),
        other_types=sorted({p.topic_type for p in publishers if p.topic_type != wanted}),
        best_effort=sum(
            p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in publishers
        ),
    )
