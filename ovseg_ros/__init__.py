"""ovseg_ros: open-vocabulary segmentation (SAM proposals + mask-adapted CLIP) for ROS 2.

The ROS-free core (config, vocabulary, proposals, classifier, panoptic, pipeline, cli) imports
no ROS module; ovseg_ros.node and ovseg_ros.convert are the ROS side.
"""

__version__ = "0.1.0"
