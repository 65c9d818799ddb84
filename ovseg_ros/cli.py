"""ovseg-segment: the pipeline without ROS, on images, folders, globs and videos.

Per frame it writes ``<name>_overlay.png`` (RGB, labelled colours), ``<name>_labels.png``
(16-bit class index, 65535 unlabelled), ``<name>_instances.png`` (16-bit, 1 + index into the
JSON's instance list, 0 none) and ``<name>.json`` (instances with COCO RLE masks).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import logging
import statistics
import sys
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from .config import Settings, SettingsError, settings_fields
from .panoptic import SegmentationResult
from .vocabulary import Vocabulary, VocabularyError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}

log = logging.getLogger("ovseg_segment")


class InputError(ValueError):
    """An input path cannot be used."""


@dataclasses.dataclass
class Frame:
    name: str  # output file stem
    source: str  # where it came from, for messages and the JSON
    image: np.ndarray | None  # RGB uint8, None when it could not be read
    problem: str = ""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ovseg-segment",
        description="Open-vocabulary segmentation (SAM proposals + mask-adapted CLIP) of "
                    "images, folders, globs and videos.")
    parser.add_argument("inputs", nargs="+", help="image files, folders, globs or videos")
    vocab = parser.add_mutually_exclusive_group(required=True)
    vocab.add_argument("--vocab", help="comma separated classes, e.g. 'mug, kettle, person'")
    vocab.add_argument("--vocab-file", help="file with one class per line (or commas)")
    parser.add_argument("--out", default="out", help="output folder (default: out)")
    parser.add_argument("--config", help="YAML settings (flat, or config/params.yaml)")
    parser.add_argument("--stuff", help="comma separated classes that are stuff (regions)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    settings = parser.add_argument_group("settings (defaults from config/params.yaml "
                                         "values; see the README)")
    for f in settings_fields():
        if f.name in ("vocabulary", "stuff_classes"):
            continue
        flag = "--" + f.name.replace("_", "-")
        kwargs = dict(dest=f.name, default=argparse.SUPPRESS, help=f.metadata["description"])
        if f.type == "bool":
            settings.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            settings.add_argument(flag, type={"int": int, "float": float}.get(f.type, str),
                                  choices=f.metadata.get("choices"), **kwargs)
    return parser


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files, folders (their images, sorted) and globs -> paths; refuse what matches nothing."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
            if not found:
                raise InputError(f"folder {path} has no images or videos")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not found:
                raise InputError(f"pattern {item!r} matches no file")
            paths.extend(found)
        else:
            raise InputError(f"input {item} does not exist")
    for path in paths:
        if path.suffix.lower() not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
            raise InputError(f"{path}: unsupported file type {path.suffix!r}; images "
                             f"({', '.join(sorted(IMAGE_SUFFIXES))}) or videos "
                             f"({', '.join(sorted(VIDEO_SUFFIXES))})")
    return paths


def count_frames(paths: Sequence[Path]) -> int:
    total = 0
    for path in paths:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            capture = cv2.VideoCapture(str(path))
            total += max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
            capture.release()
        else:
            total += 1
    return total


def read_frames(paths: Sequence[Path]) -> Iterator[Frame]:
    """Every frame of every input in order, as RGB; unreadable ones carry a problem."""
    used: dict[str, int] = {}

    def unique(stem: str) -> str:
        used[stem] = used.get(stem, 0) + 1
        return stem if used[stem] == 1 else f"{stem}_{used[stem]}"

    for path in paths:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            capture = cv2.VideoCapture(str(path))
            if not capture.isOpened():
                yield Frame(unique(path.stem), str(path), None, "cannot open the video")
                continue
            stem = unique(path.stem)
            index = 0
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                yield Frame(f"{stem}_{index:06d}", f"{path}#{index}",
                            cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                index += 1
            capture.release()
            if index == 0:
                yield Frame(stem, str(path), None, "the video has no readable frame")
        else:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                yield Frame(unique(path.stem), str(path), None,
                            "not a readable image (corrupt or not an image file)")
            else:
                yield Frame(unique(path.stem), str(path), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def instances_json(frame: Frame, result: SegmentationResult) -> dict:
    from pycocotools import mask as coco_mask

    records = []
    for index, instance in enumerate(result.instances):
        rle = coco_mask.encode(np.asfortranarray(result.instance_mask(index).astype(np.uint8)))
        records.append({
            "id": instance.id, "class_index": instance.class_index, "label": instance.label,
            "score": instance.score, "mask_quality": instance.mask_quality,
            "is_thing": instance.is_thing, "bbox": list(instance.bbox), "area": instance.area,
            "mask": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
        })
    return {"source": frame.source, "height": int(result.semantic.shape[0]),
            "width": int(result.semantic.shape[1]),
            "vocabulary": list(result.vocabulary.names), "instances": records,
            "timings_ms": result.timings_ms}


def write_outputs(out: Path, frame: Frame, result: SegmentationResult) -> None:
    from .visualize import overlay

    cv2.imwrite(str(out / f"{frame.name}_overlay.png"),
                cv2.cvtColor(overlay(frame.image, result), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(out / f"{frame.name}_labels.png"), result.semantic)
    cv2.imwrite(str(out / f"{frame.name}_instances.png"), result.instance_map)
    (out / f"{frame.name}.json").write_text(json.dumps(instances_json(frame, result), indent=1))


def load_settings(args: argparse.Namespace) -> Settings:
    overrides = {f.name: getattr(args, f.name) for f in settings_fields() if hasattr(args, f.name)}
    if args.stuff:
        overrides["stuff_classes"] = [s.strip() for s in args.stuff.split(",") if s.strip()]
    if args.config:
        return Settings.from_yaml(args.config, **overrides)
    return Settings().replace(**overrides)


def read_vocabulary(args: argparse.Namespace, settings: Settings) -> Vocabulary:
    text = args.vocab
    if args.vocab_file:
        try:
            text = Path(args.vocab_file).read_text()
        except OSError as err:
            raise VocabularyError(f"cannot read --vocab-file {args.vocab_file}: "
                                  f"{err.strerror}") from None
    return Vocabulary.from_settings(text, settings)


def summary(timings: list[dict[str, float]], written: int, skipped: int) -> str:
    lines = [f"{written} frame(s) segmented, {skipped} skipped"]
    if timings:
        for stage in timings[0]:
            values = [t[stage] for t in timings]
            lines.append(f"  {stage:<10} median {statistics.median(values):8.1f} ms   "
                         f"max {max(values):8.1f} ms")
        median_total = statistics.median(t["total"] for t in timings)
        lines.append(f"  {1000.0 / max(median_total, 1e-6):.2f} frames/s (from the median "
                     "total)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args)
        vocabulary = read_vocabulary(args, settings)
        paths = expand_inputs(args.inputs)
    except (SettingsError, VocabularyError, InputError) as err:
        print(f"ovseg-segment: error: {err}", file=sys.stderr)
        return 2

    from .pipeline import ImageError, Segmenter
    from .weights import WeightsError, missing_weights

    missing = missing_weights(settings)
    if missing:
        print("ovseg-segment: error: weights are missing:\n" +
              "\n".join(f"  - {line}" for line in missing), file=sys.stderr)
        return 2
    try:
        segmenter = Segmenter(settings)
    except WeightsError as err:
        print(f"ovseg-segment: error: {err}", file=sys.stderr)
        return 2
    encoded = segmenter.encode_vocabulary(vocabulary)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    total = count_frames(paths)
    frames = read_frames(paths)
    if total > 1 and not args.quiet:
        from tqdm import tqdm

        frames = tqdm(frames, total=total, unit="frame")
    timings: list[dict[str, float]] = []
    skipped = 0
    for frame in frames:
        if frame.image is None:
            log.warning("skipped %s: %s", frame.source, frame.problem)
            skipped += 1
            continue
        try:
            result = segmenter.segment(frame.image, encoded)
        except ImageError as err:
            log.warning("skipped %s: %s", frame.source, err)
            skipped += 1
            continue
        write_outputs(out, frame, result)
        timings.append(result.timings_ms)
    print(summary(timings, len(timings), skipped), file=sys.stderr)
    print(f"outputs in {out}/", file=sys.stderr)
    return 0 if timings else 1


if __name__ == "__main__":
    sys.exit(main())
