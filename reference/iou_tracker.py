"""Mask-IoU tracking with one pass over each track's pixels per frame: the oracle that the
tests and benchmarks/bench_scene.py hold ovseg_ros.scene.tracking.Tracker against (the same
assignments on the same inputs). Not part of the package.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from ovseg_ros.scene.tracking import TrackingSettings


@dataclass
class ReferenceTrack:
    id: int
    label: str
    pixels: np.ndarray  # flat indices into the instance image where it was last seen
    missed: int = 0


class ReferenceTracker:
    """update(instance image, labels) -> a track id per instance."""

    def __init__(self, settings: TrackingSettings = TrackingSettings()):
        self.settings = settings
        self.tracks: list[ReferenceTrack] = []
        self._next_id = 1
        self._shape: tuple[int, ...] | None = None

    def reset(self) -> None:
        """End every track (ids still never come back)."""
        self.tracks = []

    def update(self, instance_map: np.ndarray, labels: Sequence[str]) -> list[int]:
        """[H, W] instance image (instance i has value i + 1, 0 is none) and the class name of
        each instance -> the track id of each instance, in order."""
        if instance_map.shape != self._shape:  # another camera mode: nothing can overlap
            self.reset()
            self._shape = instance_map.shape
        count = len(labels)
        flat = instance_map.ravel()
        areas = np.bincount(flat, minlength=count + 1)[1 : count + 1]
        iou = np.zeros((len(self.tracks), count))
        labels_array = np.array(labels, dtype=object)
        for row, track in enumerate(self.tracks):
            overlap = np.bincount(flat[track.pixels], minlength=count + 1)[1 : count + 1]
            union = track.pixels.size + areas - overlap
            iou[row] = np.where(union > 0, overlap / np.maximum(union, 1), 0.0)
            iou[row, labels_array != track.label] = 0.0
        ids = [0] * count
        matched_tracks = set()
        for row, col in zip(*linear_sum_assignment(iou, maximize=True)):
            if iou[row, col] >= self.settings.min_iou:
                ids[col] = self.tracks[row].id
                matched_tracks.add(row)
        pixels = ndimage.value_indices(flat, ignore_value=0)
        survivors = []
        for row, track in enumerate(self.tracks):
            if row not in matched_tracks:
                track.missed += 1
                if track.missed <= self.settings.max_age:
                    survivors.append(track)
        by_id = {track.id: track for track in self.tracks}
        for index, label in enumerate(labels):
            where = pixels.get(index + 1, (np.empty(0, dtype=np.intp),))[0]
            if ids[index]:
                track = by_id[ids[index]]
                track.pixels, track.missed = where, 0
                survivors.append(track)
            else:
                ids[index] = self._next_id
                self._next_id += 1
                survivors.append(ReferenceTrack(ids[index], label, where))
        self.tracks = sorted(survivors, key=lambda t: t.id)
        return ids
