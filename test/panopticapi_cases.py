"""Panoptic-quality cases whose expected numbers come from panopticapi's own ``pq_compute``.

``cases()`` builds each case in the project's terms (ground-truth segment ids with their
segments, predicted class and instance maps). Run as a script, it writes every case as COCO
panoptic PNG + JSON files, scores them with panopticapi and stores PQ/SQ/RQ ("All", in
percent) in ``panopticapi_expected.json`` beside this file, which test_panoptic_quality.py
compares against. To recompute (panopticapi is cocodataset/panopticapi; PyPI has a copy of
it as ``panopticapi-lite``; only numpy and Pillow are needed to run it):

    pip install --no-deps --target /tmp/panopticapi panopticapi-lite==0.2.0
    PYTHONPATH=/tmp/panopticapi python test/panopticapi_cases.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EXPECTED = Path(__file__).with_name("panopticapi_expected.json")


@dataclass
class Image:
    """gt_ids: [H, W] segment ids (0 = void); gt_segments: [(id, class index, iscrowd)];
    pred_classes / pred_instances: [H, W] (classes outside 0..C-1 = unlabelled)."""

    gt_ids: np.ndarray
    gt_segments: list[tuple[int, int, bool]]
    pred_classes: np.ndarray
    pred_instances: np.ndarray


@dataclass
class Case:
    name: str
    things: set[int]
    stuffs: set[int]
    images: list[Image]


UNLABELLED = 65535


def _columns(
    spans: list[tuple[int, int, int]], height: int = 4, width: int = 20, fill: int = 0
) -> np.ndarray:
    """[height, width] with value v in columns a..b-1 for each (a, b, v)."""
    out = np.full((height, width), fill, dtype=np.int64)
    for a, b, v in spans:
        out[:, a:b] = v
    return out


def crowd_of_another_class() -> Case:
    """GT: a person in columns 0-9, a crowd *car* region in 10-19. Prediction: person
    segments in 0-9 and 10-19. The second is not forgiven: the crowd is not its class."""
    person, car = 0, 1
    gt = _columns([(0, 10, 1), (10, 20, 2)])
    pred_c = _columns([(0, 20, person)])
    pred_i = _columns([(0, 10, 1), (10, 20, 2)])
    return Case(
        "crowd_of_another_class",
        {person, car},
        set(),
        [Image(gt, [(1, person, False), (2, car, True)], pred_c, pred_i)],
    )


def crowd_stays_in_the_union() -> Case:
    """GT: a person crowd region in columns 0-9, a person in 10-19. Prediction: one person
    segment over 4-19: IoU 10 / 16 (the crowd pixels stay in the union)."""
    person = 0
    gt = _columns([(0, 10, 1), (10, 20, 2)])
    pred_c = _columns([(4, 20, person)], fill=UNLABELLED)
    pred_i = _columns([(4, 20, 1)])
    return Case(
        "crowd_stays_in_the_union",
        {person},
        set(),
        [Image(gt, [(1, person, True), (2, person, False)], pred_c, pred_i)],
    )


def _random_image(
    rng: np.random.Generator,
    things: list[int],
    stuffs: list[int],
    crowd_share: float,
    void: bool,
    height: int = 48,
    width: int = 64,
) -> Image:
    """Rectangles of random classes painted over each other (stuff first), some crowd,
    optionally void bands; the prediction shifts, drops, relabels, splits and leaves parts
    unlabelled, and adds spurious segments."""
    gt = np.zeros((height, width), dtype=np.int64)
    segments: list[tuple[int, int, bool]] = []
    next_id = 1
    for cls in stuffs:
        if rng.random() < 0.8:
            y, x = rng.integers(0, height - 8), rng.integers(0, width - 8)
            gt[y : y + rng.integers(8, height), x : x + rng.integers(8, width)] = next_id
            segments.append((next_id, cls, False))
            next_id += 1
    for _ in range(rng.integers(2, 7)):
        cls = int(rng.choice(things))
        y, x = rng.integers(0, height - 4), rng.integers(0, width - 4)
        gt[y : y + rng.integers(4, 20), x : x + rng.integers(4, 24)] = next_id
        segments.append((next_id, cls, bool(rng.random() < crowd_share)))
        next_id += 1
    if void:
        gt[rng.integers(0, height) :, : rng.integers(0, width // 3)] = 0
        gt[:, rng.integers(width - 6, width) :] = 0
    present = set(np.unique(gt).tolist())
    segments = [s for s in segments if s[0] in present]

    pred_c = np.full((height, width), UNLABELLED, dtype=np.int64)
    pred_i = np.zeros((height, width), dtype=np.int64)
    instance = 1
    for segment_id, cls, _ in segments:
        if rng.random() < 0.15:
            continue  # missed
        where = gt == segment_id
        dy, dx = rng.integers(-3, 4, size=2)
        where = np.roll(where, (int(dy), int(dx)), axis=(0, 1))
        if rng.random() < 0.1:
            cls = int(rng.choice(things + stuffs))  # wrong class
        if rng.random() < 0.15:  # split in two
            rows = np.nonzero(where.any(axis=1))[0]
            half = where.copy()
            half[: rows[len(rows) // 2]] = False
            pred_c[where], pred_i[where] = cls, instance
            pred_i[half] = instance + 1
            instance += 2
        else:
            pred_c[where], pred_i[where] = cls, instance
            instance += 1
    for _ in range(rng.integers(0, 3)):  # spurious segments
        y, x = rng.integers(0, height - 4), rng.integers(0, width - 4)
        h, w = rng.integers(3, 12, size=2)
        pred_c[y : y + h, x : x + w], pred_i[y : y + h, x : x + w] = (
            int(rng.choice(things)),
            instance,
        )
        instance += 1
    pred_c[rng.random((height, width)) < 0.02] = UNLABELLED
    return Image(gt, segments, pred_c, pred_i)


def random_case(name: str, seed: int, images: int, crowd_share: float, void: bool) -> Case:
    rng = np.random.default_rng(seed)
    things, stuffs = [0, 1, 2, 3], [4, 5]
    return Case(
        name,
        set(things),
        set(stuffs),
        [_random_image(rng, things, stuffs, crowd_share, void) for _ in range(images)],
    )


def cases() -> list[Case]:
    """Every pinned case, in a fixed order."""
    return [
        crowd_of_another_class(),
        crowd_stays_in_the_union(),
        random_case("random_no_crowd_no_void", 1, 10, 0.0, False),
        random_case("random_no_crowd_void", 2, 10, 0.0, True),
        random_case("random_crowd_quarter", 3, 30, 0.25, False),
        random_case("random_crowd_quarter_void", 4, 30, 0.25, True),
        random_case("random_crowd_half_void", 5, 20, 0.5, True),
    ]


# ------------------------------------------------------------------ panopticapi's side
def _rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def _write(case: Case, folder: Path) -> tuple[Path, Path]:
    """The case as COCO panoptic files: gt.json + gt/, pred.json + pred/. Category id =
    class index + 1; each predicted (class, instance) pair becomes one segment."""
    from PIL import Image as PILImage

    num_classes = len(case.things) + len(case.stuffs)
    categories = [
        {"id": c + 1, "name": f"class{c}", "isthing": int(c in case.things)}
        for c in range(num_classes)
    ]
    gt_json = {"categories": categories, "annotations": [], "images": []}
    pred_json = {"annotations": []}
    for sub in ("gt", "pred"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for number, image in enumerate(case.images):
        name = f"{number:04d}.png"
        PILImage.fromarray(_rgb(image.gt_ids)).save(folder / "gt" / name)
        gt_json["annotations"].append(
            {
                "image_id": number,
                "file_name": name,
                "segments_info": [
                    {
                        "id": i,
                        "category_id": c + 1,
                        "iscrowd": int(crowd),
                        "area": int((image.gt_ids == i).sum()),
                    }
                    for i, c, crowd in image.gt_segments
                ],
            }
        )
        gt_json["images"].append({"id": number, "file_name": name})
        labelled = (image.pred_classes >= 0) & (image.pred_classes < num_classes)
        pairs = np.unique(
            np.stack([image.pred_classes[labelled], image.pred_instances[labelled]], axis=1), axis=0
        )
        pred_ids = np.zeros(image.pred_classes.shape, dtype=np.int64)
        segments_info = []
        for segment_id, (cls, inst) in enumerate(pairs, start=1):
            pred_ids[labelled & (image.pred_classes == cls) & (image.pred_instances == inst)] = (
                segment_id
            )
            segments_info.append({"id": segment_id, "category_id": int(cls) + 1})
        PILImage.fromarray(_rgb(pred_ids)).save(folder / "pred" / name)
        pred_json["annotations"].append(
            {"image_id": number, "file_name": name, "segments_info": segments_info}
        )
    (folder / "gt.json").write_text(json.dumps(gt_json))
    (folder / "pred.json").write_text(json.dumps(pred_json))
    return folder / "gt.json", folder / "pred.json"


def panopticapi_scores(case: Case, folder: Path) -> dict[str, float]:
    """PQ/SQ/RQ ("All", percent) of the case by panopticapi's per-image counting
    (``pq_compute_single_core``) and averaging (``PQStat.pq_average``), the two steps of its
    ``pq_compute``, minus the worker pool and its Things/Stuff rows (which divide by zero
    when a case has no stuff segment)."""
    from panopticapi.evaluation import pq_compute_single_core

    gt_file, pred_file = _write(case, folder)
    gt_json, pred_json = json.loads(gt_file.read_text()), json.loads(pred_file.read_text())
    categories = {c["id"]: c for c in gt_json["categories"]}
    pairs = list(zip(gt_json["annotations"], pred_json["annotations"]))
    stat = pq_compute_single_core(0, pairs, str(folder / "gt"), str(folder / "pred"), categories)
    result, _ = stat.pq_average(categories, isthing=None)
    return {k: 100.0 * result[k] for k in ("pq", "sq", "rq")}


def main() -> int:
    try:
        import panopticapi.evaluation  # noqa: F401
    except ImportError:
        print(__doc__, file=sys.stderr)
        return 2
    expected = {
        "computed_with": "test/panopticapi_cases.py: panopticapi.evaluation "
        "(cocodataset/panopticapi, as PyPI's panopticapi-lite 0.2.0) "
        "pq_compute_single_core + PQStat.pq_average, 'All' x 100",
        "cases": {},
    }
    for case in cases():
        with tempfile.TemporaryDirectory() as folder:
            expected["cases"][case.name] = panopticapi_scores(case, Path(folder))
    EXPECTED.write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {EXPECTED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
