"""OVSeg's masked-crop classification, one mask at a time: the oracle that the tests and the
benchmark hold ovseg_ros's batched classifier against. Not part of the package.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ovseg_ros.models.mask_forwards import mask_prompt_features
from ovseg_ros.segmentation.crops import crop_boxes, fill_colour


def reference_crop_embeddings(
    model: torch.nn.Module,
    image: np.ndarray,
    masks: np.ndarray,
    boxes: np.ndarray | torch.Tensor | Sequence,
    mean: Sequence[float],
    std: Sequence[float],
    image_size: int,
    mask_embedding: torch.Tensor | None = None,
) -> torch.Tensor:
    """OVSeg's masked-crop embeddings, one mask at a time, in fp32 on the model's device.

    Args:
        model: open_clip CLIP (eval).
        image: [H, W, 3] uint8 RGB.
        masks: [N, H, W] bool.
        boxes: [N, 4] XYXY with x1, y1 the last covered column/row (SAM's convention).
        mean, std: CLIP normalisation on the 0-1 scale; the fill colour is ``fill_colour``.
        image_size: CLIP input side.
        mask_embedding: OVSeg's mask prompt [depth, grid * grid, width], or None for plain
            ``encode_image``.
    Returns:
        [N, D] float32 unit rows.
    """
    device = next(model.parameters()).device
    visual = model.visual
    pixels = torch.as_tensor(image, device=device).permute(2, 0, 1).float()
    masks_t = torch.as_tensor(masks, device=device)
    mean_t = torch.tensor(mean, device=device).view(3, 1, 1)
    fill = fill_colour(mean).to(device).view(3, 1, 1)
    std_t = torch.tensor(std, device=device).view(3, 1, 1)
    boxes_t = crop_boxes(torch.as_tensor(boxes, device=device), image.shape[0], image.shape[1])
    embeddings = []
    with torch.inference_mode():
        for (x0, y0, x1, y1), mask in zip(boxes_t.tolist(), masks_t):
            region = mask[y0 : y1 + 1, x0 : x1 + 1].float()
            crop = pixels[:, y0 : y1 + 1, x0 : x1 + 1] * region + (1 - region) * fill
            crop = F.interpolate(
                crop[None], size=(image_size, image_size), mode="bicubic", align_corners=False
            )
            crop = (crop / 255.0 - mean_t) / std_t
            if mask_embedding is None:
                features = model.encode_image(crop)
            else:
                region = F.interpolate(
                    region[None, None], size=(image_size, image_size), mode="nearest"
                )
                patch = torch.ceil(F.avg_pool2d(region, visual.patch_size)).flatten(1)
                features = mask_prompt_features(
                    visual, crop, patch.bool(), mask_embedding.to(device)
                )
            embeddings.append(F.normalize(features.float(), dim=-1))
    if not embeddings:
        return torch.zeros(0, visual.output_dim, device=device)
    return torch.cat(embeddings)
