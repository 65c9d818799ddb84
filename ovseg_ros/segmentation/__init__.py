"""The ROS-free core from an image and a vocabulary to a SegmentationResult: SAM mask
proposals (proposals), crops and the CLIP mask classifier (crops, classifier), panoptic
fusion and the result types (panoptic), vocabularies and their text (vocabulary,
vocabulary_text), the Segmenter (pipeline), the overlay (visualize) and Segmenter replicas
over Ray (scale). May import models and settings.
"""
