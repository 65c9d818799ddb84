"""Class-agnostic mask proposals: Segment Anything's automatic mask generation.

Two backends compute the same proposals (settings.proposal_backend):

- "stock": segment_anything's ``SamAutomaticMaskGenerator`` (one crop, binary masks), the
  reference. Its cost is in the way it is driven: prompts go through the decoder in
  chunks of points_per_batch, every mask is upsampled to full resolution in fp32 before it
  is filtered, and masks round-trip through run-length encoding on the CPU with a GPU
  sync per mask.
- "fast": the same computation kept on the device. The image embedding is computed once;
  the prompt grid goes through the decoder in chunks as large as memory allows, through
  ovseg_ros.models.sam_decoder (SAM's decoder weights, the attention products reassociated so
  that the image tokens are not projected per prompt, the predicted-IoU filter before the
  output upscaling, which only the surviving prompts get); only the survivors' 256x256
  logits are upsampled, exactly as the stock does (padded square, crop, image size), for
  stability and boxes; NMS runs on the device, and only the masks returned are upsampled
  again and binarised. There is no run-length encoding, and the host syncs per frame do
  not grow with the number of masks: one per decoder chunk (the IoU survivors' count),
  one inside torchvision's NMS, one for the final count, plus the copy to the CPU when
  the optional small-region clean-up (OpenCV) runs. In fp32 the result is the stock's up
  to float rounding (the decoder sums in another order): the same count, each mask
  matched at IoU >= 0.95, predicted IoU within 1e-4 (see test/test_proposals.py).

Both backends return ``MaskProposals`` sorted by predicted IoU, at most settings.max_masks.
The file is a few lines past 450 because the two backends share the proposer's state and
its decoder chunk sizing, and comparing them is easier side by side.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.modeling import Sam
from segment_anything.utils.amg import (
    batched_mask_to_box,
    build_point_grid,
    calculate_stability_score,
    remove_small_regions,
)
from segment_anything.utils.transforms import ResizeLongestSide
from torchvision.ops import batched_nms

from ..models.precision import autocast, compute_dtype
from ..models.sam_decoder import multimask_predictions
from ..settings.config import Settings, SettingsError, start_only_changes

# The stock generator's crop_nms_thresh default. With one crop it only matters in the
# small-region clean-up, whose NMS uses max(box_nms_thresh, crop_nms_thresh).
STOCK_CROP_NMS_THRESH = 0.7

# Peak decoder memory per point prompt (3 masks out), with margin over the measured peak in
# BENCHMARKS.md; it is the same for vit_b/l/h (the decoder is 256 wide on a 64x64 embedding)
# and half precision halves the activations.
DECODER_BYTES_PER_PROMPT = {
    torch.float32: 32 << 20,
    torch.bfloat16: 16 << 20,
    torch.float16: 16 << 20,
}
# Fraction of the free GPU memory a frame may plan to use for decoder and upsampling chunks,
# and a cap on it: the default configuration (vit_b, 32x32 grid) must fit in 8 GB whatever
# the card has free. 3 GiB is 96 fp32 prompts per decoder call (11 calls for 32x32).
GPU_MEMORY_FRACTION = 0.5
GPU_MEMORY_CAP_BYTES = 3 << 30


@dataclass
class MaskProposals:
    """Per-mask fields kept aligned (like segment_anything's MaskData), all on one device.

    masks: [N, H, W] bool, at the image's resolution.
    boxes: [N, 4] float32 XYXY where x1, y1 are the last covered column and row (SAM's
        convention; a crop of the mask is [x0, y0, x1 + 1, y1 + 1]); [0, 0, 0, 0] when empty.
    predicted_iou: [N] float32, the decoder's own quality estimate.
    stability_score: [N] float32, IoU of the mask thresholded at +offset and -offset
        (NaN for an empty mask, which only passes when the stability filter is off).
    """

    masks: torch.Tensor
    boxes: torch.Tensor
    predicted_iou: torch.Tensor
    stability_score: torch.Tensor

    def __post_init__(self) -> None:
        n = self.masks.shape[0]
        if (
            self.masks.dim() != 3
            or self.boxes.shape != (n, 4)
            or self.predicted_iou.shape != (n,)
            or self.stability_score.shape != (n,)
        ):
            raise ValueError(
                "MaskProposals fields disagree: masks "
                f"{tuple(self.masks.shape)}, boxes {tuple(self.boxes.shape)}, predicted_iou "
                f"{tuple(self.predicted_iou.shape)}, stability_score "
                f"{tuple(self.stability_score.shape)}"
            )

    def __len__(self) -> int:
        return self.masks.shape[0]

    @classmethod
    def empty(cls, height: int, width: int, device: torch.device | str) -> MaskProposals:
        """No masks, for an image of height x width."""
        return cls(
            masks=torch.zeros(0, height, width, dtype=torch.bool, device=device),
            boxes=torch.zeros(0, 4, device=device),
            predicted_iou=torch.zeros(0, device=device),
            stability_score=torch.zeros(0, device=device),
        )

    def select(self, index: torch.Tensor | slice) -> MaskProposals:
        """The masks picked by a [N] bool tensor, a tensor of indices or a slice, every field
        filtered together."""
        if isinstance(index, torch.Tensor):
            index = index.to(self.masks.device)
        return MaskProposals(
            masks=self.masks[index],
            boxes=self.boxes[index],
            predicted_iou=self.predicted_iou[index],
            stability_score=self.stability_score[index],
        )

    def top(self, limit: int) -> MaskProposals:
        """The best ``limit`` masks by predicted IoU, best first (ties keep their order)."""
        order = torch.sort(self.predicted_iou, descending=True, stable=True).indices
        return self.select(order[:limit])


class MaskProposer:
    """SAM automatic masks for one image at a time, with the backend the settings name.

    Live settings (grid, thresholds, clean-up, max_masks) apply from the next frame;
    proposal_backend, precision and compile are read here once. precision means what
    ``ovseg_ros.models.precision`` says (bf16 on either device, fp16 on CUDA only); compile only
    takes effect on CUDA.
    """

    def __init__(self, sam: Sam, settings: Settings):
        settings.validate()
        self._sam = sam
        self._settings = settings
        self.device = sam.device
        on_cuda = self.device.type == "cuda"
        self._dtype = compute_dtype(settings.precision, self.device)
        self._transform = ResizeLongestSide(sam.image_encoder.img_size)
        # The padded encoder input always has the same shape: compiled once, on the first
        # frame. The stock backend keeps the model untouched (it is the reference).
        self._encoder = (
            torch.compile(sam.image_encoder) if settings.compile and on_cuda else sam.image_encoder
        )

    @property
    def settings(self) -> Settings:
        """The settings the next frame runs with."""
        return self._settings

    def update_settings(self, settings: Settings) -> None:
        """Use new live settings from the next frame; a start-only change raises
        SettingsError."""
        settings.validate()
        changed = start_only_changes(self._settings, settings)
        if changed:
            raise SettingsError(
                f"{', '.join(changed)} can only be set when the proposer is created"
            )
        self._settings = settings

    @torch.no_grad()
    def propose(self, image: np.ndarray) -> MaskProposals:
        """Masks for an HxWx3 uint8 RGB image, at HxW, sorted by predicted IoU (best first),
        at most settings.max_masks."""
        if (
            image.ndim != 3
            or image.shape[2] != 3
            or image.dtype != np.uint8
            or image.shape[0] == 0
            or image.shape[1] == 0
        ):
            raise ValueError(
                f"expected an HxWx3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}"
            )
        settings = self._settings
        if settings.proposal_backend == "stock":
            return self._propose_stock(image, settings)
        return self._propose_fast(image, settings)

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self._settings.precision, self.device)

    def _propose_stock(self, image: np.ndarray, settings: Settings) -> MaskProposals:
        generator = SamAutomaticMaskGenerator(
            self._sam,
            points_per_side=settings.points_per_side,
            points_per_batch=settings.points_per_batch,
            pred_iou_thresh=settings.pred_iou_thresh,
            stability_score_thresh=settings.stability_score_thresh,
            stability_score_offset=settings.stability_score_offset,
            box_nms_thresh=settings.box_nms_thresh,
            min_mask_region_area=settings.min_mask_region_area,
            output_mode="binary_mask",
        )
        # Half precision as OVSeg's demo runs it: the whole generator under autocast.
        with self._autocast(), _decoder_outputs_in_fp32(self._sam.mask_decoder, self._dtype):
            records = generator.generate(image)
        if not records:
            return MaskProposals.empty(image.shape[0], image.shape[1], self.device)
        # Stock boxes are XYWH of the inclusive XYXY box: x1 = x0 + w exactly (integers).
        xywh = torch.tensor([r["bbox"] for r in records], dtype=torch.float32)
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        proposals = MaskProposals(
            masks=torch.from_numpy(np.stack([r["segmentation"] for r in records])),
            boxes=boxes,
            predicted_iou=torch.tensor([r["predicted_iou"] for r in records], dtype=torch.float32),
            stability_score=torch.tensor(
                [r["stability_score"] for r in records], dtype=torch.float32
            ),
        ).top(settings.max_masks)
        return MaskProposals(
            *(
                t.to(self.device)
                for t in (
                    proposals.masks,
                    proposals.boxes,
                    proposals.predicted_iou,
                    proposals.stability_score,
                )
            )
        )

    def _propose_fast(self, image: np.ndarray, settings: Settings) -> MaskProposals:
        sam = self._sam
        height, width = image.shape[:2]
        # Same pre-processing as SamPredictor.set_image (PIL resize), so fp32 matches.
        resized = self._transform.apply_image(image)
        input_size = resized.shape[:2]
        pixels = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        with self._autocast():
            embedding = self._encoder(sam.preprocess(pixels))
        points = grid_prompts(
            settings.points_per_side, (height, width), self._transform, self.device
        )
        labels = torch.ones(points.shape[0], 1, dtype=torch.int, device=self.device)
        image_pe = sam.prompt_encoder.get_dense_pe()
        prompt_chunk, mask_chunk = chunk_sizes(
            points.shape[0],
            settings.points_per_batch,
            (height, width),
            sam.image_encoder.img_size,
            self._dtype,
            self._memory_budget(),
        )

        low_res, iou, stability, boxes = [], [], [], []
        for start in range(0, points.shape[0], prompt_chunk):
            # The prompt encoder stays in fp32 (cheap; positions keep their precision).
            sparse, dense = sam.prompt_encoder(
                points=(points[start : start + prompt_chunk], labels[start : start + prompt_chunk]),
                boxes=None,
                masks=None,
            )
            with self._autocast():
                # Survivors of the predicted-IoU filter only (this chunk's sync), point-major
                # ([P, 3] flattened) as the stock concatenates its batches. Without mask
                # inputs the dense embedding is the same (no-mask) one for every prompt.
                chunk_logits, chunk_iou = multimask_predictions(
                    sam.mask_decoder,
                    embedding,
                    image_pe,
                    sparse,
                    dense[:1],
                    settings.pred_iou_thresh,
                )
            chunk_iou = chunk_iou.float()
            for logits in torch.split(chunk_logits, mask_chunk):
                full = upsampled_logits(sam, logits, input_size, (height, width))
                stability.append(
                    calculate_stability_score(
                        full, sam.mask_threshold, settings.stability_score_offset
                    )
                )
                boxes.append(batched_mask_to_box(full > sam.mask_threshold))
            low_res.append(chunk_logits)
            iou.append(chunk_iou)
        if sum(len(t) for t in iou) == 0:
            return MaskProposals.empty(height, width, self.device)
        low_res_all, iou_all = torch.cat(low_res), torch.cat(iou)
        stability_all, boxes_all = torch.cat(stability), torch.cat(boxes)

        keep = stable_masks_after_nms(iou_all, stability_all, boxes_all, settings)
        if settings.min_mask_region_area == 0:
            # Cut to max_masks now, so that only the masks returned are upsampled again.
            keep = keep[torch.sort(iou_all[keep], descending=True, stable=True).indices]
            keep = keep[: settings.max_masks]
        # torch.split of an empty tensor yields one empty piece, so there is always one.
        masks = torch.cat(
            [
                upsampled_logits(sam, logits, input_size, (height, width)) > sam.mask_threshold
                for logits in torch.split(low_res_all[keep], mask_chunk)
            ]
        )
        proposals = MaskProposals(
            masks=masks,
            boxes=boxes_all[keep].float(),
            predicted_iou=iou_all[keep],
            stability_score=stability_all[keep],
        )
        if settings.min_mask_region_area > 0:
            proposals = without_small_regions(
                proposals,
                settings.min_mask_region_area,
                max(settings.box_nms_thresh, STOCK_CROP_NMS_THRESH),
            )
        return proposals.top(settings.max_masks)

    def _memory_budget(self) -> float | None:
        """``frame_memory_budget`` of the GPU memory free now (the allocator's cached
        blocks count as free); None on the CPU."""
        if self.device.type != "cuda":
            return None
        free, _ = torch.cuda.mem_get_info(self.device)
        cached = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        return frame_memory_budget(free + cached)


@contextlib.contextmanager
def _decoder_outputs_in_fp32(decoder: torch.nn.Module, dtype: torch.dtype):
    """Under bf16, the stock generator would hand the decoder's bf16 scores to numpy, which
    has no bfloat16 (TypeError in MaskData.to_numpy): its outputs are cast back to fp32,
    so the upsampling and filters run in fp32, as they do on the fast path."""
    if dtype != torch.bfloat16:
        yield
        return
    handle = decoder.register_forward_hook(
        lambda module, args, outputs: tuple(output.float() for output in outputs)
    )
    try:
        yield
    finally:
        handle.remove()


def frame_memory_budget(free_bytes: float) -> float:
    """Bytes a frame may plan to use for decoder and upsampling chunks when free_bytes of
    GPU memory are free: GPU_MEMORY_FRACTION of them, at most GPU_MEMORY_CAP_BYTES."""
    return min(GPU_MEMORY_FRACTION * free_bytes, GPU_MEMORY_CAP_BYTES)


def chunk_sizes(
    num_prompts: int,
    points_per_batch: int,
    image_size: tuple[int, int],
    encoder_side: int,
    dtype: torch.dtype,
    budget_bytes: float | None,
) -> tuple[int, int]:
    """(prompts per decoder call, masks per upsampling call) for the fast backend.

    Without a budget (CPU): points_per_batch prompts and their 3 masks per call, as the
    stock does. With one (GPU): as many as fit in budget_bytes (the whole of a 32x32 grid
    would need about 32 GiB, or 16 GiB in half precision; frame_memory_budget caps it at
    3 GiB), never fewer than the stock's.
    """
    floor = min(points_per_batch, num_prompts)
    if budget_bytes is None:
        return floor, 3 * floor
    prompts = max(floor, min(num_prompts, int(budget_bytes // DECODER_BYTES_PER_PROMPT[dtype])))
    # Per upsampled mask: the padded-square fp32 logits, the image-size fp32 logits and the
    # boolean masks made from them.
    mask_bytes = 4 * encoder_side * encoder_side + 7 * image_size[0] * image_size[1]
    return prompts, max(3 * floor, int(budget_bytes // mask_bytes))


def grid_prompts(
    points_per_side: int,
    image_size: tuple[int, int],
    transform: ResizeLongestSide,
    device: torch.device,
) -> torch.Tensor:
    """The stock prompt grid in the model's input frame: [P, 1, 2] (x, y), P =
    points_per_side ** 2, row-major from the top-left. float64 as the stock makes it (the
    prompt encoder casts after normalising), so the embeddings are the same."""
    height, width = image_size
    points = build_point_grid(points_per_side) * np.array([[width, height]])
    return torch.as_tensor(transform.apply_coords(points, image_size), device=device)[:, None]


def upsampled_logits(
    sam: Sam, low_res: torch.Tensor, input_size: tuple[int, int], image_size: tuple[int, int]
) -> torch.Tensor:
    """Decoder logits [M, h, w] -> [M, H, W] fp32 at the image size, through the padded
    square and the crop exactly as Sam.postprocess_masks does (bilinear, per mask, so the
    batch composition does not change the values)."""
    with torch.autocast(low_res.device.type, enabled=False):
        return sam.postprocess_masks(low_res.float()[:, None], input_size, image_size)[:, 0]


def stable_masks_after_nms(
    iou: torch.Tensor, stability: torch.Tensor, boxes: torch.Tensor, settings: Settings
) -> torch.Tensor:
    """Indices [K] of the masks that pass the stability filter and survive box NMS among
    those that pass, best predicted IoU first, as the stock filters then runs NMS.

    Masks failing stability are not removed before NMS (that would need a host sync for
    their count) but scored -inf: NMS handles boxes in decreasing score order, so they come
    after every passing mask and cannot suppress one; they are cut off the end of the
    result. iou, stability: [M]; boxes: [M, 4] XYXY.
    """
    if settings.stability_score_thresh > 0.0:
        passes = stability >= settings.stability_score_thresh
    else:
        passes = torch.ones_like(iou, dtype=torch.bool)
    scores = iou.masked_fill(~passes, float("-inf"))
    keep = batched_nms(
        boxes.float(),
        scores,
        torch.zeros_like(iou, dtype=torch.int64),
        iou_threshold=settings.box_nms_thresh,
    )
    return keep[: int(passes[keep].sum())]


def without_small_regions(
    proposals: MaskProposals, min_area: int, nms_thresh: float
) -> MaskProposals:
    """The stock clean-up (SamAutomaticMaskGenerator.postprocess_small_regions) on the CPU:
    in each mask fill holes, then drop islands, smaller than min_area pixels (OpenCV
    connected components); recompute boxes; NMS again, preferring masks that did not
    change (score 1, changed masks 0). Scores and stability are kept from before.

    The input must be in NMS order (predicted IoU descending), as the stock's is, since NMS
    breaks the many score ties by position.
    """
    if len(proposals) == 0:
        return proposals
    cleaned, unchanged = [], []
    for mask in proposals.masks.cpu().numpy():
        mask, holes_changed = remove_small_regions(mask, min_area, mode="holes")
        mask, islands_changed = remove_small_regions(mask, min_area, mode="islands")
        cleaned.append(torch.as_tensor(mask))
        unchanged.append(float(not (holes_changed or islands_changed)))
    masks = torch.stack(cleaned)
    boxes = batched_mask_to_box(masks)
    keep = batched_nms(
        boxes.float(), torch.as_tensor(unchanged), torch.zeros(len(boxes)), iou_threshold=nms_thresh
    )
    # Unchanged masks' new boxes equal their old ones, so the recomputed set serves all.
    device = proposals.masks.device
    return MaskProposals(
        masks=masks[keep].to(device),
        boxes=boxes[keep].float().to(device),
        predicted_iou=proposals.predicted_iou[keep.to(device)],
        stability_score=proposals.stability_score[keep.to(device)],
    )
