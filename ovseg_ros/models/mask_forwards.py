"""The two ViT forwards that see the mask: OVSeg's mask prompt and MaskCLIP's mask tokens.

- ``mask_prompt_features``: a masked crop through the ViT with OVSeg's learned mask prompt
  in place of the patch tokens outside the mask (OVSeg's clip_adapter/adapter.py).
- ``mask_token_features``: the whole image through the ViT once, with one extra class token
  per mask that attends only to the class token and its mask's patches (MaskCLIP).

Both walk open_clip's own modules through ``ovseg_ros.models.clip_vit`` and refuse a ViT that is not
pooled by its class token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer

from .clip_vit import (
    add_class_token,
    class_token_block,
    patch_tokens,
    project,
    require_class_token_vit,
    residual_block,
)


def mask_prompt_features(
    visual: VisionTransformer,
    pixels: torch.Tensor,
    patch_mask: torch.Tensor,
    mask_embedding: torch.Tensor,
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
    require_class_token_vit(visual)
    x = patch_tokens(visual, pixels)
    keep = patch_mask[..., None].to(x.dtype)
    prompt = mask_embedding.to(x.dtype)
    x = x * keep + prompt[0] * (1 - keep)
    x = visual.ln_pre(add_class_token(visual, x))
    *blocks, last = visual.transformer.resblocks
    for depth, block in enumerate(blocks, start=1):
        x = residual_block(visual, block, x)
        if depth < prompt.shape[0]:
            x = torch.cat([x[:, :1], x[:, 1:] * keep + prompt[depth] * (1 - keep)], dim=1)
    # The prompt after the last block would only touch patch tokens, which are not read.
    return project(visual, class_token_block(visual, last, x))


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
    blocked[:q, q + 1 :] = ~patch_masks
    return torch.zeros(blocked.shape, device=blocked.device).masked_fill(blocked, float("-inf"))


def mask_token_features(
    visual: VisionTransformer, pixels: torch.Tensor, patch_masks: torch.Tensor
) -> torch.Tensor:
    """MaskCLIP mask class tokens: one pass over [Q mask tokens, CLS, patches].

    Each mask token starts as the class token (class embedding + its positional embedding)
    and sees only CLS and its mask's patches, in every layer.

    Args:
        pixels: [1, 3, S, S] the normalised whole image.
        patch_masks: [Q, grid * grid] bool, from ``frame_patch_masks``.
    Returns:
        [Q, D] features, not normalised.
    """
    require_class_token_vit(visual)
    q = patch_masks.shape[0]
    x = add_class_token(visual, patch_tokens(visual, pixels))
    x = visual.ln_pre(torch.cat([x[:, :1].expand(1, q, -1), x], dim=1))
    attn_mask = mask_token_attention_mask(patch_masks)
    for block in visual.transformer.resblocks:
        x = residual_block(visual, block, x, attn_mask)
    return project(visual, x[0, :q])


def frame_patch_masks(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[Q, H, W] bool -> [Q, grid_h * grid_w] bool: a patch is in when any mask pixel lies in
    its footprint on the image (max-pool over the patch's area, so no mask vanishes however
    small it is, which max-pooling a nearest-resized mask would not promise)."""
    pooled = F.adaptive_max_pool2d(masks[:, None].float(), grid)
    return pooled.flatten(1) > 0
