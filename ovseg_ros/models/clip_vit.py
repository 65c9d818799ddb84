"""A walk over open_clip's VisionTransformer blocks, for forwards that encode_image cannot do.

The mask prompt replaces patch tokens between blocks and the mask tokens need an attention
mask, so those forwards (``ovseg_ros.models.mask_forwards``) run the ViT block by block on
open_clip's own modules (conv1, class_embedding, positional_embedding, ln_pre,
transformer.resblocks, ln_post, proj) rather than a copy of the model. They need a ViT
pooled by its class token with a projection, as CLIP's are (``require_class_token_vit``).

A plain self-attention block runs its own weights through ``F.scaled_dot_product_attention``
and, with QuickGELU, one in-place silu (``residual_block``): the same computation in fewer
passes over memory. Only the class token of the last block reaches the embedding, so the crop
forwards compute that block for the class token alone (``class_token_block``). BENCHMARKS.md
has what each of these saves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, ResidualAttentionBlock, VisionTransformer
from torch import nn

QUICK_GELU_SCALE = 1.702  # open_clip's QuickGELU: x * sigmoid(1.702 x)


def is_class_token_vit(visual: nn.Module) -> bool:
    """True for an open_clip VisionTransformer pooled by its class token, with a projection."""
    return (
        isinstance(visual, VisionTransformer)
        and visual.attn_pool is None
        and visual.pool_type == "tok"
        and visual.proj is not None
    )


def require_class_token_vit(visual: nn.Module) -> None:
    """Raise ValueError unless ``is_class_token_vit(visual)``, naming what was given."""
    if not is_class_token_vit(visual):
        raise ValueError(
            "the mask prompt and mask tokens need an open_clip VisionTransformer "
            "pooled by its class token with a projection (CLIP's ViTs); got "
            f"{type(visual).__name__}"
        )


def patch_tokens(visual: VisionTransformer, pixels: torch.Tensor) -> torch.Tensor:
    """[B, 3, S, S] normalised pixels -> [B, grid * grid, width] patch embeddings."""
    return visual.conv1(pixels).flatten(2).transpose(1, 2)


def add_class_token(visual: VisionTransformer, patches: torch.Tensor) -> torch.Tensor:
    """[B, P, width] -> [B, 1 + P, width] with the class token and positional embeddings."""
    cls = visual.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
    return torch.cat([cls, patches], dim=1) + visual.positional_embedding.to(patches.dtype)


def project(visual: VisionTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """[..., width] class-like tokens -> [..., D] image features (not normalised)."""
    return visual.ln_post(tokens) @ visual.proj


def is_plain_block(block: nn.Module) -> bool:
    """An open_clip ResidualAttentionBlock with a standard packed-projection self-attention,
    which ``residual_block`` may compute on its weights."""
    if not isinstance(block, ResidualAttentionBlock) or hasattr(block, "ln_1_kv"):
        return False
    attn = block.attn
    return (
        isinstance(attn, nn.MultiheadAttention)
        and attn._qkv_same_embed_dim
        and attn.bias_k is None
        and not attn.add_zero_attn
    )


def residual_block(
    visual: VisionTransformer,
    block: nn.Module,
    x: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """One residual block on [B, L, width] -> [B, L, width]; ``attn_mask`` [L, L] is additive.

    A plain block runs ``attention`` and ``mlp`` on its own weights; any other block runs its
    own forward, in the layout the transformer was built for."""
    if not is_plain_block(block):
        if visual.transformer.batch_first:
            return block(x, attn_mask=attn_mask)
        return block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)
    tokens = block.ln_1(x)
    x = x + block.ls_1(attention(block.attn, tokens, tokens, attn_mask))
    return x + block.ls_2(mlp(block.mlp, block.ln_2(x)))


def class_token_block(visual: VisionTransformer, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The class token's output of one residual block, [B, L, width] -> [B, width]: keys and
    values from every token, attention and MLP for the class token only (what a full block
    gives at x[:, 0], up to float rounding)."""
    if not is_plain_block(block):
        return residual_block(visual, block, x)[:, 0]
    tokens = block.ln_1(x)
    cls = x[:, :1] + block.ls_1(attention(block.attn, tokens[:, :1], tokens))
    return (cls + block.ls_2(mlp(block.mlp, block.ln_2(cls))))[:, 0]


def attention(
    attn: nn.MultiheadAttention,
    queries: torch.Tensor,
    tokens: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``attn(queries, tokens, tokens, attn_mask=attn_mask)[0]`` on [B, Lq, width] queries and
    [B, L, width] tokens, through ``F.scaled_dot_product_attention``: a fused kernel on the
    CPU too, where the module runs separate matmuls and a softmax over [B, heads, Lq, L] (and,
    under bf16 autocast with Lq != L, copies a weight per token)."""
    b, length, width = tokens.shape
    heads = attn.num_heads
    if queries is tokens:
        qkv = F.linear(tokens, attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = qkv.view(b, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    else:
        w_q, w_kv = attn.in_proj_weight.split([width, 2 * width])
        b_q, b_kv = (
            (None, None)
            if attn.in_proj_bias is None
            else attn.in_proj_bias.split([width, 2 * width])
        )
        q = F.linear(queries, w_q, b_q).view(b, -1, heads, width // heads).transpose(1, 2)
        kv = F.linear(tokens, w_kv, b_kv)
        k, v = kv.view(b, length, 2, heads, width // heads).permute(2, 0, 3, 1, 4)
    mask = None if attn_mask is None else attn_mask.to(q.dtype)
    attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return F.linear(
        attended.transpose(1, 2).reshape(b, -1, width), attn.out_proj.weight, attn.out_proj.bias
    )


def mlp(block_mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``block_mlp(x)`` on [..., width]. With QuickGELU, x * sigmoid(1.702 x) =
    silu(1.702 x) / 1.702, so the two scales move into the matmuls (their alpha and beta) and
    the activation becomes one in-place silu: one pass over the [tokens, 4 * width] hidden
    layer instead of three. Any other MLP runs its own forward."""
    fc, proj = getattr(block_mlp, "c_fc", None), getattr(block_mlp, "c_proj", None)
    if (
        not isinstance(getattr(block_mlp, "gelu", None), QuickGELU)
        or len(block_mlp) != 3
        or fc is None
        or proj is None
        or fc.bias is None
        or proj.bias is None
    ):
        return block_mlp(x)
    rows = x.reshape(-1, x.shape[-1])
    hidden = torch.addmm(
        fc.bias, rows, fc.weight.t(), beta=QUICK_GELU_SCALE, alpha=QUICK_GELU_SCALE
    )
    F.silu(hidden, inplace=True)
    out = torch.addmm(proj.bias, hidden, proj.weight.t(), alpha=1 / QUICK_GELU_SCALE)
    return out.view(*x.shape[:-1], out.shape[-1])


def crop_image_features(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """``model.encode_image(pixels)`` (not normalised), [B, 3, S, S] -> [B, D]; for a
    class-token ViT the last block computes the class token only, any other visual tower
    runs ``encode_image`` itself."""
    visual = model.visual
    if not is_class_token_vit(visual):
        return model.encode_image(pixels)
    x = visual.ln_pre(add_class_token(visual, patch_tokens(visual, pixels)))
    *blocks, last = visual.transformer.resblocks
    for block in blocks:
        x = residual_block(visual, block, x)
    return project(visual, class_token_block(visual, last, x))
