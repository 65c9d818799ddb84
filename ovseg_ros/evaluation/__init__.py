"""ovseg-eval, without ROS: dataset readers (datasets), mIoU as OVSeg's evaluator and PQ as
panopticapi (metrics), the evaluation loop and report (evaluate) and the command (cli). May
import segmentation, models and settings.
"""
