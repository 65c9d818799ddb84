"""A stand-in for the part of rclpy the ovseg node uses, behaving like rclpy there.

Facts read in rclpy's source (ros2/rclpy: rclpy/node.py, parameter.py, qos.py, publisher.py,
impl/rcutils_logger.py, src/rclpy/node.cpp, as of rolling) and, for what Humble lacks, in the
pull requests that added it:

Parameters
- ``declare_parameter(name, value, descriptor)``: the descriptor's type is ignored; without
  ``dynamic_typing`` the type is inferred from the default value, and ``[]`` infers
  BYTE_ARRAY (``all()`` over no elements is true for the first check, bytes). Passing a
  ``Parameter.Type`` instead of a value declares a statically typed parameter without a value
  (uninitialized): ``get_parameter`` then raises ParameterUninitializedException and
  ``get_parameter_or`` returns the alternative (a NOT_SET Parameter by default). Parameter
  overrides (``parameter_overrides=`` or a params file) replace the default value; an empty
  list in a params file reaches rclpy without a type (a NOT_SET override). Params files are
  not emulated here.
- Declaring calls the on-set callbacks; a refusal raises InvalidParameterTypeException when the
  reason starts with 'Wrong parameter type', else InvalidParameterValueException. Declaring
  does not check ``read_only``.
- ``set_parameters`` sets each parameter of its list on its own (``set_parameters_atomically``
  is all or none; not used by the node): descriptor checks first (read_only ->
  'Trying to set a read-only parameter: NAME.'; static type -> "Wrong parameter type,
  expected 'Type.X' got 'Type.Y'"; integer_range/floating_point_range -> 'Parameter NAME out
  of range...'), then every on-set callback (most recently added first) until one refuses;
  the value is stored only when all pass. Returns one SetParametersResult per parameter.
  ``ros2 param set`` goes through the same path (the SetParameters service).
- Pre-set callbacks (``add_pre_set_parameters_callback``: each gets the list and the lists
  they return are joined and set instead, before any check; an empty result fails the set;
  not called on declaration) exist from Iron on (rclpy PR #966, July 2022): the Jazzy flavour
  has them, the Humble flavour has no such attribute.
- ``Parameter.Type.check``: DOUBLE accepts only float (an int is refused), STRING_ARRAY a
  list/tuple of str (an empty one too). ``Parameter.Type`` is an Enum here as in Humble
  (an IntEnum in later rclpy), so code must compare members, not ints.
- ``ros2 param set`` turns its text into a value with YAML: an empty list ``[]`` becomes an
  empty BOOL_ARRAY, a list of words a STRING_ARRAY, '1' an INTEGER (see ros2_param_set).

QoS
- ``QoSProfile`` needs ``depth`` or ``history``; reliability defaults to RELIABLE and
  durability to VOLATILE (rmw's default profile). ``create_publisher(type, topic, 10)`` is
  ``QoSProfile(depth=10)``. ``qos_profile_sensor_data``: BEST_EFFORT, VOLATILE, KEEP_LAST 5.
  A best-effort subscription matches reliable and best-effort publishers; a reliable one only
  reliable publishers.

Entities
- ``Publisher.publish`` raises TypeError unless the message is an instance of the
  publisher's type; ``get_subscription_count()`` counts matched subscriptions; ``topic_name``
  is the expanded name ('~/x' -> '/<namespace>/<node>/x', 'x' -> '/<namespace>/x').
- Timers fire only when the test calls ``Timer.fire()`` (there is no executor here).

Logging
- ``get_logger().warning/info/...`` accept ``throttle_duration_sec``, ``once`` and
  ``skip_first``; their state is kept per call site, so ``once`` cannot tell two messages from
  the same line apart, and one call site may not change its severity or filters (ValueError).
  ``warn`` is deprecated (removed in recent rclpy) and not provided.

Test controls beyond rclpy: ``Subscription.deliver(msg)``, ``Timer.fire()``,
``Publisher.messages`` / ``subscription_count``, ``GRAPH`` (publishers other nodes have on a
topic), ``Logger.records``, ``ros2_param_set``, ``SPIN`` (what ``rclpy.spin`` runs before it
ends with KeyboardInterrupt, as Ctrl-C would). ``rclpy.init(args=...)`` reads
``--ros-args -p name:=value`` into parameter overrides, as rcl does.
"""

from __future__ import annotations

import copy
import enum
import sys
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from . import messages


# ---------------------------------------------------------------------------------- errors
class ParameterException(Exception):
    pass


class ParameterNotDeclaredException(ParameterException):
    pass


class ParameterAlreadyDeclaredException(ParameterException):
    pass


class ParameterUninitializedException(ParameterException):
    pass


class ParameterImmutableException(ParameterException):
    pass


class InvalidParameterTypeException(ParameterException):
    def __init__(self, desired_parameter: Parameter, expected_type: str):
        super().__init__(
            f"Trying to set parameter '{desired_parameter.name}' to '{desired_parameter.value}'"
            f" of type '{desired_parameter.type_.name}', expecting type '{expected_type}'"
        )


class InvalidParameterValueException(ParameterException):
    def __init__(self, parameter: str, value: Any, reason: str):
        super().__init__(f"Invalid parameter value ({value}) for parameter. Reason: {reason}")
        self.reason = reason


class ExternalShutdownException(Exception):
    pass


# ------------------------------------------------------------------------------ parameters
class Parameter:
    class Type(enum.Enum):
        NOT_SET = 0
        BOOL = 1
        INTEGER = 2
        DOUBLE = 3
        STRING = 4
        BYTE_ARRAY = 5
        BOOL_ARRAY = 6
        INTEGER_ARRAY = 7
        DOUBLE_ARRAY = 8
        STRING_ARRAY = 9

        @classmethod
        def from_parameter_value(cls, value: Any) -> Parameter.Type:
            if value is None:
                return cls.NOT_SET
            if isinstance(value, bool):
                return cls.BOOL
            if isinstance(value, int):
                return cls.INTEGER
            if isinstance(value, float):
                return cls.DOUBLE
            if isinstance(value, str):
                return cls.STRING
            if isinstance(value, (list, tuple)):
                for kind, element in (
                    (cls.BYTE_ARRAY, bytes),
                    (cls.BOOL_ARRAY, bool),
                    (cls.INTEGER_ARRAY, int),
                    (cls.DOUBLE_ARRAY, float),
                    (cls.STRING_ARRAY, str),
                ):
                    if all(isinstance(v, element) for v in value):
                        return kind
                raise TypeError(
                    f"The given value is not a list of one of the allowed types '{value}'."
                )
            raise TypeError(f"The given value is not one of the allowed types '{value}'.")

        def check(self, value: Any) -> bool:
            kind = Parameter.Type
            if self is kind.NOT_SET:
                return value is None
            scalar = {kind.BOOL: bool, kind.INTEGER: int, kind.DOUBLE: float, kind.STRING: str}
            if self in scalar:
                return isinstance(value, scalar[self])
            element = {
                kind.BYTE_ARRAY: bytes,
                kind.BOOL_ARRAY: bool,
                kind.INTEGER_ARRAY: int,
                kind.DOUBLE_ARRAY: float,
                kind.STRING_ARRAY: str,
            }[self]
            return isinstance(value, (list, tuple)) and all(isinstance(v, element) for v in value)

    def __init__(self, name: str, type_: Parameter.Type | None = None, value: Any = None):
        if type_ is None:
            type_ = Parameter.Type.from_parameter_value(value)
        if not isinstance(type_, Parameter.Type):
            raise TypeError("type must be an instance of Parameter.Type")
        if not type_.check(value):
            raise ValueError(f"Type '{type_}' and value '{value}' do not agree")
        self._name, self._type_, self._value = name, type_, value

    @property
    def name(self) -> str:
        return self._name

    @property
    def type_(self) -> Parameter.Type:
        return self._type_

    @property
    def value(self) -> Any:
        return self._value

    def __repr__(self) -> str:
        return f"Parameter({self._name!r}, {self._type_}, {self._value!r})"


def parameter_from_command_line(name: str, text: str) -> Parameter:
    """The Parameter ``ros2 param set NODE NAME TEXT`` sends (its YAML guessing of types)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    kind = Parameter.Type
    if isinstance(value, bool):
        return Parameter(name, kind.BOOL, value)
    if isinstance(value, int):
        return Parameter(name, kind.INTEGER, value)
    if isinstance(value, float):
        return Parameter(name, kind.DOUBLE, value)
    if isinstance(value, list):
        for array_kind, element in (
            (kind.BOOL_ARRAY, bool),
            (kind.INTEGER_ARRAY, int),
            (kind.DOUBLE_ARRAY, float),
            (kind.STRING_ARRAY, str),
        ):
            if all(isinstance(v, element) for v in value):
                return Parameter(name, array_kind, value)
        return Parameter(name, kind.STRING, text)
    return Parameter(name, kind.STRING, value if isinstance(value, str) else text)


def ros2_param_set(node: Node, name: str, text: str):
    """What ``ros2 param set /node NAME "TEXT"`` does; returns the SetParametersResult. The
    parameter service calls ``node.set_parameters_atomically([parameter])`` for each
    parameter of the request (rclpy parameter_service.py, Humble and Jazzy alike)."""
    return node.set_parameters_atomically([parameter_from_command_line(name, text)])


# ------------------------------------------------------------------------------------- QoS
class HistoryPolicy(enum.IntEnum):
    SYSTEM_DEFAULT = 0
    KEEP_LAST = 1
    KEEP_ALL = 2


class ReliabilityPolicy(enum.IntEnum):
    SYSTEM_DEFAULT = 0
    RELIABLE = 1
    BEST_EFFORT = 2


class DurabilityPolicy(enum.IntEnum):
    SYSTEM_DEFAULT = 0
    TRANSIENT_LOCAL = 1
    VOLATILE = 2


class QoSProfile:
    def __init__(self, **kwargs: Any):
        allowed = {"history", "depth", "reliability", "durability"}
        assert set(kwargs) <= allowed, f"Invalid arguments passed to constructor: {kwargs}"
        if "history" not in kwargs and "depth" not in kwargs:
            raise ValueError("Invalid QoSProfile: History and/or depth settings are required.")
        self.history = HistoryPolicy(kwargs.get("history", HistoryPolicy.KEEP_LAST))
        if self.history == HistoryPolicy.KEEP_LAST and "depth" not in kwargs:
            raise ValueError("Invalid QoSProfile: History set to KEEP_LAST without a depth.")
        self.depth = kwargs.get("depth", 10)
        self.reliability = ReliabilityPolicy(kwargs.get("reliability", ReliabilityPolicy.RELIABLE))
        self.durability = DurabilityPolicy(kwargs.get("durability", DurabilityPolicy.VOLATILE))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QoSProfile) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return (
            f"QoSProfile(history={self.history.name}, depth={self.depth}, "
            f"reliability={self.reliability.name}, durability={self.durability.name})"
        )


qos_profile_sensor_data = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=5,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)


def _qos(qos_or_depth: Any) -> QoSProfile:
    if isinstance(qos_or_depth, QoSProfile):
        return qos_or_depth
    if isinstance(qos_or_depth, int) and not isinstance(qos_or_depth, bool):
        return QoSProfile(depth=qos_or_depth)
    raise TypeError(f"Expected QoSProfile or int, but received {type(qos_or_depth).__name__}")


# ---------------------------------------------------------------------------------- logging
@dataclass
class LogRecord:
    severity: str
    name: str
    message: str


LOG: list[LogRecord] = []  # every message logged through any stand-in logger


class Logger:
    _FILTER_KEYS = {"throttle_duration_sec", "throttle_time_source_type", "once", "skip_first"}

    def __init__(self, name: str):
        self.name = name
        self.records: list[LogRecord] = []
        self._sites: dict[tuple, dict] = {}

    def _log(self, severity: str, message: str, **kwargs: Any) -> bool:
        unknown = set(kwargs) - self._FILTER_KEYS
        if unknown:
            raise TypeError(
                f'parameter "{sorted(unknown)[0]}" is not one of the recognized logging options'
            )
        caller = sys._getframe(2)
        site = (caller.f_code.co_filename, caller.f_lineno, caller.f_code.co_name)
        filters = {k: v for k, v in kwargs.items() if v}
        context = self._sites.setdefault(
            site,
            {
                "severity": severity,
                "filters": filters,
                "last": None,
                "logged": False,
                "skipped": False,
            },
        )
        if context["severity"] != severity:
            raise ValueError("Logger severity cannot be changed between calls.")
        if context["filters"] != filters:
            raise ValueError("Requested logging filters cannot be changed between calls.")
        if "throttle_duration_sec" in filters:
            now = time.monotonic()
            if (
                context["last"] is not None
                and now < context["last"] + filters["throttle_duration_sec"]
            ):
                return False
            context["last"] = now
        if filters.get("skip_first") and not context["skipped"]:
            context["skipped"] = True
            return False
        if filters.get("once"):
            if context["logged"]:
                return False
            context["logged"] = True
        record = LogRecord(severity, self.name, str(message))
        self.records.append(record)
        LOG.append(record)
        return True

    def debug(self, message: str, **kwargs: Any) -> bool:
        return self._log("DEBUG", message, **kwargs)

    def info(self, message: str, **kwargs: Any) -> bool:
        return self._log("INFO", message, **kwargs)

    def warning(self, message: str, **kwargs: Any) -> bool:
        return self._log("WARN", message, **kwargs)

    def error(self, message: str, **kwargs: Any) -> bool:
        return self._log("ERROR", message, **kwargs)

    def fatal(self, message: str, **kwargs: Any) -> bool:
        return self._log("FATAL", message, **kwargs)

    def messages(self, severity: str | None = None) -> list[str]:
        return [r.message for r in self.records if severity is None or r.severity == severity]


_LOGGERS: dict[str, Logger] = {}


def get_logger(name: str) -> Logger:
    return _LOGGERS.setdefault(name, Logger(name))


# ------------------------------------------------------------------------------- the graph
@dataclass
class EndpointInfo:
    """What ``get_publishers_info_by_topic`` returns (rclpy's TopicEndpointInfo fields)."""

    node_name: str
    node_namespace: str
    topic_type: str
    qos_profile: QoSProfile


@dataclass
class Graph:
    """Endpoints of other nodes, as a test wants the ROS graph to look."""

    publishers: dict[str, list[EndpointInfo]] = field(default_factory=dict)

    def add_publisher(
        self, topic: str, topic_type: str, qos: QoSProfile, node_name: str = "camera"
    ) -> None:
        self.publishers.setdefault(topic, []).append(EndpointInfo(node_name, "/", topic_type, qos))


GRAPH = Graph()


# ---------------------------------------------------------------------------------- entities
def _check_message_class(msg_type: Any) -> None:
    if not (isinstance(msg_type, type) and issubclass(msg_type, messages.StandinMessage)):
        raise NotImplementedError(f"{msg_type!r} is not a message class")


class Publisher:
    def __init__(self, node: Node, msg_type: type, topic: str, qos: QoSProfile):
        self.msg_type, self.topic, self.qos_profile = msg_type, topic, qos
        self._node = node
        self.messages: list[Any] = []
        self.subscription_count = 0

    @property
    def topic_name(self) -> str:
        return self.topic

    def publish(self, msg: Any) -> None:
        if not isinstance(msg, self.msg_type):
            raise TypeError(f"Expected {self.msg_type}, got {type(msg)}")
        self._node._registry.serialize(msg)  # rosbags' CDR encoder checks every field again
        # rclpy serializes at publish: what was sent stays as it was when the object is
        # changed and published again.
        self.messages.append(copy.deepcopy(msg))

    def get_subscription_count(self) -> int:
        return self.subscription_count

    def destroy(self) -> None:
        self._node._publishers.remove(self)


class Subscription:
    def __init__(self, msg_type: type, topic: str, callback: Callable, qos: QoSProfile):
        self.msg_type, self.topic, self.callback, self.qos_profile = msg_type, topic, callback, qos

    @property
    def topic_name(self) -> str:
        return self.topic

    def deliver(self, msg: Any) -> None:
        """Test control: the message arrives (rclpy only delivers the subscribed type)."""
        assert isinstance(msg, self.msg_type), f"{self.topic} takes {self.msg_type.__name__}"
        self.callback(msg)


class Timer:
    def __init__(self, period_sec: float, callback: Callable):
        self.timer_period_ns = int(period_sec * 1e9)
        self.callback = callback
        self._canceled = False

    def fire(self) -> None:
        """Test control: the period elapsed and the executor runs the callback."""
        if not self._canceled:
            self.callback()

    def cancel(self) -> None:
        self._canceled = True

    def reset(self) -> None:
        self._canceled = False

    def is_canceled(self) -> bool:
        return self._canceled


@dataclass
class Time:
    nanoseconds: int

    def to_msg(self) -> Any:
        time_cls = messages.registry(_DISTRO[0]).get("builtin_interfaces/msg/Time")
        return time_cls(sec=self.nanoseconds // 10**9, nanosec=self.nanoseconds % 10**9)


class Clock:
    def now(self) -> Time:
        return Time(time.time_ns())


_DISTRO = ["humble"]  # set by install()


def _expand_topic(topic: str, node_name: str, namespace: str) -> str:
    prefix = namespace.rstrip("/")
    if topic.startswith("~"):
        topic = f"{prefix}/{node_name}{topic[1:]}"
    elif not topic.startswith("/"):
        topic = f"{prefix}/{topic}"
    if "//" in topic or topic.endswith("/") or not all(c.isalnum() or c in "_/" for c in topic):
        raise ValueError(f"invalid topic name {topic!r}")
    return topic


# -------------------------------------------------------------------------------------- node
class Context:
    """rclpy.context.Context: ok() until a test sets shut_down."""

    def __init__(self) -> None:
        self.shut_down = False

    def ok(self) -> bool:
        return not self.shut_down


_CONTEXT = Context()


class Node:
    """rclpy.node.Node as of Humble (no pre-set parameter callbacks)."""

    def __init__(
        self,
        node_name: str,
        *,
        namespace: str | None = None,
        parameter_overrides: list[Parameter] | None = None,
        allow_undeclared_parameters: bool = False,
    ):
        self._name = node_name
        namespace = namespace or "/"
        self._namespace = namespace if namespace.startswith("/") else "/" + namespace
        # Command line (-p name:=value given to rclpy.init) first, the constructor's win.
        self._overrides = {
            **_COMMAND_LINE_PARAMETERS,
            **{p.name: p for p in parameter_overrides or []},
        }
        self._allow_undeclared = allow_undeclared_parameters
        self._parameters: dict[str, Parameter] = {}
        self._descriptors: dict[str, Any] = {}
        self._on_set_callbacks: list[Callable] = []
        self._pre_set_callbacks: list[Callable] = []
        self._publishers: list[Publisher] = []
        self._subscriptions: list[Subscription] = []
        self._timers: list[Timer] = []
        self._logger = get_logger(node_name)
        self._registry = messages.registry(_DISTRO[0])
        self.destroyed = False

    # names
    @property
    def context(self) -> Context:
        """The node's context (rclpy.context.Context): ok() until shut down."""
        return _CONTEXT

    def get_name(self) -> str:
        return self._name

    def get_namespace(self) -> str:
        return self._namespace

    def get_fully_qualified_name(self) -> str:
        return f"{self._namespace.rstrip('/')}/{self._name}"

    def get_logger(self) -> Logger:
        return self._logger

    def get_clock(self) -> Clock:
        return Clock()

    # parameters
    def declare_parameter(
        self, name: str, value: Any = None, descriptor: Any = None, ignore_override: bool = False
    ) -> Parameter:
        descriptor_cls = self._registry.get("rcl_interfaces/msg/ParameterDescriptor")
        descriptor = descriptor_cls() if descriptor is None else descriptor
        assert isinstance(descriptor, descriptor_cls), "descriptor must be a ParameterDescriptor"
        if name in self._parameters:
            raise ParameterAlreadyDeclaredException([name])
        if isinstance(value, Parameter.Type):
            if value is Parameter.Type.NOT_SET:
                raise ValueError(
                    f"Cannot declare parameter {{{name}}} as statically typed of type NOT_SET"
                )
            if descriptor.dynamic_typing:
                raise ValueError(
                    f"When declaring parameter {{{name}}} passing a descriptor "
                    "with `dynamic_typing=True` is not allowed when the "
                    "parameter type is provided"
                )
            descriptor.type = value.value
            value = None
        elif not descriptor.dynamic_typing:
            descriptor.type = Parameter.Type.from_parameter_value(value).value
            if descriptor.type == Parameter.Type.NOT_SET.value:
                raise ValueError(
                    "Cannot declare a statically typed parameter with default "
                    "value of type PARAMETER_NOT_SET"
                )
        if not ignore_override and name in self._overrides:
            value = self._overrides[name].value
        parameter = Parameter(name, value=value)
        result = self._set_atomically(
            [parameter], {name: descriptor}, check_read_only=False, allow_not_set=True
        )
        if not result.successful:
            if result.reason.startswith("Wrong parameter type"):
                raise InvalidParameterTypeException(parameter, Parameter.Type(descriptor.type).name)
            raise InvalidParameterValueException(name, value, result.reason)
        return self._parameters[name]

    def has_parameter(self, name: str) -> bool:
        return name in self._parameters

    def get_parameter(self, name: str) -> Parameter:
        if name not in self._parameters:
            raise ParameterNotDeclaredException(name)
        parameter = self._parameters[name]
        if parameter.type_ is Parameter.Type.NOT_SET and not self._descriptors[name].dynamic_typing:
            raise ParameterUninitializedException(name)
        return parameter

    def get_parameter_or(self, name: str, alternative_value: Parameter | None = None) -> Parameter:
        if alternative_value is None:
            alternative_value = Parameter(name, Parameter.Type.NOT_SET)
        parameter = self._parameters.get(name)
        if parameter is None or parameter.type_ is Parameter.Type.NOT_SET:
            return alternative_value
        return parameter

    def describe_parameter(self, name: str) -> Any:
        if name not in self._descriptors:
            raise ParameterNotDeclaredException(name)
        return self._descriptors[name]

    def add_on_set_parameters_callback(self, callback: Callable) -> None:
        self._on_set_callbacks.insert(0, callback)

    def remove_on_set_parameters_callback(self, callback: Callable) -> None:
        self._on_set_callbacks.remove(callback)

    def set_parameters(self, parameter_list: list[Parameter]) -> list[Any]:
        return [self._set_list([parameter]) for parameter in parameter_list]

    def set_parameters_atomically(self, parameter_list: list[Parameter]) -> Any:
        """All or nothing, with one call of each callback for the whole list."""
        return self._set_list(list(parameter_list))

    def _set_list(self, parameter_list: list[Parameter]) -> Any:
        batch = parameter_list
        if self._pre_set_callbacks:
            batch = []
            for callback in self._pre_set_callbacks:  # each sees the original list
                batch.extend(callback(parameter_list))
            if not batch:
                return self._result(
                    False,
                    "parameter list cannot be empty, this might be due to "
                    "pre_set_parameters_callback modifying the original "
                    "parameters list.",
                )
        undeclared = [p.name for p in batch if p.name not in self._parameters]
        if undeclared and not self._allow_undeclared:
            raise ParameterNotDeclaredException(undeclared)
        return self._set_atomically(batch, None, check_read_only=True, allow_not_set=False)

    def _result(self, successful: bool, reason: str = "") -> Any:
        cls = self._registry.get("rcl_interfaces/msg/SetParametersResult")
        return cls(successful=successful, reason=reason)

    def _set_atomically(
        self,
        parameters: list[Parameter],
        descriptors: dict | None,
        *,
        check_read_only: bool,
        allow_not_set: bool,
    ) -> Any:
        """All or none: descriptor checks, then the on-set callbacks once for the list."""
        descriptors = descriptors or {p.name: self._descriptors[p.name] for p in parameters}
        for parameter in parameters:
            result = self._apply_descriptor(parameter, descriptors[parameter.name], check_read_only)
            if not result.successful:
                return result
        for callback in self._on_set_callbacks:
            result = callback(list(parameters))
            assert type(result).__name__ == "SetParametersResult", (
                "on-set callbacks must return rcl_interfaces.msg.SetParametersResult"
            )
            if not result.successful:
                return result
        for parameter in parameters:
            if parameter.type_ is Parameter.Type.NOT_SET and not allow_not_set:
                del self._parameters[parameter.name]
                del self._descriptors[parameter.name]
            else:
                descriptors[parameter.name].name = parameter.name
                self._descriptors[parameter.name] = descriptors[parameter.name]
                self._parameters[parameter.name] = parameter
        return self._result(True)

    def _apply_descriptor(
        self, parameter: Parameter, descriptor: Any, check_read_only: bool
    ) -> Any:
        if check_read_only and descriptor.read_only:
            return self._result(False, f"Trying to set a read-only parameter: {parameter.name}.")
        if descriptor.dynamic_typing:
            descriptor.type = parameter.type_.value
        elif parameter.name in self._parameters and parameter.type_ is Parameter.Type.NOT_SET:
            return self._result(False, "Static parameter cannot be undeclared")
        elif (
            parameter.type_ is not Parameter.Type.NOT_SET
            and parameter.type_.value != descriptor.type
        ):
            return self._result(
                False,
                "Wrong parameter type, expected "
                f"'{Parameter.Type(descriptor.type)}' got "
                f"'{parameter.type_}'",
            )
        ranges = []
        if parameter.type_ is Parameter.Type.INTEGER:
            ranges = descriptor.integer_range
        elif parameter.type_ is Parameter.Type.DOUBLE:
            ranges = descriptor.floating_point_range
        if ranges:
            low = min(ranges[0].from_value, ranges[0].to_value)
            high = max(ranges[0].from_value, ranges[0].to_value)
            if not low <= parameter.value <= high:
                return self._result(
                    False,
                    f"Parameter {parameter.name} out of range. Min: "
                    f"{low}, Max: {high}, value: {parameter.value}",
                )
        return self._result(True)

    # entities
    def create_publisher(
        self, msg_type: type, topic: str, qos_profile: Any, *, callback_group: Any = None
    ) -> Publisher:
        _check_message_class(msg_type)
        publisher = Publisher(self, msg_type, self._expand(topic), _qos(qos_profile))
        self._publishers.append(publisher)
        return publisher

    def create_subscription(
        self,
        msg_type: type,
        topic: str,
        callback: Callable,
        qos_profile: Any,
        *,
        callback_group: Any = None,
    ) -> Subscription:
        _check_message_class(msg_type)
        subscription = Subscription(msg_type, self._expand(topic), callback, _qos(qos_profile))
        self._subscriptions.append(subscription)
        return subscription

    def create_timer(
        self, timer_period_sec: float, callback: Callable, callback_group: Any = None
    ) -> Timer:
        timer = Timer(timer_period_sec, callback)
        self._timers.append(timer)
        return timer

    @property
    def publishers(self):
        yield from self._publishers

    @property
    def subscriptions(self):
        yield from self._subscriptions

    @property
    def timers(self):
        yield from self._timers

    def count_publishers(self, topic_name: str) -> int:
        return len(GRAPH.publishers.get(self._expand(topic_name), []))

    def get_publishers_info_by_topic(self, topic_name: str) -> list[EndpointInfo]:
        return list(GRAPH.publishers.get(self._expand(topic_name), []))

    def destroy_publisher(self, publisher: Publisher) -> bool:
        self._publishers.remove(publisher)
        return True

    def destroy_subscription(self, subscription: Subscription) -> bool:
        self._subscriptions.remove(subscription)
        return True

    def destroy_timer(self, timer: Timer) -> bool:
        self._timers.remove(timer)
        return True

    def destroy_node(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self.destroyed = True

    def _expand(self, topic: str) -> str:
        return _expand_topic(topic, self._name, self._namespace)


class JazzyNode(Node):
    """rclpy.node.Node as of Iron/Jazzy: adds pre-set parameter callbacks."""

    def add_pre_set_parameters_callback(self, callback: Callable) -> None:
        self._pre_set_callbacks.insert(0, callback)


# ------------------------------------------------------------------------------ the modules
_initialized = [False]
_COMMAND_LINE_PARAMETERS: dict[str, Parameter] = {}
SPIN = []  # test control: what rclpy.spin does, a callable taking the node


def init(*, args: Any = None, context: Any = None) -> None:
    """Reads ``--ros-args -p name:=value`` (values typed by YAML, as rcl does); other ROS
    arguments are accepted and ignored."""
    _initialized[0] = True
    _COMMAND_LINE_PARAMETERS.clear()
    arguments = list(args or [])
    if "--ros-args" in arguments:
        ros_arguments = arguments[arguments.index("--ros-args") + 1 :]
        for flag, value in zip(ros_arguments[::2], ros_arguments[1::2]):
            if flag == "-p":
                name, _, text = value.partition(":=")
                _COMMAND_LINE_PARAMETERS[name] = parameter_from_command_line(name, text)


def ok(*, context: Any = None) -> bool:
    return _initialized[0]


def shutdown(*, context: Any = None) -> None:
    _initialized[0] = False


def try_shutdown(*, context: Any = None) -> None:
    _initialized[0] = False


def spin(node: Node, executor: Any = None) -> None:
    """No executor here: runs the test's SPIN callable, then stops as Ctrl-C does
    (KeyboardInterrupt out of spin)."""
    for run in SPIN:
        run(node)
    raise KeyboardInterrupt


# ------------------------------------------------------------------------------ lifecycle
class TransitionCallbackReturn(enum.IntEnum):
    """rclpy.lifecycle.TransitionCallbackReturn (lifecycle_msgs Transition's return codes)."""

    SUCCESS = 97
    FAILURE = 98
    ERROR = 99


def lifecycle_node_class(base: type) -> type:
    """rclpy.lifecycle.LifecycleNode over ``base``, with the state machine as rclpy's
    ``LifecycleNodeMixin.__change_state`` runs it (read in Humble's and Jazzy's rclpy): a
    transition calls its ``on_*`` callback with the state it starts from; SUCCESS goes to the
    goal state, FAILURE back to the start state; ERROR, and any exception from the callback
    (rclpy turns it into ERROR without logging it), goes through ``on_error``, whose SUCCESS
    leads to unconfigured (anything else: finalized). The base ``on_*`` return SUCCESS.
    ``trigger_*`` is what ``ros2 lifecycle set`` does through the change_state service."""

    class State(typing.NamedTuple):
        state_id: int
        label: str

    ids = {"unconfigured": 1, "inactive": 2, "active": 3, "finalized": 4}
    # transition: (callback, states it may start from, goal state)
    transitions = {
        "configure": ("on_configure", ("unconfigured",), "inactive"),
        "cleanup": ("on_cleanup", ("inactive",), "unconfigured"),
        "activate": ("on_activate", ("inactive",), "active"),
        "deactivate": ("on_deactivate", ("active",), "inactive"),
        "shutdown": ("on_shutdown", ("unconfigured", "inactive", "active"), "finalized"),
    }

    class LifecycleNode(base):
        def __init__(self, node_name: str, **kwargs: Any):
            super().__init__(node_name, **kwargs)
            self.lifecycle_state = "unconfigured"

        def _change(self, transition: str) -> TransitionCallbackReturn:
            callback, sources, goal = transitions[transition]
            start = self.lifecycle_state
            if start not in sources:
                raise RuntimeError(f"no transition {transition} from {start}")
            previous = State(ids[start], start)
            try:
                result = getattr(self, callback)(previous)
            except Exception:  # as rclpy: an exception is an ERROR, not logged
                result = TransitionCallbackReturn.ERROR
            if result == TransitionCallbackReturn.SUCCESS:
                self.lifecycle_state = goal
            elif result == TransitionCallbackReturn.FAILURE:
                self.lifecycle_state = start
            else:
                try:
                    handled = self.on_error(previous)
                except Exception:
                    handled = TransitionCallbackReturn.ERROR
                self.lifecycle_state = (
                    "unconfigured" if handled == TransitionCallbackReturn.SUCCESS else "finalized"
                )
            return result

        def trigger_configure(self):
            return self._change("configure")  # noqa: E704

        def trigger_cleanup(self):
            return self._change("cleanup")  # noqa: E704

        def trigger_activate(self):
            return self._change("activate")  # noqa: E704

        def trigger_deactivate(self):
            return self._change("deactivate")  # noqa: E704

        def trigger_shutdown(self):
            return self._change("shutdown")  # noqa: E704

        def on_configure(self, state):
            return TransitionCallbackReturn.SUCCESS  # noqa: E704

        def on_cleanup(self, state):
            return TransitionCallbackReturn.SUCCESS  # noqa: E704

        def on_activate(self, state):
            return TransitionCallbackReturn.SUCCESS  # noqa: E704

        def on_deactivate(self, state):
            return TransitionCallbackReturn.SUCCESS  # noqa: E704

        def on_shutdown(self, state):
            return TransitionCallbackReturn.SUCCESS  # noqa: E704

        def on_error(self, state):
            return TransitionCallbackReturn.SUCCESS  # noqa: E704

    return LifecycleNode


def modules(distro: str = "humble") -> dict[str, types.ModuleType]:
    """The sys.modules entries that make ``import rclpy`` (and the message packages) resolve
    to this stand-in for one distro's message definitions and rclpy flavour."""
    _DISTRO[0] = distro
    node_cls = JazzyNode if distro != "humble" else Node

    def module(name: str, **attributes: Any) -> types.ModuleType:
        made = types.ModuleType(name)
        made.__dict__.update(attributes)
        return made

    rclpy = module(
        "rclpy",
        init=init,
        ok=ok,
        shutdown=shutdown,
        try_shutdown=try_shutdown,
        spin=spin,
        __path__=[],
    )
    submodules = {
        "rclpy.node": module("rclpy.node", Node=node_cls),
        "rclpy.parameter": module("rclpy.parameter", Parameter=Parameter),
        "rclpy.qos": module(
            "rclpy.qos",
            QoSProfile=QoSProfile,
            HistoryPolicy=HistoryPolicy,
            ReliabilityPolicy=ReliabilityPolicy,
            DurabilityPolicy=DurabilityPolicy,
            qos_profile_sensor_data=qos_profile_sensor_data,
        ),
        "rclpy.executors": module(
            "rclpy.executors", ExternalShutdownException=ExternalShutdownException
        ),
        "rclpy.exceptions": module(
            "rclpy.exceptions",
            ParameterException=ParameterException,
            ParameterNotDeclaredException=ParameterNotDeclaredException,
            ParameterAlreadyDeclaredException=ParameterAlreadyDeclaredException,
            ParameterUninitializedException=ParameterUninitializedException,
            InvalidParameterTypeException=InvalidParameterTypeException,
            InvalidParameterValueException=InvalidParameterValueException,
        ),
        "rclpy.logging": module("rclpy.logging", get_logger=get_logger),
        "rclpy.lifecycle": module(
            "rclpy.lifecycle",
            LifecycleNode=lifecycle_node_class(node_cls),
            TransitionCallbackReturn=TransitionCallbackReturn,
        ),
    }
    for name, submodule in submodules.items():
        setattr(rclpy, name.split(".")[1], submodule)
    found = {"rclpy": rclpy, **submodules}
    found.update(messages.message_modules(distro))
    return found


def reset() -> None:
    """Forget loggers, log records and graph endpoints of earlier tests."""
    _LOGGERS.clear()
    LOG.clear()
    GRAPH.publishers.clear()
    SPIN.clear()
    _COMMAND_LINE_PARAMETERS.clear()
