"""ovseg-segment: the pipeline without ROS, on images, folders, globs, videos and rosbag2 bags.

The arguments and the settings they give, then the run: inputs.py reads the frames, run.py
segments, places and writes them (writing.py), bag_writer.py writes bags instead, and
cli_ray.py spreads a run over Ray.
"""

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ..scene.geometry import DepthError
from ..segmentation.vocabulary import Vocabulary, VocabularyError
from ..segmentation.vocabulary_text import decode_names_file, parse_names
from ..settings.config import Settings, SettingsError, settings_fields
from ..settings.params_file import settings_from_yaml
from .inputs import InputError, bag_inputs, count_frames, expand_inputs, read_frames
from .run import scene_options, segment_frames, summary, tally
from .writing import prepare_out_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ovseg-segment",
        description="Open-vocabulary segmentation (SAM proposals + mask-adapted CLIP) of "
        "images, folders, globs, videos and rosbag2 bags.",
    )
    parser.add_argument(
        "inputs", nargs="+", help="image files, folders, globs, videos or rosbag2 bag folders"
    )
    parser.add_argument(
        "--topic",
        help="image topic to read from rosbag2 bags (default: "
        "the bag's only sensor_msgs/Image or CompressedImage topic)",
    )
    vocab = parser.add_mutually_exclusive_group(required=True)
    vocab.add_argument("--vocab", help="comma separated classes, e.g. 'mug, kettle, person'")
    vocab.add_argument("--vocab-file", help="file with one class per line (or commas)")
    parser.add_argument("--out", default="out", help="output folder (default: out)")
    parser.add_argument(
        "--config",
        help="YAML settings: a flat mapping, or a ROS 2 params "
        "file such as config/params.yaml (the sections for --node-name)",
    )
    parser.add_argument(
        "--node-name",
        default="ovseg",
        help="whose sections of a ROS 2 "
        "params file --config reads (default: ovseg, the node's name)",
    )
    parser.add_argument("--stuff", help="comma separated classes that are stuff (regions)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--ray",
        metavar="auto|ADDRESS",
        help="process the inputs (one per "
        "shard) over a Ray cluster, one model replica per GPU ('auto': a "
        "running cluster or a local one); --out / --bag-out must be a folder "
        "every Ray node can write",
    )
    bag = parser.add_argument_group("bag out (inputs must be bags)")
    bag.add_argument(
        "--bag-out",
        metavar="DIR",
        help="write a rosbag2 bag with the node's "
        "output topics instead of files (several input bags: DIR/<name> each)",
    )
    bag.add_argument("--bag-storage", choices=["mcap", "sqlite3"], default="mcap")
    bag.add_argument("--bag-overlay", action="store_true", help="also write /ovseg/overlay")
    bag.add_argument(
        "--bag-passthrough",
        action="store_true",
        help="also copy the input image topic into the bag",
    )
    scene = parser.add_argument_group(
        "3D (--depth: image files, folders and videos; "
        "--depth-topic: bags; tracking: --track below)"
    )
    scene.add_argument(
        "--depth",
        metavar="DIR",
        help="depth images registered to the colour "
        "frames: DIR/<output name>.png (16-bit, units of --depth-scale), .tiff "
        "or .npy (float metres); needs --camera-info",
    )
    scene.add_argument(
        "--camera-info",
        metavar="FILE",
        help="calibration YAML of the colour "
        "camera (camera_calibration's file, or a CameraInfo with k: [...])",
    )
    scene.add_argument(
        "--depth-topic",
        metavar="TOPIC",
        help="the bags' sensor_msgs/Image "
        "depth topic registered to the colour topic (16UC1 in units of "
        "--depth-scale, or 32FC1 metres), paired by nearest stamp within "
        "--sync-slop",
    )
    scene.add_argument(
        "--camera-info-topic",
        metavar="TOPIC",
        help="the colour camera's "
        "CameraInfo topic (default: the colour topic's sibling camera_info)",
    )
    settings = parser.add_argument_group(
        "settings (defaults from config/params.yaml values; see the README)"
    )
    for f in settings_fields():
        if f.name in ("vocabulary", "stuff_classes"):
            continue
        flag = "--" + f.name.replace("_", "-")
        kwargs = dict(dest=f.name, default=argparse.SUPPRESS, help=f.metadata["description"])
        if f.type == "bool":
            settings.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            settings.add_argument(
                flag,
                type={"int": int, "float": float}.get(f.type, str),
                choices=f.metadata.get("choices"),
                **kwargs,
            )
    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    overrides = {f.name: getattr(args, f.name) for f in settings_fields() if hasattr(args, f.name)}
    if args.stuff:
        overrides["stuff_classes"] = [name for name in parse_names(args.stuff, "--stuff ") if name]
    if args.config:
        return settings_from_yaml(args.config, node_name=args.node_name, **overrides)
    return Settings().replace(**overrides)


def read_vocabulary(args: argparse.Namespace, settings: Settings) -> Vocabulary:
    text = args.vocab
    if args.vocab_file:
        try:
            data = Path(args.vocab_file).read_bytes()
        except OSError as err:
            raise VocabularyError(
                f"cannot read --vocab-file {args.vocab_file}: {err.strerror}"
            ) from None
        text = decode_names_file(data, f"--vocab-file {args.vocab_file}")
    return Vocabulary.from_settings(text, settings)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args)
        vocabulary = read_vocabulary(args, settings)
        paths = expand_inputs(args.inputs)
        scene = scene_options(args, settings, paths)
        bag_topics, pairings = bag_inputs(args, settings, paths)
        if args.bag_out:
            from .bag_writer import bag_out_paths

            taken = [str(p) for p in bag_out_paths(paths, Path(args.bag_out)) if p.exists()]
            if taken:
                raise InputError(
                    f"{', '.join(taken)} exists; rosbag2 writes a new folder: "
                    "remove it or choose another --bag-out"
                )
        total = count_frames(paths, bag_topics)
        out = Path(args.out)
        if not args.bag_out:
            prepare_out_dir(out)
    except (SettingsError, VocabularyError, InputError, DepthError) as err:
        print(f"ovseg-segment: error: {err}", file=sys.stderr)
        return 2

    from ..models.weights import WeightsError, missing_weights
    from ..segmentation.pipeline import Segmenter

    missing = missing_weights(settings)
    if missing:
        print(
            "ovseg-segment: error: weights are missing:\n"
            + "\n".join(f"  - {line}" for line in missing),
            file=sys.stderr,
        )
        return 2
    if args.ray:
        from .cli_ray import segment_over_ray

        return segment_over_ray(args, settings, vocabulary, paths, bag_topics, pairings, scene)
    try:
        segmenter = Segmenter(settings)
    except WeightsError as err:
        print(f"ovseg-segment: error: {err}", file=sys.stderr)
        return 2
    encoded = segmenter.encode_vocabulary(vocabulary)
    if args.bag_out:
        from .bag_writer import write_bags

        stats = write_bags(
            segmenter,
            encoded,
            {p: t for p, (t, _) in bag_topics.items()},
            Path(args.bag_out),
            storage=args.bag_storage,
            write_overlay=args.bag_overlay,
            passthrough=args.bag_passthrough,
            pairings=pairings,
        )
        return 0 if all(s.frames for s in stats) else 1

    frames = read_frames(paths, bag_topics, pairings)
    if total > 1 and not args.quiet:
        from tqdm import tqdm

        frames = tqdm(frames, total=total, unit="frame")
    timings, skipped, failed, unlocated = tally(
        segment_frames(segmenter, encoded, frames, out, scene)
    )
    print(summary(timings, skipped, failed, unlocated), file=sys.stderr)
    print(f"outputs in {out}/", file=sys.stderr)
    return 0 if timings and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
