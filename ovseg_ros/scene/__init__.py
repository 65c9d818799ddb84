"""A result placed in the camera's 3D frame and followed through time: depth to metres and
robust per-instance geometry (geometry), track ids from motion, appearance and 3D
(tracking, with the box arithmetic in boxes), and both applied to a result (placement).
May import segmentation, models and settings.
"""
