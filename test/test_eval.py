"""ovseg-eval: metrics against hand-computed values, each dataset layout read from tiny
folders written here, clear refusals for bad folders, and the command end to end on the
tiny models."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torchmetrics")

from ovseg_ros.evaluation import cli as eval_cli
from ovseg_ros.evaluation.datasets import DATASETS, Dataset, DatasetError
from ovseg_ros.evaluation.metrics import (
    IGNORE,
    PanopticMetrics,
    Segment,
    SemanticMetrics,
)
from ovseg_ros.segmentation.panoptic import UNLABELLED

U = UNLABELLED
I = IGNORE  # noqa: E741 (the tables below read better with one letter)


# ------------------------------------------------------------------ metrics
def test_semantic_metrics_match_hand_computation():
    """Two images, 4 classes. Class 0: GT 3 px, predicted on 4 scored px, 1 right -> 1/6.
    Class 1: GT 4, predicted 4, 3 right -> 3/5. Class 2: in GT, never predicted -> 0.
    Class 3: absent everywhere -> not in the mean. One unlabelled prediction is a miss; the
    prediction on the ignored pixel counts nowhere."""
    metrics = SemanticMetrics(4)
    metrics.update(np.array([[0, 1, 1, 1], [U, 0, 1, 0]]), np.array([[0, 0, 1, 1], [0, I, 1, 1]]))
    metrics.update(np.array([[0, 0]]), np.array([[2, 2]]))
    scores = metrics.compute()
    assert scores.per_class_iou[:3] == pytest.approx([100 / 6, 60.0, 0.0])
    assert np.isnan(scores.per_class_iou[3])
    assert scores.miou == pytest.approx((100 / 6 + 60.0 + 0.0) / 3)
    assert scores.pixel_accuracy == pytest.approx(100 * 4 / 9)
    assert scores.pixels == 9


def test_semantic_metrics_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        SemanticMetrics(2).update(np.zeros((2, 2)), np.zeros((2, 3)))


def test_panoptic_quality_matches_hand_computation():
    """Things {0}: GT instances A, B, C; A found exactly (IoU 1), B with 3 of its 4 pixels
    (IoU 3/4), C left unlabelled (a miss): SQ 0.875, RQ 2 / (2 + 0.5) = 0.8. Stuff {1}: 12 GT
    pixels, predicted on those plus B's lost pixel: IoU 12/13, RQ 1."""
    gt_ids = np.array([[1, 1, 2, 2, 3, 3]] * 2 + [[4] * 6] * 2)
    segments = {1: Segment(0), 2: Segment(0), 3: Segment(0), 4: Segment(1)}
    pred_c = np.array([[0] * 6] * 2 + [[1] * 6] * 2)
    pred_i = np.array([[1, 1, 2, 2, 3, 3]] * 2 + [[0] * 6] * 2)
    pred_c[1, 3], pred_i[1, 3] = 1, 0
    pred_c[:2, 4:], pred_i[:2, 4:] = U, 0
    metrics = PanopticMetrics(things={0}, stuffs={1})
    metrics.update(pred_c, pred_i, gt_ids, segments)
    scores = metrics.compute()
    assert scores.sq == pytest.approx(100 * (0.875 + 12 / 13) / 2)
    assert scores.rq == pytest.approx(100 * (0.8 + 1.0) / 2)
    assert scores.pq == pytest.approx(100 * (0.875 * 0.8 + 12 / 13) / 2)


# ------------------------------------------------------------------ dataset layouts
def write_image(path: Path, height: int = 24, width: int = 32, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def write_label(path: Path, values: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(values)
    if palette:
        image = image.convert("P") if image.mode != "P" else image
        image.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    image.save(path)


def label_values(raw: list[int], dtype) -> np.ndarray:
    """A 24x32 label image whose first row starts with the given raw values."""
    label = np.full((24, 32), raw[0], dtype=dtype)
    label[0, : len(raw)] = raw
    return label


# key -> (raw values written, the class indices they must decode to)
LAYOUTS = {
    "ade20k-150": ([0, 1, 150, 151], [I, 0, 149, I], np.uint8),
    "ade20k-847": ([0, 846, 65535, 900], [0, 846, I, I], np.uint16),
    "pascal-context-59": ([0, 58, 255, 59], [0, 58, I, I], np.uint8),
    "pascal-context-459": ([458, 0, 65535], [458, 0, I], np.uint16),
    "pascal-voc-20": ([0, 1, 20, 255], [I, 0, 19, I], np.uint8),
    # value = COCO id - 1: 0 person, 11 (id 12 does not exist), 181 (id 182, the last)
    "coco-stuff-171": ([0, 11, 181, 255], [0, I, 170, I], np.uint8),
}


def make_dataset(root: Path, key: str, stems=("a", "b")) -> Path:
    spec = DATASETS[key]
    raw, _, dtype = LAYOUTS[key]
    for n, stem in enumerate(stems):
        write_image(root / spec.images / f"{stem}.jpg", seed=n)
        write_label(
            root / spec.labels / f"{stem}{spec.label_ext}",
            label_values(raw, dtype),
            palette=key == "pascal-voc-20",
        )
    if spec.split_file:
        (root / spec.split_file).parent.mkdir(parents=True, exist_ok=True)
        (root / spec.split_file).write_text("\n".join(stems) + "\n")
    return root


@pytest.mark.parametrize("key", sorted(LAYOUTS))
def test_each_official_layout_is_read_and_decoded(tmp_path, key):
    dataset = Dataset(key, make_dataset(tmp_path / key, key))
    assert [s.name for s in dataset] == ["a", "b"]
    expected = LAYOUTS[key][1]
    label = dataset.label(dataset.samples[0])
    assert label.shape == (24, 32)
    assert label[0, : len(expected)].tolist() == expected


@pytest.mark.parametrize(
    "key, count, first, last",
    [
        ("ade20k-150", 150, "wall", "flag"),
        ("ade20k-847", 847, "wall", None),
        ("pascal-context-59", 59, "aeroplane", None),
        ("pascal-context-459", 459, None, None),
        ("pascal-voc-20", 20, "aeroplane", "tvmonitor"),
        ("coco-stuff-171", 171, "person", "wood"),
    ],
)
def test_class_lists_have_the_official_length_and_order(key, count, first, last):
    names = DATASETS[key].names
    assert len(names) == count == len({n.casefold() for n in names})
    assert first is None or names[0] == first
    assert last is None or names[-1] == last


def test_missing_folder_gives_one_clear_message(tmp_path):
    with pytest.raises(DatasetError, match="is not a folder.*ADEChallengeData2016"):
        Dataset("ade20k-150", tmp_path / "nowhere")
    root = make_dataset(tmp_path / "ade", "ade20k-150")
    (root / "images/validation/b.jpg").unlink()
    with pytest.raises(DatasetError, match="b: missing image"):
        Dataset("ade20k-150", root)
    voc = make_dataset(tmp_path / "voc", "pascal-voc-20")
    (voc / DATASETS["pascal-voc-20"].split_file).unlink()
    with pytest.raises(DatasetError, match="val.txt is missing"):
        Dataset("pascal-voc-20", voc)


def test_malformed_label_is_refused(tmp_path):
    root = make_dataset(tmp_path / "ade", "ade20k-150")
    write_image(root / "annotations/validation/a.png")  # an RGB picture, not a label image
    dataset = Dataset("ade20k-150", root)
    with pytest.raises(DatasetError, match="single-channel"):
        dataset.label(dataset.samples[0])


def test_ovseg_eval_reports_a_clear_error_for_a_bad_root(tmp_path, capsys):
    assert eval_cli.main(["--dataset", "pascal-context-59", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "JPEGImages is missing" in err


# ------------------------------------------------------------------ end to end
def test_ovseg_eval_takes_a_dataset_with_more_names_than_max_classes(
    tmp_path, tiny_settings, capsys
):
    """ADE20K-847 has 847 names, more than the default max_classes (256): ovseg-eval
    scores it without the user raising the setting."""
    root = make_dataset(tmp_path / "ade847", "ade20k-847", stems=("a",))
    settings = tiny_settings.replace(templates="single")
    assert settings.max_classes < 847
    out = tmp_path / "eval"
    assert (
        eval_cli.main(
            ["--dataset", "ade20k-847", "--root", str(root), "--out", str(out), "--quiet"],
            settings=settings,
        )
        == 0
    ), capsys.readouterr().err
    report = json.loads((out / "ade20k-847.json").read_text())
    assert report["images"] == 1 and len(report["semantic"]["per_class_iou"]) == 847


def test_ovseg_eval_end_to_end_on_tiny_models(tmp_path, tiny_settings, capsys):
    """The command's numbers equal a plain numpy count over the segmenter's own outputs."""
    from ovseg_ros.evaluation.datasets import read_image
    from ovseg_ros.evaluation.evaluate import dataset_vocabulary
    from ovseg_ros.segmentation.pipeline import Segmenter

    root = make_dataset(tmp_path / "ade", "ade20k-150", stems=("a", "b", "c"))
    rng = np.random.default_rng(5)
    for stem in "abc":  # labels spread over a few classes, with ignored pixels
        write_label(
            root / f"annotations/validation/{stem}.png",
            rng.integers(0, 6, (24, 32), dtype=np.uint8),
        )
    settings = tiny_settings.replace(max_classes=150, templates="single")
    out = tmp_path / "eval"
    assert (
        eval_cli.main(
            [
                "--dataset",
                "ade20k-150",
                "--root",
                str(root),
                "--out",
                str(out),
                "--limit",
                "2",
                "--quiet",
            ],
            settings=settings,
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "Swin-B + ViT-L/14 (paper)" in printed and "29.6" in printed
    report = json.loads((out / "ade20k-150.json").read_text())
    assert report["images"] == 2 and report["panoptic"] is None

    dataset = Dataset("ade20k-150", root)
    segmenter = Segmenter(settings)
    encoded = segmenter.encode_vocabulary(dataset_vocabulary(dataset))
    tp = np.zeros(150)
    gt_count = np.zeros(150)
    pred_count = np.zeros(150)
    for sample in dataset.samples[:2]:
        pred = segmenter.segment(read_image(sample.image_path), encoded).semantic.astype(int)
        raw = np.asarray(Image.open(sample.label_path)).astype(int)
        scored = raw > 0
        gt, pr = raw[scored] - 1, pred[scored]
        for c in range(150):
            tp[c] += np.sum((gt == c) & (pr == c))
            gt_count[c] += np.sum(gt == c)
            pred_count[c] += np.sum(pr == c)
    union = gt_count + pred_count - tp
    ious = tp[union > 0] / union[union > 0]
    assert report["semantic"]["miou"] == pytest.approx(100 * ious.mean())
    assert report["semantic"]["pixel_accuracy"] == pytest.approx(100 * tp.sum() / gt_count.sum())
    assert report["semantic"]["pixels"] == gt_count.sum()


def test_ade20k_panoptic_ground_truth_is_read_and_scored(tmp_path):
    """COCO-format panoptic GT (ade20k_panoptic_val.json + PNGs, id = R + 256 G + 256^2 B):
    a perfect prediction scores PQ 100, and so does one that also covers the crowd region
    with its class; dropping one of two thing segments gives RQ 2/3 for its class."""
    from types import SimpleNamespace

    from ovseg_ros.evaluation.evaluate import score

    root = make_dataset(tmp_path / "ade", "ade20k-150", stems=("a",))
    ids = np.zeros((24, 32), dtype=np.int64)
    ids[:12, :16], ids[:12, 16:], ids[12:, :], ids[20:, :4] = 300, 301, 5, 77
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    (root / "ade20k_panoptic_val").mkdir()
    Image.fromarray(rgb).save(root / "ade20k_panoptic_val/a.png")
    categories = [
        {"id": i + 1, "name": n, "isthing": int(i == 12)}
        for i, n in enumerate(DATASETS["ade20k-150"].names)
    ]
    segments = [
        {"id": 300, "category_id": 13},
        {"id": 301, "category_id": 13},
        {"id": 5, "category_id": 1},
        {"id": 77, "category_id": 13, "iscrowd": 1},
    ]
    (root / "ade20k_panoptic_val.json").write_text(
        json.dumps(
            {
                "categories": categories,
                "annotations": [{"file_name": "a.png", "segments_info": segments}],
            }
        )
    )
    dataset = Dataset("ade20k-150", root)
    assert dataset.has_panoptic and dataset.things == {12}
    ids, segments = dataset.panoptic_label(dataset.samples[0])
    assert ids[0, 0] == 300 and ids[23, 31] == 5 and ids[23, 0] == 77
    assert segments == {
        300: Segment(12),
        301: Segment(12),
        5: Segment(0),
        77: Segment(12, iscrowd=True),
    }
    classes = np.full(ids.shape, U, dtype=np.int64)
    instances = np.zeros(ids.shape, dtype=np.int64)
    for number, (segment_id, segment) in enumerate(segments.items(), start=1):
        if not segment.iscrowd:
            classes[ids == segment_id], instances[ids == segment_id] = segment.class_index, number
    perfect = SimpleNamespace(semantic=classes, instance_map=instances)
    assert score(dataset, [(0, perfect)]).panoptic.pq == pytest.approx(100.0)
    # The crowd region predicted as its own class is forgiven, not a false positive.
    on_crowd = SimpleNamespace(
        semantic=np.where(ids == 77, 12, classes), instance_map=np.where(ids == 77, 9, instances)
    )
    assert score(dataset, [(0, on_crowd)]).panoptic.pq == pytest.approx(100.0)
    missed = SimpleNamespace(semantic=perfect.semantic.copy(), instance_map=instances.copy())
    missed.semantic[:12, 16:], missed.instance_map[:12, 16:] = U, 0
    panoptic = score(dataset, [(0, missed)]).panoptic
    assert panoptic.rq == pytest.approx(100 * (2 / 3 + 1) / 2)
