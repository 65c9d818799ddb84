"""Reporting of the pipeline benchmark: medians and p95s, speedups, fidelity, and the verdict
on each target that BENCHMARKS.md states (its "Targets" table is read at run time, so the
numbers live in one place), as one JSON-ready dict and as a plain-text table.
"""

from __future__ import annotations

import datetime
import json
import math
import operator
import os
import platform
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.instrument import MASK_IOU_TARGET, PROB_TOLERANCE_FP32, Samples
from benchmarks.workload import Models
from ovseg_ros.settings.config import Settings

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
ROWS = (
    "preprocess",
    "encoder",
    "post_encoder",
    "proposals",
    "classify_crop",
    "classify_mask_token",
    "fuse",
    "end_to_end",
)
# Stages where the two sides run different code ("nothing slower" is checked on these; the
# encoder, pre-processing and fusion run the same code on both sides).
COMPARED_STAGES = ("post_encoder", "proposals", "classify_crop", "end_to_end")
_BOUND = {">=": operator.ge, "<=": operator.le}
_TARGET_ROW = re.compile(r"^\|\s*(cpu|cuda)\s*\|\s*`?(\w+)`?\s*\|\s*(>=|<=)\s*([0-9.]+)\s*\|")


def stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": float(np.median(values)),
        "p95": float(np.percentile(values, 95)),
        "n": len(values),
    }


def summarise(
    samples: Samples, settings: Settings, models: Models, run: dict[str, Any], device: torch.device
) -> dict[str, Any]:
    """Everything the run measured, as one JSON-ready dict. run: command, stages, frames,
    warmup, frame_size [H, W], candidates (per frame), thresholds (how they were set) and
    classes (how many)."""
    timings = {
        side: {row: stats(getattr(samples, side).get(row, [])) for row in ROWS}
        for side in ("stock", "fast")
    }
    speedup = {}
    for row in ROWS:
        stock_t, fast_t = timings["stock"][row], timings["fast"][row]
        speedup[row] = (
            stock_t["median"] / fast_t["median"]
            if stock_t and fast_t and fast_t["median"] > 0
            else None
        )
    fps = {
        side: (
            1000.0 / timings[side]["end_to_end"]["median"] if timings[side]["end_to_end"] else None
        )
        for side in ("stock", "fast")
    }
    on_gpu = device.type == "cuda"
    masks = {
        "reference": "stock generator in fp32",
        "candidates_per_frame": run["candidates"],
        "stock_counts": samples.stock_counts,
        "fast_counts": samples.fast_counts,
        "counts_equal": (
            samples.stock_counts == samples.fast_counts if samples.fast_counts else None
        ),
        "min_best_iou": min(samples.min_best_iou) if samples.min_best_iou else None,
        "iou_target": MASK_IOU_TARGET,
        "mean_area_fraction": (
            float(np.mean(samples.area_fraction)) if samples.area_fraction else None
        ),
    }
    masks["same_masks"] = (
        None
        if masks["counts_equal"] is None
        else bool(
            masks["counts_equal"]
            and (masks["min_best_iou"] is None or masks["min_best_iou"] >= MASK_IOU_TARGET)
        )
    )
    classification = {
        "reference": "per-mask crop loop in fp32 on the stock masks",
        "masks_per_frame": samples.classified,
        "fast_crop_timing_from_segmenter_frames": samples.classify_reused,
        "max_abs_prob_diff": max(samples.prob_diff) if samples.prob_diff else None,
        "tolerance_fp32": PROB_TOLERANCE_FP32,
    }
    classification["within_tolerance"] = (
        classification["max_abs_prob_diff"] <= PROB_TOLERANCE_FP32
        if classification["max_abs_prob_diff"] is not None
        else None
    )
    memory = {"peak_gpu_mib": dict(samples.peak_mib) if on_gpu else None}
    return {
        "command": run["command"],
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "environment": environment(device),
        "config": {
            "device": str(device),
            "precision": settings.precision,
            "compile": settings.compile,
            "frames": run["frames"],
            "warmup": run["warmup"],
            "frame_size": run["frame_size"],
            "stages": run["stages"],
            "sam_model": settings.sam_model,
            "clip_model": settings.clip_model,
            "sam_weights": models.sam_source,
            "clip_weights": models.clip_source,
            "mask_prompt": models.clip.mask_embedding is not None,
            "points_per_side": settings.points_per_side,
            "points_per_batch": settings.points_per_batch,
            "pred_iou_thresh": settings.pred_iou_thresh,
            "stability_score_thresh": settings.stability_score_thresh,
            "box_nms_thresh": settings.box_nms_thresh,
            "min_mask_region_area": settings.min_mask_region_area,
            "max_masks": settings.max_masks,
            "thresholds": run["thresholds"],
            "classes": run["classes"],
            "templates": settings.templates,
            "split_method": "forward hooks on sam.image_encoder inside each propose call",
        },
        "timings_ms": timings,
        "speedup": speedup,
        "fps": fps,
        "masks": masks,
        "classification": classification,
        "memory": memory,
        "targets": targets(
            speedup, fps, masks, classification, memory, device, settings.precision, read_targets()
        ),
    }


def read_targets(path: Path = BENCHMARKS_MD) -> list[tuple[str, str, str, float]]:
    """(device type, measure, '>=' or '<=', bound) for each row of BENCHMARKS.md's targets
    table (rows ``| cpu | post_encoder_speedup | >= 3 | ... |``)."""
    rows = [
        m.groups()
        for line in path.read_text().splitlines()
        if (m := _TARGET_ROW.match(line.strip()))
    ]
    if not rows:
        raise SystemExit(f"{path} has no targets table (rows '| cpu | measure | >= bound |')")
    return [(device, measure, bound_op, float(bound)) for device, measure, bound_op, bound in rows]


def targets(
    speedup: dict,
    fps: dict,
    masks: dict,
    classification: dict,
    memory: dict,
    device: torch.device,
    precision: str,
    stated: list[tuple[str, str, str, float]],
) -> dict[str, Any]:
    """Each stated target of this device type: ``<measure>`` (the measured value),
    ``<measure>_bound`` ('>= 3') and ``<measure>_met`` (None when the run did not measure
    it); then the checks without a number: nothing slower, fp32 mask and classification
    parity."""
    peak = (memory["peak_gpu_mib"] or {}).get("fast")
    measured = {
        "post_encoder_speedup": speedup.get("post_encoder"),
        "classify_crop_speedup": speedup.get("classify_crop"),
        "end_to_end_speedup": speedup.get("end_to_end"),
        "fps": fps["fast"],
        "peak_gpu_gib": None if peak is None else peak / 1024,
    }
    result: dict[str, Any] = {}
    for device_type, measure, bound_op, bound in stated:
        if device_type != device.type:
            continue
        if measure not in measured:
            raise SystemExit(
                f"BENCHMARKS.md states a target on {measure!r}, which this "
                f"benchmark does not measure ({', '.join(measured)})"
            )
        value = measured[measure]
        result.update(
            {
                measure: value,
                f"{measure}_bound": f"{bound_op} {bound:g}",
                f"{measure}_met": None if value is None else bool(_BOUND[bound_op](value, bound)),
            }
        )
    slower = [row for row in COMPARED_STAGES if speedup.get(row) is not None and speedup[row] < 1.0]
    result.update(
        {
            "stages_slower_than_stock": slower,
            "nothing_slower": not slower if any(speedup.get(r) for r in COMPARED_STAGES) else None,
            "mask_parity_fp32": masks["same_masks"] if precision == "fp32" else None,
            "classification_within_tolerance": (
                classification["within_tolerance"] if precision == "fp32" else None
            ),
        }
    )
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
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "open_clip": open_clip.__version__,
        "segment_anything": sam_version,
        "numpy": np.__version__,
        "cpu": cpu_model,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
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
        lines.append(
            f"{row:<22}{_cell(stock_t, 'median'):>14}{_cell(stock_t, 'p95'):>10}"
            f"{_cell(fast_t, 'median'):>14}{_cell(fast_t, 'p95'):>10}"
            f"{(f'{ratio:.2f}x' if ratio else '-'):>10}"
        )
    lines.append(
        "(ms; classify_mask_token is a different method, shown beside crop mode "
        "and not a speedup of it; encoder, preprocess and fuse run the same code on "
        "both sides)"
    )
    fps = results["fps"]
    if fps["fast"]:
        lines.append(f"frames/s: stock {fps['stock']:.3g}, fast {fps['fast']:.3g}")
    masks, cls = results["masks"], results["classification"]
    if masks["fast_counts"]:
        lines.append(
            f"masks ({masks['reference']} vs fast): counts stock {masks['stock_counts']} "
            f"fast {masks['fast_counts']}, equal {masks['counts_equal']}, min best IoU "
            f"{_iou(masks['min_best_iou'])} (target >= {MASK_IOU_TARGET}), mean area "
            f"{_num(masks['mean_area_fraction'])} of the frame"
        )
    if cls["masks_per_frame"]:
        lines.append(
            f"classification ({cls['reference']}): max |p_fast - p_ref| "
            f"{_num(cls['max_abs_prob_diff'])} (fp32 tolerance "
            f"{cls['tolerance_fp32']}) over {cls['masks_per_frame']} masks/frame"
        )
    if results["memory"]["peak_gpu_mib"] is not None:
        lines.append(
            f"peak GPU memory (MiB, max_memory_allocated): {results['memory']['peak_gpu_mib']}"
        )
    lines.append("targets: " + json.dumps(results["targets"]))
    return "\n".join(lines)


def _cell(stat: dict[str, float] | None, key: str) -> str:
    return "-" if stat is None else f"{stat[key]:.1f}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _iou(value: float | None) -> str:
    """Truncated, never rounded up: 0.99999 must not print as 1."""
    return "-" if value is None else f"{math.floor(value * 1e5) / 1e5:.5f}"
