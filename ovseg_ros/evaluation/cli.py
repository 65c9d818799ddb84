"""ovseg-eval: score the pipeline on a segmentation dataset, print a table, write JSON.

ovseg-eval --dataset ade20k-150 --root ~/data/ADEChallengeData2016 --out eval/
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ..settings.config import Settings, SettingsError
from ..settings.params_file import settings_from_yaml
from .datasets import DATASETS, Dataset, DatasetError
from .evaluate import DatasetShard, score, segment_samples, table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ovseg-eval", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument(
        "--root",
        required=True,
        help="the dataset's folder, e.g. ADEChallengeData2016 or VOCdevkit/VOC2010",
    )
    parser.add_argument("--out", default="eval", help="folder for <dataset>.json (default: eval)")
    parser.add_argument("--config", help="YAML settings (flat, or config/params.yaml)")
    parser.add_argument(
        "--limit", type=int, default=0, help="score only the first N images (0: all)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--ray",
        metavar="auto|ADDRESS",
        help="shard the images over a Ray "
        "cluster, one model replica per GPU ('auto': a running cluster or a "
        "local one)",
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    settings: Settings | None = None,
    setup: Callable[[], None] | None = None,
) -> int:
    """``settings`` (for tests and scripts) replaces --config; ``setup`` runs in each Ray
    replica before it builds its models (e.g. to register a model config)."""
    args = build_parser().parse_args(argv)
    try:
        if settings is None:
            settings = settings_from_yaml(args.config) if args.config else Settings()
        dataset = Dataset(args.dataset, args.root)
    except (SettingsError, DatasetError) as err:
        print(f"ovseg-eval: error: {err}", file=sys.stderr)
        return 2

    from ..models.weights import WeightsError, missing_weights

    missing = missing_weights(settings)
    if missing:
        print(
            "ovseg-eval: error: weights are missing:\n"
            + "\n".join(f"  - {line}" for line in missing),
            file=sys.stderr,
        )
        return 2
    indices = range(min(args.limit, len(dataset)) if args.limit > 0 else len(dataset))
    failures: tuple[type[Exception], ...] = (DatasetError,)
    if args.ray:
        from ..segmentation.scale import ScaleError, run_sharded

        failures = (DatasetError, ScaleError)

        def describe(shard: list[int]) -> str:
            return "images " + ", ".join(dataset.samples[i].name for i in shard)

        results = run_sharded(
            args.ray,
            settings,
            DatasetShard(args.dataset, str(args.root)),
            len(indices),
            progress=not args.quiet,
            setup=setup,
            describe=describe,
        )
    else:
        from ..segmentation.pipeline import Segmenter

        try:
            segmenter = Segmenter(settings)
        except WeightsError as err:
            print(f"ovseg-eval: error: {err}", file=sys.stderr)
            return 2
        results = segment_samples(segmenter, dataset, indices)
        if not args.quiet:
            from tqdm import tqdm

            results = tqdm(results, total=len(indices), unit="image")
    try:
        report = score(dataset, results)
    except failures as err:
        print(f"ovseg-eval: error: {err}", file=sys.stderr)
        return 2
    report.settings = dataclasses.asdict(settings)
    print(table(report))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{dataset.spec.key}.json").write_text(json.dumps(report.to_json(), indent=2))
    print(f"results in {out / dataset.spec.key}.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
