"""What the pipeline benchmark runs on: deterministic synthetic frames, and the models (real
weights when the settings find them offline, else random weights of the same architectures),
with the predicted-IoU threshold that lets a chosen fraction of random SAM's masks through.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ovseg_ros.models.weights import SAM_CHECKPOINTS, ClipBundle, WeightsError, load_clip, load_sam
from ovseg_ros.segmentation.proposals import grid_prompts
from ovseg_ros.settings.config import Settings

FRAME_HEIGHT, FRAME_WIDTH = 480, 640
# A robot's everyday vocabulary; the last three are stuff (merged regions).
CLASSES = (
    "person",
    "chair",
    "table",
    "door",
    "door handle",
    "mug",
    "bottle",
    "laptop",
    "keyboard",
    "monitor",
    "cabinet",
    "shelf",
    "box",
    "bag",
    "plant",
    "lamp",
    "window",
    "floor",
    "wall",
    "ceiling",
)
STUFF = ("floor", "wall", "ceiling")
SAM_SEED, CLIP_SEED = 0, 1
CALIBRATION_PROMPTS = 64


# --------------------------------------------------------------------------- frames


def synthetic_frame(seed: int, height: int = FRAME_HEIGHT, width: int = FRAME_WIDTH) -> np.ndarray:
    """A deterministic HxWx3 uint8 RGB test scene: a smooth textured background (two
    gradients, low-frequency waves, pixel noise) with a dozen filled shapes and outlines."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.empty((height, width, 3), np.float32)
    for channel in range(3):
        fx, fy, phase = rng.uniform(0.005, 0.03), rng.uniform(0.005, 0.03), rng.uniform(0, 6)
        image[..., channel] = (
            90 + 60 * np.sin(fx * xs + fy * ys + phase) + 40 * ys / height + rng.uniform(-20, 20)
        )
    image += rng.normal(0, 8, image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(12):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 4)
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(20, 160))
        if kind == 0:
            cv2.rectangle(
                image, (cx - size, cy - size // 2), (cx + size, cy + size // 2), colour, -1
            )
        elif kind == 1:
            cv2.circle(image, (cx, cy), size // 2, colour, -1)
        elif kind == 2:
            cv2.ellipse(
                image, (cx, cy), (size, size // 3), float(rng.uniform(0, 180)), 0, 360, colour, -1
            )
        else:
            points = rng.integers(-size, size, (5, 2)) + np.array([cx, cy])
            cv2.fillPoly(image, [points.astype(np.int32)], colour)
        if rng.random() < 0.5:
            cv2.circle(image, (cx, cy), size // 2 + 4, (0, 0, 0), 2)
    return image


# --------------------------------------------------------------------------- models


@dataclass
class Models:
    sam: torch.nn.Module
    clip: ClipBundle
    sam_source: str  # what was loaded, for the report
    clip_source: str
    sam_random: bool


def load_models(
    settings: Settings, device: torch.device, *, random_weights: bool, mask_prompt: bool
) -> Models:
    """Real weights when the settings find them without downloading, else random weights
    of the same architectures (mask_prompt: add a random OVSeg prompt to random CLIP)."""
    settings = settings.replace(offline=True)
    sam = clip = None
    sam_source = clip_source = ""
    if not random_weights:
        try:
            sam = load_sam(settings, device)
            sam_source = "real: " + (
                settings.sam_checkpoint
                or str(settings.resolved_cache_dir() / SAM_CHECKPOINTS[settings.sam_model].filename)
            )
        except WeightsError as err:
            sam_source = f"random ({first_sentence(err)})"
        try:
            clip = load_clip(settings, device)
            clip_source = f"real: {settings.ovseg_checkpoint or settings.clip_pretrained}"
        except WeightsError as err:
            clip_source = f"random ({first_sentence(err)})"
    sam_random = sam is None
    if sam is None:
        from segment_anything import sam_model_registry

        torch.manual_seed(SAM_SEED)
        sam = sam_model_registry[settings.sam_model](checkpoint=None).to(device).eval()
        sam_source = sam_source or "random (--random-weights)"
        sam_source += f"; sam_model_registry[{settings.sam_model!r}], seed {SAM_SEED}"
    if clip is None:
        clip = random_clip(settings, device, mask_prompt)
        clip_source = clip_source or "random (--random-weights)"
        clip_source += (
            f"; open_clip {settings.clip_model} pretrained=None, "
            f"quick_gelu {clip_uses_quick_gelu(settings)}, seed {CLIP_SEED}"
            + (", random mask prompt" if mask_prompt else "")
        )
    return Models(sam, clip, sam_source, clip_source, sam_random)


def first_sentence(err: Exception) -> str:
    return str(err).split(". ")[0].splitlines()[0].rstrip(".:")


def random_clip(settings: Settings, device: torch.device, mask_prompt: bool) -> ClipBundle:
    """Random weights of the model load_clip would build: with QuickGELU where the real
    weights use it (OVSeg's checkpoints, and tags such as 'openai' whose config says so)."""
    import open_clip

    name = settings.clip_model
    torch.manual_seed(CLIP_SEED)
    model = open_clip.create_model(
        name, pretrained=None, force_quick_gelu=clip_uses_quick_gelu(settings)
    )
    model = model.to(device).eval()
    visual = model.visual
    prompt = None
    if mask_prompt:
        # OVSeg's shape [depth 3, grid * grid, width]; values of a trained prompt's scale.
        prompt = 0.1 * torch.randn(
            3, visual.grid_size[0] * visual.grid_size[1], visual.conv1.out_channels, device=device
        )
    size = visual.image_size
    return ClipBundle(
        model=model,
        tokenizer=open_clip.get_tokenizer(name),
        mask_embedding=prompt,
        image_mean=open_clip.OPENAI_DATASET_MEAN,
        image_std=open_clip.OPENAI_DATASET_STD,
        image_size=size if isinstance(size, int) else size[0],
    )


def clip_uses_quick_gelu(settings: Settings) -> bool:
    import open_clip

    if settings.ovseg_checkpoint:
        return True
    tag_cfg = open_clip.get_pretrained_cfg(settings.clip_model, settings.clip_pretrained)
    return bool(tag_cfg.get("quick_gelu", False))


@torch.inference_mode()
def iou_threshold_keeping(
    sam: torch.nn.Module, image: np.ndarray, points_per_side: int, keep_fraction: float
) -> tuple[float, int]:
    """(pred_iou_thresh, candidates): the threshold that about keep_fraction of the grid's
    candidate masks (3 per point) exceed on this image, and how many candidates there are.

    Only the decoder's IoU head is needed, so nothing is upsampled; the quantile is taken
    over at most CALIBRATION_PROMPTS prompts spread evenly over the grid (the decoder is
    the expensive part on a CPU)."""
    from segment_anything.utils.transforms import ResizeLongestSide

    transform = ResizeLongestSide(sam.image_encoder.img_size)
    resized = transform.apply_image(image)
    pixels = torch.as_tensor(resized, device=sam.device).permute(2, 0, 1)[None]
    embedding = sam.image_encoder(sam.preprocess(pixels))
    points = grid_prompts(points_per_side, image.shape[:2], transform, sam.device)
    candidates = 3 * points.shape[0]
    if points.shape[0] > CALIBRATION_PROMPTS:
        spread = torch.linspace(0, points.shape[0] - 1, CALIBRATION_PROMPTS).round().long()
        points = points[spread.to(points.device)]
    labels = torch.ones(points.shape[0], 1, dtype=torch.int, device=sam.device)
    sparse, dense = sam.prompt_encoder(points=(points, labels), boxes=None, masks=None)
    _, iou = sam.mask_decoder(
        image_embeddings=embedding,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=True,
    )
    return float(torch.quantile(iou.flatten().float(), 1.0 - keep_fraction)), candidates
