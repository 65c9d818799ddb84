"""ovseg_ros.models.weights (checkpoints, sam_weights, clip_weights): tiny models saved in the
real checkpoint layouts load through the real code;
every way a checkpoint can be missing, broken or wrong ends in one WeightsError that says what
to do; downloads are checked and never leave a bad file in the cache."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import socket
import threading
from functools import partial
from pathlib import Path

import open_clip
import pytest
import tiny_models
import torch
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file
from segment_anything import sam_model_registry

from ovseg_ros.models import sam_weights
from ovseg_ros.models.checkpoints import WeightsError, fetch
from ovseg_ros.models.clip_weights import load_clip
from ovseg_ros.models.sam_weights import load_sam
from ovseg_ros.models.weights import missing_weights

SAM_FILE = "sam_vit_b_01ec64.pth"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def uses_quick_gelu(model: torch.nn.Module) -> bool:
    return any(isinstance(m, QuickGELU) for m in model.modules())


def official_shapes(
    embed: int, depth: int, head_dim: int, global_blocks: list[int], image_size: int = 1024
) -> dict[str, torch.Tensor]:
    """The tensors sam_architecture reads, shaped as in an official checkpoint; expanded
    from one element so they cost nothing in memory or on disk."""
    grid = image_size // 16

    def fake(*shape: int) -> torch.Tensor:
        return torch.zeros(1).expand(*shape)

    state = {
        "image_encoder.patch_embed.proj.weight": fake(embed, 3, 16, 16),
        "image_encoder.pos_embed": fake(1, grid, grid, embed),
    }
    for i in range(depth):
        size = grid if i in global_blocks else 14
        state[f"image_encoder.blocks.{i}.attn.rel_pos_h"] = fake(2 * size - 1, head_dim)
        state[f"image_encoder.blocks.{i}.attn.rel_pos_w"] = fake(2 * size - 1, head_dim)
    return state


@pytest.fixture
def no_download(monkeypatch):
    """Fail the test if anything tries to download."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"unexpected download attempt: {args}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(open_clip, "download_pretrained", refuse)


@pytest.fixture
def empty_cache(tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    cache.mkdir()
    return cache


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def file_server(tmp_path: Path, monkeypatch):
    """A local HTTP server on an ephemeral port serving tmp_path/'served'.
    Yields (folder, base_url, list of requested paths)."""
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []
    handler = type("Handler", (CountingHandler,), {"requests": requests, "timeout": 10})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(handler, directory=str(served))
    )
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    for name in ("no_proxy", "NO_PROXY"):  # never route the local server through a proxy
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------- SAM


def test_tiny_sam_loads_from_cache_and_matches_original(tiny_settings, tiny_sam, no_download):
    sam = load_sam(tiny_settings, "cpu")

    assert not sam.training
    assert same_state(sam.state_dict(), tiny_sam.state_dict())
    encoder = sam.image_encoder
    assert encoder.img_size == 256 and len(encoder.blocks) == 2
    assert [block.window_size for block in encoder.blocks] == [14, 0]  # block 1 is global
    image = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(encoder(image), tiny_sam.image_encoder(image))


@pytest.mark.parametrize("variant", ["vit_b", "vit_l", "vit_h"])
def test_architecture_of_official_models_is_recognised_and_rebuilt(variant):
    # segment-anything's own builders on the meta device: real shapes, no memory.
    with torch.device("meta"):
        official = sam_model_registry[variant]()
        arch = sam_weights.sam_architecture(official.state_dict())
        rebuilt = sam_weights._build_sam(arch)

    assert arch.variant == variant
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in official.state_dict().items()
    }


def test_architecture_of_tiny_checkpoint_is_no_known_variant(tiny_sam):
    arch = sam_weights.sam_architecture(tiny_sam.state_dict())

    assert arch.variant is None
    assert (arch.embed_dim, arch.num_heads, arch.global_attn_indexes) == (64, 2, (1,))


def test_checkpoint_of_another_variant_is_refused(tiny_settings, tmp_path):
    path = tmp_path / "sam_vit_l_0b3195.pth"
    torch.save(official_shapes(1024, 24, 64, [5, 11, 17, 23]), path)

    with pytest.raises(WeightsError) as err:
        load_sam(tiny_settings.replace(sam_checkpoint=str(path)), "cpu")
    assert "vit_l" in str(err.value) and "sam_model is vit_b" in str(err.value)
    assert str(path) in str(err.value)


def test_missing_official_sam_offline_says_where_and_how(tiny_settings, empty_cache, no_download):
    settings = tiny_settings.replace(cache_dir=str(empty_cache))

    with pytest.raises(WeightsError) as err:
        load_sam(settings, "cpu")
    message = str(err.value)
    url = f"https://dl.fbaipublicfiles.com/segment_anything/{SAM_FILE}"
    assert SAM_FILE in message and str(empty_cache) in message
    assert f"wget -P {empty_cache} {url}" in message and "sam_checkpoint" in message
    assert missing_weights(settings) == [message]


def test_missing_explicit_sam_checkpoint_is_not_downloaded(tiny_settings, tmp_path, no_download):
    path = tmp_path / "nowhere" / "my_sam.pth"
    settings = tiny_settings.replace(sam_checkpoint=str(path), offline=False)

    with pytest.raises(WeightsError, match="sam_checkpoint .*my_sam.pth does not exist"):
        load_sam(settings, "cpu")
    assert len(missing_weights(settings)) == 1 and str(path) in missing_weights(settings)[0]


def test_truncated_sam_checkpoint_says_delete_and_download(tiny_settings, tiny_weights, tmp_path):
    data = tiny_weights["sam"].read_bytes()
    path = tmp_path / SAM_FILE
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(WeightsError) as err:
        load_sam(tiny_settings.replace(sam_checkpoint=str(path)), "cpu")
    assert str(path) in str(err.value) and "delete it and download it again" in str(err.value)


def test_keys_that_do_not_fit_are_listed(tiny_settings, tiny_sam, tmp_path):
    state = dict(tiny_sam.state_dict())
    del state["mask_decoder.iou_token.weight"]
    state["mask_decoder.extra_head.weight"] = torch.zeros(3)
    state["prompt_encoder.not_a_point.weight"] = torch.zeros(3)
    path = tmp_path / "edited.pth"
    torch.save(state, path)

    with pytest.raises(WeightsError) as err:
        load_sam(tiny_settings.replace(sam_checkpoint=str(path)), "cpu")
    message = str(err.value)
    assert "1 missing key (mask_decoder.iou_token.weight)" in message
    assert "2 unexpected keys (mask_decoder.extra_head.weight, " in message


class NotATensor:
    """Anything a weights-only load must refuse."""


def test_pickled_objects_are_refused(tiny_settings, tmp_path):
    path = tmp_path / "objects.pth"
    torch.save({"image_encoder.pos_embed": NotATensor()}, path)

    with pytest.raises(WeightsError, match="not loaded for safety"):
        load_sam(tiny_settings.replace(sam_checkpoint=str(path)), "cpu")


# --------------------------------------------------------------------------- downloads


def test_fetch_downloads_into_cache(tiny_weights, file_server, empty_cache):
    served, base_url, requests = file_server
    (served / "tiny.pth").write_bytes(tiny_weights["sam"].read_bytes())

    path = fetch(
        "tiny.pth",
        f"{base_url}/tiny.pth",
        sha256(tiny_weights["sam"])[:10],
        empty_cache,
        offline=False,
    )

    assert path == empty_cache / "tiny.pth" and sha256(path) == sha256(tiny_weights["sam"])
    assert fetch("tiny.pth", f"{base_url}/tiny.pth", "", empty_cache, offline=False) == path
    assert requests == ["/tiny.pth"]  # the second call used the cache


def test_fetch_rejects_corrupt_download_and_caches_nothing(tiny_weights, file_server, empty_cache):
    served, base_url, _ = file_server
    data = bytearray(tiny_weights["sam"].read_bytes())
    data[len(data) // 2] ^= 0xFF
    (served / "tiny.pth").write_bytes(bytes(data))

    with pytest.raises(WeightsError, match="invalid hash value") as err:
        fetch(
            "tiny.pth",
            f"{base_url}/tiny.pth",
            sha256(tiny_weights["sam"]),
            empty_cache,
            offline=False,
        )
    assert "wget -P" in str(err.value)
    assert list(empty_cache.iterdir()) == []


def test_load_sam_downloads_from_mirror(
    tiny_settings, tiny_sam, tiny_weights, file_server, empty_cache, monkeypatch
):
    served, base_url, requests = file_server
    (served / SAM_FILE).write_bytes(tiny_weights["sam"].read_bytes())
    monkeypatch.setenv(sam_weights.WEIGHTS_URL_ENV, base_url)
    # The table holds the real file's digest; accept the tiny stand-in's instead.
    monkeypatch.setitem(
        sam_weights.SAM_CHECKPOINTS,
        "vit_b",
        sam_weights.RemoteFile(SAM_FILE, sha256(tiny_weights["sam"])),
    )
    settings = tiny_settings.replace(cache_dir=str(empty_cache), offline=False)

    assert missing_weights(settings) == []
    sam = load_sam(settings, "cpu")

    assert requests == [f"/{SAM_FILE}"] and (empty_cache / SAM_FILE).is_file()
    assert same_state(sam.state_dict(), tiny_sam.state_dict())


def test_load_sam_rejects_wrong_file_from_mirror(
    tiny_settings, tiny_weights, file_server, empty_cache, monkeypatch
):
    served, base_url, requests = file_server
    (served / SAM_FILE).write_bytes(tiny_weights["sam"].read_bytes())  # not the real vit_b
    monkeypatch.setenv(sam_weights.WEIGHTS_URL_ENV, base_url + "/")

    with pytest.raises(WeightsError) as err:
        load_sam(tiny_settings.replace(cache_dir=str(empty_cache), offline=False), "cpu")
    assert "invalid hash value" in str(err.value) and "Nothing was cached" in str(err.value)
    assert f"{base_url}/{SAM_FILE}" in str(err.value)
    assert requests == [f"/{SAM_FILE}"] and list(empty_cache.iterdir()) == []


def test_offline_never_touches_the_network(
    tiny_settings, tiny_weights, file_server, empty_cache, monkeypatch
):
    served, base_url, requests = file_server
    (served / SAM_FILE).write_bytes(tiny_weights["sam"].read_bytes())
    monkeypatch.setenv(sam_weights.WEIGHTS_URL_ENV, base_url)

    with pytest.raises(WeightsError, match="offline") as err:
        load_sam(tiny_settings.replace(cache_dir=str(empty_cache)), "cpu")
    assert f"{base_url}/{SAM_FILE}" in str(err.value)
    assert requests == [] and list(empty_cache.iterdir()) == []


def test_unreachable_server_is_a_weights_error(tiny_settings, empty_cache, monkeypatch):
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(sam_weights.WEIGHTS_URL_ENV, f"http://127.0.0.1:{port}")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1")

    with pytest.raises(WeightsError, match=f"Could not download SAM checkpoint {SAM_FILE}"):
        load_sam(tiny_settings.replace(cache_dir=str(empty_cache), offline=False), "cpu")
    assert list(empty_cache.iterdir()) == []


# --------------------------------------------------------------------------- CLIP


def test_clip_from_state_dict_file(tiny_settings, tiny_clip, no_download):
    bundle = load_clip(tiny_settings, "cpu")

    assert same_state(bundle.model.state_dict(), tiny_clip.state_dict())
    assert not bundle.model.training and not uses_quick_gelu(bundle.model)
    assert bundle.mask_embedding is None
    assert bundle.image_size == 224
    assert bundle.image_mean == open_clip.OPENAI_DATASET_MEAN
    assert bundle.image_std == open_clip.OPENAI_DATASET_STD
    tokens = bundle.tokenizer(["a mug", "a door handle"])
    assert tokens.shape == (2, 77) and tokens.dtype == torch.long


def test_clip_from_open_clip_training_checkpoint(tiny_settings, tiny_clip, tmp_path):
    # open_clip's training script saves {'epoch', 'name', 'state_dict'} with DDP's 'module.'.
    path = tmp_path / "epoch_3.pt"
    torch.save(
        {
            "epoch": 3,
            "name": "run",
            "state_dict": {f"module.{k}": v for k, v in tiny_clip.state_dict().items()},
        },
        path,
    )

    bundle = load_clip(tiny_settings.replace(clip_pretrained=str(path)), "cpu")

    assert same_state(bundle.model.state_dict(), tiny_clip.state_dict())


def test_ovseg_detectron2_checkpoint(
    tiny_settings, tiny_weights, tiny_ovseg_clip, tiny_mask_embedding, tmp_path, no_download
):
    # The OVSeg weights replace the pretrained ones, which need not exist then.
    settings = tiny_settings.replace(
        ovseg_checkpoint=str(tiny_weights["ovseg_mpt"]),
        clip_pretrained=str(tmp_path / "absent.pth"),
    )

    assert missing_weights(settings) == []
    bundle = load_clip(settings, "cpu")

    assert same_state(bundle.model.state_dict(), tiny_ovseg_clip.state_dict())
    assert torch.equal(bundle.mask_embedding, tiny_mask_embedding)
    assert uses_quick_gelu(bundle.model)  # as OVSeg was trained


def test_ovseg_plain_state_dict(tiny_settings, tiny_weights, tiny_ovseg_clip, no_download):
    bundle = load_clip(
        tiny_settings.replace(ovseg_checkpoint=str(tiny_weights["ovseg_clip"])), "cpu"
    )

    assert same_state(bundle.model.state_dict(), tiny_ovseg_clip.state_dict())
    assert bundle.mask_embedding is None and uses_quick_gelu(bundle.model)


@pytest.mark.parametrize(
    "shape",
    [
        (3, 100, 64),  # another grid (image or patch size)
        (3, 196, 32),  # another width
        (4, 196, 64),  # deeper than the 3 layers
        (196, 64),
    ],
)
def test_mask_embedding_of_wrong_shape_is_explained(
    tiny_settings, tiny_ovseg_clip, tmp_path, shape
):
    path = tiny_models.save_ovseg_checkpoint(
        tiny_ovseg_clip, torch.zeros(shape), tmp_path / "ovseg_bad.pth"
    )

    with pytest.raises(WeightsError) as err:
        load_clip(tiny_settings.replace(ovseg_checkpoint=str(path)), "cpu")
    assert f"has shape {list(shape)}" in str(err.value)
    assert "[depth 1..3, 196 (14x14 patches), 64 (width)]" in str(err.value)


def test_detectron2_checkpoint_without_clip_is_explained(tiny_settings, tmp_path):
    path = tmp_path / "detector_only.pth"
    torch.save({"model": {"backbone.patch_embed.proj.weight": torch.zeros(8, 3, 4, 4)}}, path)

    with pytest.raises(WeightsError, match="no CLIP weights .*clip_adapter.clip_model."):
        load_clip(tiny_settings.replace(ovseg_checkpoint=str(path)), "cpu")


def test_clip_weights_of_another_model_are_listed(tiny_settings, tiny_sam, tmp_path):
    path = tiny_models.save_sam_checkpoint(tiny_sam, tmp_path / "not_clip.pth")

    with pytest.raises(WeightsError, match=r"does not fit open_clip .*missing keys \("):
        load_clip(tiny_settings.replace(clip_pretrained=str(path)), "cpu")


def test_missing_paths_are_all_reported(tiny_settings, tmp_path):
    settings = tiny_settings.replace(
        sam_checkpoint=str(tmp_path / "sam.pth"), clip_pretrained=str(tmp_path / "clip.pth")
    )
    assert [line.split()[0] for line in missing_weights(settings)] == [
        "sam_checkpoint",
        "clip_pretrained",
    ]
    settings = settings.replace(ovseg_checkpoint=str(tmp_path / "ovseg.pth"))
    assert [line.split()[0] for line in missing_weights(settings)] == [
        "sam_checkpoint",
        "ovseg_checkpoint",
    ]
    with pytest.raises(WeightsError, match="ovseg_checkpoint .*ovseg.pth does not exist"):
        load_clip(settings, "cpu")


# --------------------------------------------------------------------------- CLIP tags

TINY_TAG = "tinytag"
TINY_REPO = "ovseg-test/tiny-clip"


@pytest.fixture
def tiny_tag(tiny_clip_name, monkeypatch):
    """Make TINY_TAG an open_clip pretrained tag of the tiny model, hosted on the Hub like
    the real ones, trained with QuickGELU and its own normalisation."""
    real = open_clip.get_pretrained_cfg
    config = {
        "url": "",
        "hf_hub": f"{TINY_REPO}/",
        "quick_gelu": True,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.25, 0.25, 0.25),
    }

    def get_pretrained_cfg(model: str, tag: str) -> dict:
        return dict(config) if (model, tag) == (tiny_clip_name, TINY_TAG) else real(model, tag)

    monkeypatch.setattr(open_clip, "get_pretrained_cfg", get_pretrained_cfg)
    monkeypatch.setattr(
        open_clip,
        "list_pretrained_tags_by_model",
        lambda model: [TINY_TAG] if model == tiny_clip_name else [],
    )
    return TINY_TAG


def put_in_hub_cache(model: torch.nn.Module, cache: Path) -> Path:
    """Lay the weights out as huggingface_hub's cache does after a download."""
    repo = cache / f"models--{TINY_REPO.replace('/', '--')}"
    revision = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    path = repo / "snapshots" / revision / open_clip.constants.HF_SAFE_WEIGHTS_NAME
    path.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_tag_offline_and_not_cached_says_what_to_do(
    tiny_settings, tiny_tag, empty_cache, no_download
):
    settings = tiny_settings.replace(clip_pretrained=tiny_tag, cache_dir=str(empty_cache))

    with pytest.raises(WeightsError) as err:
        load_clip(settings, "cpu")
    message = str(err.value)
    assert tiny_settings.clip_model in message and repr(tiny_tag) in message
    assert str(empty_cache) in message and "offline" in message
    assert missing_weights(settings)[-1] == message


def test_tag_cached_loads_offline_with_the_tags_settings(
    tiny_settings, tiny_tag, tiny_clip, tiny_weights, empty_cache, no_download
):
    put_in_hub_cache(tiny_clip, empty_cache)
    shutil.copy(tiny_weights["sam"], empty_cache / SAM_FILE)
    settings = tiny_settings.replace(clip_pretrained=tiny_tag, cache_dir=str(empty_cache))

    assert missing_weights(settings) == []
    bundle = load_clip(settings, "cpu")

    assert same_state(bundle.model.state_dict(), tiny_clip.state_dict())
    assert uses_quick_gelu(bundle.model)
    assert bundle.image_mean == (0.5, 0.5, 0.5) and bundle.image_std == (0.25, 0.25, 0.25)


def test_tag_is_fetched_with_open_clip_when_online(
    tiny_settings, tiny_tag, tiny_clip, tiny_weights, empty_cache, monkeypatch
):
    calls = []

    def download_pretrained(cfg: dict, cache_dir: str) -> str:
        calls.append((cfg["hf_hub"], cache_dir))
        return str(tiny_weights["clip"])

    monkeypatch.setattr(open_clip, "download_pretrained", download_pretrained)
    settings = tiny_settings.replace(
        clip_pretrained=tiny_tag, cache_dir=str(empty_cache), offline=False
    )

    bundle = load_clip(settings, "cpu")

    assert calls == [(f"{TINY_REPO}/", str(empty_cache))]
    assert same_state(bundle.model.state_dict(), tiny_clip.state_dict())


def test_tag_download_failure_is_a_weights_error(tiny_settings, tiny_tag, empty_cache, monkeypatch):
    def download_pretrained(cfg: dict, cache_dir: str) -> str:
        raise FileNotFoundError("Failed to download file (open_clip_pytorch_model.bin)")

    monkeypatch.setattr(open_clip, "download_pretrained", download_pretrained)
    settings = tiny_settings.replace(
        clip_pretrained=tiny_tag, cache_dir=str(empty_cache), offline=False
    )

    with pytest.raises(WeightsError, match=f"Could not download .*{TINY_TAG}.*clip_pretrained"):
        load_clip(settings, "cpu")


def test_unknown_tag_lists_the_known_ones(tiny_settings, tiny_tag, no_download):
    settings = tiny_settings.replace(clip_pretrained="laion9000")

    with pytest.raises(WeightsError, match=f"neither a file nor .*Tags: {TINY_TAG}"):
        load_clip(settings, "cpu")
    assert "laion9000" in missing_weights(settings)[0]


class TouchesAFile:
    """Unpickling this runs code: it creates ``marker`` (what an attacker's file would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("setting", ["sam_checkpoint", "clip_pretrained", "ovseg_checkpoint"])
def test_a_checkpoint_that_would_run_code_is_refused_and_runs_none(
    tiny_settings, tmp_path, setting
):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": TouchesAFile(marker)}, path)
    settings = tiny_settings.replace(**{setting: str(path)})
    with pytest.raises(WeightsError) as err:
        (load_sam if setting == "sam_checkpoint" else load_clip)(settings, "cpu")
    assert not marker.exists()  # the property: no code from the file ran
    assert "not loaded for safety" in str(err.value)
    # Control: an ordinary unpickling of the same file does run the payload.
    torch.load(path, weights_only=False)
    assert marker.exists()
