"""Segmenter with tiny models loaded through the real loaders: the public API end to end."""

import warnings

import numpy as np
import pytest
import torch

from ovseg_ros.segmentation.panoptic import UNLABELLED
from ovseg_ros.segmentation.pipeline import ImageError, Segmenter, working_size
from ovseg_ros.segmentation.vocabulary import Vocabulary
from ovseg_ros.settings.config import SettingsError


@pytest.fixture(scope="module")
def segmenter(tiny_settings):
    return Segmenter(tiny_settings)


def synthetic_image(height=96, width=128, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 40, (height, width, 3), dtype=np.uint8)
    image[10:50, 10:60] = (200, 30, 30)
    image[40:90, 70:120] = (30, 60, 220)
    return image


def test_segment_gives_consistent_outputs_at_input_resolution(segmenter):
    encoded = segmenter.encode_vocabulary(Vocabulary.parse("mug, kettle, person"))
    result = segmenter.segment(synthetic_image(), encoded)
    assert result.semantic.shape == result.instance_map.shape == (96, 128)
    assert result.vocabulary.names == ("mug", "kettle", "person")
    assert result.vocabulary_version == encoded.version
    assert set(result.timings_ms) == {"proposals", "classify", "fuse", "total"}
    labelled = result.semantic != UNLABELLED
    assert labelled.any(), "tiny models with zero thresholds should label something"
    for index, instance in enumerate(result.instances):
        pixels = result.instance_mask(index)
        assert pixels.sum() == instance.area
        assert np.all(result.semantic[pixels] == instance.class_index)


def test_on_stage_is_told_each_stage_its_time_and_output(segmenter):
    encoded = segmenter.encode_vocabulary(Vocabulary.parse("mug, kettle, person"))
    calls = []
    segmenter.on_stage = lambda stage, ms, output: calls.append((stage, ms, output))
    try:
        result = segmenter.segment(synthetic_image(), encoded)
    finally:
        segmenter.on_stage = None
    assert [c[0] for c in calls] == ["proposals", "classify", "fuse", "total"]
    assert {stage: ms for stage, ms, _ in calls} == result.timings_ms
    proposals, (probs, embeddings) = calls[0][2], calls[1][2]
    assert len(proposals) > 0 and tuple(probs.shape) == (len(proposals), 3)
    assert embeddings.shape[0] == len(proposals)
    assert calls[2][2] is result and calls[3][2] is result


def test_each_instance_carries_the_clip_embedding_its_class_came_from(segmenter):
    """A thing's embedding is its mask's unit CLIP embedding: scored against the vocabulary's
    text embeddings it gives the instance's class and score; a stuff region's is the
    normalised mean of its masks'."""
    from ovseg_ros.segmentation.classifier import class_probabilities

    encoded = segmenter.encode_vocabulary(Vocabulary.parse("mug, kettle, person"))
    calls = []
    segmenter.on_stage = lambda stage, ms, output: calls.append(output)
    try:
        result = segmenter.segment(synthetic_image(), encoded)
    finally:
        segmenter.on_stage = None
    assert result.instances
    embeddings = calls[1].embeddings.cpu().numpy()
    for instance in result.instances:
        assert instance.embedding.shape == (embeddings.shape[1],)
        assert np.linalg.norm(instance.embedding) == pytest.approx(1.0, abs=1e-5)
        probs = class_probabilities(
            torch.from_numpy(instance.embedding)[None], encoded.embeddings.cpu()
        )[0]
        if instance.is_thing:
            assert int(probs.argmax()) == instance.class_index
            assert float(probs[instance.class_index]) == pytest.approx(instance.score, abs=1e-4)
            # the embedding is one of the proposals'
            assert np.abs(embeddings @ instance.embedding - 1).min() < 1e-5


def test_large_images_are_processed_small_and_returned_full_size(segmenter):
    settings = segmenter.settings
    segmenter.update_settings(settings.replace(max_image_side=64))
    try:
        encoded = segmenter.encode_vocabulary(Vocabulary.parse("mug, kettle"))
        result = segmenter.segment(synthetic_image(150, 200), encoded)
        assert result.semantic.shape == (150, 200)
        for instance in result.instances:
            x, y, w, h = instance.bbox
            assert 0 <= x and x + w <= 200 and 0 <= y and y + h <= 150
    finally:
        segmenter.update_settings(settings)
    assert working_size(150, 200, 64) == (48, 64)
    assert working_size(150, 200, 0) == (150, 200)


def test_mask_token_mode_runs_end_to_end(segmenter):
    settings = segmenter.settings
    segmenter.update_settings(settings.replace(classifier_mode="mask_token"))
    try:
        encoded = segmenter.encode_vocabulary(Vocabulary.parse("mug, kettle"))
        result = segmenter.segment(synthetic_image(), encoded)
        assert result.semantic.shape == (96, 128)
    finally:
        segmenter.update_settings(settings)


def test_start_only_settings_are_refused_live(segmenter):
    with pytest.raises(SettingsError, match="sam_model can only be set at start"):
        segmenter.update_settings(segmenter.settings.replace(sam_model="vit_l"))


@pytest.mark.parametrize(
    "image, words",
    [
        (np.zeros((0, 5, 3), np.uint8), "zero size"),
        (np.zeros((5, 5), np.uint8), "HxWx3"),
        (np.zeros((5, 5, 3), np.float32), "uint8"),
        ("not an image", "numpy array"),
    ],
)
def test_bad_images_are_refused_with_the_reason(segmenter, image, words):
    encoded = segmenter.encode_vocabulary(Vocabulary.parse("mug"))
    with pytest.raises(ImageError, match=words):
        segmenter.segment(image, encoded)


def test_ovseg_checkpoint_with_mask_prompt(tiny_settings, tiny_weights):
    settings = tiny_settings.replace(ovseg_checkpoint=str(tiny_weights["ovseg_mpt"]))
    segmenter = Segmenter(settings)
    assert segmenter.clip.mask_embedding is not None
    encoded = segmenter.encode_vocabulary(Vocabulary.parse("mug, kettle"))
    result = segmenter.segment(synthetic_image(), encoded)
    assert result.semantic.shape == (96, 128)


def test_read_only_frames_are_accepted_without_a_warning(segmenter):
    # Frames decoded from message bytes (a bag, a ROS message) can be read-only views.
    image = synthetic_image()
    image.setflags(write=False)
    encoded = segmenter.encode_vocabulary(Vocabulary.parse("mug"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = segmenter.segment(image, encoded)
    assert result.semantic.shape == (96, 128)


@pytest.mark.parametrize("device, gpus", [("cuda", 0), ("cuda:3", 2), ("cuda:0", 0)])
def test_a_cuda_device_that_does_not_exist_is_refused_with_the_devices_there(
    tiny_settings, monkeypatch, device, gpus
):
    import torch

    from ovseg_ros.models.weights import WeightsError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    with pytest.raises(WeightsError) as err:
        Segmenter(tiny_settings.replace(device=device))
    message = str(err.value)
    assert "\n" not in message and repr(device) in message
    expected = ", ".join(["cpu", *(f"cuda:{i}" for i in range(gpus))])
    assert f"devices here: {expected} " in message


def test_the_cli_ends_a_missing_device_in_one_line(tiny_settings, monkeypatch, tmp_path, capsys):
    import torch

    from ovseg_ros.offline.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    s = tiny_settings
    image = tmp_path / "frame.png"
    import cv2

    cv2.imwrite(str(image), synthetic_image())
    code = main(
        [
            str(image),
            "--vocab",
            "mug",
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cuda:3",
            "--cache-dir",
            s.cache_dir,
            "--clip-model",
            s.clip_model,
            "--clip-pretrained",
            s.clip_pretrained,
            "--offline",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [err.strip()] and "devices here: cpu " in err
