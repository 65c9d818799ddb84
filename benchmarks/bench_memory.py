"""Peak memory and time of two steps whose memory grows with their input.

- text: ``TextEmbedder.embed_names`` for a vocabulary of N classes with each template set,
  on open_clip's text tower (random weights of ``--clip-model``; memory and time depend on
  shapes, not values);
- fuse: ``panoptic.fuse`` on N random blob masks of an H x W frame, and apart from it the
  box measurement (``panoptic._measure``) of an instance image of those masks.

Each case runs in a fresh child process. Peak memory is the growth of the process's peak
resident set (VmHWM, reset just before the step) over its resident set then, with the inputs and the
model already in memory: on the CPU that includes every temporary. Time is the median of
--repeats runs after one warm-up (text: a fresh cache per run).

    python benchmarks/bench_memory.py text --classes 10 100 256 --templates single vild imagenet
    python benchmarks/bench_memory.py fuse --masks 100 --size 960x1280 --size 4000x6000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def _resident_mib() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _reset_peak() -> None:
    """Reset the kernel's peak resident set (VmHWM) to the current one (Linux)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def _peak_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _measure(step: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Peak memory growth of the first call, then the median time of ``repeats`` calls."""
    _reset_peak()
    before = _resident_mib()
    step()
    peak = _peak_mib() - before
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"peak_mib": round(peak, 1), "median_s": round(statistics.median(times), 4)}


def _text_case(clip_model: str, classes: int, templates: str, repeats: int) -> dict:
    import open_clip

    from ovseg_ros.segmentation.vocabulary import TextEmbedder

    torch.set_grad_enabled(False)
    model = open_clip.create_model(clip_model, pretrained=None).eval()
    tokenizer = open_clip.get_tokenizer(clip_model)
    names = [f"class number {i}" for i in range(classes)]

    def step() -> None:
        TextEmbedder(model.encode_text, tokenizer, "cpu", templates).embed_names(names)

    return {"step": "text", "classes": classes, "templates": templates, **_measure(step, repeats)}


def _blob_masks(count: int, height: int, width: int) -> torch.Tensor:
    """[count, H, W] bool ellipses of random centre and size (a fifth of them large)."""
    rng = np.random.default_rng(0)
    yy = np.arange(height, dtype=np.float32)[:, None]
    xx = np.arange(width, dtype=np.float32)[None, :]
    masks = np.empty((count, height, width), dtype=bool)
    for i in range(count):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        scale = 0.4 if i % 5 == 0 else 0.1
        ry, rx = rng.uniform(0.02, scale) * height, rng.uniform(0.02, scale) * width
        masks[i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    return torch.from_numpy(masks)


def _fuse_case(part: str, count: int, height: int, width: int, repeats: int) -> dict:
    """part 'fuse': panoptic.fuse keeping every mask (granularity 0, the most work for this
    many masks); part 'measure': the box measurement of an instance image of those masks."""
    from ovseg_ros.segmentation import panoptic
    from ovseg_ros.segmentation.vocabulary import Vocabulary

    torch.set_grad_enabled(False)
    vocabulary = Vocabulary.parse(
        ", ".join(f"class {i}" for i in range(20)), stuff=["class 0", "class 1"]
    )
    masks = _blob_masks(count, height, width)
    if part == "fuse":
        probs = torch.rand(count, 20, generator=torch.Generator().manual_seed(1)).softmax(1)
        quality = torch.rand(count)
        result = _measure(
            lambda: panoptic.fuse(masks, probs, quality, vocabulary, granularity=0.0), repeats
        )
    else:
        instance_map = np.zeros((height, width), dtype=np.uint16)
        for k, mask in enumerate(masks.numpy()):
            instance_map[mask] = k + 1
        instances = [
            panoptic.Instance(k + 1, 0, "class 0", 1.0, 1.0, True, (0, 0, 0, 0), 0)
            for k in range(count)
        ]
        result = _measure(lambda: panoptic._measure(instances, instance_map), repeats)
    return {
        "step": part,
        "masks": count,
        "size": f"{height}x{width}",
        "mask_mib": round(masks.numel() / 2**20, 1),
        **result,
    }


def _in_child(function: Callable[..., dict], *args: Any) -> dict:
    """Run one case in a fresh process (spawn), so its peak memory is its own."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(function, args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    text = sub.add_parser("text", help="text encoding per vocabulary size and template set")
    text.add_argument("--classes", type=int, nargs="+", default=[10, 100, 256])
    text.add_argument(
        "--templates",
        nargs="+",
        help="template sets (default: every one the templates setting offers)",
    )
    text.add_argument("--clip-model", default="ViT-B-16")
    fuse = sub.add_parser("fuse", help="fusion and box measurement per mask count and size")
    fuse.add_argument("--masks", type=int, nargs="+", default=[100])
    fuse.add_argument("--size", nargs="+", default=["960x1280"], help="HxW")
    for command in (text, fuse):
        command.add_argument("--repeats", type=int, default=3)
        command.add_argument("--threads", type=int, default=0, help="torch threads (0: all)")
    args = parser.parse_args(argv)
    if args.what == "text":
        from ovseg_ros.settings.templates import TEMPLATE_SETS

        cases = [
            (_text_case, args.clip_model, n, t, args.repeats)
            for t in args.templates or TEMPLATE_SETS
            for n in args.classes
        ]
    else:
        cases = [
            (_fuse_case, part, n, *map(int, size.split("x")), args.repeats)
            for size in args.size
            for n in args.masks
            for part in ("fuse", "measure")
        ]
    for function, *case in cases:
        print(json.dumps(_in_child(function, *case)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
