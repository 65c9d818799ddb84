"""ovseg-segment's outputs per frame: ``<name>_overlay.png`` (RGB, labelled colours),
``<name>_labels.png`` (16-bit class index, 65535 unlabelled), ``<name>_instances.png``
(16-bit, 1 + index into the JSON's instance list, 0 none) and ``<name>.json`` (instances with
COCO RLE masks)."""

import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..segmentation.panoptic import SegmentationResult
from .inputs import Frame, InputError


def finite_or_none(values: Sequence[float]) -> list[float] | None:
    """A 3-vector for JSON: None when unknown (NaN is not JSON)."""
    return [float(v) for v in values] if all(math.isfinite(v) for v in values) else None


def instances_json(frame: Frame, result: SegmentationResult) -> dict:
    from pycocotools import mask as coco_mask

    records = []
    for index, instance in enumerate(result.instances):
        rle = coco_mask.encode(np.asfortranarray(result.instance_mask(index).astype(np.uint8)))
        records.append(
            {
                "id": instance.id,
                "class_index": instance.class_index,
                "label": instance.label,
                "score": instance.score,
                "mask_quality": instance.mask_quality,
                "is_thing": instance.is_thing,
                "bbox": list(instance.bbox),
                "area": instance.area,
                "track_id": instance.track_id,
                "centroid": finite_or_none(instance.geometry.centroid),
                "extent": finite_or_none(instance.geometry.extent),
                "valid_depth_points": instance.geometry.valid_points,
                "mask": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
            }
        )
    return {
        "source": frame.source,
        "height": int(result.semantic.shape[0]),
        "width": int(result.semantic.shape[1]),
        "vocabulary": list(result.vocabulary.names),
        "instances": records,
        "timings_ms": result.timings_ms,
    }


class WriteError(OSError):
    """An output file could not be written; the message names the file and the reason."""


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as err:
        raise WriteError(f"cannot write {path}: {err.strerror or err}") from None


def _png(path: Path, pixels: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise WriteError(f"cannot encode {path.name} as PNG")
    return encoded.tobytes()


OUTPUT_SUFFIXES = ("_overlay.png", "_labels.png", "_instances.png", ".json")


def output_paths(out: Path, name: str) -> list[Path]:
    """A frame's four output files, in OUTPUT_SUFFIXES order."""
    return [out / f"{name}{suffix}" for suffix in OUTPUT_SUFFIXES]


def write_outputs(out: Path, frame: Frame, result: SegmentationResult) -> None:
    """The frame's four files; WriteError (with none of them left behind) when one fails."""
    from ..segmentation.visualize import overlay

    overlay_path, labels_path, instances_path, json_path = output_paths(out, frame.name)
    files = {
        overlay_path: cv2.cvtColor(overlay(frame.image, result), cv2.COLOR_RGB2BGR),
        labels_path: result.semantic,
        instances_path: result.instance_map,
    }
    contents = {path: _png(path, pixels) for path, pixels in files.items()}
    contents[json_path] = json.dumps(instances_json(frame, result), indent=1).encode()
    written: list[Path] = []
    try:
        for path, data in contents.items():
            _write(path, data)
            written.append(path)
    except WriteError:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def prepare_out_dir(out: Path) -> None:
    """Create the output folder and prove a file can be created in it; InputError if not."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is an existing file, not a folder: choose a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise InputError(f"--out {out} is not a writable folder: {err.strerror or err}") from None
