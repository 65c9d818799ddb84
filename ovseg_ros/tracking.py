"""Track ids that stay with an object from frame to frame.

Each frame's instances are matched to the live tracks by mask IoU (pixels of the instance
image against a track's last seen pixels), only within the same class name, with the Hungarian
assignment (scipy.optimize.linear_sum_assignment); a match needs IoU >= min_iou. Unmatched
instances start new tracks; a track not seen for more than max_age frames ends. Ids start at 1
and are never reused in a Tracker's life.

Classes are matched by name, not index, so a vocabulary change keeps the tracks of the names
that stay; tracks of names that left can no longer match and end after max_age frames. What
tracking does not promise: re-identification after an object was out of view for longer than
max_age frames, or through a full occlusion; fast motion that leaves no overlap between two
frames starts a new track.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class TrackingSettings:
    """min_iou: least mask IoU for an instance to continue a track. max_age: frames a track
    survives without a match."""

    min_iou: float = 0.3
    max_age: int = 5


def tracking_settings(settings) -> TrackingSettings:
    """The tracking part of a config.Settings."""
    return TrackingSettings(min_iou=settings.track_min_iou, max_age=settings.track_max_age)


@dataclass
class Track:
    """A live track. Where it was last seen: the instance ``instance`` of the last frame's
    instance image when it was matched in that frame, else ``pixels`` (flat indices);
    ``area`` pixels either way."""

    id: int
    label: str
    area: int
    instance: int = 0
    pixels: np.ndarray | None = None
    missed: int = 0


class Tracker:
    """update(instance image, labels) -> a track id per instance.

    Overlaps come from one joint histogram of the last frame's instance image against the
    new one (all tracks seen in the last frame at once), plus one histogram per track that
    was missed in it, rather than a pass over every track's pixels.
    """

    def __init__(self, settings: TrackingSettings = TrackingSettings()):
        self.settings = settings
        self.tracks: list[Track] = []
        self._next_id = 1
        self._shape: tuple[int, ...] | None = None
        self._last: np.ndarray | None = None  # the last frame's flat instance image

    def reset(self) -> None:
        """End every track (ids still never come back)."""
        self.tracks = []
        self._last = None

    def update(self, instance_map: np.ndarray, labels: Sequence[str]) -> list[int]:
        """[H, W] instance image (instance i has value i + 1, 0 is none) and the class name of
        each instance -> the track id of each instance, in order."""
        if instance_map.shape != self._shape:  # another camera mode: nothing can overlap
            self.reset()
            self._shape = instance_map.shape
        count = len(labels)
        flat = instance_map.ravel()
        if flat.size and int(flat.max()) > count:  # values past the list are no instance
            flat = np.where(flat <= count, flat, 0).astype(flat.dtype)
        overlap, areas = self._overlaps(flat, count)
        track_areas = np.array([track.area for track in self.tracks], dtype=float)
        union = track_areas[:, None] + areas[None, :] - overlap
        iou = np.where(union > 0, overlap / np.maximum(union, 1), 0.0)
        track_labels = np.array([track.label for track in self.tracks], dtype=object)
        iou[track_labels[:, None] != np.array(labels, dtype=object)[None, :]] = 0.0
        ids = [0] * count
        matched = set()
        for row, col in zip(*linear_sum_assignment(iou, maximize=True)):
            if iou[row, col] >= self.settings.min_iou:
                ids[col] = self.tracks[row].id
                matched.add(row)
        survivors = []
        leaving_last = []  # missed tracks that were in the last frame: keep their pixels
        for row, track in enumerate(self.tracks):
            if row in matched:
                continue
            track.missed += 1
            if track.missed <= self.settings.max_age:
                survivors.append(track)
                if track.instance:
                    leaving_last.append(track)
        for track, pixels in zip(leaving_last, self._pixels_in_last(
                [track.instance for track in leaving_last])):
            track.instance, track.pixels = 0, pixels
        by_id = {track.id: track for track in self.tracks}
        for index, label in enumerate(labels):
            if ids[index]:
                track = by_id[ids[index]]
                track.missed = 0
            else:
                ids[index] = self._next_id
                self._next_id += 1
                track = Track(ids[index], label, 0)
            track.instance, track.pixels, track.area = index + 1, None, int(areas[index])
            survivors.append(track)
        self.tracks = sorted(survivors, key=lambda t: t.id)
        self._last = flat.copy() if count else None
        return ids

    def _overlaps(self, flat: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """[tracks, count] pixels each track shares with each instance, and the [count]
        instance areas."""
        overlap = np.zeros((len(self.tracks), count))
        if self._last is not None and any(track.instance for track in self.tracks):
            rows = max(track.instance for track in self.tracks) + 1
            joint = np.bincount(self._last.astype(np.intp) * (count + 1) + flat,
                                minlength=rows * (count + 1)).reshape(rows, count + 1)
            areas = joint.sum(axis=0)[1:]
        else:
            joint = None
            areas = np.bincount(flat, minlength=count + 1)[1:count + 1]
        for row, track in enumerate(self.tracks):
            if track.instance:
                overlap[row] = joint[track.instance, 1:]
            elif track.pixels is not None and count:
                overlap[row] = np.bincount(flat[track.pixels], minlength=count + 1)[1:count + 1]
        return overlap, areas

    def _pixels_in_last(self, instances: list[int]) -> list[np.ndarray]:
        """The flat indices of each of these instances in the last frame's instance image."""
        if len(instances) <= 4:
            return [np.flatnonzero(self._last == instance) for instance in instances]
        found = ndimage.value_indices(self._last, ignore_value=0)
        empty = (np.empty(0, dtype=np.intp),)
        return [found.get(instance, empty)[0] for instance in instances]
