"""The node's frame path without ROS: the segment and output stages, their hand-offs, the
vocabulary and settings they use (frame_runner) and what they count and time
(frame_stats). May import messages, scene, segmentation, models and settings; the node
drives it, the tests drive it with plain threads.
"""
