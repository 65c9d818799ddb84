"""The managed node (OvsegLifecycleNode) on the rclpy stand-in, whose lifecycle state machine
runs transitions as rclpy's does: parameters in every state, models at configure, frames only
while active, models let go at cleanup, a failed configure and an error in a transition."""

import gc
import time
import weakref

import pytest
import ros_standin
from ros_standin import Parameter, ros2_param_set
from test_node import WAIT_S, FakeSegmenter, frame, publishers, subscription, timer

OUTPUTS = ("semantic", "instances", "panoptic", "detections")


@pytest.fixture
def make_lifecycle(monkeypatch):
    """make_lifecycle(distro, segmenter=FakeSegmenter, **parameters) -> (node, made): made
    lists the segmenters the node built (one per configure)."""
    nodes = []

    def make(distro="humble", segmenter=FakeSegmenter, **parameters):
        ros_standin.install(monkeypatch, distro)
        from ovseg_ros.node.lifecycle_node import OvsegLifecycleNode

        made = []

        def build(settings):
            built = segmenter(settings)
            made.append(built)
            return built

        node = OvsegLifecycleNode(
            make_segmenter=build,
            parameter_overrides=[
                Parameter(name, value=value) for name, value in parameters.items()
            ],
        )
        nodes.append(node)
        return node, made

    yield make
    for node in nodes:
        node.stop()
        node.destroy_node()


def subscribe_outputs(node):
    for publisher in node.publishers:
        if publisher.topic_name.rpartition("/")[2] in OUTPUTS:
            publisher.subscription_count = 1


def wait_until(condition):
    """Poll until condition() holds (the runner's threads run from configure on); a hang
    fails after WAIT_S, it is not a timing check."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the node's threads"
        time.sleep(0.005)


def stamps(publisher):
    return [m.header.stamp.sec for m in publisher.messages]


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_the_states_from_configure_to_shutdown(make_lifecycle, distro):
    node, made = make_lifecycle(distro, vocabulary=["mug"])
    assert node.lifecycle_state == "unconfigured" and made == []
    assert ros2_param_set(node, "vocabulary", "[mug, kettle]").successful  # unconfigured
    assert "/image" not in [s.topic_name for s in node.subscriptions]

    assert node.trigger_configure() == node_return("SUCCESS")
    assert node.lifecycle_state == "inactive" and len(made) == 1
    subscribe_outputs(node)
    pubs = publishers(node)
    wait_until(lambda: made[0].encoded)  # encoded while inactive
    subscription(node, "/image").deliver(frame(stamp=(1, 0)))  # inactive: not taken
    assert node._runner.received == 0
    assert pubs["/ovseg/panoptic"].messages == [] and pubs["/ovseg/label_info"].messages == []

    assert node.trigger_activate() == node_return("SUCCESS")
    assert [c.class_name for c in pubs["/ovseg/label_info"].messages[-1].class_map] == [
        "mug",
        "kettle",
        "unlabelled",
    ]
    subscription(node, "/image").deliver(frame(stamp=(2, 0)))
    wait_until(lambda: stamps(pubs["/ovseg/panoptic"]) == [2])

    assert node.trigger_deactivate() == node_return("SUCCESS")
    assert ros2_param_set(node, "vocabulary", "[door]").successful  # inactive: encoded
    wait_until(lambda: [e.vocabulary.names for e in made[0].encoded][-1] == ("door",))
    subscription(node, "/image").deliver(frame(stamp=(3, 0)))
    assert node._runner.received == 1 and stamps(pubs["/ovseg/panoptic"]) == [2]
    timer(node, 1.0).fire()
    assert pubs["/diagnostics"].messages[-1].status[0].message == "inactive: not taking frames"

    assert node.trigger_activate() == node_return("SUCCESS")
    subscription(node, "/image").deliver(frame(stamp=(4, 0)))
    wait_until(lambda: stamps(pubs["/ovseg/panoptic"]) == [2, 4])
    assert list(pubs["/ovseg/panoptic"].messages[-1].vocabulary) == ["door"]

    assert node.trigger_deactivate() == node_return("SUCCESS")
    segmenter = weakref.ref(made[0])
    assert node.trigger_cleanup() == node_return("SUCCESS")
    assert node.lifecycle_state == "unconfigured"
    made.clear()
    gc.collect()
    assert segmenter() is None  # the models are let go
    assert not any(
        p.topic_name.startswith("/ovseg/") and p.topic_name != "/ovseg/vocabulary"
        for p in node.publishers
    )
    assert "/image" not in [s.topic_name for s in node.subscriptions]
    assert ros2_param_set(node, "granularity", "0.5").successful  # unconfigured again

    assert node.trigger_configure() == node_return("SUCCESS")
    assert node._runner is not None and made[0].settings.granularity == 0.5
    assert node.trigger_activate() == node_return("SUCCESS")
    assert node.trigger_shutdown() == node_return("SUCCESS")
    assert node.lifecycle_state == "finalized" and node._runner is None


def test_a_configure_that_cannot_load_the_models_fails_and_can_be_retried(make_lifecycle):
    from ovseg_ros.models.weights import WeightsError

    missing = [True]

    class Segmenter(FakeSegmenter):
        def __init__(self, settings):
            if missing[0]:
                raise WeightsError("sam_vit_b_01ec64.pth not found in /cache (pretend)")
            super().__init__(settings)

    node, made = make_lifecycle(segmenter=Segmenter, vocabulary=["mug"])
    assert node.trigger_configure() == node_return("FAILURE")
    assert node.lifecycle_state == "unconfigured"
    (error,) = node.get_logger().messages("ERROR")
    assert "cannot configure: sam_vit_b_01ec64.pth not found" in error
    assert "/image" not in [s.topic_name for s in node.subscriptions]
    missing[0] = False  # the file appeared
    assert node.trigger_configure() == node_return("SUCCESS")
    assert node.lifecycle_state == "inactive"


def test_an_error_in_a_transition_ends_unconfigured_with_the_reason(make_lifecycle):
    node, made = make_lifecycle(vocabulary=["mug"])
    assert node.trigger_configure() == node_return("SUCCESS")
    subscribe_outputs(node)
    diagnostics = publishers(node)["/diagnostics"]

    def broken():
        raise RuntimeError("CUDA error: device lost (pretend)")

    node._runner.resume = broken
    from diagnostic_msgs.msg import DiagnosticStatus

    assert node.trigger_activate() == node_return("ERROR")
    assert node.lifecycle_state == "unconfigured" and node._runner is None
    assert any(
        "activate failed: RuntimeError: CUDA error: device lost" in message
        for message in node.get_logger().messages("ERROR")
    )
    report = diagnostics.messages[-1].status[0]
    assert report.level == DiagnosticStatus.ERROR
    assert "activate failed: RuntimeError" in report.message
    assert node.trigger_configure() == node_return("SUCCESS")  # and it can start again


def node_return(name):
    from rclpy.lifecycle import TransitionCallbackReturn

    return getattr(TransitionCallbackReturn, name)
