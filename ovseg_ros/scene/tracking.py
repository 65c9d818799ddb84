"""Track ids that stay with an object from frame to frame: motion, appearance and 3D.

Each frame's instances are matched to the tracks within the same class name, in two rounds,
each a Hungarian assignment (scipy.optimize.linear_sum_assignment):

1. Tracks seen within the last ``max_age`` frames. Each predicts its box with a constant
   velocity (as SORT does, with an exponential average in place of the Kalman filter: the
   box moves on as its centre moved, times the frames since it was seen). A box seen much
   smaller than predicted is taken as the object partly hidden: its size is kept and it is
   anchored on the edge that agrees with the prediction (see boxes.whole_boxes). The
   overlap of a track and an instance is the larger of the IoU of the predicted box with the
   instance's box and, for a track seen in the last frame, the IoU of its last mask with the
   instance's mask. A pair may match when the overlap is at least ``min_iou``, or, with
   appearance, when the cosine similarity of the track's appearance and the instance's CLIP
   embedding is at least ``min_similarity`` and the instance's centre lies within
   MAX_JUMP predicted-box diagonals of the predicted centre (a fast mover, a camera pan, a
   sliver at an occluder's edge). Score: overlap + APPEARANCE_WEIGHT x similarity.
2. Re-identification: the instances left over against the lost tracks (not seen for more
   than ``max_age`` frames, but within ``reid_age``) that have an appearance, by appearance
   alone, wherever the instance is: similarity at least ``min_similarity``, and the best
   candidate at least REID_MARGIN above the second, on both sides (an instance that looks
   like two tracks, or a track that looks like two instances, is not guessed: it gets a new
   id).

In both rounds, when depth gave both a 3D centroid and the frames have stamps, a pair whose
centroids are further apart than ``max_speed`` x the time between them + GATE_SLACK_M is
refused. A track's appearance is the exponential average (APPEARANCE_MOMENTUM) of its
instances' unit embeddings. Without embeddings a track ends after ``max_age`` missed frames,
as a plain IoU tracker's; ids start at 1 and are never reused in a Tracker's life.

Classes are matched by name, not index, so a vocabulary change keeps the tracks of the names
that stay. Not promised: the identities of two objects of one class that look alike and
swap places while both are hidden, or that of an object whose appearance changes past
``min_similarity`` while it is away.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from .boxes import box_iou, centres, instance_boxes, whole_boxes

MAX_JUMP = 2.0  # predicted-box diagonals an instance may be from the prediction (appearance)
APPEARANCE_WEIGHT = 0.5
APPEARANCE_MOMENTUM = 0.8
REID_MARGIN = 0.05
VELOCITY_SMOOTHING = 0.5  # weight of the newest displacement in a track's velocity
GATE_SLACK_M = 0.1  # depth noise allowed on top of max_speed x dt
_REFUSED = -1e6


@dataclass(frozen=True)
class TrackingSettings:
    """min_iou: least overlap for an instance to continue a track. max_age: frames a track is
    matched by motion after it was last seen. min_similarity: least cosine similarity of
    appearance to match without overlap or to re-identify. reid_age: frames a track with an
    appearance is kept for re-identification (0: none). max_speed: metres per second a
    centroid may move between matches (0: no 3D gate)."""

    min_iou: float = 0.3
    max_age: int = 5
    min_similarity: float = 0.8
    reid_age: int = 90
    max_speed: float = 3.0


def tracking_settings(settings) -> TrackingSettings:
    """The tracking part of a config.Settings."""
    return TrackingSettings(
        min_iou=settings.track_min_iou,
        max_age=settings.track_max_age,
        min_similarity=settings.track_min_similarity,
        reid_age=settings.track_reid_age,
        max_speed=settings.track_max_speed,
    )


@dataclass
class Track:
    """One identity. ``box``: the whole object's box (x0, y0, x1, y1, ends exclusive) where it
    was last seen, ``velocity`` its centre's (x, y) pixels per frame; ``instance`` its value
    in the last frame's instance image (0: not in it), ``area`` its pixels there;
    ``appearance`` a unit vector or None; ``position`` its last 3D centroid (NaN: unknown)
    at ``stamp`` seconds (None: unknown)."""

    id: int
    label: str
    box: np.ndarray
    area: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))
    hits: int = 1
    missed: int = 0
    instance: int = 0
    appearance: np.ndarray | None = None
    position: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))
    stamp: float | None = None


class Tracker:
    """update(instance image, labels, ...) -> a track id per instance."""

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

    def update(
        self,
        instance_map: np.ndarray,
        labels: Sequence[str],
        *,
        boxes: np.ndarray | None = None,
        embeddings: np.ndarray | None = None,
        centroids: np.ndarray | None = None,
        stamp: float | None = None,
    ) -> list[int]:
        """[H, W] instance image (instance i has value i + 1, 0 is none) and the class name of
        each instance -> the track id of each instance, in order.

        Optional, per instance: ``boxes`` [N, 4] (x, y, width, height) (measured from the
        image when None), ``embeddings`` [N, D] unit CLIP embeddings (rows of NaN or None:
        no appearance), ``centroids`` [N, 3] metres (NaN: unknown); ``stamp`` the frame's
        time in seconds."""
        if instance_map.shape != self._shape:  # another camera mode: nothing can overlap
            self.reset()
            self._shape = instance_map.shape
        count = len(labels)
        flat = instance_map.ravel()
        if flat.size and int(flat.max()) > count:  # values past the list are no instance
            flat = np.where(flat <= count, flat, 0).astype(flat.dtype)
        mask_overlap, areas = self._mask_overlaps(flat, count)
        found = instance_boxes(instance_map, flat, count, boxes)
        if embeddings is not None:
            embeddings = (
                np.asarray(embeddings, dtype=np.float32).reshape(count, -1) if count else None
            )
        if centroids is None:
            centroids = np.full((count, 3), np.nan)
        centroids = np.array(centroids, dtype=np.float64).reshape(count, 3)  # a copy
        codes: dict[str, int] = {}
        label_codes = np.array(
            [codes.setdefault(label, len(codes)) for label in labels], dtype=np.int64
        )
        track_codes = np.array([codes.get(t.label, -1) for t in self.tracks], dtype=np.int64)

        tracks = self.tracks
        boxes_now = np.array([t.box for t in tracks]).reshape(-1, 4)
        velocity = np.array([t.velocity for t in tracks]).reshape(-1, 2)
        missed = np.array([t.missed for t in tracks], dtype=np.int64)
        predicted = boxes_now + np.tile(velocity, 2) * (missed + 1)[:, None]

        matched: dict[int, int] = {}  # instance -> track row
        first = np.flatnonzero(missed <= self.settings.max_age)
        if first.size and count:
            same_class = track_codes[first][:, None] == label_codes[None]
            score = self._motion_scores(
                first,
                mask_overlap[first],
                predicted[first],
                found,
                areas,
                embeddings,
                centroids,
                stamp,
                same_class,
            )
            for r, col in zip(*linear_sum_assignment(score, maximize=True)):
                if score[r, col] > _REFUSED / 2:
                    matched[int(col)] = int(first[r])
        rest_rows = [
            row
            for row, t in enumerate(tracks)
            if t.missed > self.settings.max_age and t.appearance is not None
        ]
        rest_cols = [col for col in range(count) if col not in matched]
        if rest_rows and rest_cols and embeddings is not None:
            same_class = track_codes[rest_rows][:, None] == label_codes[rest_cols][None]
            for r, c in self._reidentify(
                rest_rows, rest_cols, embeddings, centroids, stamp, same_class
            ):
                matched[rest_cols[c]] = rest_rows[r]

        looks = _unit_rows(embeddings) if embeddings is not None else None
        has_look = np.zeros(count, dtype=bool) if looks is None else np.isfinite(looks).all(axis=1)
        if matched:
            cols = np.fromiter(matched, dtype=np.int64, count=len(matched))
            rows = np.array([matched[c] for c in cols], dtype=np.int64)
            self._continue(
                rows,
                found[cols],
                predicted[rows],
                boxes_now[rows],
                velocity[rows],
                missed[rows],
                None if looks is None else looks[cols],
            )
        taken = set(matched.values())
        survivors = []
        for row, track in enumerate(tracks):
            if row in taken:
                continue
            track.missed += 1
            track.instance = 0
            keep = self.settings.max_age
            if track.appearance is not None:
                keep = max(keep, self.settings.reid_age)
            if track.missed <= keep:
                survivors.append(track)
        ids = [0] * count
        located = np.isfinite(centroids).all(axis=1)
        for index, label in enumerate(labels):
            if index in matched:
                track = tracks[matched[index]]
            else:
                look = looks[index] if looks is not None and has_look[index] else None
                track = Track(self._next_id, label, found[index].copy(), 0, appearance=look)
                self._next_id += 1
            ids[index] = track.id
            track.instance, track.area = index + 1, int(areas[index])
            if located[index]:
                track.position, track.stamp = centroids[index], stamp
            survivors.append(track)
        self.tracks = sorted(survivors, key=lambda t: t.id)
        self._last = flat.copy() if count else None
        return ids

    def _motion_scores(
        self,
        rows: np.ndarray,
        mask_overlap: np.ndarray,
        predicted: np.ndarray,
        found: np.ndarray,
        areas: np.ndarray,
        embeddings: np.ndarray | None,
        centroids: np.ndarray,
        stamp: float | None,
        same_class: np.ndarray,
    ) -> np.ndarray:
        """[len(rows), N] scores of round 1 (``predicted``: the rows' predicted boxes;
        ``same_class``: [len(rows), N] bool); _REFUSED where a pair may not match."""
        tracks = [self.tracks[row] for row in rows]
        overlap = np.maximum(box_iou(predicted, found), mask_overlap)
        allowed = same_class & (areas > 0)[None]
        allowed &= self._within_reach(tracks, centroids, stamp)
        by_overlap = overlap >= self.settings.min_iou
        score = overlap.copy()
        if embeddings is not None:
            centre, found_centre = centres(predicted), centres(found)
            dx = centre[:, 0, None] - found_centre[None, :, 0]
            dy = centre[:, 1, None] - found_centre[None, :, 1]
            diagonal = np.maximum(np.hypot(*(predicted[:, 2:] - predicted[:, :2]).T), 1.0)
            near = dx * dx + dy * dy <= ((MAX_JUMP * diagonal) ** 2)[:, None]
            similarity = self._similarity(tracks, embeddings, allowed & (by_overlap | near))
            by_appearance = near & (similarity >= self.settings.min_similarity)
            by_overlap |= by_appearance
            score += APPEARANCE_WEIGHT * np.nan_to_num(similarity, nan=0.0)
        return np.where(allowed & by_overlap, score, _REFUSED)

    def _reidentify(
        self,
        rows: list[int],
        cols: list[int],
        embeddings: np.ndarray,
        centroids: np.ndarray,
        stamp: float | None,
        same_class: np.ndarray,
    ) -> list[tuple[int, int]]:
        """(row index, column index) pairs of round 2: unambiguous appearance matches."""
        tracks = [self.tracks[row] for row in rows]
        allowed = same_class & self._within_reach(tracks, centroids[cols], stamp)
        similarity = np.nan_to_num(self._similarity(tracks, embeddings[cols], allowed), nan=-1.0)
        candidate = np.where(allowed, similarity, -1.0)
        usable = candidate >= self.settings.min_similarity
        pairs = []
        score = np.where(usable, candidate, _REFUSED)
        for r, c in zip(*linear_sum_assignment(score, maximize=True)):
            if not usable[r, c]:
                continue
            rivals_of_instance = np.delete(candidate[:, c], r)
            rivals_of_track = np.delete(candidate[r], c)
            best_rival = max(
                rivals_of_instance.max(initial=-1.0), rivals_of_track.max(initial=-1.0)
            )
            if (
                best_rival >= self.settings.min_similarity - REID_MARGIN
                and candidate[r, c] - best_rival < REID_MARGIN
            ):
                continue  # looks like another track or instance too: not guessed
            pairs.append((r, c))
        return pairs

    def _similarity(
        self, tracks: list[Track], embeddings: np.ndarray, wanted: np.ndarray
    ) -> np.ndarray:
        """[tracks, N] cosine similarity of appearances where ``wanted`` ([tracks, N] bool);
        NaN elsewhere and where a track has none. Not a BLAS matrix product: BLAS threads
        spin between calls, and the node would pay a core for a product this small."""
        shape = embeddings.shape[1:]
        rows, looks = [], []
        for row, track in enumerate(tracks):
            if track.appearance is not None and track.appearance.shape == shape:
                rows.append(row)
                looks.append(track.appearance)
        similarity = np.full((len(tracks), len(embeddings)), np.nan, dtype=np.float32)
        if not rows:
            return similarity
        known = np.stack(looks).astype(np.float32, copy=False)
        pick = wanted[rows]
        track_at, column = np.nonzero(pick)
        if 4 * len(track_at) > pick.size:  # dense: one pass over every pair
            every = np.einsum("td,nd->tn", known, embeddings)
            similarity[rows] = np.where(pick, every, np.nan)
        else:
            similarity[np.asarray(rows)[track_at], column] = np.einsum(
                "pd,pd->p", known[track_at], embeddings[column]
            )
        return similarity

    def _within_reach(
        self, tracks: list[Track], centroids: np.ndarray, stamp: float | None
    ) -> np.ndarray:
        """[tracks, N] False where both 3D positions and times are known and the move would
        be faster than max_speed."""
        reach = np.ones((len(tracks), len(centroids)), dtype=bool)
        located = np.isfinite(centroids).all(axis=1)
        if self.settings.max_speed <= 0 or stamp is None or not located.any():
            return reach
        rows = [row for row, t in enumerate(tracks) if t.stamp is not None]
        if not rows:
            return reach
        positions = np.array([tracks[row].position for row in rows])
        limit = (
            self.settings.max_speed * np.abs(stamp - np.array([tracks[row].stamp for row in rows]))
            + GATE_SLACK_M
        )
        squared = sum((positions[:, k, None] - centroids[None, :, k]) ** 2 for k in range(3))
        reach[rows] = ~(squared > (limit**2)[:, None])  # NaN (a position unknown) passes
        return reach

    def _continue(
        self,
        rows: np.ndarray,
        seen: np.ndarray,
        predicted: np.ndarray,
        boxes: np.ndarray,
        velocity: np.ndarray,
        missed: np.ndarray,
        looks: np.ndarray | None,
    ) -> None:
        """Move the matched tracks ``rows`` to their new boxes (all arrays by matched pair):
        whole box, velocity, appearance and counters."""
        whole = whole_boxes(seen, predicted)
        step = (centres(whole) - centres(boxes)) / (missed + 1)[:, None]
        reidentified = missed > self.settings.max_age  # where it went meanwhile is unknown
        whole[reidentified], step[reidentified] = seen[reidentified], 0.0
        tracks = [self.tracks[row] for row in rows]
        first_step = np.array([t.hits == 1 for t in tracks])
        velocity = np.where(
            first_step[:, None],
            step,
            (1 - VELOCITY_SMOOTHING) * velocity + VELOCITY_SMOOTHING * step,
        )
        appearance = None
        if looks is not None:
            known = np.array(
                [t.appearance is not None and t.appearance.shape == looks[0].shape for t in tracks]
            )
            before = np.array(
                [t.appearance if k else look for t, k, look in zip(tracks, known, looks)]
            )
            appearance = _unit_rows(
                np.where(
                    known[:, None],
                    APPEARANCE_MOMENTUM * before + (1 - APPEARANCE_MOMENTUM) * looks,
                    looks,
                )
            )
        finite = (
            np.zeros(len(tracks), dtype=bool)
            if appearance is None
            else np.isfinite(appearance).all(axis=1)
        )
        for k, track in enumerate(tracks):
            track.box, track.velocity = whole[k], velocity[k]
            track.hits += 1
            track.missed = 0
            if appearance is not None and finite[k]:
                track.appearance = appearance[k]

    def _mask_overlaps(self, flat: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """[tracks, count] mask IoU of each track seen in the last frame with each instance
        (0 for the others), from one joint histogram of the two instance images; and the
        [count] instance areas."""
        overlap = np.zeros((len(self.tracks), count))
        if self._last is None or not any(track.instance for track in self.tracks):
            return overlap, np.bincount(flat, minlength=count + 1)[1 : count + 1]
        rows = max(track.instance for track in self.tracks) + 1
        joint = np.bincount(
            self._last.astype(np.intp) * (count + 1) + flat, minlength=rows * (count + 1)
        ).reshape(rows, count + 1)
        areas = joint.sum(axis=0)[1:]
        seen = np.array([track.instance for track in self.tracks])
        shared = joint[seen, 1:]
        union = np.array([track.area for track in self.tracks])[:, None] + areas[None] - shared
        overlap = np.where((seen > 0)[:, None] & (union > 0), shared / np.maximum(union, 1), 0.0)
        return overlap, areas


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (rows of zeros or NaN come out NaN: no appearance)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, vectors / norms, np.nan)
