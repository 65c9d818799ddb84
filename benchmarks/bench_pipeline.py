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
  The Segmenter reports each stage's time and output through its ``on_stage`` callback, so
  its proposals and probabilities are compared without a second run. Both sides call the
  same encoder module, so the encoder row is a control, not a comparison;
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
--json PATH, as JSON. This file is the command line and the run; ``workload.py`` holds the
frames and models, ``instrument.py`` the clocks and hooks, ``report.py`` the statistics and
the verdicts on the targets BENCHMARKS.md states.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Run as a script from anywhere: the package is the repository root's ovseg_ros.
REPO_ROOT = str(Path(__file__).resolve().parents[1])
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from benchmarks.instrument import (  # noqa: E402
    MASK_IOU_TARGET,  # noqa: F401 (test_bench reads it from here)
    Clock,
    EncoderSpans,
    Samples,
    StageRecorder,
    best_ious,
    ms,
    note_peak,
    reset_peak,
    same_proposals,
    timed_propose,
)
from benchmarks.report import ROWS, format_table, summarise  # noqa: E402,F401
from benchmarks.workload import (  # noqa: E402
    CALIBRATION_PROMPTS,
    CLASSES,
    FRAME_HEIGHT,
    FRAME_WIDTH,
    STUFF,
    Models,
    iou_threshold_keeping,
    load_models,
    synthetic_frame,
)
from ovseg_ros.models.precision import autocast, compute_dtype  # noqa: E402
from ovseg_ros.segmentation import panoptic  # noqa: E402
from ovseg_ros.segmentation.classifier import LOGIT_SCALE, MaskClassifier  # noqa: E402
from ovseg_ros.segmentation.pipeline import Segmenter  # noqa: E402
from ovseg_ros.segmentation.proposals import MaskProposals, MaskProposer  # noqa: E402
from ovseg_ros.segmentation.vocabulary import Vocabulary  # noqa: E402
from ovseg_ros.settings.config import PRECISIONS, Settings  # noqa: E402
from ovseg_ros.settings.params_file import settings_from_yaml  # noqa: E402
from reference.ovseg_crops import reference_crop_embeddings  # noqa: E402

STAGES = ("proposals", "classify", "end_to_end")


def reference_probs(
    models: Models, image: np.ndarray, proposals: MaskProposals, text: torch.Tensor
) -> torch.Tensor:
    """The stock classification: OVSeg's per-mask crop loop, then softmax(100 cos)."""
    clip = models.clip
    embeddings = reference_crop_embeddings(
        clip.model,
        image,
        proposals.masks.cpu().numpy(),
        proposals.boxes.cpu().numpy(),
        clip.image_mean,
        clip.image_std,
        clip.image_size,
        mask_embedding=clip.mask_embedding,
    )
    return (LOGIT_SCALE * embeddings @ text.to(embeddings).T).softmax(dim=-1)


# --------------------------------------------------------------------------- the run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Time the stock OVSeg pipeline (SamAutomaticMaskGenerator + per-mask "
        "crops) against ovseg_ros's fast one, stage by stage, on the same models "
        "and synthetic 640x480 frames."
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--frames", type=int, help="measured frames (default: 2 on the CPU, 30 on a GPU)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        help="frames run first and not counted (default: 1 on the CPU, 3 on a GPU)",
    )
    parser.add_argument(
        "--size",
        default=f"{FRAME_WIDTH}x{FRAME_HEIGHT}",
        help="frame size WIDTHxHEIGHT (default 640x480)",
    )
    parser.add_argument(
        "--points-per-side", type=int, help="SAM prompt grid (default: 16 on the CPU, 32 on a GPU)"
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="precision of both sides (bf16 on either device; fp16 on "
        "the GPU only, the CPU then runs fp32)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the fast side's SAM encoder (GPU)"
    )
    parser.add_argument(
        "--stages",
        default=",".join(STAGES),
        help=f"comma separated subset of {', '.join(STAGES)} (default: all)",
    )
    parser.add_argument("--json", dest="json_path", help="also write the results here")
    parser.add_argument("--config", help="YAML settings (weights paths, thresholds...)")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="use random weights even when real ones are found",
    )
    parser.add_argument(
        "--mask-prompt",
        action="store_true",
        help="random CLIP only: add a random OVSeg mask prompt",
    )
    parser.add_argument("--max-masks", type=int, help="cap on proposals (default: settings, 100)")
    parser.add_argument(
        "--pred-iou-thresh",
        type=float,
        help="override (real weights: settings' 0.88; random: calibrated, see --keep-fraction)",
    )
    parser.add_argument(
        "--stability-score-thresh", type=float, help="override (real weights: 0.95; random: 0)"
    )
    parser.add_argument(
        "--box-nms-thresh", type=float, help="override (real weights: 0.7; random: 1.0)"
    )
    parser.add_argument(
        "--keep-fraction",
        type=float,
        default=0.15,
        help="random SAM weights: fraction of candidate masks that pass the "
        "predicted-IoU filter (default 0.15)",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-frame progress lines")
    return parser


def main(
    argv: Sequence[str] | None = None, base_settings: Settings | None = None
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
        base_settings = settings_from_yaml(args.config) if args.config else Settings()
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
        raise SystemExit(f"--size must be WIDTHxHEIGHT, e.g. 640x480; got {args.size!r}") from None

    models = load_models(
        base_settings, device, random_weights=args.random_weights, mask_prompt=args.mask_prompt
    )
    frames = [synthetic_frame(seed, height, width) for seed in range(frames_n)]
    # fp16 on the CPU runs fp32 (ovseg_ros.models.precision); say so rather than mislabel.
    precision = args.precision if compute_dtype(args.precision, device) != torch.float32 else "fp32"
    overrides: dict[str, Any] = dict(
        device=str(device),
        precision=precision,
        compile=args.compile,
        points_per_side=pps,
        proposal_backend="fast",
        classifier_mode="crop",
        stuff_classes=list(STUFF),
        max_image_side=max(height, width),
    )
    threshold_note = "settings' values (real SAM weights)"
    candidates = 3 * pps * pps
    if models.sam_random:
        threshold, candidates = iou_threshold_keeping(
            models.sam, frames[0], pps, args.keep_fraction
        )
        overrides.update(
            pred_iou_thresh=max(0.0, min(1.0, threshold)),
            stability_score_thresh=0.0,
            box_nms_thresh=1.0,
        )
        threshold_note = (
            f"random SAM weights: pred_iou_thresh = the quantile keeping "
            f"{args.keep_fraction:.0%} of the {candidates} candidates on frame 0 "
            f"(estimated on {min(CALIBRATION_PROMPTS, pps * pps)} prompts spread "
            f"over the grid), "
            f"stability_score_thresh 0 (random logits give stability 0), "
            f"box_nms_thresh 1.0 (no suppression of random overlapping blobs)"
        )
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
                print(
                    f"[bench] {label} {step + 1}/{len(schedule)} done, "
                    f"{time.perf_counter() - started:.0f} s elapsed",
                    file=sys.stderr,
                    flush=True,
                )

    run = {
        "command": " ".join(
            [
                "python",
                "benchmarks/bench_pipeline.py",
                *(argv if argv is not None else sys.argv[1:]),
            ]
        ),
        "stages": stages,
        "frames": frames_n,
        "warmup": warmup_n,
        "frame_size": [height, width],
        "candidates": candidates,
        "thresholds": threshold_note,
        "classes": len(CLASSES),
    }
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
        # The Segmenter's own proposals and probabilities, split and compared without
        # running it twice.
        self.fast_stages = StageRecorder(self.clock, self.encoder)
        self.segmenter = Segmenter(
            settings, sam=models.sam, clip=models.clip, on_stage=self.fast_stages
        )
        self.stock = MaskProposer(models.sam, settings.replace(proposal_backend="stock"))
        self.half = compute_dtype(settings.precision, device) != torch.float32
        # The fidelity reference is always fp32; in fp32 it is the timed stock run itself.
        self.stock_fp32 = (
            MaskProposer(models.sam, settings.replace(proposal_backend="stock", precision="fp32"))
            if self.half
            else self.stock
        )
        self.token_classifier = MaskClassifier(
            models.clip, mode="mask_token", precision=settings.precision
        )
        self.vocabulary = self.segmenter.encode_vocabulary(Vocabulary.parse(list(CLASSES)))

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
            self._classify_same_masks(
                image, stock_props, stock_probs, fast_props, end_to_end, record
            )

    def _stock_pass(
        self, image: np.ndarray, classify: bool, end_to_end: bool, record: Samples
    ) -> tuple[MaskProposals, torch.Tensor | None]:
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
            panoptic.fuse(
                proposals.masks,
                probs,
                proposals.predicted_iou,
                vocabulary.vocabulary,
                granularity=settings.granularity,
                unknown_thresh=settings.unknown_thresh,
                vocabulary_version=vocabulary.version,
            )
            end = clock.now()
            times.update(fuse=ms(end - t0), end_to_end=ms(end - start))
        record.add("stock", times)
        note_peak(record, "stock", self.device)
        record.stock_counts.append(len(proposals))
        return proposals, probs

    def _fast_pass(
        self, image: np.ndarray, stages: list[str], record: Samples
    ) -> MaskProposals | None:
        """The Segmenter end to end (or only its proposer); its proposals."""
        reset_peak(self.device)
        if "end_to_end" in stages:
            self.fast_stages.clear()
            start = self.clock.now()
            result = self.segmenter.segment(image, self.vocabulary)
            total = ms(self.clock.now() - start)
            proposals = self.fast_stages.last["proposals"][0]
            times = self.fast_stages.proposal_times
            times = dict(times, fuse=result.timings_ms["fuse"], end_to_end=total)
        elif "proposals" in stages:
            proposals, times = timed_propose(
                self.segmenter.proposer.propose, image, self.clock, self.encoder
            )
        else:
            return None
        record.add("fast", times)
        note_peak(record, "fast", self.device)
        return proposals

    def _classify_same_masks(
        self,
        image: np.ndarray,
        stock_props: MaskProposals,
        stock_probs: torch.Tensor,
        fast_props: MaskProposals | None,
        end_to_end: bool,
        record: Samples,
    ) -> None:
        """Batched crops and mask tokens on the stock pass's masks, which the reference loop
        classified. When the Segmenter's proposals were exactly those masks, its own
        classify stage (the frame's upload to the device, then the classifier) is that
        measurement and is not repeated; otherwise the same two steps are timed here."""
        text = self.vocabulary.embeddings
        classified = self.fast_stages.last.get("classify")
        reused = (
            end_to_end
            and classified is not None
            and fast_props is not None
            and same_proposals(fast_props, stock_props)
        )
        start = self.clock.now()
        image_t = torch.from_numpy(image).to(self.device)
        if reused:
            (crop_probs, _), crop_ms = classified
        else:
            crop_probs = self.segmenter.classifier.classify(
                image_t, stock_props.masks, stock_props.boxes, text
            )
            crop_ms = ms(self.clock.now() - start)
        start = self.clock.now()
        self.token_classifier.classify(image_t, stock_props.masks, stock_props.boxes, text)
        record.add(
            "fast", {"classify_crop": crop_ms, "classify_mask_token": ms(self.clock.now() - start)}
        )
        record.classify_reused += int(reused)
        exact = reference_probs(self.models, image, stock_props, text) if self.half else stock_probs
        record.classified.append(len(stock_props))
        if len(stock_props):
            record.prob_diff.append(float((crop_probs.float() - exact.float()).abs().max()))


if __name__ == "__main__":
    main()
