"""Fusion invariants: one label per pixel, ids consistent with the list, unknown where
nothing is kept or confident, OVSeg's granularity rule, stuff merged, resizing."""

import numpy as np
import pytest
import torch

from ovseg_ros.segmentation.panoptic import NO_INSTANCE, UNLABELLED, fuse, resized, select_masks
from ovseg_ros.segmentation.vocabulary import Vocabulary


def box_mask(h, w, y0, y1, x0, x1):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def check_invariants(result, num_classes):
    sem, inst = result.semantic, result.instance_map
    assert sem.dtype == np.uint16 and inst.dtype == np.uint16
    assert set(np.unique(sem)) <= set(range(num_classes)) | {UNLABELLED}
    assert set(np.unique(inst)) <= set(range(len(result.instances) + 1))
    for index, instance in enumerate(result.instances):
        assert instance.id == index + 1
        pixels = inst == instance.id
        assert pixels.sum() == instance.area > 0
        assert np.all(sem[pixels] == instance.class_index)  # instance pixels carry its class
        x, y, w, h = instance.bbox
        ys, xs = np.nonzero(pixels)
        assert (x, y, w, h) == (
            xs.min(),
            ys.min(),
            xs.max() - xs.min() + 1,
            ys.max() - ys.min() + 1,
        )
        assert instance.label == result.vocabulary.names[instance.class_index]
    assert np.all(sem[inst != NO_INSTANCE] != UNLABELLED)


def test_two_objects_and_unknown_background():
    vocab = Vocabulary.parse("mug, kettle")
    masks = torch.stack([box_mask(20, 30, 2, 8, 2, 10), box_mask(20, 30, 10, 18, 12, 28)])
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    result = fuse(masks, probs, torch.tensor([0.95, 0.9]), vocab)
    check_invariants(result, 2)
    assert [(i.label, i.area, i.bbox) for i in result.instances] == [
        ("mug", 48, (2, 2, 8, 6)),
        ("kettle", 128, (12, 10, 16, 8)),
    ]
    assert result.instances[0].mask_quality == pytest.approx(0.95)
    assert result.semantic[0, 0] == UNLABELLED and result.instance_map[0, 0] == NO_INSTANCE


def test_granularity_follows_ovseg():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    keep = select_masks(probs, 0.8)
    # class 0: best 0.9 -> keep > 0.72 (mask 0); class 1: best 0.7 -> keep > 0.56 (mask 2)
    assert keep.tolist() == [[True, False], [False, False], [False, True]]
    # 0.5: class 0 keeps > 0.45 (masks 0, 1); class 1 keeps > 0.35 (masks 1, 2)
    assert select_masks(probs, 0.5).tolist() == [[True, False], [True, True], [False, True]]
    one = select_masks(probs, 1.0)
    assert one.sum(0).tolist() == [1, 1] and one[0, 0] and one[2, 1]


def test_overlap_goes_to_the_summed_winner_then_the_best_mask():
    vocab = Vocabulary.parse("mug, kettle")
    big = box_mask(10, 10, 0, 10, 0, 10)
    small = box_mask(10, 10, 0, 5, 0, 5)
    probs = torch.tensor([[0.3, 0.7], [0.95, 0.05]])
    result = fuse(torch.stack([big, small]), probs, torch.ones(2), vocab, granularity=0.5)
    check_invariants(result, 2)
    # In the small square: mug 0.3 + 0.95 > kettle 0.7 + 0.05 -> mug, owned by the small mask.
    assert result.semantic[2, 2] == 0 and result.semantic[8, 8] == 1
    labels = {i.label: i.area for i in result.instances}
    assert labels == {"kettle": 75, "mug": 25}


def test_ties_go_to_the_lower_proposal_index():
    vocab = Vocabulary.parse("mug, kettle")
    a = box_mask(6, 6, 0, 6, 0, 4)
    b = box_mask(6, 6, 0, 6, 2, 6)
    probs = torch.tensor([[0.8, 0.2], [0.8, 0.2]])
    result = fuse(torch.stack([a, b]), probs, torch.ones(2), vocab)
    check_invariants(result, 2)
    assert np.all(result.instance_map[:, 2:4] == 1)


def test_unknown_threshold_leaves_low_confidence_pixels_unlabelled():
    vocab = Vocabulary.parse("mug, kettle, cup")
    masks = torch.stack([box_mask(8, 8, 0, 8, 0, 4), box_mask(8, 8, 0, 8, 4, 8)])
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25]])
    loose = fuse(masks, probs, torch.ones(2), vocab, granularity=0.0)
    assert np.all(loose.semantic != UNLABELLED)
    strict = fuse(masks, probs, torch.ones(2), vocab, granularity=0.0, unknown_thresh=0.5)
    check_invariants(strict, 3)
    assert np.all(strict.semantic[:, :4] == 0) and np.all(strict.semantic[:, 4:] == UNLABELLED)
    assert np.all(strict.instance_map[:, 4:] == NO_INSTANCE)


def test_stuff_masks_merge_into_one_region():
    vocab = Vocabulary.parse("floor, mug", stuff=["floor"])
    masks = torch.stack(
        [
            box_mask(10, 10, 5, 10, 0, 5),
            box_mask(10, 10, 5, 10, 5, 10),
            box_mask(10, 10, 0, 3, 0, 3),
        ]
    )
    probs = torch.tensor([[0.9, 0.1], [0.85, 0.15], [0.1, 0.9]])
    result = fuse(masks, probs, torch.tensor([0.9, 0.99, 0.8]), vocab)
    check_invariants(result, 2)
    floor = [i for i in result.instances if i.label == "floor"]
    assert len(floor) == 1 and floor[0].area == 50 and not floor[0].is_thing
    assert floor[0].score == pytest.approx(0.9) and floor[0].mask_quality == pytest.approx(0.99)
    assert [i.is_thing for i in result.instances if i.label == "mug"] == [True]


def test_others_column_never_labels():
    vocab = Vocabulary.parse("mug")
    masks = torch.stack([box_mask(6, 6, 0, 3, 0, 6), box_mask(6, 6, 3, 6, 0, 6)])
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]])  # second mask is mostly 'others'
    result = fuse(masks, probs, torch.ones(2), vocab, granularity=0.0)
    check_invariants(result, 1)
    assert np.all(result.semantic[:3] == 0) and np.all(result.semantic[3:] == UNLABELLED)
    assert len(result.instances) == 1


def test_no_masks_or_nothing_kept():
    vocab = Vocabulary.parse("mug, kettle")
    empty = fuse(torch.zeros(0, 4, 5, dtype=torch.bool), torch.zeros(0, 2), torch.zeros(0), vocab)
    assert empty.semantic.shape == (4, 5) and np.all(empty.semantic == UNLABELLED)
    assert empty.instances == [] and np.all(empty.instance_map == 0)


def test_random_fusions_keep_the_invariants():
    generator = torch.Generator().manual_seed(3)
    vocab = Vocabulary.parse("a, b, c, d", stuff=["d"])
    for _ in range(20):
        masks = torch.rand(7, 15, 17, generator=generator) > 0.6
        probs = torch.rand(7, 4, generator=generator).softmax(dim=1)
        result = fuse(
            masks,
            probs,
            torch.rand(7, generator=generator),
            vocab,
            granularity=float(torch.rand(1, generator=generator)),
        )
        check_invariants(result, 4)
        covered = masks.any(0).numpy()
        assert np.all(result.semantic[~covered] == UNLABELLED)


def test_resized_keeps_ids_and_measures_again():
    vocab = Vocabulary.parse("mug, kettle")
    masks = torch.stack([box_mask(10, 10, 0, 5, 0, 5), box_mask(10, 10, 5, 10, 5, 10)])
    result = fuse(masks, torch.tensor([[0.9, 0.1], [0.1, 0.9]]), torch.ones(2), vocab)
    big = resized(result, 20, 20)
    check_invariants(big, 2)
    assert [(i.area, i.bbox) for i in big.instances] == [
        (100, (0, 0, 10, 10)),
        (100, (10, 10, 10, 10)),
    ]


def test_a_merged_stuff_region_scores_its_best_member_also_when_not_the_first():
    vocab = Vocabulary.parse("floor, mug", stuff=["floor"])
    masks = torch.stack(
        [
            box_mask(10, 10, 5, 10, 0, 5),
            box_mask(10, 10, 5, 10, 5, 10),
            box_mask(10, 10, 0, 3, 5, 10),
        ]
    )
    # The first floor mask is the weaker one, in score and in quality.
    probs = torch.tensor([[0.8, 0.2], [0.95, 0.05], [0.7, 0.3]])
    result = fuse(masks, probs, torch.tensor([0.5, 0.97, 0.6]), vocab, granularity=0.0)
    check_invariants(result, 2)
    floor = [i for i in result.instances if i.label == "floor"]
    assert len(floor) == 1 and floor[0].area == 65
    assert floor[0].score == pytest.approx(0.95) and floor[0].mask_quality == pytest.approx(0.97)


def test_fusion_band_by_band_equals_one_band(monkeypatch):
    from ovseg_ros.segmentation import panoptic

    generator = torch.Generator().manual_seed(5)
    vocab = Vocabulary.parse("a, b, c, d", stuff=["c", "d"])
    masks = torch.rand(9, 23, 19, generator=generator) > 0.5
    probs = torch.rand(9, 5, generator=generator).softmax(dim=1)  # with an 'others' column
    quality = torch.rand(9, generator=generator)
    whole = fuse(masks, probs, quality, vocab, granularity=0.3, unknown_thresh=0.2)
    monkeypatch.setattr(panoptic, "FUSE_BAND_BYTES", 1)  # one row per band
    monkeypatch.setattr(panoptic, "MEASURE_BAND_PIXELS", 1)
    rows = fuse(masks, probs, quality, vocab, granularity=0.3, unknown_thresh=0.2)
    check_invariants(rows, 4)
    assert len(whole.instances) > 2
    assert np.array_equal(rows.semantic, whole.semantic)
    assert np.array_equal(rows.instance_map, whole.instance_map)
    assert rows.instances == whole.instances


def test_box_measurement_needs_little_more_than_the_instance_image():
    import tracemalloc

    from ovseg_ros.segmentation.panoptic import Instance, _measure

    instance_map = np.zeros((2000, 3000), dtype=np.uint16)
    instance_map[100:900, 2999] = 1  # one column at the right border
    instance_map[1500:, :40] = 2
    instances = [Instance(i, 0, "a", 1.0, 1.0, True, (0, 0, 0, 0), 0) for i in (1, 2)]
    tracemalloc.start()
    _measure(instances, instance_map)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [(i.bbox, i.area) for i in instances] == [
        ((2999, 100, 1, 800), 800),
        ((0, 1500, 40, 500), 20000),
    ]
    assert peak < 2 * instance_map.nbytes  # was 32 bytes per pixel: 16x the image
