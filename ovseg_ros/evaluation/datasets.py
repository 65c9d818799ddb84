"""Readers for the evaluation datasets in their official (or OVSeg-prepared) folder layouts.

Each dataset is a ``DatasetSpec``: where images and labels live under ``--root``, how a label
file's values map to class indices 0..C-1 (everything else becomes ``IGNORE``), and the
class names (``classes/<key>.txt``, OVSeg's registration lists in its order), which are
also the vocabulary. ``--root`` is the dataset's own folder (e.g. ADEChallengeData2016).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from .metrics import IGNORE, Segment

CLASSES_DIR = Path(__file__).resolve().parent / "classes"


class DatasetError(ValueError):
    """The dataset folder is missing or not in the expected layout; the message says which
    path was expected and how to get it."""


@cache
def class_names(key: str) -> tuple[str, ...]:
    """The dataset's class names in label order (one per line in classes/<key>.txt)."""
    return tuple(line for line in (CLASSES_DIR / f"{key}.txt").read_text().splitlines() if line)


def _shift_zero_ignored(label: np.ndarray, num_classes: int) -> np.ndarray:
    """ADE20K / VOC raw labels: 0 is ignored, 1..C are the classes; all else ignored."""
    out = label.astype(np.int64) - 1
    out[(out < 0) | (out >= num_classes)] = IGNORE
    return out


def _contiguous(ignore: int) -> Callable[[np.ndarray, int], np.ndarray]:
    """OVSeg-prepared labels: values are class indices already, ``ignore`` (255 or 65535)."""

    def decode(label: np.ndarray, num_classes: int) -> np.ndarray:
        out = label.astype(np.int64)
        out[(out == ignore) | (out >= num_classes)] = IGNORE
        return out

    return decode


def _coco_stuff(label: np.ndarray, num_classes: int) -> np.ndarray:
    """stuffthingmaps: value = COCO category id - 1 (ids have gaps), 255 unlabelled."""
    ids = [int(v) for v in (CLASSES_DIR / "coco-stuff-171.ids").read_text().split()]
    lookup = np.full(256, IGNORE, dtype=np.int64)
    for index, category in enumerate(ids):
        lookup[category - 1] = index
    return lookup[label.astype(np.int64)]


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: folders relative to --root, the label decoding, the published numbers."""

    key: str
    folder: str  # the name of --root in the official distribution, for messages
    images: str
    labels: str
    label_ext: str
    decode: Callable[[np.ndarray, int], np.ndarray]
    split_file: str | None = None  # a list of image stems; otherwise every label file
    panoptic: str | None = None  # COCO-format panoptic ground truth: <panoptic>.json + folder
    howto: str = ""
    paper: dict[str, float] = field(default_factory=dict)  # mIoU by OVSeg model

    @property
    def names(self) -> tuple[str, ...]:
        return class_names(self.key)


_PREPARE = (
    "run OVSeg's datasets/prepare_{} (github.com/facebookresearch/ov-seg, datasets/DATASETS.md)"
)

DATASETS: dict[str, DatasetSpec] = {
    spec.key: spec
    for spec in (
        DatasetSpec(
            "ade20k-150",
            "ADEChallengeData2016",
            "images/validation",
            "annotations/validation",
            ".png",
            _shift_zero_ignored,
            panoptic="ade20k_panoptic_val",
            howto="download ADEChallengeData2016.zip from the MIT Scene Parsing benchmark",
            paper={"R101c + ViT-B/16": 24.8, "Swin-B + ViT-L/14": 29.6},
        ),
        DatasetSpec(
            "ade20k-847",
            "ADE20K_2021_17_01",
            "images_detectron2/validation",
            "annotations_detectron2/validation",
            ".tif",
            _contiguous(65535),
            howto=_PREPARE.format("ade20k_full_sem_seg.py"),
            paper={"R101c + ViT-B/16": 7.1, "Swin-B + ViT-L/14": 9.0},
        ),
        DatasetSpec(
            "pascal-context-59",
            "VOCdevkit/VOC2010",
            "JPEGImages",
            "annotations_detectron2/pc59_val",
            ".png",
            _contiguous(255),
            howto=_PREPARE.format("pascal_context.py"),
            paper={"R101c + ViT-B/16": 53.3, "Swin-B + ViT-L/14": 55.7},
        ),
        DatasetSpec(
            "pascal-context-459",
            "VOCdevkit/VOC2010",
            "JPEGImages",
            "annotations_detectron2/pc459_val",
            ".tif",
            _contiguous(65535),
            howto=_PREPARE.format("pascal_context.py"),
            paper={"R101c + ViT-B/16": 11.0, "Swin-B + ViT-L/14": 12.4},
        ),
        DatasetSpec(
            "pascal-voc-20",
            "VOCdevkit/VOC2012",
            "JPEGImages",
            "SegmentationClass",
            ".png",
            _shift_zero_ignored,
            split_file="ImageSets/Segmentation/val.txt",
            howto="download VOCtrainval_11-May-2012.tar from the PASCAL VOC site",
            paper={"R101c + ViT-B/16": 92.6, "Swin-B + ViT-L/14": 94.5},
        ),
        DatasetSpec(
            "coco-stuff-171",
            "coco",
            "val2017",
            "stuffthingmaps_trainval2017/val2017",
            ".png",
            _coco_stuff,
            howto="download val2017.zip and stuffthingmaps_trainval2017.zip (COCO-Stuff)",
        ),
    )
}


@dataclass
class Sample:
    """One image and its ground-truth files (the panoptic ones only where the dataset has
    them: ``segments`` is the COCO segments_info with a ``class_index`` added)."""

    name: str
    image_path: Path
    label_path: Path
    panoptic_path: Path | None = None
    segments: list[dict] | None = None


def read_image(path: Path) -> np.ndarray:
    """[H, W, 3] uint8 RGB."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def read_raw_label(path: Path) -> np.ndarray:
    """[H, W] label values as stored (palette PNGs give palette indices, TIFFs 16 bits)."""
    with Image.open(path) as image:
        label = np.asarray(image)
    if label.ndim != 2:
        raise DatasetError(
            f"{path}: expected a single-channel label image, got shape {label.shape}"
        )
    return label


class Dataset:
    """The samples of one dataset under ``root``, checked for the layout on construction."""

    def __init__(self, key: str, root: str | Path):
        if key not in DATASETS:
            raise DatasetError(f"unknown dataset {key!r}: use one of {', '.join(DATASETS)}")
        self.spec = DATASETS[key]
        self.root = Path(root).expanduser()
        self.names = self.spec.names
        self.samples = self._find_samples()
        self.things, self.stuffs = self._panoptic_categories()

    def _fail(self, what: str) -> DatasetError:
        spec = self.spec
        return DatasetError(
            f"{spec.key}: {what}. Expected --root to be the {spec.folder} folder holding "
            f"{spec.images}/ and {spec.labels}/*{spec.label_ext}"
            + (f" and {spec.split_file}" if spec.split_file else "")
            + (f"; to get it, {spec.howto}" if spec.howto else "")
        )

    def _find_samples(self) -> list[Sample]:
        spec = self.spec
        if not self.root.is_dir():
            raise self._fail(f"{self.root} is not a folder")
        images, labels = self.root / spec.images, self.root / spec.labels
        for folder in (images, labels):
            if not folder.is_dir():
                raise self._fail(f"{folder} is missing")
        if spec.split_file:
            split = self.root / spec.split_file
            if not split.is_file():
                raise self._fail(f"{split} is missing")
            stems = [s.strip() for s in split.read_text().splitlines() if s.strip()]
        else:
            stems = sorted(p.stem for p in labels.glob(f"*{spec.label_ext}"))
        if not stems:
            raise self._fail(f"no *{spec.label_ext} label files in {labels}")
        samples = []
        for stem in stems:
            label = labels / f"{stem}{spec.label_ext}"
            image = next(
                (p for p in (images / f"{stem}.jpg", images / f"{stem}.png") if p.is_file()), None
            )
            if image is None or not label.is_file():
                raise self._fail(
                    f"{stem}: missing "
                    + (f"image {images / stem}.jpg" if image is None else f"label {label}")
                )
            samples.append(Sample(stem, image, label))
        return samples

    def _panoptic_categories(self) -> tuple[set[int], set[int]]:
        """Attach COCO-format panoptic ground truth when the dataset has it. Its categories,
        in id order, are the dataset's classes in order."""
        if not self.spec.panoptic:
            return set(), set()
        index = self.root / f"{self.spec.panoptic}.json"
        folder = self.root / self.spec.panoptic
        if not index.is_file() or not folder.is_dir():
            return set(), set()
        try:
            data = json.loads(index.read_text())
            categories = sorted(data["categories"], key=lambda c: c["id"])
            annotations = {Path(a["file_name"]).stem: a for a in data["annotations"]}
        except (ValueError, KeyError, TypeError) as err:
            raise DatasetError(f"{index}: not a COCO panoptic file ({err})") from None
        if len(categories) != len(self.names):
            raise DatasetError(f"{index}: {len(categories)} categories, expected {len(self.names)}")
        to_index = {c["id"]: i for i, c in enumerate(categories)}
        for sample in self.samples:
            entry = annotations.get(sample.name)
            if entry is None:
                continue
            sample.panoptic_path = folder / entry["file_name"]
            sample.segments = [
                dict(s, class_index=to_index[s["category_id"]]) for s in entry["segments_info"]
            ]
        things = {i for i, c in enumerate(categories) if c.get("isthing")}
        return things, set(range(len(categories))) - things

    @property
    def has_panoptic(self) -> bool:
        """True when some sample has panoptic segments, so PQ can be scored."""
        return any(s.segments is not None for s in self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def label(self, sample: Sample) -> np.ndarray:
        """[H, W] int64 class indices 0..C-1, IGNORE elsewhere."""
        return self.spec.decode(read_raw_label(sample.label_path), len(self.names))

    def panoptic_label(self, sample: Sample) -> tuple[np.ndarray, dict[int, Segment]] | None:
        """([H, W] segment ids from the COCO panoptic PNG (id = R + 256 G + 256^2 B, 0 =
        void), {id: Segment} in the annotation's order), crowd segments included."""
        if sample.segments is None or sample.panoptic_path is None:
            return None
        rgb = read_image(sample.panoptic_path).astype(np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        segments = {
            int(s["id"]): Segment(s["class_index"], bool(s.get("iscrowd"))) for s in sample.segments
        }
        return ids, segments

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)
