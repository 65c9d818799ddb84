"""The ROS 2 side, the only part that imports rclpy, message_filters, sensor_msgs_py or
generated message modules: the node and the work it shares with the managed one (node,
lifecycle_node), its publishers and the messages of a frame (outputs, message_types), the
colour + depth input (depth_input) and what publishes an input topic (publishers). May import
every layer below; nothing imports it.
"""
