"""SAM's mask decoder for many point prompts on one image, with the stock decoder's weights.

Why not ``sam.mask_decoder`` itself: it copies the image embedding once per prompt and then
every attention projects all h*w image tokens (4096 for a 64x64 embedding) per prompt: the
token-to-image attentions' key and value projections, the image-to-token attentions' query
and output projections (each 4096x256 -> 128 or back), about 1.3 GMAC per prompt, and it
upscales every prompt's embedding although most masks are then dropped by the predicted-IoU
filter. The computation below is the same in real arithmetic (fp32 results differ in the
last bits only; test/test_proposals.py compares it with SAM's modules) and about a quarter
of the multiply-adds before the upscaling:

- Layer 0 sees the same image tokens for every prompt (the dense prompt embedding of a
  point prompt is the constant no-mask embedding), so its image-side projections are done
  once and the prompts are batched per head against them.
- Per head h, an attention score is (q W_q^h + b_q^h) . (x W_k^h + b_k^h). With few tokens
  (7: IoU, 4 mask, 2 point tokens) against 4096 per-prompt image tokens (layer 1 on) the
  4096-row projections are avoided by associativity:
  * tokens attending to the image: the key projection is folded into the queries,
    q~ = (q W_q^h + b_q^h) W_k^h^T (one 256-vector per query and head), scored against the
    image tokens; the key bias adds one constant per query, which softmax ignores. The
    value projection is applied after the weighted sum: softmax rows sum to 1, so
    softmax(s) (X W_v^h + b_v^h) = (softmax(s) X) W_v^h + b_v^h.
  * the image attending to the tokens: scores = x (W_q^h K_h^T) + b_q^h K_h^T, with K_h the
    7 projected tokens; the output projection is folded into the 7 values,
    (A_h V_h) W_o^h = A_h (V_h W_o^h), so the 4096x8x7 attention weights meet a 56x256
    matrix instead of a 4096x128 one meeting a 128x256 one.
  * the positional encoding is never added to the per-prompt image tokens (a pass over
    4096x256 values per prompt): its share of the scores is one matmul with the shared
    encoding. The residual add rides on the last matmul.
  Token-only parts (self-attention, MLP) and every layer norm (not linear) run SAM's own
  modules on the same tensors.
- The final token-to-image attention is only needed for the tokens the automatic masks use
  (the IoU token and the three multimask tokens; mask token 0 is the single-mask output,
  which multimask output drops). The IoU head then runs first: output upscaling and the
  hypernetwork products run only for prompts with at least one mask above the predicted-IoU
  threshold, and the upscaling's 2x2 stride-2 transposed convolutions run as matmuls.
"""

from __future__ import annotations

import math

import torch
from segment_anything.modeling import MaskDecoder
from segment_anything.modeling.transformer import Attention, TwoWayTransformer

# Output tokens the automatic generator reads: the IoU token and mask tokens 1..3 (multimask
# output), in the order [IoU, mask 1, mask 2, mask 3].
MULTIMASK_TOKENS = (0, 2, 3, 4)


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[..., n, heads * c] -> [..., heads, n, c]."""
    return x.unflatten(-1, (num_heads, -1)).transpose(-3, -2)


def _against_image(
    folded: torch.Tensor, image: torch.Tensor, image_pe: torch.Tensor
) -> torch.Tensor:
    """folded [B, R, D] . (image + image_pe) per row -> [B, R, N], without materialising
    image + image_pe (image [B, N, D] per prompt; image_pe [1, N, D] shared)."""
    batch, rows, dim = folded.shape
    with_pe = (folded.reshape(-1, dim) @ image_pe[0].T).view(batch, rows, -1)
    return torch.baddbmm(with_pe, folded, image.transpose(1, 2))


def _tokens_to_image(
    attention: Attention, queries: torch.Tensor, keys: torch.Tensor, keys_pe: torch.Tensor
) -> torch.Tensor:
    """attention(q=queries, k=keys + keys_pe, v=keys) for a few queries against many image
    tokens, with the key and value projections moved to the query side.

    queries: [B, T, D]; keys: [B, N, D]; keys_pe: [1, N, D] -> [B, T, D].
    """
    heads = attention.num_heads
    batch, tokens, _ = queries.shape
    head_dim = attention.internal_dim // heads
    q = _heads(attention.q_proj(queries), heads) / math.sqrt(head_dim)  # [B, H, T, c]
    w_k = attention.k_proj.weight.unflatten(0, (heads, head_dim))  # [H, c, D]
    folded = (q @ w_k).flatten(1, 2)  # [B, H*T, D]
    weights = torch.softmax(_against_image(folded, keys, keys_pe), dim=-1)  # [B, H*T, N]
    mixed = weights @ keys  # [B, H*T, D]
    w_v = attention.v_proj.weight.unflatten(0, (heads, head_dim))  # [H, c, D]
    b_v = attention.v_proj.bias.unflatten(0, (heads, head_dim))  # [H, c]
    out = mixed.unflatten(1, (heads, tokens)) @ w_v.transpose(1, 2) + b_v[:, None]
    return attention.out_proj(out.transpose(1, 2).reshape(batch, tokens, -1))


def _per_head(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, T, H * c] -> [H, B * T, c]."""
    return x.unflatten(-1, (heads, -1)).permute(2, 0, 1, 3).flatten(1, 2)


def _tokens_to_shared_image(
    attention: Attention, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
) -> torch.Tensor:
    """attention(q=queries, k=keys, v=values) when every prompt sees the same image
    (keys, values [1, N, D]): project them once, batch the prompts per head.
    queries [B, T, D] -> [B, T, D]."""
    heads = attention.num_heads
    batch, tokens, _ = queries.shape
    head_dim = attention.internal_dim // heads
    q = _per_head(attention.q_proj(queries), heads) / math.sqrt(head_dim)  # [H, B*T, c]
    k = _per_head(attention.k_proj(keys), heads)  # [H, N, c]
    v = _per_head(attention.v_proj(values), heads)
    out = torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v  # [H, B*T, c]
    return attention.out_proj(
        out.unflatten(1, (batch, tokens)).permute(1, 2, 0, 3).reshape(batch, tokens, -1)
    )


def _image_to_tokens(
    attention: Attention,
    image: torch.Tensor,
    image_pe: torch.Tensor,
    tokens_pe: torch.Tensor,
    tokens: torch.Tensor,
) -> torch.Tensor:
    """image + attention(q=image + image_pe, k=tokens_pe, v=tokens): many image tokens
    attend to a few tokens, with the query projection folded into the keys and the output
    projection into the values; the residual is added by the last matmul.

    image: [B or 1, N, D]; image_pe: [1, N, D]; tokens_pe, tokens: [B, T, D] -> [B, N, D].
    """
    heads = attention.num_heads
    batch, count, _ = tokens.shape
    head_dim = attention.internal_dim // heads
    k = _heads(attention.k_proj(tokens_pe), heads) / math.sqrt(head_dim)  # [B, H, T, c]
    if image.shape[0] == 1:
        # The same image for every prompt: project it once, batch the prompts per head.
        projected = _per_head(attention.q_proj(image + image_pe), heads)  # [H, N, c]
        scores = k.permute(1, 0, 2, 3).flatten(1, 2) @ projected.transpose(1, 2)
        weights = torch.softmax(scores.unflatten(1, (batch, count)), dim=2)  # [H, B, T, N]
        weights = weights.transpose(0, 1).reshape(batch, heads * count, -1)
    else:
        w_q = attention.q_proj.weight.unflatten(0, (heads, head_dim))  # [H, c, D]
        b_q = attention.q_proj.bias.unflatten(0, (heads, head_dim))  # [H, c]
        folded = (k @ w_q).flatten(1, 2)  # [B, H*T, D]
        offset = (k @ b_q[:, :, None]).view(batch, heads * count, 1)
        scores = _against_image(folded, image, image_pe) + offset
        weights = torch.softmax(scores.unflatten(1, (heads, count)), dim=2).flatten(1, 2)
    v = _heads(attention.v_proj(tokens), heads)  # [B, H, T, c]
    w_o = attention.out_proj.weight.unflatten(1, (heads, head_dim))  # [D, H, c]
    # Each head's weights sum to 1 over its T tokens, so adding bias / H to every value
    # adds the output bias once.
    values = (v @ w_o.permute(1, 2, 0)).flatten(1, 2) + attention.out_proj.bias / heads
    return torch.baddbmm(image, weights.transpose(1, 2), values)


def two_way_transformer(
    transformer: TwoWayTransformer,
    image: torch.Tensor,
    image_pe: torch.Tensor,
    tokens: torch.Tensor,
    query_tokens: tuple[int, ...] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``transformer(image, image_pe, tokens)`` returns, for one image shared by every
    prompt.

    image, image_pe: [1, D, h, w] (image embedding plus the dense prompt embedding, which
    must not depend on the prompt); tokens: [B, T, D].
    query_tokens: the output tokens wanted from the final attention (all when None).
    Returns (tokens [B, len(query_tokens) or T, D], image tokens [B, h*w, D]).
    """
    if len(transformer.layers) == 0 or not transformer.layers[0].skip_first_layer_pe:
        raise ValueError("expected SAM's TwoWayTransformer (layer 0 skips the query PE)")
    image = image.flatten(2).transpose(1, 2)  # [1, N, D]
    image_pe = image_pe.flatten(2).transpose(1, 2)
    queries, keys = tokens, image
    for layer in transformer.layers:
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + tokens
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)
        if keys.shape[0] == 1:
            # Layer 0: the image tokens are the same for every prompt, project them once.
            attn_out = _tokens_to_shared_image(
                layer.cross_attn_token_to_image, queries + tokens, keys + image_pe, keys
            )
        else:
            attn_out = _tokens_to_image(
                layer.cross_attn_token_to_image, queries + tokens, keys, image_pe
            )
        queries = layer.norm2(queries + attn_out)
        queries = layer.norm3(queries + layer.mlp(queries))
        keys = layer.norm4(
            _image_to_tokens(
                layer.cross_attn_image_to_token, keys, image_pe, queries + tokens, queries
            )
        )
    if query_tokens is not None:
        index = torch.tensor(query_tokens, device=queries.device)
        queries, tokens = queries[:, index], tokens[:, index]
    attn_out = _tokens_to_image(
        transformer.final_attn_token_to_image, queries + tokens, keys, image_pe
    )
    return transformer.norm_final_attn(queries + attn_out), keys


def _transposed_conv_weight(conv: torch.nn.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A 2x2 stride-2 transposed convolution as a per-pixel linear map: (weight [C_in,
    2 * 2 * C_out], bias [2 * 2 * C_out]), outputs ordered (row offset, column offset,
    channel)."""
    if (
        conv.kernel_size != (2, 2)
        or conv.stride != (2, 2)
        or conv.padding != (0, 0)
        or conv.groups != 1
        or conv.dilation != (1, 1)
    ):
        raise ValueError(f"expected SAM's 2x2 stride-2 upscaling, got {conv}")
    weight = conv.weight.permute(0, 2, 3, 1).flatten(1)
    return weight, conv.bias.repeat(4)


def upscaled_masks(
    decoder: MaskDecoder, image: torch.Tensor, hyper: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """hyper @ decoder.output_upscaling(image) as SAM's decoder computes its masks, with the
    two 2x2 stride-2 transposed convolutions as matmuls (the CPU's transposed convolution is
    several times slower than the same multiply-adds in one GEMM) and the pixel shuffle done
    on the masks, not on the 32-channel features.

    image: [B, h*w, D] image tokens; hyper: [B, K, C'] hypernetwork outputs; size: (h, w).
    Returns logits [B, K, 4h, 4w].
    """
    up1, norm, act1, up2, act2 = decoder.output_upscaling
    weight1, bias1 = _transposed_conv_weight(up1)
    weight2, bias2 = _transposed_conv_weight(up2)
    batch, masks = hyper.shape[:2]
    x = torch.addmm(bias1, image.flatten(0, 1), weight1)  # [B*h*w, 4*C1]
    # LayerNorm2d normalises each output pixel over its channels.
    x = act1(
        torch.nn.functional.layer_norm(
            x.view(-1, up1.out_channels), (up1.out_channels,), norm.weight, norm.bias, norm.eps
        )
    )  # [B*h*w*4, C1]
    x = act2(torch.addmm(bias2, x, weight2))  # [B*h*w*4, 4*C2]
    height, width = size
    logits = hyper @ x.view(batch, 16 * height * width, up2.out_channels).transpose(1, 2)
    # Pixels are ordered (i, j, di, dj, ei, ej) for output row 4i + 2di + ei, column
    # 4j + 2dj + ej.
    logits = logits.view(batch, masks, height, width, 2, 2, 2, 2)
    return logits.permute(0, 1, 2, 4, 6, 3, 5, 7).reshape(batch, masks, 4 * height, 4 * width)


def multimask_predictions(
    decoder: MaskDecoder,
    image: torch.Tensor,
    image_pe: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
    iou_thresh: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The masks ``decoder(..., multimask_output=True)`` predicts whose predicted IoU is
    above iou_thresh (all when it is 0, as the stock generator does).

    image: [1, D, h, w]; image_pe: [1, D, h, w]; sparse: [B, S, D] point embeddings;
    dense: [1, D, h, w], the dense embedding shared by every prompt (point prompts only).
    Returns (low-res logits [M, 4h, 4w], predicted IoU [M]) of the kept masks, prompt-major
    (prompt 0's masks 1, 2, 3, then prompt 1's...), as the stock generator orders them.
    One host sync when iou_thresh > 0 (the kept count).
    """
    if decoder.num_mask_tokens != 4:
        raise ValueError("expected SAM's decoder with 3 multimask outputs")
    batch = sparse.shape[0]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight])
    tokens = torch.cat([output_tokens.expand(batch, -1, -1), sparse], dim=1)
    hs, keys = two_way_transformer(
        decoder.transformer, image + dense, image_pe, tokens, MULTIMASK_TOKENS
    )
    iou = decoder.iou_prediction_head(hs[:, 0])[:, 1:]  # [B, 3]
    if iou_thresh <= 0.0:
        kept, iou = None, iou.flatten()
    else:
        # Only prompts with a mask above the threshold are upscaled (the host sync).
        above = iou > iou_thresh
        prompts = torch.nonzero(above.any(dim=1)).squeeze(1)
        kept = above[prompts].flatten()
        hs, keys, iou = hs[prompts], keys[prompts], iou[prompts].flatten()[kept]
    hyper = torch.stack(
        [decoder.output_hypernetworks_mlps[i + 1](hs[:, i + 1]) for i in range(3)], dim=1
    )  # [B', 3, C']
    logits = upscaled_masks(decoder, keys, hyper, image.shape[2:]).flatten(0, 1)
    return (logits, iou) if kept is None else (logits[kept], iou)
