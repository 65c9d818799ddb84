"""ovseg-eval: dataset readers, metrics and the evaluation loop (no ROS)."""
