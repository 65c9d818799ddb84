"""Side-by-side benchmark: the stock OVSeg pipeline against ovseg_ros's fast one.

Both pipelines run on the same models, the same frames and the same settings:

- stock: segment-anything's SamAutomaticMaskGenerator (MaskProposer "stock" backend), then
  OVSeg's masked crops one mask at a time (``reference_crop_embeddings``), then the fusion;
- fast: ``Segmenter`` with the "fast" proposal backend and the batched crop classifier.

Per frame it times, with a device sync around every stage:

- proposals: the whole ``MaskProposer.propose`` call, split into ``preprocess`` (up to the
  SAM image encoder), ``encoder`` (the encoder's forward) and ``post_encoder`` (everything
  after it: decoding, filtering, NMS, mask output). The split is measured inside the same
  call by forward hooks on ``sam.image_encoder`` (they sync the device and read the clock).
  No pipeline code is changed: the Segmenter's proposer.propose and classifier.classify are
  only wrapped in timed passthroughs, so their results can be compared too. Both sides call
  the same encoder module, so the encoder row is a control, not a comparison;
- classify_crop: the per-mask reference loop against the batched crop classifier on the SAME
  masks (the stock proposals of the frame) and image. The reference's time includes copying
  the masks to host numpy arrays, which is how it takes them. When the Segmenter's own
  proposals are exactly the stock's (torch.equal), its own classifier call is that
  measurement and is not repeated; otherwise the batched classifier runs again on the stock
  masks. classify_mask_token: MaskCLIP mask tokens on those masks, a different method, shown
  beside crop mode and never counted as its speedup;
- fuse and end_to_end (RGB image in -> label image, instance image, instance list out).

Fidelity: the fast proposals against the stock generator's in fp32 (counts equal, and for
each stock mask the best IoU with a fast mask), and the batched crop probabilities against
the fp32 reference loop's (max absolute difference). With --precision bf16/fp16 both sides
are timed in that precision (the stock generator and reference loop under autocast, as
OVSeg's demo runs them) and compared with an extra, untimed fp32 stock run.

Weights: real ones when the settings find them (offline, never downloaded), else random
weights of the real architectures (SAM sam_model_registry[...](checkpoint=None), open_clip
``pretrained=None``, with QuickGELU where the real weights use it). Timings depend on shapes,
not values, except through how many masks pass SAM's filters: random SAM logits are tiny
(|x| ~ 0.1), so the stability score at offset 1.0 is 0 for every mask and their predicted
IoUs are near 0. With random SAM weights the benchmark therefore sets
stability_score_thresh 0, box_nms_thresh 1.0 (random masks are large overlapping blobs that
NMS would collapse) and pred_iou_thresh to the quantile that lets --keep-fraction of the
grid's candidates through on the first frame; all three are printed. Numbers from random
weights measure stage costs at that mask count, not accuracy.

Run ``python benchmarks/bench_pipeline.py --help``; results print as a table and, with
--json PATH, as JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch

# Run as a script from anywhere: the package is the repository root's ovseg_ros.
REPO_ROOT = str(Path(__file__).resolve().parents[1])
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from ovseg_ros import panoptic  # noqa: E402
from ovseg_ros.classifier import LOGIT_SCALE, MaskClassifier  # noqa: E402
from ovseg_ros.config import PRECISIONS, Settings  # noqa: E402
from ovseg_ros.pipeline import Segmenter  # noqa: E402
from ovseg_ros.precision import autocast, compute_dtype  # noqa: E402
from ovseg_ros.proposals import MaskProposals, MaskProposer, grid_prompts  # noqa: E402
from ovseg_ros.vocabulary import Vocabulary  # noqa: E402
from reference.ovseg_crops import reference_crop_embeddings  # noqa: E402
from ovseg_ros.weights import (SAM_CHECKPOINTS, ClipBundle, WeightsError, load_clip,  # noqa: E402
                               load_sam)

FRAME_HEIGHT, FRAME_WIDTH = 480, 640
STAGES = ("proposals", "classify", "end_to_end")
# A robot's everyday vocabulary; the last three are stuff (merged regions).
CLASSES = ("person", "chair", "table", "door", "door handle", "mug", "bottle", "laptop",
           "keyboard", "monitor", "cabinet", "shelf", "box", "bag", "plant", "lamp",
           "window", "floor", "wall", "ceiling")
STUFF = ("floor", "wall", "ceiling")
SAM_SEED, CLIP_SEED = 0, 1
CALIBRATION_PROMPTS = 64
# Masks are "the same" when each stock mask has a fast mask with at least this IoU.
MASK_IOU_TARGET = 0.95
# fp32 batched crops must give the reference's probabilities within this (absolute); the
# crops equal the reference up to float rounding, and softmax(100 * cos) amplifies a cosine
# difference by at most 25x.
PROB_TOLERANCE_FP32 = 1e-3
# Issue 4's targets.
CPU_POST_ENCODER_SPEEDUP = 3.0
CPU_CLASSIFY_SPEEDUP = 1.5
GPU_FPS = 30.0
GPU_END_TO_END_SPEEDUP = 20.0
GPU_MEMORY_GIB = 8.0
# Stages where the two sides run different code ("nothing slower" is checked on these; the
# encoder, pre-processing and fusion run the same code on both sides).
COMPARED_STAGES = ("post_encoder", "proposals", "classify_crop", "end_to_end")
ROWS = ("preprocess", "encoder", "post_encoder", "proposals", "classify_crop",
        "classify_mask_token", "fuse", "end_to_end")


# --------------------------------------------------------------------------- frames

def synthetic_frame(seed: int, height: int = FRAME_HEIGHT, width: int = FRAME_WIDTH
                    ) -> np.ndarray:
    """A deterministic HxWx3 uint8 RGB test scene: a smooth textured background (two
    gradients, low-frequency waves, pixel noise) with a dozen filled shapes and outlines."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.empty((height, width, 3), np.float32)
    for channel in range(3):
        fx, fy, phase = rng.uniform(0.005, 0.03), rng.uniform(0.005, 0.03), rng.uniform(0, 6)
        image[..., channel] = (90 + 60 * np.sin(fx * xs + fy * ys + phase)
                               + 40 * ys / height + rng.uniform(-20, 20))
    image += rng.normal(0, 8, image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(12):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 4)
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(20, 160))
        if kind == 0:
            cv2.rectangle(image, (cx - size, cy - size // 2), (cx + size, cy + size // 2),
                          colour, -1)
        elif kind == 1:
            cv2.circle(image, (cx, cy), size // 2, colour, -1)
        elif kind == 2:
            cv2.ellipse(image, (cx, cy), (size, size // 3), float(rng.uniform(0, 180)), 0,
                        360, colour, -1)
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


def load_models(settings: Settings, device: torch.device, *, random_weights: bool,
                mask_prompt: bool) -> Models:
    """Real weights when the settings find them without downloading, else random weights
    of the same architectures (mask_prompt: add a random OVSeg prompt to random CLIP)."""
    settings = settings.replace(offline=True)
    sam = clip = None
    sam_source = clip_source = ""
    if not random_weights:
        try:
            sam = load_sam(settings, device)
            sam_source = "real: " + (settings.sam_checkpoint or str(
                settings.resolved_cache_dir() / SAM_CHECKPOINTS[settings.sam_model].filename))
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
        clip_source += (f"; open_clip {settings.clip_model} pretrained=None, "
                        f"quick_gelu {clip_uses_quick_gelu(settings)}, seed {CLIP_SEED}"
                        + (", random mask prompt" if mask_prompt else ""))
    return Models(sam, clip, sam_source, clip_source, sam_random)


def first_sentence(err: Exception) -> str:
    return str(err).split(". ")[0].splitlines()[0].rstrip(".:")


def random_clip(settings: Settings, device: torch.device, mask_prompt: bool) -> ClipBundle:
    """Random weights of the model load_clip would build: with QuickGELU where the real
    weights use it (OVSeg's checkpoints, and tags such as 'openai' whose config says so)."""
    import open_clip

    name = settings.clip_model
    torch.manual_seed(CLIP_SEED)
    model = open_clip.create_model(name, pretrained=None,
                                   force_quick_gelu=clip_uses_quick_gelu(settings))
    model = model.to(device).eval()
    visual = model.visual
    prompt = None
    if mask_prompt:
        # OVSeg's shape [depth 3, grid * grid, width]; values of a trained prompt's scale.
        prompt = 0.1 * torch.randn(3, visual.grid_size[0] * visual.grid_size[1],
                                   visual.conv1.out_channels, device=device)
    size = visual.image_size
    return ClipBundle(model=model, tokenizer=open_clip.get_tokenizer(name),
                      mask_embedding=prompt, image_mean=open_clip.OPENAI_DATASET_MEAN,
                      image_std=open_clip.OPENAI_DATASET_STD,
                      image_size=size if isinstance(size, int) else size[0])


def clip_uses_quick_gelu(settings: Settings) -> bool:
    import open_clip

    if settings.ovseg_checkpoint:
        return True
    tag_cfg = open_clip.get_pretrained_cfg(settings.clip_model, settings.clip_pretrained)
    return bool(tag_cfg.get("quick_gelu", False))


@torch.inference_mode()
def iou_threshold_keeping(sam: torch.nn.Module, image: np.ndarray, points_per_side: int,
                          keep_fraction: float) -> tuple[float, int]:
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
    _, iou = sam.mask_decoder(image_embeddings=embedding,
                              image_pe=sam.prompt_encoder.get_dense_pe(),
                              sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                              multimask_output=True)
    return float(torch.quantile(iou.flatten().float(), 1.0 - keep_fraction)), candidates


# --------------------------------------------------------------------------- clocks

class Clock:
    """Wall-clock reads that wait for the device first, so GPU work is counted where it
    is issued."""

    def __init__(self, device: torch.device):
        self.device = device

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


class EncoderSpans:
    """Forward hooks on SAM's image encoder recording (start, end) of every call."""

    def __init__(self, encoder: torch.nn.Module, clock: Clock):
        self.spans: list[tuple[float, float]] = []
        self._start = 0.0
        self._clock = clock
        encoder.register_forward_pre_hook(self._before)
        encoder.register_forward_hook(self._after)

    def _before(self, module: torch.nn.Module, args: Any) -> None:
        self._start = self._clock.now()

    def _after(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self.spans.append((self._start, self._clock.now()))


def timed_propose(propose: Callable[[np.ndarray], MaskProposals], image: np.ndarray,
                  clock: Clock, encoder: EncoderSpans) -> tuple[MaskProposals, dict]:
    """Run one propose call; milliseconds of proposals and its preprocess / encoder /
    post_encoder split (None when the encoder did not run exactly once in the call)."""
    encoder.spans.clear()
    start = clock.now()
    proposals = propose(image)
    end = clock.now()
    times = {"proposals": ms(end - start)}
    if len(encoder.spans) == 1:
        enc_start, enc_end = encoder.spans[0]
        times.update(preprocess=ms(enc_start - start), encoder=ms(enc_end - enc_start),
                     post_encoder=ms(end - enc_end))
    else:
        times.update(preprocess=None, encoder=None, post_encoder=None)
    return proposals, times


class RecordingProposer:
    """Stands in for the Segmenter's proposer.propose: the same call, also timed and kept,
    so the fast pipeline's proposals can be split and compared without a second run."""

    def __init__(self, propose: Callable[[np.ndarray], MaskProposals], clock: Clock,
                 encoder: EncoderSpans):
        self._propose, self._clock, self._encoder = propose, clock, encoder
        self.last: tuple[MaskProposals, dict] | None = None

    def __call__(self, image: np.ndarray) -> MaskProposals:
        self.last = timed_propose(self._propose, image, self._clock, self._encoder)
        return self.last[0]


class RecordingCall:
    """Stands in for a method: the same call, also timed and its result kept."""

    def __init__(self, function: Callable[..., Any], clock: Clock):
        self._function, self._clock = function, clock
        self.last: tuple[Any, float] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = self._clock.now()
        result = self._function(*args, **kwargs)
        self.last = (result, ms(self._clock.now() - start))
        return result


def ms(seconds: float) -> float:
    return seconds * 1000.0


# --------------------------------------------------------------------------- fidelity

def best_ious(reference: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """[A] IoU of each reference mask [A, H, W] with its best match among candidates
    [B, H, W] (both bool; two empty masks count as IoU 1)."""
    if reference.shape[0] == 0:
        return torch.zeros(0)
    if candidates.shape[0] == 0:
        return torch.zeros(reference.shape[0])
    a = reference.flatten(1).float()
    b = candidates.to(reference.device).flatten(1).float()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None] - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))
    return iou.max(dim=1).values.cpu()


def reference_probs(models: Models, image: np.ndarray, proposals: MaskProposals,
                    text: torch.Tensor) -> torch.Tensor:
    """The stock classification: OVSeg's per-mask crop loop, then softmax(100 cos)."""
    clip = models.clip
    embeddings = reference_crop_embeddings(
        clip.model, image, proposals.masks.cpu().numpy(), proposals.boxes.cpu().numpy(),
        clip.image_mean, clip.image_std, clip.image_size, mask_embedding=clip.mask_embedding)
    return (LOGIT_SCALE * embeddings @ text.to(embeddings).T).softmax(dim=-1)


# --------------------------------------------------------------------------- the run

@dataclass
class Samples:
    """Per-frame measurements of both sides."""

    stock: dict[str, list[float]] = field(default_factory=dict)
    fast: dict[str, list[float]] = field(default_factory=dict)
    stock_counts: list[int] = field(default_factory=list)
    fast_counts: list[int] = field(default_factory=list)
    min_best_iou: list[float] = field(default_factory=list)
    area_fraction: list[float] = field(default_factory=list)
    prob_diff: list[float] = field(default_factory=list)
    classified: list[int] = field(default_factory=list)
    classify_reused: int = 0  # frames whose fast crop timing is the Segmenter's own call
    peak_mib: dict[str, float] = field(default_factory=dict)

    def add(self, side: str, times: dict[str, float | None]) -> None:
        for name, value in times.items():
            if value is not None:
                getattr(self, side).setdefault(name, []).append(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Time the stock OVSeg pipeline (SamAutomaticMaskGenerator + per-mask "
                    "crops) against ovseg_ros's fast one, stage by stage, on the same models "
                    "and synthetic 640x480 frames.")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--frames", type=int, help="measured frames (default: 2 on the CPU, "
                        "30 on a GPU)")
    parser.add_argument("--warmup", type=int, help="frames run first and not counted "
                        "(default: 1 on the CPU, 3 on a GPU)")
    parser.add_argument("--size", default=f"{FRAME_WIDTH}x{FRAME_HEIGHT}",
                        help="frame size WIDTHxHEIGHT (default 640x480, the issue's)")
    parser.add_argument("--points-per-side", type=int, help="SAM prompt grid (default: 16 on "
                        "the CPU, 32 on a GPU)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="precision of both sides (bf16 on either device; fp16 on "
                             "the GPU only, the CPU then runs fp32)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the fast side's SAM encoder (GPU)")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma separated subset of {', '.join(STAGES)} (default: all)")
    parser.add_argument("--json", dest="json_path", help="also write the results here")
    parser.add_argument("--config", help="YAML settings (weights paths, thresholds...)")
    parser.add_argument("--random-weights", action="store_true",
                        help="use random weights even when real ones are found")
    parser.add_argument("--mask-prompt", action="store_true",
                        help="random CLIP only: add a random OVSeg mask prompt")
    parser.add_argument("--max-masks", type=int, help="cap on proposals (default: settings, "
                        "100)")
    parser.add_argument("--pred-iou-thresh", type=float, help="override (real weights: "
                        "settings' 0.88; random: calibrated, see --keep-fraction)")
    parser.add_argument("--stability-score-thresh", type=float,
                        help="override (real weights: 0.95; random: 0)")
    parser.add_argument("--box-nms-thresh", type=float,
                        help="override (real weights: 0.7; random: 1.0)")
    parser.add_argument("--keep-fraction", type=float, default=0.15,
                        help="random SAM weights: fraction of candidate masks that pass the "
                             "predicted-IoU filter (default 0.15)")
    parser.add_argument("--quiet", action="store_true", help="no per-frame progress lines")
    return parser


def main(argv: Sequence[str] | None = None, base_settings: Settings | None = None
         ) -> dict[str, Any]:
    """Run the benchmark; print the table; return (and with --json write) the results.

    base_settings replaces Settings() (or --config) as the starting point (tests pass
    tiny models' settings this way)."""
    args = build_parser().parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown or not stages:
        raise SystemExit(f"--stages: unknown {unknown}; choose from {', '.join(STAGES)}")
    if base_settings is None:
        base_settings = Settings.from_yaml(args.config) if args.config else Settings()
    device = torch.device(base_settings.replace(device=args.device).resolved_device())
    on_gpu = device.type == "cuda"
    frames_n = args.frames if args.frames is not None else (30 if on_gpu else 2)
    warmup_n = args.warmup if args.warmup is not None else (3 if on_gpu else 1)
    if frames_n < 1 or warmup_n < 0:
        raise SystemExit("--frames must be >= 1 and --warmup >= 0")
    pps = args.points_per_side or (32 if on_gpu else 16)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size must be WIDTHxHEIGHT, e.g. 640x480; got {args.size!r}")

    models = load_models(base_settings, device, random_weights=args.random_weights,
                         mask_prompt=args.mask_prompt)
    frames = [synthetic_frame(seed, height, width) for seed in range(frames_n)]
    # fp16 on the CPU runs fp32 (ovseg_ros.precision); say so rather than mislabel.
    precision = args.precision if compute_dtype(args.precision, device) != torch.float32 \
        else "fp32"
    overrides: dict[str, Any] = dict(
        device=str(device), precision=precision, compile=args.compile,
        points_per_side=pps, proposal_backend="fast", classifier_mode="crop",
        stuff_classes=list(STUFF), max_image_side=max(height, width))
    threshold_note = "settings' values (real SAM weights)"
    candidates = 3 * pps * pps
    if models.sam_random:
        threshold, candidates = iou_threshold_keeping(models.sam, frames[0], pps,
                                                      args.keep_fraction)
        overrides.update(pred_iou_thresh=max(0.0, min(1.0, threshold)),
                         stability_score_thresh=0.0, box_nms_thresh=1.0)
        threshold_note = (f"random SAM weights: pred_iou_thresh = the quantile keeping "
                          f"{args.keep_fraction:.0%} of the {candidates} candidates on frame 0 "
                          f"(estimated on {min(CALIBRATION_PROMPTS, pps * pps)} prompts spread "
                          f"over the grid), "
                          f"stability_score_thresh 0 (random logits give stability 0), "
                          f"box_nms_thresh 1.0 (no suppression of random overlapping blobs)")
    for flag in ("max_masks", "pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
            threshold_note += f"; {flag} {getattr(args, flag)} from the command line"
    settings = base_settings.replace(**overrides)

    bench = Bench(settings, models, device)
    samples = Samples()
    schedule = [frames[i % frames_n] for i in range(warmup_n)] + frames
    started = time.perf_counter()
    with torch.inference_mode():
        for step, image in enumerate(schedule):
            bench.run_frame(image, stages, Samples() if step < warmup_n else samples)
            if not args.quiet:
                label = "warm-up" if step < warmup_n else "frame"
                print(f"[bench] {label} {step + 1}/{len(schedule)} done, "
                      f"{time.perf_counter() - started:.0f} s elapsed", file=sys.stderr,
                      flush=True)

    run = {"command": " ".join(["python", "benchmarks/bench_pipeline.py",
                                *(argv if argv is not None else sys.argv[1:])]),
           "stages": stages, "frames": frames_n, "warmup": warmup_n,
           "frame_size": [height, width], "candidates": candidates,
           "thresholds": threshold_note}
    results = summarise(samples, settings, models, run, device)
    print(format_table(results))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=2) + "\n")
    return results


class Bench:
    """Both pipelines on shared models, instrumented, and one frame's measurements."""

    def __init__(self, settings: Settings, models: Models, device: torch.device):
        self.settings, self.models, self.device = settings, models, device
        self.clock = Clock(device)
        self.encoder = EncoderSpans(models.sam.image_encoder, self.clock)
        self.segmenter = Segmenter(settings, sam=models.sam, clip=models.clip)
        # Timed passthroughs, so the Segmenter's own proposals and probabilities can be
        # split and compared without running it twice.
        self.fast_propose = RecordingProposer(self.segmenter.proposer.propose, self.clock,
                                              self.encoder)
        self.segmenter.proposer.propose = self.fast_propose
        self.fast_classify = RecordingCall(self.segmenter.classifier.classify, self.clock)
        self.segmenter.classifier.classify = self.fast_classify
        self.stock = MaskProposer(models.sam, settings.replace(proposal_backend="stock"))
        self.half = compute_dtype(settings.precision, device) != torch.float32
        # The fidelity reference is always fp32; in fp32 it is the timed stock run itself.
        self.stock_fp32 = (MaskProposer(models.sam, settings.replace(
            proposal_backend="stock", precision="fp32")) if self.half else self.stock)
        self.token_classifier = MaskClassifier(models.clip, mode="mask_token",
                                               precision=settings.precision)
        self.vocabulary = self.segmenter.encode_vocabulary(
            Vocabulary.parse(list(CLASSES)))

    def run_frame(self, image: np.ndarray, stages: list[str], record: Samples) -> None:
        """The stock pass, the fast pass, then the classifiers on the same masks."""
        end_to_end = "end_to_end" in stages
        classify = "classify" in stages or end_to_end
        stock_props, stock_probs = self._stock_pass(image, classify, end_to_end, record)
        fast_props = self._fast_pass(image, stages, record)
        if fast_props is not None:
            reference = self.stock_fp32.propose(image) if self.half else stock_props
            record.fast_counts.append(len(fast_props))
            ious = best_ious(reference.masks, fast_props.masks)
            if len(ious):
                record.min_best_iou.append(float(ious.min()))
            if len(fast_props):
                record.area_fraction.append(float(fast_props.masks.float().mean()))
        if classify:
            self._classify_same_masks(image, stock_props, stock_probs, fast_props, end_to_end,
                                      record)

    def _stock_pass(self, image: np.ndarray, classify: bool, end_to_end: bool,
                    record: Samples) -> tuple[MaskProposals, torch.Tensor | None]:
        """Proposals -> per-mask reference crops -> fusion, timed as one span and by stage.

        The stock proposer applies the precision itself (the generator under autocast, as
        OVSeg's demo runs it); the reference loop gets the same autocast here."""
        clock, settings, vocabulary = self.clock, self.settings, self.vocabulary
        reset_peak(self.device)
        start = clock.now()
        proposals, times = timed_propose(self.stock.propose, image, clock, self.encoder)
        probs = None
        if classify:
            t0 = clock.now()
            with autocast(settings.precision, self.device):
                probs = reference_probs(self.models, image, proposals, vocabulary.embeddings)
            times["classify_crop"] = ms(clock.now() - t0)
        if end_to_end:
            t0 = clock.now()
            panoptic.fuse(proposals.masks, probs, proposals.predicted_iou,
                          vocabulary.vocabulary, granularity=settings.granularity,
                          unknown_thresh=settings.unknown_thresh,
                          vocabulary_version=vocabulary.version)
            end = clock.now()
            times.update(fuse=ms(end - t0), end_to_end=ms(end - start))
        record.add("stock", times)
        note_peak(record, "stock", self.device)
        record.stock_counts.append(len(proposals))
        return proposals, probs

    def _fast_pass(self, image: np.ndarray, stages: list[str], record: Samples
                   ) -> MaskProposals | None:
        """The Segmenter end to end (or only its proposer); its proposals."""
        reset_peak(self.device)
        if "end_to_end" in stages:
            self.fast_propose.last = self.fast_classify.last = None
            start = self.clock.now()
            result = self.segmenter.segment(image, self.vocabulary)
            total = ms(self.clock.now() - start)
            proposals, times = self.fast_propose.last
            times = dict(times, fuse=result.timings_ms["fuse"], end_to_end=total)
        elif "proposals" in stages:
            proposals = self.fast_propose(image)
            times = dict(self.fast_propose.last[1])
        else:
            return None
        record.add("fast", times)
        note_peak(record, "fast", self.device)
        return proposals

    def _classify_same_masks(self, image: np.ndarray, stock_props: MaskProposals,
                             stock_probs: torch.Tensor, fast_props: MaskProposals | None,
                             end_to_end: bool, record: Samples) -> None:
        """Batched crops and mask tokens on the stock pass's masks, which the reference loop
        classified. When the Segmenter's proposals were exactly those masks, its own
        classifier call is that measurement and is not repeated."""
        text = self.vocabulary.embeddings
        image_t = torch.from_numpy(image).to(self.device)
        reused = (end_to_end and self.fast_classify.last is not None
                  and fast_props is not None and same_proposals(fast_props, stock_props))
        if reused:
            crop_probs, crop_ms = self.fast_classify.last
        else:
            crop_probs = self.fast_classify(image_t, stock_props.masks, stock_props.boxes, text)
            crop_ms = self.fast_classify.last[1]
        start = self.clock.now()
        self.token_classifier.classify(image_t, stock_props.masks, stock_props.boxes, text)
        record.add("fast", {"classify_crop": crop_ms,
                            "classify_mask_token": ms(self.clock.now() - start)})
        record.classify_reused += int(reused)
        exact = (reference_probs(self.models, image, stock_props, text) if self.half
                 else stock_probs)
        record.classified.append(len(stock_props))
        if len(stock_props):
            record.prob_diff.append(float((crop_probs.float() - exact.float()).abs().max()))


def same_proposals(a: MaskProposals, b: MaskProposals) -> bool:
    """The same masks and boxes in the same order (what the classifiers read)."""
    return (a.masks.shape == b.masks.shape and bool(torch.equal(a.masks, b.masks))
            and bool(torch.equal(a.boxes.to(b.boxes), b.boxes)))


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def note_peak(record: Samples, side: str, device: torch.device) -> None:
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 20
        record.peak_mib[side] = max(record.peak_mib.get(side, 0.0), peak)


# --------------------------------------------------------------------------- reporting

def stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": float(np.median(values)), "p95": float(np.percentile(values, 95)),
            "n": len(values)}


def summarise(samples: Samples, settings: Settings, models: Models, run: dict[str, Any],
              device: torch.device) -> dict[str, Any]:
    """Everything the run measured, as one JSON-ready dict. run: command, stages, frames,
    warmup, frame_size [H, W], candidates (per frame) and thresholds (how they were set)."""
    timings = {side: {row: stats(getattr(samples, side).get(row, [])) for row in ROWS}
               for side in ("stock", "fast")}
    speedup = {}
    for row in ROWS:
        stock_t, fast_t = timings["stock"][row], timings["fast"][row]
        speedup[row] = (stock_t["median"] / fast_t["median"]
                        if stock_t and fast_t and fast_t["median"] > 0 else None)
    fps = {side: (1000.0 / timings[side]["end_to_end"]["median"]
                  if timings[side]["end_to_end"] else None) for side in ("stock", "fast")}
    on_gpu = device.type == "cuda"
    masks = {
        "reference": "stock generator in fp32",
        "candidates_per_frame": run["candidates"],
        "stock_counts": samples.stock_counts,
        "fast_counts": samples.fast_counts,
        "counts_equal": (samples.stock_counts == samples.fast_counts
                         if samples.fast_counts else None),
        "min_best_iou": min(samples.min_best_iou) if samples.min_best_iou else None,
        "iou_target": MASK_IOU_TARGET,
        "mean_area_fraction": (float(np.mean(samples.area_fraction))
                               if samples.area_fraction else None),
    }
    masks["same_masks"] = (None if masks["counts_equal"] is None else bool(
        masks["counts_equal"] and (masks["min_best_iou"] is None
                                   or masks["min_best_iou"] >= MASK_IOU_TARGET)))
    classification = {
        "reference": "per-mask crop loop in fp32 on the stock masks",
        "masks_per_frame": samples.classified,
        "fast_crop_timing_from_segmenter_frames": samples.classify_reused,
        "max_abs_prob_diff": max(samples.prob_diff) if samples.prob_diff else None,
        "tolerance_fp32": PROB_TOLERANCE_FP32,
    }
    classification["within_tolerance"] = (
        classification["max_abs_prob_diff"] <= PROB_TOLERANCE_FP32
        if classification["max_abs_prob_diff"] is not None else None)
    memory = {"peak_gpu_mib": dict(samples.peak_mib) if on_gpu else None}
    return {
        "command": run["command"],
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "environment": environment(device),
        "config": {
            "device": str(device), "precision": settings.precision,
            "compile": settings.compile, "frames": run["frames"], "warmup": run["warmup"],
            "frame_size": run["frame_size"], "stages": run["stages"],
            "sam_model": settings.sam_model, "clip_model": settings.clip_model,
            "sam_weights": models.sam_source, "clip_weights": models.clip_source,
            "mask_prompt": models.clip.mask_embedding is not None,
            "points_per_side": settings.points_per_side,
            "points_per_batch": settings.points_per_batch,
            "pred_iou_thresh": settings.pred_iou_thresh,
            "stability_score_thresh": settings.stability_score_thresh,
            "box_nms_thresh": settings.box_nms_thresh,
            "min_mask_region_area": settings.min_mask_region_area,
            "max_masks": settings.max_masks, "thresholds": run["thresholds"],
            "classes": len(CLASSES), "templates": settings.templates,
            "split_method": "forward hooks on sam.image_encoder inside each propose call",
        },
        "timings_ms": timings,
        "speedup": speedup,
        "fps": fps,
        "masks": masks,
        "classification": classification,
        "memory": memory,
        "targets": targets(timings, speedup, fps, masks, classification, memory, device,
                           settings.precision),
    }


def targets(timings: dict, speedup: dict, fps: dict, masks: dict, classification: dict,
            memory: dict, device: torch.device, precision: str) -> dict[str, Any]:
    """Issue 4's targets for this device, each with the measured value and met / not met
    (None when the run did not measure it)."""
    def at_least(value: float | None, bound: float) -> bool | None:
        return None if value is None else bool(value >= bound)

    slower = [row for row in COMPARED_STAGES
              if speedup.get(row) is not None and speedup[row] < 1.0]
    result: dict[str, Any] = {
        "stages_slower_than_stock": slower,
        "nothing_slower": not slower if any(speedup.get(r) for r in COMPARED_STAGES)
        else None,
        "mask_parity_fp32": masks["same_masks"] if precision == "fp32" else None,
        "classification_within_tolerance": (classification["within_tolerance"]
                                            if precision == "fp32" else None),
    }
    if device.type == "cuda":
        peak = (memory["peak_gpu_mib"] or {}).get("fast")
        result.update({
            "fps_min": GPU_FPS, "fps_met": at_least(fps["fast"], GPU_FPS),
            "end_to_end_speedup_min": GPU_END_TO_END_SPEEDUP,
            "end_to_end_speedup_met": at_least(speedup["end_to_end"], GPU_END_TO_END_SPEEDUP),
            "memory_max_gib": GPU_MEMORY_GIB,
            "memory_met": None if peak is None else bool(peak <= GPU_MEMORY_GIB * 1024),
        })
    else:
        result.update({
            "post_encoder_speedup_min": CPU_POST_ENCODER_SPEEDUP,
            "post_encoder_speedup_met": at_least(speedup["post_encoder"],
                                                 CPU_POST_ENCODER_SPEEDUP),
            "classify_crop_speedup_min": CPU_CLASSIFY_SPEEDUP,
            "classify_crop_speedup_met": at_least(speedup["classify_crop"],
                                                  CPU_CLASSIFY_SPEEDUP),
        })
    return result


def environment(device: torch.device) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    import open_clip
    import torchvision

    try:
        sam_version = version("segment-anything")
    except PackageNotFoundError:
        sam_version = "unknown"
    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "open_clip": open_clip.__version__,
        "segment_anything": sam_version, "numpy": np.__version__,
        "cpu": cpu_model, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


def format_table(results: dict[str, Any]) -> str:
    """The results as a plain-text report."""
    cfg, timings, env = results["config"], results["timings_ms"], results["environment"]
    lines = [
        f"ovseg_ros pipeline benchmark  {results['date']}",
        f"device {cfg['device']} ({env['gpu'] or env['cpu']}, "
        f"{env['torch_threads']} torch threads), precision "
        f"{cfg['precision']}, compile {cfg['compile']}",
        f"frames {cfg['frames']} measured (medians and p95 over them) after "
        f"{cfg['warmup']} warm-up, {cfg['frame_size'][1]}x{cfg['frame_size'][0]} synthetic",
        f"SAM {cfg['sam_model']}: {cfg['sam_weights']}",
        f"CLIP {cfg['clip_model']}: {cfg['clip_weights']}",
        f"grid {cfg['points_per_side']}x{cfg['points_per_side']}, points_per_batch "
        f"{cfg['points_per_batch']}, pred_iou_thresh {cfg['pred_iou_thresh']:.4g}, "
        f"stability_score_thresh {cfg['stability_score_thresh']}, box_nms_thresh "
        f"{cfg['box_nms_thresh']}, max_masks {cfg['max_masks']}",
        f"thresholds: {cfg['thresholds']}",
        f"{cfg['classes']} classes ({cfg['templates']} templates), mask prompt "
        f"{cfg['mask_prompt']}",
        "",
        f"{'stage':<22}{'stock median':>14}{'p95':>10}{'fast median':>14}{'p95':>10}"
        f"{'speedup':>10}",
    ]
    for row in ROWS:
        stock_t, fast_t = timings["stock"][row], timings["fast"][row]
        if stock_t is None and fast_t is None:
            continue
        ratio = results["speedup"][row]
        lines.append(f"{row:<22}{_cell(stock_t, 'median'):>14}{_cell(stock_t, 'p95'):>10}"
                     f"{_cell(fast_t, 'median'):>14}{_cell(fast_t, 'p95'):>10}"
                     f"{(f'{ratio:.2f}x' if ratio else '-'):>10}")
    lines.append("(ms; classify_mask_token is a different method, shown beside crop mode "
                 "and not a speedup of it; encoder, preprocess and fuse run the same code on "
                 "both sides)")
    fps = results["fps"]
    if fps["fast"]:
        lines.append(f"frames/s: stock {fps['stock']:.3g}, fast {fps['fast']:.3g}")
    masks, cls = results["masks"], results["classification"]
    if masks["fast_counts"]:
        lines.append(
            f"masks ({masks['reference']} vs fast): counts stock {masks['stock_counts']} "
            f"fast {masks['fast_counts']}, equal {masks['counts_equal']}, min best IoU "
            f"{_iou(masks['min_best_iou'])} (target >= {MASK_IOU_TARGET}), mean area "
            f"{_num(masks['mean_area_fraction'])} of the frame")
    if cls["masks_per_frame"]:
        lines.append(f"classification ({cls['reference']}): max |p_fast - p_ref| "
                     f"{_num(cls['max_abs_prob_diff'])} (fp32 tolerance "
                     f"{cls['tolerance_fp32']}) over {cls['masks_per_frame']} masks/frame")
    if results["memory"]["peak_gpu_mib"] is not None:
        lines.append(f"peak GPU memory (MiB, max_memory_allocated): "
                     f"{results['memory']['peak_gpu_mib']}")
    lines.append("targets: " + json.dumps(results["targets"]))
    return "\n".join(lines)


def _cell(stat: dict[str, float] | None, key: str) -> str:
    return "-" if stat is None else f"{stat[key]:.1f}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _iou(value: float | None) -> str:
    """Truncated, never rounded up: 0.99999 must not print as 1."""
    return "-" if value is None else f"{math.floor(value * 1e5) / 1e5:.5f}"


if __name__ == "__main__":
    main()
