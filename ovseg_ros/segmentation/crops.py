"""Masked crops for OVSeg's crop classifier: boxes, fill colour, resampled crop tensors.

OVSeg's recipe (open_vocab_seg/utils/predictor.py and clip_adapter/utils.py in
facebookresearch/ov-seg): each mask's box [x0, y0, x1 + 1, y1 + 1] is cut out of the image
(float32, 0-255 scale), pixels outside the mask become 255 * CLIP mean (``fill_colour``), and
the crop is stretched to image_size x image_size with
``F.interpolate(mode="bicubic", align_corners=False)``. With the mask prompt the box's region
mask is resized with ``mode="nearest"`` and a patch is "in" when any of its pixels is.

Two ways to make the same crops, for the two devices:

- ``masked_crops``: all of a batch's crops at once, each output pixel's 4 x 4 bicubic taps
  gathered straight from the uint8 image (a few kernels per batch instead of several per
  mask; the GPU's way, equal to the reference up to float rounding);
- ``masked_crops_per_box``: the reference's own ``F.interpolate`` on each box (the CPU's way:
  each resize reads only its box, and the crops equal the reference's to the last bit;
  the gather's memory traffic is what a CPU cannot afford, see BENCHMARKS.md).

``reference/ovseg_crops.py`` does the recipe one mask at a time; it is the oracle of the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

_CUBIC_A = -0.75  # PyTorch's (and OpenCV's) bicubic coefficient


def fill_colour(mean: Sequence[float]) -> torch.Tensor:
    """[3] float32 colour outside the mask on the 0-255 scale: 255 * mean in float64 (Python
    floats), rounded once to float32, as OVSeg's ``torch.tensor([255.0 * c for c in mean])``."""
    return torch.tensor([255.0 * float(c) for c in mean], dtype=torch.float32)


def crop_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[N, 4] XYXY inclusive (SAM's boxes, float) -> [N, 4] int64 boxes inside the image with
    x1 >= x0 and y1 >= y0, so every crop has at least one pixel."""
    boxes = boxes.reshape(-1, 4).round().long()
    x0 = boxes[:, 0].clamp(0, width - 1)
    y0 = boxes[:, 1].clamp(0, height - 1)
    x1 = torch.maximum(boxes[:, 2].clamp(max=width - 1), x0)
    y1 = torch.maximum(boxes[:, 3].clamp(max=height - 1), y0)
    return torch.stack([x0, y0, x1, y1], dim=1)


def cubic_taps(
    start: torch.Tensor, length: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 4 source indices and weights of each output pixel along one axis, as
    ``F.interpolate(mode="bicubic", align_corners=False)`` resizes ``length`` to ``size``.

    Args:
        start, length: [N] integer crop offset and extent in the image.
    Returns:
        index [N, size, 4] int64 (absolute, clamped to the crop as PyTorch clamps to the
        input), weight [N, size, 4] float32 (rows sum to 1).
    """
    scale = length.float() / size
    real = scale[:, None] * (torch.arange(size, device=start.device) + 0.5) - 0.5
    floor = real.floor()
    t = real - floor
    offsets = torch.arange(-1, 3, device=start.device)
    index = (floor.long()[..., None] + offsets).clamp(min=0)
    index = start[:, None, None] + torch.minimum(index, (length - 1)[:, None, None])
    near = torch.stack([t, 1 - t], -1)  # taps 1 and 2, distance <= 1
    far = torch.stack([t + 1, 2 - t], -1)  # taps 0 and 3, 1 < distance < 2
    a = _CUBIC_A
    w_near = ((a + 2) * near - (a + 3)) * near * near + 1
    w_far = ((a * far - 5 * a) * far + 8 * a) * far - 4 * a
    weight = torch.stack([w_far[..., 0], w_near[..., 0], w_near[..., 1], w_far[..., 1]], -1)
    return index, weight


def nearest_taps(start: torch.Tensor, length: torch.Tensor, size: int) -> torch.Tensor:
    """[N, size] absolute source index per output pixel, as ``F.interpolate(mode="nearest")``
    (floor(i * length / size) in float32)."""
    scale = length.float() / size
    index = (torch.arange(size, device=start.device) * scale[:, None]).floor().long()
    return start[:, None] + torch.minimum(index, (length - 1)[:, None])


def masked_crops(
    image: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor, fill: torch.Tensor, size: int
) -> torch.Tensor:
    """All masks' mean-filled box crops stretched to size x size, as the reference computes
    them one by one.

    Each output pixel is a weighted sum of a 4 x 4 grid of crop pixels; those are gathered
    straight from the uint8 image and the mask, so no full-size copy is made per mask.

    Args:
        image: [H, W, 3] uint8.
        masks: [N, H, W] bool.
        boxes: [N, 4] int64 from ``crop_boxes``.
        fill: [3] float32, the colour outside the mask on the 0-255 scale.
        size: the side of the square crops.
    Returns:
        [N, 3, size, size] float32 on the 0-255 scale (bicubic overshoot not clipped,
        as in the reference).
    """
    n, _, width = masks.shape
    x0, y0, x1, y1 = boxes.unbind(1)
    rows, row_weight = cubic_taps(y0, y1 - y0 + 1, size)
    cols, col_weight = cubic_taps(x0, x1 - x0 + 1, size)
    flat = (rows.view(n, -1, 1) * width + cols.view(n, 1, -1)).view(n, -1)  # [N, 16 S^2]
    inside = masks.reshape(n, -1).gather(1, flat)[..., None]
    taps = torch.where(inside, image.reshape(-1, 3)[flat].float(), fill)  # [N, 16 S^2, 3]
    taps = taps.view(n, size, 4, size, 4, 3)
    taps = (taps * col_weight.view(n, 1, 1, size, 4, 1)).sum(4)  # [N, S, 4, S, 3]
    crops = (taps * row_weight.view(n, size, 4, 1, 1)).sum(2)  # [N, S, S, 3]
    return crops.permute(0, 3, 1, 2)


def masked_crops_per_box(
    image: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor, fill: torch.Tensor, size: int
) -> torch.Tensor:
    """``masked_crops`` computed as the reference does, one ``F.interpolate`` per box (the
    CPU's way: each resize reads only its box, and the crops equal the reference's).

    Args and returns as ``masked_crops``.
    """
    pixels = image.permute(2, 0, 1)
    fill = fill.view(3, 1, 1)
    crops = torch.empty(masks.shape[0], 3, size, size, device=image.device)
    for crop, mask, (x0, y0, x1, y1) in zip(crops, masks, boxes.tolist()):
        # where() gives the reference's pixel * 1 + 0 * fill and pixel * 0 + 1 * fill exactly.
        box = torch.where(
            mask[y0 : y1 + 1, x0 : x1 + 1], pixels[:, y0 : y1 + 1, x0 : x1 + 1].float(), fill
        )
        crop.copy_(
            F.interpolate(box[None], size=(size, size), mode="bicubic", align_corners=False)[0]
        )
    return crops


def region_patch_masks(
    masks: torch.Tensor, boxes: torch.Tensor, size: int, patch: int
) -> torch.Tensor:
    """OVSeg's patch mask per crop, for the mask prompt: the box's region mask resized
    (nearest) to size x size, a patch in when any of its pixels is.

    Args:
        masks: [N, H, W] bool; boxes: [N, 4] int64 from ``crop_boxes``.
        size, patch: the crop side and the ViT's patch side.
    Returns:
        [N, (size // patch) ** 2] bool, patches in row-major order.
    """
    n, _, width = masks.shape
    x0, y0, x1, y1 = boxes.unbind(1)
    rows = nearest_taps(y0, y1 - y0 + 1, size)
    cols = nearest_taps(x0, x1 - x0 + 1, size)
    flat = (rows[:, :, None] * width + cols[:, None, :]).view(n, -1)
    region = masks.reshape(n, -1).gather(1, flat)
    grid = size // patch
    return region.view(n, grid, patch, grid, patch).any(4).any(2).view(n, -1)
