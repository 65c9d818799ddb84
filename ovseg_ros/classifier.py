"""Classify mask proposals with CLIP: OVSeg's masked crops (with the mask prompt when the
checkpoint has one) or MaskCLIP's mask class tokens in one ViT pass.

The crop recipe is OVSeg's SAM demo (open_vocab_seg/utils/predictor.py and
clip_adapter/utils.py in facebookresearch/ov-seg), read to learn these facts:

- the image is float32 on the 0-255 scale; each mask's box [x0, y0, x1 + 1, y1 + 1] is cut
  out, pixels outside the mask become 255 * CLIP mean, computed in float64 and rounded once
  to float32 (``fill_colour``; not rounded to uint8);
- the crop is stretched to image_size x image_size with ``F.interpolate(mode="bicubic")``
  (align_corners=False, no antialiasing), not PIL, then divided by 255 and normalised;
- with the mask prompt (clip_adapter/adapter.py) the cropped region mask is resized with
  ``mode="nearest"`` and a patch is "in" when any of its pixels is (avg-pool, then ceil).

``reference/ovseg_crops.py`` does exactly that, one mask at a time (the oracle of the tests
and the benchmark). ``MaskClassifier``
batches the ViT forwards and makes the crops in one of two ways, per device:

- on a GPU, ``masked_crops``: all of a chunk's crops at once with the same bicubic kernel,
  gathering each output pixel's 4 x 4 taps straight from the uint8 image (a few kernels
  per chunk instead of several per mask; equal to the reference up to float rounding);
- on the CPU, ``masked_crops_per_box``: the reference's own ``F.interpolate`` call on each
  box (the reference's crops to the last bit). The gather materialises 16 taps x 3 channels per output pixel
  (about 10 MB per crop), memory-bound work that measured 9x slower than the resize on
  the CPU; there, a loop of small resizes costs nothing next to the ViT.

Only the class token of the last ViT block reaches the embedding, so the crop forwards
(plain and mask-prompted) compute that block's keys and values for every token but its
attention and MLP for the class token alone: the same numbers as ``encode_image`` up to
float rounding, with about 7 % less work on a 12-block ViT. All blocks run on open_clip's
own weights through ``F.scaled_dot_product_attention`` and, with QuickGELU, one in-place
silu (``_block``, ``_class_token_block``): the same computation in fewer passes over memory,
which took a ViT-B/16 crop batch on 2 CPU cores from about 207 to 160 ms per crop.

The ViT forwards for the mask prompt and the mask tokens walk open_clip's own modules
(conv1, class_embedding, positional_embedding, ln_pre, transformer.resblocks, ln_post,
proj); they need a VisionTransformer pooled by its class token, as CLIP's ViTs are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, ResidualAttentionBlock, VisionTransformer
from torch import nn

from ovseg_ros.config import CLASSIFIER_MODES
from ovseg_ros.precision import DTYPES, autocast

if TYPE_CHECKING:
    from ovseg_ros.weights import ClipBundle

MODES = CLASSIFIER_MODES  # each one an entry of MaskClassifier._FEATURES
# Crops resampled and encoded together: bounds memory (about 20 MB per crop at 224 before
# the ViT) while keeping the GPU busy.
CROP_BATCH = 32
# The same on the CPU. Measured with ViT-B-16 on 2 cores, ms per crop at batch 1/2/4/8/16:
# fp32 183/170/164/165/183 (past 8 the activations leave the cache); bf16 at 1/2/4/8:
# about 66/58/56/60.
CPU_CROP_BATCH = 4
# Mask tokens per ViT pass; each extra pass repeats the image's own tokens.
MASK_TOKEN_BATCH = 256
# OVSeg's classification temperature: softmax(100 * cosine).
LOGIT_SCALE = 100.0
QUICK_GELU_SCALE = 1.702  # open_clip's QuickGELU: x * sigmoid(1.702 x)
_CUBIC_A = -0.75  # PyTorch's (and OpenCV's) bicubic coefficient


# --- Crop geometry -------------------------------------------------------------

def fill_colour(mean: Sequence[float]) -> torch.Tensor:
    """[3] float32 colour outside the mask on the 0-255 scale: 255 * mean in float64 (Python
    floats), rounded once to float32, as OVSeg's ``torch.tensor([255.0 * c for c in mean])``."""
    return torch.tensor([255.0 * float(c) for c in mean], dtype=torch.float32)


def crop_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[N, 4] XYXY inclusive -> integer boxes inside the image with x1 >= x0, y1 >= y0."""
    boxes = boxes.reshape(-1, 4).round().long()
    x0 = boxes[:, 0].clamp(0, width - 1)
    y0 = boxes[:, 1].clamp(0, height - 1)
    x1 = torch.maximum(boxes[:, 2].clamp(max=width - 1), x0)
    y1 = torch.maximum(boxes[:, 3].clamp(max=height - 1), y0)
    return torch.stack([x0, y0, x1, y1], dim=1)


# --- Batched crops -------------------------------------------------------------------

def cubic_taps(start: torch.Tensor, length: torch.Tensor, size: int
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
    near = torch.stack([t, 1 - t], -1)          # taps 1 and 2, distance <= 1
    far = torch.stack([t + 1, 2 - t], -1)       # taps 0 and 3, 1 < distance < 2
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


def masked_crops(image: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor,
                 fill: torch.Tensor, size: int) -> torch.Tensor:
    """All masks' mean-filled box crops stretched to size x size, as the reference computes
    them one by one.

    Each output pixel is a weighted sum of a 4 x 4 grid of crop pixels; those are gathered
    straight from the uint8 image and the mask, so no full-size copy is made per mask.

    Args:
        image: [H, W, 3] uint8.
        masks: [N, H, W] bool.
        boxes: [N, 4] int64 from ``crop_boxes``.
        fill: [3] float32, the colour outside the mask on the 0-255 scale.
    Returns:
        [N, 3, size, size] float32 on the 0-255 scale (bicubic overshoot not clipped,
        as in the reference).
    """
    n, _, width = masks.shape
    x0, y0, x1, y1 = boxes.unbind(1)
    rows, row_weight = cubic_taps(y0, y1 - y0 + 1, size)
    cols, col_weight = cubic_taps(x0, x1 - x0 + 1, size)
    flat = (rows.view(n, -1, 1) * width + cols.view(n, 1, -1)).view(n, -1)   # [N, 16 S^2]
    inside = masks.reshape(n, -1).gather(1, flat)[..., None]
    taps = torch.where(inside, image.reshape(-1, 3)[flat].float(), fill)     # [N, 16 S^2, 3]
    taps = taps.view(n, size, 4, size, 4, 3)
    taps = (taps * col_weight.view(n, 1, 1, size, 4, 1)).sum(4)              # [N, S, 4, S, 3]
    crops = (taps * row_weight.view(n, size, 4, 1, 1)).sum(2)                # [N, S, S, 3]
    return crops.permute(0, 3, 1, 2)


def masked_crops_per_box(image: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor,
                         fill: torch.Tensor, size: int) -> torch.Tensor:
    """``masked_crops`` computed as the reference does, one ``F.interpolate`` per box (the
    CPU's way: each resize reads only its box, and the crops equal the reference's).

    Args and returns as ``masked_crops``.
    """
    pixels = image.permute(2, 0, 1)
    fill = fill.view(3, 1, 1)
    crops = torch.empty(masks.shape[0], 3, size, size, device=image.device)
    for crop, mask, (x0, y0, x1, y1) in zip(crops, masks, boxes.tolist()):
        # where() gives the reference's pixel * 1 + 0 * fill and pixel * 0 + 1 * fill exactly.
        box = torch.where(mask[y0:y1 + 1, x0:x1 + 1], pixels[:, y0:y1 + 1, x0:x1 + 1].float(),
                          fill)
        crop.copy_(F.interpolate(box[None], size=(size, size), mode="bicubic",
                                 align_corners=False)[0])
    return crops


def region_patch_masks(masks: torch.Tensor, boxes: torch.Tensor, size: int, patch: int
                       ) -> torch.Tensor:
    """OVSeg's patch mask per crop: the box's region mask resized (nearest) to size x size,
    a patch in when any of its pixels is.

    Args:
        masks: [N, H, W] bool; boxes: [N, 4] int64 from ``crop_boxes``.
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


# --- ViT forwards that walk open_clip's modules ----------------------------------------

def _is_class_token_vit(visual: torch.nn.Module) -> bool:
    return (isinstance(visual, VisionTransformer) and visual.attn_pool is None
            and visual.pool_type == "tok" and visual.proj is not None)


def _require_class_token_vit(visual: torch.nn.Module) -> None:
    if not _is_class_token_vit(visual):
        raise ValueError("the mask prompt and mask tokens need an open_clip VisionTransformer "
                         "pooled by its class token with a projection (CLIP's ViTs); got "
                         f"{type(visual).__name__}")


def _patch_tokens(visual: VisionTransformer, pixels: torch.Tensor) -> torch.Tensor:
    """[B, 3, S, S] normalised pixels -> [B, grid * grid, width] patch embeddings."""
    return visual.conv1(pixels).flatten(2).transpose(1, 2)


def _add_class_token(visual: VisionTransformer, patches: torch.Tensor) -> torch.Tensor:
    """[B, P, width] -> [B, 1 + P, width] with the class token and positional embeddings."""
    cls = visual.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
    return torch.cat([cls, patches], dim=1) + visual.positional_embedding.to(patches.dtype)


def _block(visual: VisionTransformer, block: torch.nn.Module, x: torch.Tensor,
           attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """One residual block on [B, L, width] -> [B, L, width].

    A plain self-attention block runs ``_attention`` and ``_mlp`` on its own weights
    (the same computation in fewer passes over memory); any other block runs its own
    forward, in the layout the transformer was built for. ``attn_mask`` is additive."""
    if not _is_plain_block(block):
        if visual.transformer.batch_first:
            return block(x, attn_mask=attn_mask)
        return block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)
    tokens = block.ln_1(x)
    x = x + block.ls_1(_attention(block.attn, tokens, tokens, attn_mask))
    return x + block.ls_2(_mlp(block.mlp, block.ln_2(x)))


def _is_plain_block(block: torch.nn.Module) -> bool:
    """An open_clip ResidualAttentionBlock with a standard packed-projection attention."""
    if not isinstance(block, ResidualAttentionBlock) or hasattr(block, "ln_1_kv"):
        return False
    attn = block.attn
    return (isinstance(attn, nn.MultiheadAttention) and attn._qkv_same_embed_dim
            and attn.bias_k is None and not attn.add_zero_attn)


def _attention(attn: nn.MultiheadAttention, queries: torch.Tensor, tokens: torch.Tensor,
               attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``attn(queries, tokens, tokens, attn_mask=attn_mask)[0]`` on [B, Lq, width] queries
    and [B, L, width] tokens, through ``F.scaled_dot_product_attention``: a fused kernel on
    the CPU too, where the module runs separate matmuls and a softmax over [B, heads, Lq, L]
    (and, under bf16 autocast with Lq != L, copied a weight per token: 0.7 s a crop)."""
    b, length, width = tokens.shape
    heads = attn.num_heads
    if queries is tokens:
        qkv = F.linear(tokens, attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = qkv.view(b, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    else:
        w_q, w_kv = attn.in_proj_weight.split([width, 2 * width])
        b_q, b_kv = ((None, None) if attn.in_proj_bias is None
                     else attn.in_proj_bias.split([width, 2 * width]))
        q = F.linear(queries, w_q, b_q).view(b, -1, heads, width // heads).transpose(1, 2)
        kv = F.linear(tokens, w_kv, b_kv)
        k, v = kv.view(b, length, 2, heads, width // heads).permute(2, 0, 3, 1, 4)
    mask = None if attn_mask is None else attn_mask.to(q.dtype)
    attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return F.linear(attended.transpose(1, 2).reshape(b, -1, width),
                    attn.out_proj.weight, attn.out_proj.bias)


def _mlp(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``mlp(x)``. With QuickGELU, x * sigmoid(1.702 x) = silu(1.702 x) / 1.702, so the two
    scales move into the matmuls (their alpha and beta) and the activation becomes one
    in-place silu: one pass over the [tokens, 4 * width] hidden layer instead of three.
    Measured with ViT-B/16 crops at batch 8 on 2 CPU cores: 207 -> 177 ms per crop (and
    160 with ``_attention`` too)."""
    fc, proj = getattr(mlp, "c_fc", None), getattr(mlp, "c_proj", None)
    if (not isinstance(getattr(mlp, "gelu", None), QuickGELU) or len(mlp) != 3
            or fc is None or proj is None or fc.bias is None or proj.bias is None):
        return mlp(x)
    rows = x.reshape(-1, x.shape[-1])
    hidden = torch.addmm(fc.bias, rows, fc.weight.t(), beta=QUICK_GELU_SCALE,
                         alpha=QUICK_GELU_SCALE)
    F.silu(hidden, inplace=True)
    out = torch.addmm(proj.bias, hidden, proj.weight.t(), alpha=1 / QUICK_GELU_SCALE)
    return out.view(*x.shape[:-1], out.shape[-1])


def _class_token_block(visual: VisionTransformer, block: torch.nn.Module, x: torch.Tensor
                       ) -> torch.Tensor:
    """The class token's output of one residual block on [B, L, width] -> [B, width]: keys
    and values from every token, attention and MLP for the class token only (what a full
    block gives at x[:, 0], up to float rounding)."""
    if not _is_plain_block(block):
        return _block(visual, block, x)[:, 0]
    tokens = block.ln_1(x)
    cls = x[:, :1] + block.ls_1(_attention(block.attn, tokens[:, :1], tokens))
    return (cls + block.ls_2(_mlp(block.mlp, block.ln_2(cls))))[:, 0]


def crop_image_features(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """``model.encode_image(pixels)`` (not normalised), [B, 3, S, S] -> [B, D]; for a
    class-token ViT the last block computes the class token only."""
    visual = model.visual
    if not _is_class_token_vit(visual):
        return model.encode_image(pixels)
    x = visual.ln_pre(_add_class_token(visual, _patch_tokens(visual, pixels)))
    *blocks, last = visual.transformer.resblocks
    for block in blocks:
        x = _block(visual, block, x)
    return _project(visual, _class_token_block(visual, last, x))


def _project(visual: VisionTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """[..., width] class-like tokens -> [..., D] image features (not normalised)."""
    return visual.ln_post(tokens) @ visual.proj


def mask_prompt_features(visual: VisionTransformer, pixels: torch.Tensor,
                         patch_mask: torch.Tensor, mask_embedding: torch.Tensor
                         ) -> torch.Tensor:
    """OVSeg's mask prompt tuning forward.

    Patch tokens outside the mask are replaced by the prompt: after the patch embedding
    (before the class token and positional embedding) by E[0], after block d by E[d] for
    d = 1 .. depth - 1. The class token is never replaced and there is no attention mask.
    Patch dropout is skipped: it is the identity in eval and would misalign the mask.

    Args:
        pixels: [B, 3, S, S] normalised crops.
        patch_mask: [B, grid * grid] bool, True = patch inside the mask.
        mask_embedding: [depth, grid * grid (or 1), width].
    Returns:
        [B, D] features, not normalised.
    """
    _require_class_token_vit(visual)
    x = _patch_tokens(visual, pixels)
    keep = patch_mask[..., None].to(x.dtype)
    prompt = mask_embedding.to(x.dtype)
    x = x * keep + prompt[0] * (1 - keep)
    x = visual.ln_pre(_add_class_token(visual, x))
    *blocks, last = visual.transformer.resblocks
    for depth, block in enumerate(blocks, start=1):
        x = _block(visual, block, x)
        if depth < prompt.shape[0]:
            x = torch.cat([x[:, :1], x[:, 1:] * keep + prompt[depth] * (1 - keep)], dim=1)
    # The prompt after the last block would only touch patch tokens, which are not read.
    return _project(visual, _class_token_block(visual, last, x))


def mask_token_attention_mask(patch_masks: torch.Tensor) -> torch.Tensor:
    """Additive attention mask for [Q mask tokens, CLS, P patches] (MaskCLIP).

    No token attends to a mask-token column (so CLS and patch rows compute the plain image);
    mask token i attends to CLS and to the patches its mask touches. Float with -inf, not
    bool: open_clip's ResidualAttentionBlock casts the mask to the activations' dtype, which
    would turn a bool mask into an additive 0/1.

    Args:
        patch_masks: [Q, P] bool.
    Returns:
        [Q + 1 + P, Q + 1 + P] float32, 0 = may attend, -inf = blocked.
    """
    q, p = patch_masks.shape
    blocked = torch.zeros(q + 1 + p, q + 1 + p, dtype=torch.bool, device=patch_masks.device)
    blocked[:, :q] = True
    blocked[:q, q + 1:] = ~patch_masks
    return torch.zeros(blocked.shape, device=blocked.device).masked_fill(blocked, float("-inf"))


def mask_token_features(visual: VisionTransformer, pixels: torch.Tensor,
                        patch_masks: torch.Tensor) -> torch.Tensor:
    """MaskCLIP mask class tokens: one pass over [Q mask tokens, CLS, patches].

    Each mask token starts as the class token (class embedding + its positional embedding)
    and sees only CLS and its mask's patches, in every layer.

    Args:
        pixels: [1, 3, S, S] the normalised whole image.
        patch_masks: [Q, grid * grid] bool.
    Returns:
        [Q, D] features, not normalised.
    """
    _require_class_token_vit(visual)
    q = patch_masks.shape[0]
    x = _add_class_token(visual, _patch_tokens(visual, pixels))
    x = visual.ln_pre(torch.cat([x[:, :1].expand(1, q, -1), x], dim=1))
    attn_mask = mask_token_attention_mask(patch_masks)
    for block in visual.transformer.resblocks:
        x = _block(visual, block, x, attn_mask)
    return _project(visual, x[0, :q])


def frame_patch_masks(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[Q, H, W] bool -> [Q, grid_h * grid_w] bool: a patch is in when any mask pixel lies in
    its footprint on the image (max-pool over the patch's area, so no mask vanishes however
    small it is, which max-pooling a nearest-resized mask would not promise)."""
    pooled = F.adaptive_max_pool2d(masks[:, None].float(), grid)
    return pooled.flatten(1) > 0


# --- The classifier ----------------------------------------------------------------------

class MaskClassifier:
    """Embeds mask proposals with CLIP and scores them against text embeddings.

    ``mode`` may be changed between frames:

    - "crop": OVSeg's masked crops, batched on the device (with the mask prompt when
      ``clip.mask_embedding`` is set);
    - "mask_token": MaskCLIP's mask class tokens over the whole image stretched to the CLIP
      input (one ViT pass per MASK_TOKEN_BATCH masks; the mask prompt is not used).

    ``precision`` runs the ViT as ``ovseg_ros.precision`` says (bf16 under autocast on
    either device, fp16 on CUDA only). The crop resampling always runs in fp32.

    Empty masks are kept, so rows stay aligned with the proposals: in crop mode an empty
    mask (SAM's box [0, 0, 0, 0]) is a 1-pixel crop of pure fill colour, i.e. the
    embedding of a mean-grey image; in mask-token mode its token sees only CLS.
    """

    # classifier_mode -> the method giving [N, D] features of (image, masks, boxes).
    _FEATURES = {"crop": "_crop_features", "mask_token": "_mask_token_features"}

    def __init__(self, clip: "ClipBundle", mode: str = "crop", precision: str = "fp32"):
        if precision not in DTYPES:
            raise ValueError(f"precision must be one of {', '.join(DTYPES)}, got {precision!r}")
        self.clip = clip
        self.mode = mode
        self.precision = precision
        self._mean = torch.tensor(clip.image_mean, dtype=torch.float32)
        self._std = torch.tensor(clip.image_std, dtype=torch.float32)

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"classifier mode must be one of {', '.join(MODES)}, got {mode!r}")
        self._mode = mode

    def embed_masks(self, image: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor
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

    def classify(self, image: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor,
                 text_embeddings: torch.Tensor) -> torch.Tensor:
        """[N, C] class probabilities: softmax(100 * embed_masks(...) @ text_embeddings.T),
        text_embeddings [C, D] unit rows."""
        embeddings = self.embed_masks(image, masks, boxes)
        logits = LOGIT_SCALE * embeddings @ text_embeddings.to(embeddings).T
        return logits.softmax(dim=-1)

    def _normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] on the 0-255 scale -> CLIP input."""
        mean = self._mean.to(pixels.device).view(1, 3, 1, 1)
        std = self._std.to(pixels.device).view(1, 3, 1, 1)
        return (pixels / 255.0 - mean) / std

    def _crop_features(self, image: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor
                       ) -> torch.Tensor:
        """[N, D] crop features, CROP_BATCH (CPU: CPU_CROP_BATCH) crops at a time.

        On the CPU the crops are cut per box (see the module docstring). Measured there
        (ViT-B-16 fp32): the ViT takes over 95 % of the time, and its matmuls, which run at
        about 210 GFLOP/s whatever the batch, are about 156 ms of the 164 ms per crop:
        batching gains little more on the CPU; it pays on a GPU.
        """
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
                    patches = region_patch_masks(masks[part], boxes[part], size,
                                                 model.visual.patch_size[0])
                    features.append(mask_prompt_features(model.visual, pixels, patches, prompt))
        return torch.cat(features)

    def _mask_token_features(self, image: torch.Tensor, masks: torch.Tensor,
                             boxes: torch.Tensor | None = None) -> torch.Tensor:
        """[N, D] mask-token features, MASK_TOKEN_BATCH tokens per pass."""
        visual, size = self.clip.model.visual, self.clip.image_size
        # A whole frame is always shrunk a lot: antialias as CLIP's own (PIL) preprocessing.
        pixels = F.interpolate(image.permute(2, 0, 1)[None].float(), size=(size, size),
                               mode="bicubic", align_corners=False, antialias=True)
        pixels = self._normalise(pixels)
        # Pooled CROP_BATCH masks at a time: pooling needs a float copy of each mask.
        patches = torch.cat([frame_patch_masks(part, visual.grid_size)
                             for part in masks.split(CROP_BATCH)])
        features = []
        for part in patches.split(MASK_TOKEN_BATCH):
            with autocast(self.precision, image.device):
                features.append(mask_token_features(visual, pixels, part))
        return torch.cat(features)
