"""Fusion of classified masks into a semantic label image, an instance image and instances.

OVSeg's rule (its SAM demo): for each class c let m_c be the best probability any mask has
for c; a mask is kept for c when its probability for c exceeds ``granularity * m_c``
(granularity 1 keeps one mask per class). Each kept mask adds its whole probability vector
to the pixels it covers; a pixel's label is the argmax of that sum, and pixels covered by no
kept mask are unlabelled.

Overlaps between instances are resolved deterministically: every pixel goes to the kept
mask with the highest probability for the pixel's semantic label among the kept masks that
cover it and whose own class is that label (ties: lower proposal index wins). A pixel whose
label no covering mask has as its own class belongs to no instance. So an instance's pixels
always carry its class in the semantic image. Masks of the same stuff class are merged into
one region.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from .vocabulary import Vocabulary

UNLABELLED = 65535  # semantic image value of pixels with no class
NO_INSTANCE = 0  # instance image value of pixels with no instance
# Bytes of temporaries per band of rows in ``fuse`` (and pixels per band in ``_measure``):
# what fusion and box measurement need beyond their inputs and outputs.
FUSE_BAND_BYTES = 64 * 2**20
MEASURE_BAND_PIXELS = 2**20


@dataclass(frozen=True)
class InstanceGeometry:
    """centroid: (x, y, z) median of the inlier points; extent: (dx, dy, dz) size of the
    axis-aligned box around them; both NaN without valid depth. valid_points: the number of
    inlier points behind the two (0 when NaN)."""

    centroid: tuple[float, float, float]
    extent: tuple[float, float, float]
    valid_points: int


NO_GEOMETRY = InstanceGeometry((math.nan,) * 3, (math.nan,) * 3, 0)


@dataclass
class Instance:
    """One object (thing) or region (stuff class) in a frame.

    ``id`` is the value of its pixels in the instance image: 1 + its index in the list.
    ``bbox`` is (x, y, width, height) in pixels of its final (overlap-resolved) pixels.
    ``track_id`` (0: not tracked) and ``geometry`` (NaN: no depth) are filled by scene.py.
    """

    id: int
    class_index: int
    label: str
    score: float  # classification probability for class_index, 0..1
    mask_quality: float  # SAM's predicted IoU of the proposal(s), 0..1
    is_thing: bool
    bbox: tuple[int, int, int, int]
    area: int
    track_id: int = 0
    geometry: InstanceGeometry = NO_GEOMETRY
    # [D] float32 unit CLIP embedding of its mask(s) (the mean of a merged stuff region's),
    # for tracking by appearance; None where none was computed.
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass
class SegmentationResult:
    """Everything one frame produced, at the input image's resolution.

    semantic: [H, W] uint16 class index into ``vocabulary.names``, UNLABELLED elsewhere.
    instance_map: [H, W] uint16, 1 + index into ``instances``, NO_INSTANCE elsewhere.
    """

    semantic: np.ndarray
    instance_map: np.ndarray
    instances: list[Instance]
    vocabulary: Vocabulary
    vocabulary_version: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)

    def instance_mask(self, index: int) -> np.ndarray:
        """[H, W] bool mask of instances[index]."""
        return self.instance_map == index + 1


def select_masks(probs: torch.Tensor, granularity: float) -> torch.Tensor:
    """OVSeg's granularity selection: [N, C] probabilities -> [N, C] bool, True where mask i
    is kept for class c."""
    best = probs.max(dim=0).values  # [C]
    if granularity >= 1.0:
        keep = torch.zeros_like(probs, dtype=torch.bool)
        keep[probs.argmax(dim=0), torch.arange(probs.shape[1], device=probs.device)] = True
        return keep
    return probs > granularity * best


def fuse(
    masks: torch.Tensor,
    probs: torch.Tensor,
    mask_quality: torch.Tensor,
    vocabulary: Vocabulary,
    *,
    granularity: float = 0.8,
    unknown_thresh: float = 0.0,
    vocabulary_version: int = 0,
    embeddings: torch.Tensor | None = None,
) -> SegmentationResult:
    """Turn classified masks into a SegmentationResult.

    masks: [N, H, W] bool; probs: [N, C] class probabilities (rows sum to 1 over the
    vocabulary, plus an 'others' column when C == len(vocabulary) + 1: it never selects a
    mask, and pixels it wins stay unlabelled); mask_quality: [N] SAM predicted IoU.
    ``unknown_thresh``: pixels whose winning class has a mean probability below it over the
    kept masks covering them stay unlabelled. ``embeddings``: [N, D] unit CLIP embeddings of
    the masks; each instance gets its mask's (a stuff region the normalised mean of its
    masks').
    """
    height, width = masks.shape[-2:]
    num_classes = len(vocabulary)
    semantic = np.full((height, width), UNLABELLED, dtype=np.uint16)
    instance_map = np.zeros((height, width), dtype=np.uint16)
    if masks.shape[0] == 0 or num_classes == 0:
        return SegmentationResult(semantic, instance_map, [], vocabulary, vocabulary_version)

    keep_for = select_masks(probs, granularity)[:, :num_classes]  # 'others' never selects
    kept = keep_for.any(dim=1)
    if not bool(kept.any()):
        return SegmentationResult(semantic, instance_map, [], vocabulary, vocabulary_version)
    kept_index = kept.nonzero().squeeze(1)
    kept_probs = probs[kept_index].float()  # [K, C] or [K, C + 1] with 'others'
    # Instances: each kept mask's own class is its argmax over the vocabulary.
    own_class = kept_probs.argmax(dim=1)  # [K]
    own_score = kept_probs.gather(1, own_class[:, None]).squeeze(1)  # [K]

    # Band by band of rows, so the float temporaries stay within FUSE_BAND_BYTES.
    owner = np.full((height, width), -1, dtype=np.int32)  # kept mask owning the pixel
    per_row = width * (len(kept_index) * 10 + kept_probs.shape[1] * 4)
    rows = max(1, FUSE_BAND_BYTES // per_row)
    for top in range(0, height, rows):
        band = masks[:, top : top + rows][kept_index]  # [K, b, W] bool
        label, labelled, winner = _fuse_band(
            band, kept_probs, own_class, own_score, num_classes, unknown_thresh
        )
        semantic[top : top + rows] = torch.where(labelled, label, UNLABELLED).cpu().numpy()
        owner[top : top + rows] = winner.cpu().numpy()

    instances: list[Instance] = []
    quality = mask_quality[kept_index].float().cpu().numpy()
    own_class_np = own_class.cpu().numpy()
    own_score_np = own_score.cpu().numpy()
    owned = np.bincount(owner.ravel() + 1, minlength=len(kept_index) + 1)[1:]
    instance_of = np.zeros(len(kept_index) + 1, dtype=np.uint16)  # owner + 1 -> instance id
    stuff_region: dict[int, int] = {}  # class index -> instance id of its merged region
    for k in np.flatnonzero(owned):
        class_index = int(own_class_np[k])
        if not vocabulary.is_thing(class_index) and class_index in stuff_region:
            region = instances[stuff_region[class_index] - 1]
            instance_of[k + 1] = region.id
            region.score = max(region.score, float(own_score_np[k]))
            region.mask_quality = max(region.mask_quality, float(quality[k]))
            continue
        instance_id = len(instances) + 1
        instance_of[k + 1] = instance_id
        instances.append(
            Instance(
                id=instance_id,
                class_index=class_index,
                label=vocabulary.names[class_index],
                score=float(own_score_np[k]),
                mask_quality=float(quality[k]),
                is_thing=vocabulary.is_thing(class_index),
                bbox=(0, 0, 0, 0),
                area=0,
            )
        )
        if not vocabulary.is_thing(class_index):
            stuff_region[class_index] = instance_id
    owner += 1
    np.take(instance_of, owner, out=instance_map)
    _measure(instances, instance_map)
    if embeddings is not None:
        _attach_embeddings(instances, instance_of[1:], embeddings[kept_index])
    return SegmentationResult(semantic, instance_map, instances, vocabulary, vocabulary_version)


def _attach_embeddings(
    instances: list[Instance], instance_of: np.ndarray, embeddings: torch.Tensor
) -> None:
    """Each instance's unit embedding: the normalised sum of its kept masks' ([K] instance
    id per kept mask, 0: none; [K, D] embeddings)."""
    ids = torch.from_numpy(instance_of.astype(np.int64)).to(embeddings.device)
    sums = torch.zeros(len(instances) + 1, embeddings.shape[1], device=embeddings.device)
    sums.index_add_(0, ids, embeddings.float())
    unit = torch.nn.functional.normalize(sums[1:], dim=-1).cpu().numpy()
    for instance in instances:
        instance.embedding = unit[instance.id - 1]


def _fuse_band(
    masks: torch.Tensor,
    probs: torch.Tensor,
    own_class: torch.Tensor,
    own_score: torch.Tensor,
    num_classes: int,
    unknown_thresh: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Labels and owners of one band of rows.

    masks: [K, b, W] bool kept masks; probs: [K, C(+1)]; own_class, own_score: [K].
    Returns label [b, W] (argmax of the summed probabilities), labelled [b, W] bool and
    winner [b, W] int32 (the kept mask owning the pixel, -1 for none).
    """
    weights = masks.float()
    sums = torch.einsum("kc,khw->chw", probs, weights)  # per-pixel class sums
    coverage = weights.sum(dim=0)
    label = sums.argmax(dim=0)
    labelled = (coverage > 0) & (label < num_classes)  # 'others' wins -> unlabelled, as OVSeg
    if unknown_thresh > 0:
        mean_prob = sums.max(dim=0).values / coverage.clamp(min=1)
        labelled &= mean_prob >= unknown_thresh
    del sums
    # Score of mask k at a pixel: its probability for its class where the pixel has that label.
    claims = masks & (own_class[:, None, None] == label[None]) & labelled[None]
    claim_score = torch.where(claims, own_score[:, None, None], -1.0)
    # argmax returns the first maximum, so ties go to the lower proposal index.
    winner = torch.where(claims.any(dim=0), claim_score.argmax(dim=0), -1)
    return label, labelled, winner.to(torch.int32)


def resized(result: SegmentationResult, height: int, width: int) -> SegmentationResult:
    """The result at another resolution (nearest neighbour), instance boxes and areas
    measured again; instances that vanish keep an area of 0."""
    semantic = cv2.resize(result.semantic, (width, height), interpolation=cv2.INTER_NEAREST)
    instance_map = cv2.resize(result.instance_map, (width, height), interpolation=cv2.INTER_NEAREST)
    instances = [dataclasses.replace(i) for i in result.instances]
    _measure(instances, instance_map)
    return SegmentationResult(
        semantic,
        instance_map,
        instances,
        result.vocabulary,
        result.vocabulary_version,
        dict(result.timings_ms),
    )


def _measure(instances: list[Instance], instance_map: np.ndarray) -> None:
    """Set each instance's area and (x, y, w, h) box from the instance image.

    Band by band of rows (MEASURE_BAND_PIXELS pixels), so the index temporaries stay small
    whatever the image size; per instance only a row and a column occupancy are kept.
    """
    count = len(instances) + 1
    height, width = instance_map.shape
    area = np.zeros(count, dtype=np.int64)
    rows = np.zeros((count, height), dtype=bool)
    cols = np.zeros((count, width), dtype=bool)
    band = max(1, MEASURE_BAND_PIXELS // max(width, 1))
    for top in range(0, height, band):
        ids = instance_map[top : top + band].astype(np.intp)  # [b, W]
        area += np.bincount(ids.ravel(), minlength=count)[:count]
        rows[ids, np.arange(top, top + ids.shape[0])[:, None]] = True
        cols[ids, np.arange(width)[None, :]] = True
    for instance in instances:
        instance.area = int(area[instance.id])
        if instance.area == 0:
            instance.bbox = (0, 0, 0, 0)
            continue
        y = np.flatnonzero(rows[instance.id])
        x = np.flatnonzero(cols[instance.id])
        instance.bbox = (int(x[0]), int(y[0]), int(x[-1] - x[0] + 1), int(y[-1] - y[0] + 1))
