"""MaskClassifier against OVSeg's one-mask-at-a-time recipe and explicit ViT computations."""

from __future__ import annotations

import copy
import math

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import LayerScale, QuickGELU, ResidualAttentionBlock

from ovseg_ros.models import clip_vit, mask_forwards
from ovseg_ros.models.clip_vit import crop_image_features
from ovseg_ros.models.weights import ClipBundle
from ovseg_ros.segmentation import classifier as classifier_module
from ovseg_ros.segmentation.classifier import MaskClassifier
from ovseg_ros.segmentation.crops import crop_boxes, fill_colour, masked_crops, masked_crops_per_box
from reference import ovseg_crops
from reference.ovseg_crops import reference_crop_embeddings

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
SIZE = 224  # tiny CLIP input, patch 16 -> 14 x 14 patches
GRID = 14
# Batched crops vs F.interpolate one crop at a time: the same taps and weights, summed in a
# different order. Measured: at most 0.0034 apart on the 0-255 scale (each is 0.010 from an
# fp64 resize); embeddings at most 3e-7 apart.
CROP_ATOL = 0.02
EMBEDDING_ATOL = 1e-5


def bundle(model, mask_embedding=None) -> ClipBundle:
    return ClipBundle(
        model=model,
        tokenizer=None,
        mask_embedding=mask_embedding,
        image_mean=MEAN,
        image_std=STD,
        image_size=SIZE,
    )


def boxes_of(masks: torch.Tensor) -> torch.Tensor:
    """[N, H, W] bool -> [N, 4] XYXY inclusive, [0, 0, 0, 0] for an empty mask (as SAM)."""
    boxes = []
    for mask in masks:
        ys, xs = torch.nonzero(mask, as_tuple=True)
        boxes.append([xs.min(), ys.min(), xs.max(), ys.max()] if len(xs) else [0, 0, 0, 0])
    return torch.tensor(boxes, dtype=torch.float32)


@pytest.fixture(scope="module")
def scene() -> tuple[torch.Tensor, torch.Tensor]:
    """A non-square image (one side below 224, one above) and varied masks."""
    torch.manual_seed(0)
    h, w = 150, 331
    image = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    masks = torch.stack(
        [
            (yy - 70) ** 2 + (xx - 160) ** 2 < 50**2,  # a disc
            (yy == 40) & (xx == 90),  # one pixel
            (yy >= 10) & (yy < 12) & (xx >= 300) & (xx < 303),  # 2 x 3 pixels
            yy >= h - 20,  # strip on the bottom border
            (xx < 25) | (yy < 5),  # L touching three borders
            torch.ones(h, w, dtype=torch.bool),  # the whole image
            torch.rand(h, w) > 0.6,  # scattered pixels
        ]
    )
    return image, masks


def reference_crops(
    image: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor, fill: torch.Tensor
) -> torch.Tensor:
    """OVSeg's crops one by one: fill outside the mask by arithmetic, then resize."""
    crops = []
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.tolist()):
        region = mask[y0 : y1 + 1, x0 : x1 + 1].float()
        pixels = image.permute(2, 0, 1)[:, y0 : y1 + 1, x0 : x1 + 1].float()
        expected = pixels * region + (1 - region) * fill.view(3, 1, 1)
        crops.append(F.interpolate(expected[None], size=(SIZE, SIZE), mode="bicubic")[0])
    return torch.stack(crops)


@pytest.mark.parametrize("make_crops", [masked_crops, masked_crops_per_box])
def test_batched_crops_equal_the_per_mask_resize(scene, make_crops):
    image, masks = scene
    boxes = crop_boxes(boxes_of(masks), *image.shape[:2])
    fill = 255 * torch.tensor(MEAN)
    expected = reference_crops(image, masks, boxes, fill)
    crops = make_crops(image, masks, boxes, fill, SIZE)
    assert crops.shape == expected.shape and crops.dtype == torch.float32
    torch.testing.assert_close(crops, expected, atol=CROP_ATOL, rtol=0)
    if make_crops is masked_crops_per_box:
        # The reference's own resize on the same values: equal to the last bit.
        assert torch.equal(crops, expected)


def test_crop_forward_equals_encode_image(tiny_clip):
    # Only the class token is computed in the last block; the rest is encode_image's.
    torch.manual_seed(6)
    pixels = _normalised(torch.rand(3, 3, SIZE, SIZE) * 255)
    expected = tiny_clip.encode_image(pixels)
    got = crop_image_features(tiny_clip, pixels)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    # A model that is not a class-token ViT falls back to encode_image itself.
    pooled = copy.deepcopy(tiny_clip)
    pooled.visual.pool_type = "avg"
    torch.testing.assert_close(
        crop_image_features(pooled, pixels), pooled.encode_image(pixels), atol=0, rtol=0
    )
    assert (crop_image_features(pooled, pixels) - expected).abs().max() > 1e-3


@pytest.mark.parametrize("with_prompt", [False, True])
def test_crop_mode_matches_the_reference(scene, tiny_ovseg_clip, tiny_mask_embedding, with_prompt):
    image, masks = scene
    prompt = tiny_mask_embedding if with_prompt else None
    boxes = boxes_of(masks)
    got = MaskClassifier(bundle(tiny_ovseg_clip, prompt)).embed_masks(image, masks, boxes)
    expected = reference_crop_embeddings(
        tiny_ovseg_clip, image.numpy(), masks.numpy(), boxes.numpy(), MEAN, STD, SIZE, prompt
    )
    assert got.shape == (len(masks), 32) and got.dtype == torch.float32
    torch.testing.assert_close(got.norm(dim=1), torch.ones(len(masks)))
    torch.testing.assert_close(got, expected, atol=EMBEDDING_ATOL, rtol=0)
    # Not a tautology: the masks give distinct crops, hence distinct embeddings.
    assert (got @ got.T).fill_diagonal_(0).max() < 0.9999


def test_batches_do_not_change_results(scene, tiny_ovseg_clip, tiny_mask_embedding, monkeypatch):
    image, masks = scene[0], scene[1][:4]
    boxes = boxes_of(masks)
    classifiers = [
        MaskClassifier(bundle(tiny_ovseg_clip, tiny_mask_embedding), mode=mode)
        for mode in ("crop", "mask_token")
    ]
    whole = [c.embed_masks(image, masks, boxes) for c in classifiers]
    monkeypatch.setattr(classifier_module, "CROP_BATCH", 3)
    monkeypatch.setattr(classifier_module, "CPU_CROP_BATCH", 3)
    monkeypatch.setattr(classifier_module, "MASK_TOKEN_BATCH", 2)
    for classifier, expected in zip(classifiers, whole):
        torch.testing.assert_close(
            classifier.embed_masks(image, masks, boxes), expected, atol=1e-6, rtol=0
        )


def _normalised(pixels: torch.Tensor) -> torch.Tensor:
    """[B, 3, S, S] on the 0-255 scale -> CLIP input."""
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return (pixels / 255 - mean) / std


def test_mask_prompt_with_a_full_mask_is_plain_clip(tiny_ovseg_clip, tiny_mask_embedding):
    torch.manual_seed(1)
    pixels = _normalised(torch.rand(2, 3, SIZE, SIZE) * 255)
    everywhere = torch.ones(2, GRID * GRID, dtype=torch.bool)
    got = mask_forwards.mask_prompt_features(
        tiny_ovseg_clip.visual, pixels, everywhere, tiny_mask_embedding
    )
    torch.testing.assert_close(got, tiny_ovseg_clip.encode_image(pixels), atol=1e-6, rtol=0)


def explicit_mask_prompt(model, pixels, patch_mask, prompt):
    """OVSeg's mask-prompted ViT written out step by step, in OVSeg's [L, B, W] layout."""
    visual = model.visual
    m = patch_mask.float()[:, :, None]  # [B, P, 1]
    x = visual.conv1(pixels)  # [B, W, 14, 14]
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # [B, P, W]
    x = x * m + prompt[0][None] * (1 - m)
    cls = visual.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1])
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding
    x = visual.ln_pre(x).permute(1, 0, 2)  # [L, B, W]
    for i, block in enumerate(visual.transformer.resblocks):
        x = block(x.permute(1, 0, 2)).permute(1, 0, 2)
        d = i + 1
        if d < prompt.shape[0]:
            masked = x[1:] * m.permute(1, 0, 2) + prompt[d][:, None] * (1 - m.permute(1, 0, 2))
            x = torch.cat([x[:1], masked], dim=0)
    return visual.ln_post(x[0]) @ visual.proj


def test_mask_prompt_matches_an_explicit_computation(tiny_ovseg_clip, tiny_mask_embedding):
    torch.manual_seed(2)
    pixels = _normalised(torch.rand(2, 3, SIZE, SIZE) * 255)
    patch_mask = torch.rand(2, GRID * GRID) > 0.5
    got = mask_forwards.mask_prompt_features(
        tiny_ovseg_clip.visual, pixels, patch_mask, tiny_mask_embedding
    )
    expected = explicit_mask_prompt(tiny_ovseg_clip, pixels, patch_mask, tiny_mask_embedding)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    plain = tiny_ovseg_clip.encode_image(pixels)
    assert (got - plain).abs().max() > 1e-2  # the prompt does change the features


def test_mask_prompt_ignores_pixels_of_patches_outside_the_mask(
    tiny_ovseg_clip, tiny_mask_embedding
):
    torch.manual_seed(3)
    pixels = _normalised(torch.rand(1, 3, SIZE, SIZE) * 255)
    patch_mask = torch.zeros(GRID, GRID, dtype=torch.bool)
    patch_mask[3:9, 2:7] = True
    outside = ~patch_mask.repeat_interleave(16, 0).repeat_interleave(16, 1)
    changed = pixels.clone()
    changed[:, :, outside] = torch.randn(3, int(outside.sum()))
    features = [
        mask_forwards.mask_prompt_features(
            tiny_ovseg_clip.visual, p, patch_mask.view(1, -1), tiny_mask_embedding
        )
        for p in (pixels, changed)
    ]
    torch.testing.assert_close(features[0], features[1], atol=1e-6, rtol=0)


def frame_pixels(image: torch.Tensor) -> torch.Tensor:
    """The whole image as mask-token mode feeds it: stretched, bicubic with antialiasing."""
    pixels = F.interpolate(
        image.permute(2, 0, 1)[None].float(), size=(SIZE, SIZE), mode="bicubic", antialias=True
    )
    return _normalised(pixels)


def explicit_mask_token(model, pixels, allowed_patches):
    """One mask token by hand: it starts as the class token and, in each block, attends
    (own query) to the CLS and allowed patch tokens of the plain CLIP pass, which mask tokens
    do not disturb."""
    visual = model.visual
    x = visual.conv1(pixels).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.view(1, 1, -1), x], 1) + visual.positional_embedding
    x = visual.ln_pre(x)[0]  # [1 + P, W]
    token = x[:1]
    seen = torch.cat([torch.tensor([True]), allowed_patches])
    for block in visual.transformer.resblocks:
        attn = block.attn
        heads, width = attn.num_heads, x.shape[1]
        w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
        b_q, b_k, b_v = attn.in_proj_bias.chunk(3)
        context = block.ln_1(x[seen])
        q = (block.ln_1(token) @ w_q.T + b_q).view(1, heads, -1).transpose(0, 1)
        k = (context @ w_k.T + b_k).view(-1, heads, width // heads).transpose(0, 1)
        v = (context @ w_v.T + b_v).view(-1, heads, width // heads).transpose(0, 1)
        weights = (q @ k.transpose(1, 2) / math.sqrt(width // heads)).softmax(-1)
        out = (weights @ v).transpose(0, 1).reshape(1, width)
        token = token + block.ls_1(attn.out_proj(out))
        token = token + block.ls_2(block.mlp(block.ln_2(token)))
        x = block(x[None])[0]
    return F.normalize(visual.ln_post(token) @ visual.proj, dim=-1)[0]


def test_mask_tokens_match_explicit_computations(tiny_clip):
    torch.manual_seed(4)
    h, w = 112, 336  # each patch covers 8 x 24 pixels
    image = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8)
    patches = torch.zeros(4, GRID, GRID, dtype=torch.bool)
    patches[0] = True  # covers every patch
    patches[1, 2:5, 5:10] = True  # a block of patches
    patches[2, 7, 0] = patches[2, 13, 13] = True  # two corner-ish patches
    masks = patches.repeat_interleave(8, 1).repeat_interleave(24, 2)
    masks[3, 50, 100] = True  # one pixel: patch (6, 4)
    classifier = MaskClassifier(bundle(tiny_clip), mode="mask_token")
    got = classifier.embed_masks(image, masks, boxes_of(masks))
    pixels = frame_pixels(image)
    # A token that sees every patch sees what CLS sees: it is the plain CLIP embedding.
    plain = F.normalize(tiny_clip.encode_image(pixels), dim=-1)[0]
    torch.testing.assert_close(got[0], plain, atol=1e-5, rtol=0)
    one_pixel = torch.zeros(GRID, GRID, dtype=torch.bool)
    one_pixel[6, 4] = True
    for row, allowed in zip(got[1:], [patches[1], patches[2], one_pixel]):
        torch.testing.assert_close(
            row, explicit_mask_token(tiny_clip, pixels, allowed.view(-1)), atol=1e-5, rtol=0
        )
    assert (got[1] @ plain) < 0.9999


def test_mask_tokens_do_not_see_each_other(scene, tiny_clip):
    image, masks = scene
    classifier = MaskClassifier(bundle(tiny_clip), mode="mask_token")
    together = classifier.embed_masks(image, masks, boxes_of(masks))
    alone = torch.cat(
        [
            classifier.embed_masks(image, masks[i : i + 1], boxes_of(masks[i : i + 1]))
            for i in range(len(masks))
        ]
    )
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["crop", "mask_token"])
def test_classify_gives_probabilities_that_follow_the_text(scene, tiny_clip, mode):
    image, masks = scene
    masks = masks[:5]  # the last two touch every patch: the same mask token
    boxes = boxes_of(masks)
    classifier = MaskClassifier(bundle(tiny_clip), mode=mode)
    embeddings = classifier.embed_masks(image, masks, boxes)
    probs = classifier.classify(image, masks, boxes, embeddings)  # class i = mask i's embedding
    assert probs.shape == (len(masks), len(masks))
    torch.testing.assert_close(probs.sum(1), torch.ones(len(masks)))
    assert torch.equal(probs.argmax(1), torch.arange(len(masks)))
    expected = (100 * embeddings @ embeddings.T).softmax(1)
    torch.testing.assert_close(probs, expected)


def test_mode_can_change_between_frames_and_is_checked(scene, tiny_clip):
    image, masks = scene
    boxes = boxes_of(masks)
    classifier = MaskClassifier(bundle(tiny_clip))
    crop = classifier.embed_masks(image, masks, boxes)
    classifier.mode = "mask_token"
    tokens = classifier.embed_masks(image, masks, boxes)
    assert not torch.allclose(crop, tokens, atol=1e-3)
    classifier.mode = "crop"
    torch.testing.assert_close(classifier.embed_masks(image, masks, boxes), crop)
    with pytest.raises(ValueError, match="classifier mode must be one of crop, mask_token"):
        classifier.mode = "pixels"
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16"):
        MaskClassifier(bundle(tiny_clip), precision="int8")


@pytest.mark.parametrize("mode", ["crop", "mask_token"])
def test_empty_masks(scene, tiny_clip, mode):
    image, masks = scene
    classifier = MaskClassifier(bundle(tiny_clip), mode=mode)
    none = torch.zeros(0, *image.shape[:2], dtype=torch.bool)
    assert classifier.embed_masks(image, none, torch.zeros(0, 4)).shape == (0, 32)
    assert classifier.classify(image, none, torch.zeros(0, 4), torch.eye(3, 32)).shape == (0, 3)
    # An empty mask among others keeps its row: a unit vector, the others unchanged.
    with_empty = torch.cat([masks[:2], torch.zeros_like(masks[:1]), masks[2:3]])
    got = classifier.embed_masks(image, with_empty, boxes_of(with_empty))
    torch.testing.assert_close(got.norm(dim=1), torch.ones(4))
    alone = classifier.embed_masks(image, masks[:3], boxes_of(masks[:3]))
    torch.testing.assert_close(got[[0, 1, 3]], alone, atol=1e-5, rtol=0)
    if mode == "crop":
        # A crop of pure fill colour: the embedding of a mean-grey image.
        grey = _normalised(torch.ones(1, 3, SIZE, SIZE) * 255 * torch.tensor(MEAN).view(1, 3, 1, 1))
        torch.testing.assert_close(
            got[2], F.normalize(tiny_clip.encode_image(grey), dim=-1)[0], atol=1e-5, rtol=0
        )


def test_mask_prompt_and_tokens_refuse_a_vit_without_class_token_pooling(tiny_clip):
    model = copy.deepcopy(tiny_clip)
    model.visual.pool_type = "avg"
    pixels = torch.zeros(1, 3, SIZE, SIZE)
    everywhere = torch.ones(1, GRID * GRID, dtype=torch.bool)
    with pytest.raises(ValueError, match="pooled by its class token"):
        mask_forwards.mask_token_features(model.visual, pixels, everywhere)
    with pytest.raises(ValueError, match="pooled by its class token"):
        mask_forwards.mask_prompt_features(
            model.visual, pixels, everywhere, torch.zeros(3, GRID * GRID, 64)
        )


def test_a_sequence_first_transformer_gives_the_same_features(tiny_ovseg_clip, tiny_mask_embedding):
    # open_clip can build its transformer with batch_first=False ([L, B, W] blocks).
    seq_first = copy.deepcopy(tiny_ovseg_clip)
    seq_first.visual.transformer.batch_first = False
    for block in seq_first.visual.transformer.resblocks:
        block.attn.batch_first = False
    torch.manual_seed(5)
    pixels = _normalised(torch.rand(2, 3, SIZE, SIZE) * 255)
    patch_masks = torch.rand(3, GRID * GRID) > 0.5

    def features(model):
        visual = model.visual
        return (
            mask_forwards.mask_prompt_features(
                visual, pixels, patch_masks[:2], tiny_mask_embedding
            ),
            mask_forwards.mask_token_features(visual, pixels[:1], patch_masks),
            crop_image_features(model, pixels),
        )

    for got, expected in zip(features(seq_first), features(tiny_ovseg_clip)):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("quick_gelu", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_plain_blocks_compute_what_open_clip_blocks_do(tiny_clip_name, quick_gelu, masked):
    # The crop, mask prompt and mask token forwards run open_clip's blocks through
    # attention and mlp; OpenAI's weights (and OVSeg's) use QuickGELU, others GELU.
    torch.manual_seed(7)
    model = open_clip.create_model(
        tiny_clip_name, pretrained=None, force_quick_gelu=quick_gelu
    ).eval()
    visual = model.visual
    block = copy.deepcopy(visual.transformer.resblocks[0])
    block.ls_2 = LayerScale(64, 0.5)  # LayerScale passes through too
    assert isinstance(block.mlp.gelu, QuickGELU) == quick_gelu
    patch_masks = torch.rand(3, GRID * GRID) > 0.5
    attn_mask = mask_forwards.mask_token_attention_mask(patch_masks) if masked else None
    x = torch.randn(2, 3 + 1 + GRID * GRID, 64)
    with torch.inference_mode():
        expected = block(x, attn_mask=attn_mask)
        block.forward = None  # the plain path must not call the module's forward
        got = clip_vit.residual_block(visual, block, x, attn_mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got - x).abs().max() > 0.1
    # The class token's attention over all tokens, as the last crop block computes it.
    tokens = block.ln_1(x)
    with torch.inference_mode():
        torch.testing.assert_close(
            clip_vit.attention(block.attn, tokens[:, :1], tokens),
            block.attn(tokens[:, :1], tokens, tokens, need_weights=False)[0],
            atol=1e-5,
            rtol=1e-5,
        )


def test_other_blocks_run_their_own_forward(tiny_clip):
    # A cross-attention block (ln_1_kv) is not a plain self-attention block.
    block = ResidualAttentionBlock(64, 2, is_cross_attention=True).eval()
    x = torch.randn(2, 5, 64)
    with torch.inference_mode():
        got = clip_vit.residual_block(tiny_clip.visual, block, x)
        torch.testing.assert_close(got, block(x), atol=0, rtol=0)


@pytest.mark.parametrize("mode", ["crop", "mask_token"])
def test_bf16_runs_on_the_cpu_and_fp16_means_fp32_there(scene, tiny_ovseg_clip, mode):
    image, masks = scene
    boxes = boxes_of(masks)
    model = bundle(tiny_ovseg_clip)
    exact = MaskClassifier(model, mode=mode).embed_masks(image, masks, boxes)
    half = MaskClassifier(model, mode=mode, precision="bf16").embed_masks(image, masks, boxes)
    assert half.dtype == torch.float32
    assert not torch.equal(half, exact)
    assert F.cosine_similarity(half, exact, dim=1).min() > 0.99
    fp16 = MaskClassifier(model, mode=mode, precision="fp16").embed_masks(image, masks, boxes)
    assert torch.equal(fp16, exact)


@pytest.mark.parametrize("recipe", ["classifier", "reference"])
def test_crop_fill_is_255_times_the_mean_in_float64_rounded_once(
    scene, tiny_clip, recipe, monkeypatch
):
    # OVSeg: torch.tensor([255.0 * c for c in mean]); float32 255 * mean is 1 ulp off.
    image = scene[0]
    empty = torch.zeros((1, *image.shape[:2]), dtype=torch.bool)  # a crop of pure fill
    expected = torch.from_numpy((255.0 * np.asarray(MEAN, dtype=np.float64)).astype(np.float32))
    assert not torch.equal(expected, 255 * torch.tensor(MEAN, dtype=torch.float32))
    seen = []
    if recipe == "classifier":

        def crops(image, masks, boxes, fill, size):
            seen.append(fill.clone())
            return masked_crops_per_box(image, masks, boxes, fill, size)

        monkeypatch.setattr(classifier_module, "masked_crops_per_box", crops)
        MaskClassifier(bundle(tiny_clip)).embed_masks(image, empty, boxes_of(empty))
    else:
        interpolate = F.interpolate

        def resize(crop, **kwargs):
            seen.append(crop[0, :, 0, 0].clone())
            return interpolate(crop, **kwargs)

        monkeypatch.setattr(ovseg_crops.F, "interpolate", resize)
        reference_crop_embeddings(
            tiny_clip, image.numpy(), empty.numpy(), boxes_of(empty).numpy(), MEAN, STD, SIZE
        )
    assert torch.equal(seen[0].flatten(), expected)


def test_crop_boxes_are_the_hand_written_ones(scene):
    image, masks = scene
    h, w = image.shape[:2]
    column = torch.zeros(1, h, w, dtype=torch.bool)
    column[0, 20:60, w - 1] = True  # one column at the right border
    masks = torch.cat([masks[:6], column])
    # x0, y0, x1, y1 inclusive, written from the mask definitions in ``scene``.
    expected = [
        [111, 21, 209, 119],
        [90, 40, 90, 40],
        [300, 10, 302, 11],
        [0, 130, 330, 149],
        [0, 0, 330, 149],
        [0, 0, 330, 149],
        [330, 20, 330, 59],
    ]
    assert crop_boxes(boxes_of(masks), h, w).tolist() == expected
    # SAM's float boxes round, and clamp into the image with x1 >= x0.
    sam_boxes = torch.tensor(
        [[110.6, 20.6, 209.4, 119.4], [-3.0, -1.0, 400.0, 200.0], [340.0, 5.0, 338.0, 4.0]]
    )
    assert crop_boxes(sam_boxes, h, w).tolist() == [
        [111, 21, 209, 119],
        [0, 0, 330, 149],
        [330, 5, 330, 5],
    ]
    # The crop of the one-column mask is that column's 40 pixels, stretched.
    fill = fill_colour(MEAN)
    crop = masked_crops_per_box(image, column, torch.tensor([expected[-1]]), fill, SIZE)
    pixels = image[20:60, w - 1 : w].permute(2, 0, 1).float()
    torch.testing.assert_close(
        crop[0], F.interpolate(pixels[None], size=(SIZE, SIZE), mode="bicubic")[0], atol=0, rtol=0
    )


def test_every_classifier_mode_setting_has_one_features_method():
    from ovseg_ros.settings.config import CLASSIFIER_MODES

    assert tuple(MaskClassifier._FEATURES) == CLASSIFIER_MODES
    assert all(
        callable(getattr(MaskClassifier, name)) for name in MaskClassifier._FEATURES.values()
    )
