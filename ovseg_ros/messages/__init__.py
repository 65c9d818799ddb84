"""ROS message contents without rclpy: SegmentationResult to Image, PanopticSegmentation,
vision_msgs and marker messages of whichever classes are given, rclpy's or rosbags'
(convert), and depth images and CameraInfo to metres and the camera model (depth_messages).
Shared by the node and the offline tools; imports no ROS module. May import scene,
segmentation, models and settings.
"""
