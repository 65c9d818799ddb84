"""The managed (lifecycle) ovseg node: the node of ovseg_ros.node.node, driven by the standard
lifecycle states (``ros2 lifecycle set``, nav2's lifecycle manager, launch_ros events)
rather than run from start to exit. Its work is node.OvsegWork, shared with OvsegNode.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.logging import get_logger

from ..runner.interfaces import SegmenterLike
from ..segmentation.vocabulary import VocabularyError
from ..settings.config import Settings, SettingsError
from .node import NODE_NAME, OvsegWork, load_segmenter, start_error


class OvsegLifecycleNode(OvsegWork, LifecycleNode):
    """The same node, managed (``ros2 lifecycle set``, nav2's lifecycle manager): parameters
    at construction; models loaded and the frame path made at *configure*; frames taken and
    outputs published only while *active*; the models let go at *cleanup* (and *shutdown*).
    A configure that cannot load the models fails with the reason and leaves the node
    unconfigured; any other error in a transition goes through *errorprocessing* back to
    *unconfigured*, with the reason in the log and /diagnostics."""

    def __init__(
        self,
        *,
        make_segmenter: Callable[[Settings], SegmenterLike] = load_segmenter,
        **node_options: Any,
    ):
        super().__init__(NODE_NAME, **node_options)
        self._declare(make_segmenter)
        self._error = ""

    def on_configure(self, state: Any) -> TransitionCallbackReturn:
        from ..models.weights import WeightsError

        def configure() -> TransitionCallbackReturn:
            try:
                self._configure()
            except (SettingsError, VocabularyError, WeightsError) as err:
                self.get_logger().error(
                    f"cannot configure: {start_error(err)}; the node "
                    "stays unconfigured (configure again once that is "
                    "fixed)"
                )
                self._teardown()
                return TransitionCallbackReturn.FAILURE
            self._runner.pause()
            self._runner.start()
            return TransitionCallbackReturn.SUCCESS

        return self._transition("configure", configure)

    def on_activate(self, state: Any) -> TransitionCallbackReturn:
        def activate() -> TransitionCallbackReturn:
            self._runner.resume()
            return super(OvsegLifecycleNode, self).on_activate(state)

        return self._transition("activate", activate)

    def on_deactivate(self, state: Any) -> TransitionCallbackReturn:
        def deactivate() -> TransitionCallbackReturn:
            self._runner.pause()
            return super(OvsegLifecycleNode, self).on_deactivate(state)

        return self._transition("deactivate", deactivate)

    def on_cleanup(self, state: Any) -> TransitionCallbackReturn:
        return self._transition("cleanup", self._released)

    def on_shutdown(self, state: Any) -> TransitionCallbackReturn:
        return self._transition("shutdown", self._released)

    def on_error(self, state: Any) -> TransitionCallbackReturn:
        reason = self._error or f"a transition from {state.label} failed"
        self.get_logger().error(f"{reason}; back to unconfigured")
        if self._runner is not None:
            self._runner.report_error(reason)
        self._teardown()
        self._error = ""
        return TransitionCallbackReturn.SUCCESS

    def _released(self) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _transition(
        self, name: str, step: Callable[[], TransitionCallbackReturn]
    ) -> TransitionCallbackReturn:
        """Run a transition; an exception becomes ERROR with its reason kept for on_error
        (rclpy turns it into ERROR without a word)."""
        try:
            return step()
        except Exception as err:  # whatever it is, the node goes to errorprocessing
            self._error = f"{name} failed: {type(err).__name__}: {err}"
            return TransitionCallbackReturn.ERROR


def lifecycle_main(args: list[str] | None = None) -> int:
    """ros2 run ovseg_ros ovseg_lifecycle_node: an unconfigured managed node, spun until
    Ctrl-C, its threads stopped on the way out."""
    rclpy.init(args=args)
    node = None
    try:
        node = OvsegLifecycleNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (
        SettingsError,
        VocabularyError,
        InvalidParameterTypeException,
        InvalidParameterValueException,
    ) as err:
        get_logger(NODE_NAME).fatal(f"cannot start: {start_error(err)}")
        return 1
    finally:
        busy = node.stop() if node is not None else False
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        if busy:  # as in node.main()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
    return 0
