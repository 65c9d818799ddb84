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
from dataclasses import dataclass, field

import cv2

import numpy as np
import torch

from .vocabulary import Vocabulary

UNLABELLED = 65535  # semantic image value of pixels with no class
NO_INSTANCE = 0  # instance image value of pixels with no instance


@dataclass
class Instance:
    """One object (thing) or region (stuff class) in a frame.

    ``id`` is the value of its pixels in the instance image: 1 + its index in the list.
    ``bbox`` is (x, y, width, height) in pixels of its final (overlap-resolved) pixels.
    """

    id: int
    class_index: int
    label: str
    score: float  # classification probability for class_index, 0..1
    mask_quality: float  # SAM's predicted IoU of the proposal(s), 0..1
    is_thing: bool
    bbox: tuple[int, int, int, int]
    area: int


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


def fuse(masks: torch.Tensor, probs: torch.Tensor, mask_quality: torch.Tensor,
         vocabulary: Vocabulary, *, granularity: float = 0.8, unknown_thresh: float = 0.0,
         vocabulary_version: int = 0) -> SegmentationResult:
    """Turn classified masks into a SegmentationResult.

    masks: [N, H, W] bool; probs: [N, C] class probabilities (rows sum to 1 over the
    vocabulary, plus an 'others' column when C == len(vocabulary) + 1: it never selects a
    mask, and pixels it wins stay unlabelled); mask_quality: [N] SAM predicted IoU. ``unknown_thresh``: pixels whose winning
    class has a mean probability below it over the kept masks covering them stay unlabelled.
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
    kept_masks = masks[kept_index].float()  # [K, H, W]
    kept_probs = probs[kept_index].float()  # [K, C] or [K, C + 1] with 'others'

    # Per-pixel class sums over the kept masks that cover it.
    sums = torch.einsum("kc,khw->chw", kept_probs, kept_masks)
    coverage = kept_masks.sum(dim=0)
    label = sums.argmax(dim=0)
    labelled = (coverage > 0) & (label < num_classes)  # 'others' wins -> unlabelled, as OVSeg
    if unknown_thresh > 0:
        mean_prob = sums.max(dim=0).values / coverage.clamp(min=1)
        labelled &= mean_prob >= unknown_thresh

    # Instances: each kept mask's own class is its argmax over the vocabulary.
    own_class = kept_probs.argmax(dim=1)  # [K]
    own_score = kept_probs.gather(1, own_class[:, None]).squeeze(1)  # [K]
    # Score of mask k at a pixel: its probability for its class where the pixel has that label.
    claims = kept_masks.bool() & (own_class[:, None, None] == label[None]) & labelled[None]
    claim_score = torch.where(claims, own_score[:, None, None], torch.tensor(-1.0))
    # argmax returns the first maximum, so ties go to the lower proposal index.
    winner = claim_score.argmax(dim=0)
    has_owner = claims.any(dim=0)

    semantic_t = torch.where(labelled, label, torch.tensor(UNLABELLED))
    semantic[:] = semantic_t.to(torch.int32).cpu().numpy().astype(np.uint16)

    instances: list[Instance] = []
    owner_np = torch.where(has_owner, winner, torch.tensor(-1)).cpu().numpy()
    quality = mask_quality[kept_index].float().cpu().numpy()
    own_class_np = own_class.cpu().numpy()
    own_score_np = own_score.cpu().numpy()
    stuff_region: dict[int, int] = {}  # class index -> instance id of its merged region
    for k in range(len(kept_index)):
        pixels = owner_np == k
        area = int(pixels.sum())
        if area == 0:
            continue
        class_index = int(own_class_np[k])
        if not vocabulary.is_thing(class_index) and class_index in stuff_region:
            region = instances[stuff_region[class_index] - 1]
            instance_map[pixels] = region.id
            region.score = max(region.score, float(own_score_np[k]))
            region.mask_quality = max(region.mask_quality, float(quality[k]))
            continue
        instance_id = len(instances) + 1
        instance_map[pixels] = instance_id
        instances.append(Instance(
            id=instance_id, class_index=class_index, label=vocabulary.names[class_index],
            score=float(own_score_np[k]), mask_quality=float(quality[k]),
            is_thing=vocabulary.is_thing(class_index), bbox=(0, 0, 0, 0), area=0))
        if not vocabulary.is_thing(class_index):
            stuff_region[class_index] = instance_id
    _measure(instances, instance_map)
    return SegmentationResult(semantic, instance_map, instances, vocabulary, vocabulary_version)


def resized(result: SegmentationResult, height: int, width: int) -> SegmentationResult:
    """The result at another resolution (nearest neighbour), instance boxes and areas
    measured again; instances that vanish keep an area of 0."""
    semantic = cv2.resize(result.semantic, (width, height), interpolation=cv2.INTER_NEAREST)
    instance_map = cv2.resize(result.instance_map, (width, height),
                              interpolation=cv2.INTER_NEAREST)
    instances = [dataclasses.replace(i) for i in result.instances]
    _measure(instances, instance_map)
    return SegmentationResult(semantic, instance_map, instances, result.vocabulary,
                              result.vocabulary_version, dict(result.timings_ms))


def _measure(instances: list[Instance], instance_map: np.ndarray) -> None:
    """Set each instance's area and (x, y, w, h) box from the instance image, in one pass."""
    count = len(instances) + 1
    ids = instance_map.ravel().astype(np.intp)
    area = np.bincount(ids, minlength=count)
    rows = np.zeros((count, instance_map.shape[0]), dtype=bool)
    cols = np.zeros((count, instance_map.shape[1]), dtype=bool)
    ys, xs = np.divmod(np.arange(ids.size), instance_map.shape[1])
    rows[ids, ys] = True
    cols[ids, xs] = True
    for instance in instances:
        instance.area = int(area[instance.id])
        if instance.area == 0:
            instance.bbox = (0, 0, 0, 0)
            continue
        y = np.flatnonzero(rows[instance.id])
        x = np.flatnonzero(cols[instance.id])
        instance.bbox = (int(x[0]), int(y[0]), int(x[-1] - x[0] + 1), int(y[-1] - y[0] + 1))
