"""PQ / SQ / RQ equal panopticapi's on fixed cases: crowd regions of the segment's own class
and of another, crowd pixels in a match's union, void, unlabelled predictions, split and
shifted segments. Expected numbers: panopticapi's own counting run by
test/panopticapi_cases.py on the same cases written as COCO panoptic files (stored in
test/panopticapi_expected.json; its docstring says how to recompute them)."""

import json

import numpy as np
import pytest

pytest.importorskip("torchmetrics")

from panopticapi_cases import EXPECTED, cases

from ovseg_ros.evaluation.metrics import PanopticMetrics, Segment

PINNED = json.loads(EXPECTED.read_text())["cases"]


def ours(case) -> dict[str, float]:
    metrics = PanopticMetrics(case.things, case.stuffs)
    for image in case.images:
        metrics.update(
            image.pred_classes,
            image.pred_instances,
            image.gt_ids,
            {i: Segment(c, crowd) for i, c, crowd in image.gt_segments},
        )
    scores = metrics.compute()
    return {"pq": scores.pq, "sq": scores.sq, "rq": scores.rq}


@pytest.mark.parametrize("case", cases(), ids=lambda c: c.name)
def test_panoptic_quality_equals_panopticapi(case):
    assert ours(case) == pytest.approx(PINNED[case.name], rel=1e-12, abs=1e-9)


def test_every_case_is_pinned_and_the_random_ones_have_crowd_void_and_misses():
    """The pinned file covers every case, and the random cases really exercise crowd, void
    and unlabelled predictions (so a regression in any of them moves a number)."""
    all_cases = cases()
    assert sorted(PINNED) == sorted(c.name for c in all_cases)
    images = [image for c in all_cases if c.name.startswith("random_crowd") for image in c.images]
    assert sum(crowd for image in images for _, _, crowd in image.gt_segments) >= 20
    assert sum(int((image.gt_ids == 0).sum()) for image in images) > 0
    assert all((image.pred_classes == 65535).any() for image in images)


def test_the_two_minimal_crowd_cases_by_hand():
    """By hand: (1) a person segment on a crowd *car* region is a false positive of person:
    TP 1, FP 1 -> RQ 2/3, SQ 1. (2) a person segment over a person crowd (4 px wide) and a
    person (10 px): IoU 10 / 16, the crowd pixels counted in the union. (panopticapi gives
    the same: the pinned numbers.)"""
    first, second = cases()[:2]
    assert ours(first) == pytest.approx({"pq": 200 / 3, "sq": 100.0, "rq": 200 / 3})
    assert ours(second) == pytest.approx({"pq": 62.5, "sq": 62.5, "rq": 100.0})


def test_a_category_only_missed_or_only_predicted_counts_zero_in_the_means():
    """Class 0 matched perfectly (PQ 1); class 1's segment predicted as class 2, so class 1
    is only missed and class 2 only predicted (a false positive); class 3 absent: the means
    are over classes 0-2, two of them 0."""
    gt = np.array([[1, 1, 2, 2, 0, 0]])
    pred_c = np.array([[0, 0, 2, 2, 65535, 65535]])
    pred_i = np.array([[1, 1, 2, 2, 0, 0]])
    metrics = PanopticMetrics(things={0, 1, 2, 3}, stuffs=set())
    metrics.update(pred_c, pred_i, gt, {1: Segment(0), 2: Segment(1)})
    scores = metrics.compute()
    assert scores.pq == pytest.approx(100 / 3)
    assert scores.sq == pytest.approx(100 / 3)
    assert scores.rq == pytest.approx(100 / 3)


def test_shapes_must_agree():
    with pytest.raises(ValueError, match="shape"):
        PanopticMetrics({0}, set()).update(np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 3)), {})
