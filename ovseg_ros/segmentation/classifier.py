"""MaskClassifier: CLIP embeddings of mask proposals, scored against text embeddings.

Each classifier mode is one entry of ``MaskClassifier._FEATURES`` (mode name -> the method
that embeds the masks). The crops are made by ``ovseg_ros.segmentation.crops``, the mask
prompt and mask token forwards are ``ovseg_ros.models.mask_forwards``, and the ViT runs on
open_clip's own modules through ``ovseg_ros.models.clip_vit``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..models.clip_vit import crop_image_features
from ..models.mask_forwards import frame_patch_masks, mask_prompt_features, mask_token_features
from ..models.precision import DTYPES, autocast
from .crops import crop_boxes, fill_colour, masked_crops, masked_crops_per_box, region_patch_masks

if TYPE_CHECKING:
    from ..models.weights import ClipBundle

# Crops resampled and encoded together on a GPU: bounds the memory of the crops and their
# activations while keeping the GPU busy.
CROP_BATCH = 32
# The same on the CPU, where larger batches gain nothing once the activations leave the
# cache (BENCHMARKS.md has the measured batch sizes).
CPU_CROP_BATCH = 4
# Mask tokens per ViT pass; each extra pass repeats the image's own tokens.
MASK_TOKEN_BATCH = 256
# OVSeg's classification temperature: softmax(100 * cosine).
LOGIT_SCALE = 100.0


class MaskClassifier:
    """Embeds mask proposals with CLIP and scores them against text embeddings.

    ``mode`` may be changed between frames:

    - "crop": OVSeg's masked crops, batched on the device (with the mask prompt when
      ``clip.mask_embedding`` is set);
    - "mask_token": MaskCLIP's mask class tokens over the whole image stretched to the CLIP
      input (one ViT pass per MASK_TOKEN_BATCH masks; the mask prompt is not used).

    ``precision`` runs the ViT as ``ovseg_ros.models.precision`` says (bf16 under autocast on
    either device, fp16 on CUDA only). The crop resampling always runs in fp32.

    Empty masks are kept, so rows stay aligned with the proposals: in crop mode an empty
    mask (SAM's box [0, 0, 0, 0]) is a 1-pixel crop of pure fill colour, i.e. the
    embedding of a mean-grey image; in mask-token mode its token sees only CLS.
    """

    # classifier_mode -> the method giving [N, D] features of (image, masks, boxes).
    _FEATURES = {"crop": "_crop_features", "mask_token": "_mask_token_features"}

    def __init__(self, clip: ClipBundle, mode: str = "crop", precision: str = "fp32"):
        if precision not in DTYPES:
            raise ValueError(f"precision must be one of {', '.join(DTYPES)}, got {precision!r}")
        self.clip = clip
        self.mode = mode
        self.precision = precision
        self._mean = torch.tensor(clip.image_mean, dtype=torch.float32)
        self._std = torch.tensor(clip.image_std, dtype=torch.float32)

    @property
    def mode(self) -> str:
        """The classifier mode the next call runs (a key of ``_FEATURES``); settable."""
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in self._FEATURES:
            raise ValueError(
                f"classifier mode must be one of {', '.join(self._FEATURES)}, got {mode!r}"
            )
        self._mode = mode

    def embed_masks(
        self, image: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor
    ) -> torch.Tensor:
        """One embedding per mask.

        Args:
            image: [H, W, 3] uint8 RGB on the device.
            masks: [N, H, W] bool.
            boxes: [N, 4] XYXY, x1/y1 the last covered column/row (used in crop mode).
        Returns:
            [N, D] float32 unit rows ([0, D] when N is 0).
        """
        visual = self.clip.model.visual
        if masks.shape[0] == 0:
            return torch.zeros(0, visual.output_dim, device=image.device)
        with torch.inference_mode():
            features = getattr(self, self._FEATURES[self.mode])(image, masks, boxes)
        return F.normalize(features.float(), dim=-1)

    def classify(
        self,
        image: torch.Tensor,
        masks: torch.Tensor,
        boxes: torch.Tensor,
        text_embeddings: torch.Tensor,
    ) -> torch.Tensor:
        """[N, C] class probabilities: softmax(100 * embed_masks(...) @ text_embeddings.T),
        text_embeddings [C, D] unit rows."""
        return class_probabilities(self.embed_masks(image, masks, boxes), text_embeddings)

    def _normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] on the 0-255 scale -> CLIP input."""
        mean = self._mean.to(pixels.device).view(1, 3, 1, 1)
        std = self._std.to(pixels.device).view(1, 3, 1, 1)
        return (pixels / 255.0 - mean) / std

    def _crop_features(
        self, image: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor
    ) -> torch.Tensor:
        """[N, D] crop features, CROP_BATCH (CPU: CPU_CROP_BATCH) crops at a time, each
        batch's crops made as ``ovseg_ros.segmentation.crops`` says for the device."""
        model, size = self.clip.model, self.clip.image_size
        boxes = crop_boxes(boxes.to(image.device), image.shape[0], image.shape[1])
        fill = fill_colour(self.clip.image_mean).to(image.device)
        prompt = self.clip.mask_embedding
        if image.device.type == "cpu":
            make_crops, batch = masked_crops_per_box, CPU_CROP_BATCH
        else:
            make_crops, batch = masked_crops, CROP_BATCH
        features = []
        for start in range(0, masks.shape[0], batch):
            part = slice(start, start + batch)
            pixels = self._normalise(make_crops(image, masks[part], boxes[part], fill, size))
            with autocast(self.precision, image.device):
                if prompt is None:
                    features.append(crop_image_features(model, pixels))
                else:
                    patches = region_patch_masks(
                        masks[part], boxes[part], size, model.visual.patch_size[0]
                    )
                    features.append(mask_prompt_features(model.visual, pixels, patches, prompt))
        return torch.cat(features)

    def _mask_token_features(
        self, image: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[N, D] mask-token features, MASK_TOKEN_BATCH tokens per pass."""
        visual, size = self.clip.model.visual, self.clip.image_size
        # A whole frame is always shrunk a lot: antialias as CLIP's own (PIL) preprocessing.
        pixels = F.interpolate(
            image.permute(2, 0, 1)[None].float(),
            size=(size, size),
            mode="bicubic",
            align_corners=False,
            antialias=True,
        )
        pixels = self._normalise(pixels)
        # Pooled CROP_BATCH masks at a time: pooling needs a float copy of each mask.
        patches = torch.cat(
            [frame_patch_masks(part, visual.grid_size) for part in masks.split(CROP_BATCH)]
        )
        features = []
        for part in patches.split(MASK_TOKEN_BATCH):
            with autocast(self.precision, image.device):
                features.append(mask_token_features(visual, pixels, part))
        return torch.cat(features)


def class_probabilities(embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
    """[N, D] unit mask embeddings and [C, D] unit text embeddings -> [N, C] probabilities,
    softmax(100 * cosine similarity), as CLIP scores an image against its prompts."""
    logits = LOGIT_SCALE * embeddings @ text_embeddings.to(embeddings).T
    return logits.softmax(dim=-1)
