"""ovseg-segment, without ROS: arguments, inputs (images, videos, bags with depth), outputs
(files or a rosbag2 bag) and the Ray scale-out of a run (cli, cli_ray, bag_depth,
bag_writer, bag_types, depth_files). May import messages and every layer below; not the
node.
"""
