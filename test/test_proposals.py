"""Mask proposals: the fast backend returns the stock SamAutomaticMaskGenerator's masks.

A random-weight SAM proposes nearly the same scattered mask for every prompt, which would
make a parity check vacuous (NMS leaves one mask). ``varied_tiny_sam`` edits a few decoder
weights so that masks depend on where the prompt is and on the image, as in a trained SAM:
dozens of distinct blob-like masks per frame, with predicted IoU and stability spread across
the thresholds used below.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import pytest
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.amg import batched_mask_to_box, is_box_near_crop_edge
from tiny_models import build_tiny_sam

from ovseg_ros.models.sam_decoder import (
    MULTIMASK_TOKENS,
    multimask_predictions,
    two_way_transformer,
)
from ovseg_ros.segmentation.proposals import (
    GPU_MEMORY_CAP_BYTES,
    MaskProposals,
    MaskProposer,
    chunk_sizes,
    frame_memory_budget,
)
from ovseg_ros.settings.config import Settings, SettingsError


@functools.cache
def varied_tiny_sam(seed: int) -> Sam:
    """The tiny SAM with a decoder that localises: the last image-to-token attention scores
    image positions against the point by their positional encodings (q/k select matching
    sin/cos frequencies, so the score is a sum of cos(w . (x - p)), peaked at the point),
    the image features are damped so that the point's value dominates nearby, the
    upscaling convolutions are made constant over their 2x2 kernels (random ones paint a
    checkerboard over every mask) and the mask logits are scaled up so that stability
    scores spread over [0, 1]. The real module classes run unchanged."""
    sam = build_tiny_sam(seed)
    decoder = sam.mask_decoder
    layers = decoder.transformer.layers
    with torch.no_grad():
        sam.prompt_encoder.point_embeddings[1].weight.zero_()
        decoder.iou_token.weight.zero_()
        decoder.mask_tokens.weight.zero_()
        for norm, scale in ((layers[0].norm4, 0.3), (layers[1].norm3, 0.3)):
            norm.weight.mul_(scale)
            norm.bias.mul_(scale)
        attention = layers[1].cross_attn_image_to_token
        head_dim = attention.internal_dim // attention.num_heads
        half = decoder.transformer_dim // 2  # PE layout: sin features, then cos features
        select = torch.zeros(attention.internal_dim, decoder.transformer_dim)
        for head in range(attention.num_heads):
            for j in range(head_dim // 2):
                frequency = head * head_dim // 2 + j
                select[head * head_dim + 2 * j, frequency] = 1.0
                select[head * head_dim + 2 * j + 1, half + frequency] = 1.0
        attention.q_proj.weight.copy_(8.0 * select)
        attention.k_proj.weight.copy_(select)
        attention.q_proj.bias.zero_()
        attention.k_proj.bias.zero_()
        for conv in (decoder.output_upscaling[0], decoder.output_upscaling[3]):
            conv.weight.copy_(conv.weight[:, :, :1, :1].expand_as(conv.weight))
        for mlp in decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(300.0)
            mlp.layers[-1].bias.mul_(300.0)
    return sam


def synthetic_frame(height: int, width: int, seed: int) -> np.ndarray:
    """Dark noise with a few filled circles and rectangles: HxWx3 uint8 RGB."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    for _ in range(6):
        colour = tuple(int(v) for v in rng.integers(60, 255, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.5:
            cv2.circle(image, (x, y), int(rng.integers(5, max(height, width) // 4)), colour, -1)
        else:
            corner = (x + int(rng.integers(5, width // 3)), y + int(rng.integers(5, height // 3)))
            cv2.rectangle(image, (x, y), corner, colour, -1)
    return image


def proposals(sam: Sam, image: np.ndarray, backend: str, **settings) -> MaskProposals:
    base = Settings().replace(max_masks=1000, proposal_backend=backend)
    return MaskProposer(sam, base.replace(**settings)).propose(image)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[N, H, W] x [M, H, W] bool -> [N, M] IoU (empty vs empty counts as 1)."""
    a, b = a.flatten(1).float(), b.flatten(1).float()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def assert_matches(stock: MaskProposals, fast: MaskProposals) -> None:
    """Same count; every mask of each has a mask of IoU >= 0.95 in the other, with a box
    within a pixel; the same predicted IoU and stability scores (near ties may swap places
    when the arithmetic differs in the last bits)."""
    assert len(fast) == len(stock)
    if len(stock) == 0:
        return
    overlap = mask_iou(stock.masks, fast.masks)
    best_iou, best = overlap.max(dim=1)
    assert best_iou.min() >= 0.95
    assert overlap.max(dim=0).values.min() >= 0.95
    torch.testing.assert_close(fast.boxes[best], stock.boxes, atol=1.0, rtol=0.0)
    torch.testing.assert_close(fast.predicted_iou, stock.predicted_iou, atol=1e-4, rtol=0.0)
    torch.testing.assert_close(
        fast.stability_score.sort().values,
        stock.stability_score.sort().values,
        atol=0.02,
        rtol=0.0,
        equal_nan=True,
    )


PARITY_CASES = [
    # (height, width, seed, settings, least number of stock masks)
    (
        120,
        160,
        3,
        dict(
            points_per_side=8,
            points_per_batch=64,
            pred_iou_thresh=0.01,
            stability_score_thresh=0.4,
            box_nms_thresh=0.8,
        ),
        8,
    ),
    (
        90,
        70,
        3,
        dict(
            points_per_side=16,
            points_per_batch=100,
            pred_iou_thresh=0.0,
            stability_score_thresh=0.6,
            stability_score_offset=0.5,
            box_nms_thresh=0.5,
        ),
        20,
    ),
    (
        90,
        70,
        3,
        dict(
            points_per_side=4,
            points_per_batch=7,
            pred_iou_thresh=0.001,
            stability_score_thresh=0.0,
            box_nms_thresh=0.9,
        ),
        6,
    ),
    (
        90,
        70,
        2,
        dict(
            points_per_side=8,
            points_per_batch=64,
            pred_iou_thresh=0.0,
            stability_score_thresh=0.4,
            box_nms_thresh=0.8,
            min_mask_region_area=40,
        ),
        8,
    ),
    (
        120,
        160,
        3,
        dict(
            points_per_side=16,
            points_per_batch=64,
            pred_iou_thresh=0.01,
            stability_score_thresh=0.6,
            box_nms_thresh=0.6,
            min_mask_region_area=100,
        ),
        8,
    ),
]


@pytest.mark.parametrize("height, width, seed, settings, least", PARITY_CASES)
def test_fast_returns_the_stock_masks(height, width, seed, settings, least):
    sam = varied_tiny_sam(seed)
    image = synthetic_frame(height, width, seed)
    stock = proposals(sam, image, "stock", **settings)
    fast = proposals(sam, image, "fast", **settings)
    assert len(stock) >= least
    # The fast decoder reassociates the attention products (ovseg_ros/models/sam_decoder.py): the
    # same values in real arithmetic, not bit for bit, so the criterion applies.
    assert_matches(stock, fast)


def test_small_region_clean_up_changes_masks():
    """The clean-up path is exercised: it fills holes and drops islands in these masks."""
    sam = varied_tiny_sam(2)
    image = synthetic_frame(90, 70, 2)
    settings = dict(
        points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.4, box_nms_thresh=0.8
    )
    raw = proposals(sam, image, "fast", **settings)
    cleaned = proposals(sam, image, "fast", min_mask_region_area=40, **settings)
    # Masks that the model never proposed as they are: holes filled or islands dropped.
    new_masks = mask_iou(cleaned.masks, raw.masks).max(dim=1).values < 1.0
    assert new_masks.sum() >= 2


def test_fast_does_not_depend_on_the_decoder_chunk_size():
    """The fast path may put all prompts through the decoder at once (as on a GPU)."""
    sam = varied_tiny_sam(1)
    image = synthetic_frame(120, 160, 3)
    settings = dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.4)
    stock = proposals(sam, image, "stock", points_per_batch=8, **settings)
    fast = proposals(sam, image, "fast", points_per_batch=1024, **settings)
    assert len(stock) >= 8
    assert_matches(stock, fast)


@pytest.mark.parametrize("backend", ["stock", "fast"])
def test_output_layout(backend):
    sam = varied_tiny_sam(2)
    image = synthetic_frame(90, 70, 4)
    result = proposals(
        sam,
        image,
        backend,
        points_per_side=8,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.3,
        min_mask_region_area=20,
    )
    assert len(result) > 0
    assert result.masks.shape == (len(result), 90, 70)
    assert result.masks.dtype == torch.bool
    assert result.boxes.dtype == torch.float32
    # Boxes are inclusive XYXY of the returned (cleaned) masks.
    assert torch.equal(result.boxes, batched_mask_to_box(result.masks).float())
    assert torch.all(result.predicted_iou[:-1] >= result.predicted_iou[1:])


@pytest.mark.parametrize("backend", ["stock", "fast"])
def test_max_masks_keeps_the_best(backend):
    sam = varied_tiny_sam(1)
    image = synthetic_frame(120, 160, 1)
    settings = dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.3)
    everything = proposals(sam, image, backend, **settings)
    best = proposals(sam, image, backend, max_masks=5, **settings)
    assert len(everything) > 5
    assert len(best) == 5
    assert torch.equal(best.masks, everything.masks[:5])
    assert torch.equal(best.predicted_iou, everything.predicted_iou[:5])
    assert best.predicted_iou.min() >= everything.predicted_iou[5:].max()


@pytest.mark.parametrize("backend", ["stock", "fast"])
@pytest.mark.parametrize("area", [0, 50])
@pytest.mark.parametrize(
    "thresholds",
    [
        dict(pred_iou_thresh=1.0, stability_score_thresh=1.0),  # nothing passes the IoU filter
        dict(
            pred_iou_thresh=0.0,
            stability_score_thresh=1.0,  # nothing passes stability
            stability_score_offset=100.0,
        ),
    ],
)
def test_no_mask_passes_strict_thresholds(backend, area, thresholds):
    image = synthetic_frame(90, 70, 0)
    result = proposals(
        varied_tiny_sam(2),
        image,
        backend,
        points_per_side=4,
        min_mask_region_area=area,
        **thresholds,
    )
    assert len(result) == 0
    assert result.masks.shape == (0, 90, 70)
    assert result.boxes.shape == (0, 4)
    assert result.predicted_iou.shape == result.stability_score.shape == (0,)


def test_chunk_sizes():
    # CPU (no budget): the stock's chunks.
    assert chunk_sizes(1024, 64, (768, 1024), 1024, torch.float32, None) == (64, 192)
    assert chunk_sizes(16, 64, (768, 1024), 1024, torch.float32, None) == (16, 48)
    # GPU: what fits in the budget, at least the stock's chunks, at most the whole grid.
    gib = float(1 << 30)
    assert chunk_sizes(1024, 64, (768, 1024), 1024, torch.float32, 8 * gib)[0] == 256
    assert chunk_sizes(1024, 64, (768, 1024), 1024, torch.bfloat16, 8 * gib)[0] == 512
    assert chunk_sizes(1024, 64, (768, 1024), 1024, torch.float32, 64 * gib)[0] == 1024
    assert chunk_sizes(1024, 64, (768, 1024), 1024, torch.float32, 0.5 * gib) == (64, 192)
    masks = chunk_sizes(1024, 64, (768, 1024), 1024, torch.float32, 8 * gib)[1]
    assert 800 < masks < 900  # about 9.5 MiB per upsampled 1024x768 mask


def test_frame_memory_budget_is_capped_for_the_8_gb_target():
    gib = float(1 << 30)
    assert frame_memory_budget(2 * gib) == 1 * gib
    # An H200's 139 GiB free still plans 3 GiB: 96 fp32 prompts per decoder call.
    assert frame_memory_budget(139 * gib) == GPU_MEMORY_CAP_BYTES == 3 * gib
    assert (
        chunk_sizes(1024, 64, (480, 640), 1024, torch.float32, frame_memory_budget(139 * gib))[0]
        == 96
    )


def test_single_crop_drops_nothing_at_crop_edges():
    """Why the fast path has no crop-edge filter: with crop_n_layers 0 the crop is the
    image, and a box is only dropped near a crop edge that is not an image edge."""
    height, width = 90, 70
    boxes = torch.tensor([[0, 0, 69, 89], [0, 5, 10, 20], [50, 60, 69, 89], [20, 20, 40, 40]])
    crop = [0, 0, width, height]
    assert not is_box_near_crop_edge(boxes, crop, crop).any()


def test_select_keeps_fields_aligned():
    n = 6
    masks = torch.zeros(n, 4, 5, dtype=torch.bool)
    for i in range(n):
        masks[i, i % 4, i % 5] = True
    result = MaskProposals(
        masks=masks,
        boxes=batched_mask_to_box(masks).float(),
        predicted_iou=torch.arange(n, dtype=torch.float32) / 10,
        stability_score=torch.arange(n, dtype=torch.float32) / 100,
    )
    assert len(result) == n
    for index in (
        torch.tensor([True, False, True, False, False, True]),
        torch.tensor([5, 0, 2]),
        slice(1, 4),
    ):
        picked = result.select(index)
        rows = torch.arange(n)[index]
        assert len(picked) == len(rows)
        assert torch.equal(picked.masks, masks[rows])
        assert torch.equal(picked.boxes, batched_mask_to_box(masks[rows]).float())
        assert torch.equal(picked.predicted_iou, rows.float() / 10)
        assert torch.equal(picked.stability_score, rows.float() / 100)
    with pytest.raises(ValueError, match="disagree"):
        MaskProposals(
            masks=masks,
            boxes=result.boxes[:3],
            predicted_iou=result.predicted_iou,
            stability_score=result.stability_score,
        )


def test_live_settings_apply_and_start_only_ones_are_refused():
    settings = Settings().replace(
        points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
    )
    proposer = MaskProposer(varied_tiny_sam(2), settings)
    image = synthetic_frame(90, 70, 5)
    assert len(proposer.propose(image)) > 2
    proposer.update_settings(settings.replace(max_masks=2))
    assert len(proposer.propose(image)) == 2
    with pytest.raises(SettingsError, match="proposal_backend"):
        proposer.update_settings(settings.replace(proposal_backend="stock"))
    assert proposer.settings.max_masks == 2


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((10, 10, 3), np.float32),
        np.zeros((10, 10), np.uint8),
        np.zeros((0, 10, 3), np.uint8),
    ],
)
def test_bad_images_are_refused(image):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        MaskProposer(varied_tiny_sam(2), Settings()).propose(image)


def random_decoder_inputs(seed: int, prompts: int, side: int = 16):
    """Image embedding, positional encoding and dense embedding [1, 256, side, side], and
    point embeddings [prompts, 2, 256], at the scale of SAM's (unit variance)."""
    generator = torch.Generator().manual_seed(seed)
    image, pe, dense = (torch.randn(1, 256, side, side, generator=generator) for _ in range(3))
    sparse = torch.randn(prompts, 2, 256, generator=generator)
    return image, pe, dense, sparse


@pytest.mark.parametrize("seed, prompts", [(0, 5), (1, 5), (0, 1)])
def test_two_way_transformer_matches_sams(seed, prompts):
    """The reassociated transformer against SAM's own on the same weights: a few fp32 ulps.
    (One prompt keeps a batch of 1 through every layer, the shared-image code paths.)"""
    decoder = varied_tiny_sam(seed).mask_decoder if seed else build_tiny_sam(seed).mask_decoder
    image, pe, _, sparse = random_decoder_inputs(seed, prompts=prompts)
    tokens = torch.cat(
        [
            torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight]).expand(
                prompts, -1, -1
            ),
            sparse,
        ],
        dim=1,
    )
    with torch.no_grad():
        expected_tokens, expected_image = decoder.transformer(
            image.expand(prompts, -1, -1, -1), pe.expand(prompts, -1, -1, -1), tokens
        )
        got_tokens, got_image = two_way_transformer(decoder.transformer, image, pe, tokens)
        picked, _ = two_way_transformer(decoder.transformer, image, pe, tokens, MULTIMASK_TOKENS)
    torch.testing.assert_close(got_tokens, expected_tokens, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_image, expected_image, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        picked, expected_tokens[:, list(MULTIMASK_TOKENS)], atol=1e-4, rtol=1e-4
    )


def test_multimask_predictions_match_the_decoder():
    """Masks 1-3 and their predicted IoU as SAM's decoder gives them; with a threshold only
    those above it, in the same (prompt-major) order."""
    decoder = build_tiny_sam(0).mask_decoder
    image, pe, dense, sparse = random_decoder_inputs(2, prompts=6)
    with torch.no_grad():
        logits, iou = decoder(image, pe, sparse, dense, multimask_output=True)
        logits, iou = logits.flatten(0, 1), iou.flatten()
        all_logits, all_iou = multimask_predictions(decoder, image, pe, sparse, dense, 0.0)
        # A threshold half way between two predicted IoUs, so rounding cannot move a mask.
        ordered = iou.sort().values
        threshold = float(ordered[9] + ordered[10]) / 2
        kept_logits, kept_iou = multimask_predictions(decoder, image, pe, sparse, dense, threshold)
        none_logits, none_iou = multimask_predictions(decoder, image, pe, sparse, dense, 2.0)
    torch.testing.assert_close(all_logits, logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(all_iou, iou, atol=1e-5, rtol=0.0)
    kept = iou > threshold
    assert kept.sum() == 8 and len(kept_iou) == 8
    torch.testing.assert_close(kept_logits, logits[kept], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(kept_iou, iou[kept], atol=1e-5, rtol=0.0)
    assert none_logits.shape == (0, 64, 64) and none_iou.shape == (0,)


@pytest.mark.parametrize("backend", ["stock", "fast"])
def test_bf16_runs_on_the_cpu(backend):
    # The autocast paths that a GPU runs, on the CPU. The stock generator hands the decoder's
    # scores to numpy, which has no bfloat16: the proposer casts them back to fp32.
    sam = varied_tiny_sam(3)
    image = synthetic_frame(120, 160, 3)
    _, _, _, settings, least = PARITY_CASES[0]
    exact = proposals(sam, image, backend, **settings)
    half = proposals(sam, image, backend, precision="bf16", **settings)
    assert len(exact) >= least and len(half) > 0
    assert half.masks.dtype == torch.bool and half.masks.shape[1:] == (120, 160)

    def bf16_values(scores):
        return torch.equal(scores, scores.bfloat16().float())

    # The decoder's scores went through bf16 (and fp32 ones do not all fit in bf16).
    assert bf16_values(half.predicted_iou)
    assert not bf16_values(exact.predicted_iou)
    # Most masks survive the rounding: each fp32 mask mostly has a close bf16 mask.
    best = mask_iou(exact.masks, half.masks).max(dim=1).values
    assert best.median() >= 0.9


def test_gpu_memory_budget_counts_cached_blocks_as_free_and_is_capped(monkeypatch):
    from types import SimpleNamespace

    gib = 1 << 30
    queried = []

    def fake(free, reserved, allocated):
        def mem_get_info(device):
            queried.append(device)
            return free, 80 * gib

        monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
        monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: reserved)
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: allocated)

    gpu = SimpleNamespace(device=torch.device("cuda", 1))
    fake(free=1 * gib, reserved=5 * gib, allocated=2 * gib)  # 1 free + 3 cached
    assert MaskProposer._memory_budget(gpu) == 2 * gib
    assert queried == [torch.device("cuda", 1)]
    fake(free=40 * gib, reserved=0, allocated=0)
    assert MaskProposer._memory_budget(gpu) == GPU_MEMORY_CAP_BYTES
    fake(free=0, reserved=gib // 2, allocated=gib // 2)
    assert MaskProposer._memory_budget(gpu) == 0
    # The budget decides the chunks: 2 GiB is 64 fp32 prompts; nothing free, the stock's.
    assert chunk_sizes(1024, 32, (768, 1024), 1024, torch.float32, 2 * gib)[0] == 64
    assert chunk_sizes(1024, 32, (768, 1024), 1024, torch.float32, 0)[0] == 32
    assert MaskProposer._memory_budget(SimpleNamespace(device=torch.device("cpu"))) is None
