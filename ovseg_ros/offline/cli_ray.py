"""ovseg-segment --ray: the inputs sharded one per shard over scale.run_sharded.

Each replica writes where the single-process run would: a bag out at its final path; frame
files first into a staging folder ``<out>/.ovseg-part-<input index>/`` under the names the
input alone would give, which the driver then moves into ``<out>`` in input order, claiming
names with the run's OutputNames. So names and files are the single-process run's, and a
shard that is retried starts from an empty staging folder. The output folder must be one
that every Ray node writes (this machine, or a shared file system), and a --depth folder
one that every Ray node reads. A bag or video is one stream, tracked (and paired with its
depth) within its shard as in the single-process run; run.refuse_over_ray refuses, before the
models load, what a shard cannot do alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..segmentation.scale import encoded_once
from ..segmentation.vocabulary import Vocabulary
from ..settings.config import Settings
from .bag_depth import BagDepth
from .inputs import OutputNames, frames_of
from .run import FrameOutcome, SceneOptions, segment_frames, summary, tally
from .writing import output_paths


def staging_dir(out: Path, index: int) -> Path:
    return out / f".ovseg-part-{index:06d}"


def _fresh(path: Path) -> None:
    """Remove what an earlier try of this shard left (main refuses outputs that exist)."""
    if path.is_dir():
        shutil.rmtree(path)


@dataclasses.dataclass(frozen=True)
class FileShard:
    """Picklable work: segment whole inputs, each into its staging folder.

    Returns (input index, that input's FrameOutcomes) per index."""

    paths: tuple[Path, ...]
    bag_topics: dict[Path, tuple[str, int]]
    pairings: dict[Path, BagDepth]
    scene: SceneOptions
    vocabulary: Vocabulary
    out: Path

    def __call__(self, segmenter, indices: list[int]) -> list[tuple[int, list[FrameOutcome]]]:
        encoded = encoded_once(segmenter, self.vocabulary)
        done = []
        for index in indices:
            staging = staging_dir(self.out, index)
            _fresh(staging)
            staging.mkdir(parents=True)
            frames = frames_of([self.paths[index]], self.bag_topics, self.pairings)
            done.append(
                (index, list(segment_frames(segmenter, encoded, frames, staging, self.scene)))
            )
        return done


@dataclasses.dataclass(frozen=True)
class BagShard:
    """Picklable work: segment whole input bags, each into its output bag.

    Returns (input index, BagStats) per index."""

    bags: tuple[Path, ...]
    topics: tuple[str, ...]
    pairings: tuple[BagDepth | None, ...]
    outs: tuple[Path, ...]
    vocabulary: Vocabulary
    storage: str
    write_overlay: bool
    passthrough: bool

    def __call__(self, segmenter, indices: list[int]) -> list[tuple[int, object]]:
        from .bag_writer import BagWriter, segment_bag

        encoded = encoded_once(segmenter, self.vocabulary)
        done = []
        for index in indices:
            path = self.outs[index]
            _fresh(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                pairing = self.pairings[index]
                with BagWriter(
                    path,
                    storage=self.storage,
                    write_overlay=self.write_overlay,
                    write_3d=pairing is not None,
                ) as writer:
                    segment_bag(
                        segmenter,
                        encoded,
                        self.bags[index],
                        self.topics[index],
                        writer,
                        self.passthrough,
                        pairing,
                    )
            except BaseException:
                shutil.rmtree(path, ignore_errors=True)  # no half bag left for a failed shard
                raise
            done.append((index, writer.stats))
        return done


def gather_files(
    items: Iterator[tuple[int, list[FrameOutcome]]], out: Path
) -> Iterator[FrameOutcome]:
    """Move each input's staged files into ``out`` under the run's unique names, in input
    order; the outcomes with their final names (a move that fails is a 'failed' one)."""
    names = OutputNames()
    for index, outcomes in items:
        staging = staging_dir(out, index)
        for outcome in outcomes:
            final = names.claim_logged(outcome.name, outcome.source)
            if outcome.status == "written":
                moved = []
                try:
                    for source, target in zip(
                        output_paths(staging, outcome.name), output_paths(out, final)
                    ):
                        source.replace(target)
                        moved.append(target)
                except OSError as err:
                    for path in moved:  # none of a frame's files, as in write_outputs
                        path.unlink(missing_ok=True)
                    hint = (
                        " (--out must be a folder every Ray node shares)"
                        if isinstance(err, FileNotFoundError)
                        else ""
                    )
                    outcome = dataclasses.replace(
                        outcome,
                        status="failed",
                        detail=f"cannot write {target}: {err.strerror or err}{hint}",
                    )
            yield dataclasses.replace(outcome, name=final)
        shutil.rmtree(staging, ignore_errors=True)


def segment_over_ray(
    args: argparse.Namespace,
    settings: Settings,
    vocabulary: Vocabulary,
    paths: Sequence[Path],
    bag_topics: dict[Path, tuple[str, int]],
    pairings: dict[Path, BagDepth],
    scene: SceneOptions,
) -> int:
    """main's --ray branch: 0 when every input was processed and wrote a frame, 1 when a
    shard failed (named on stderr, the others written) or nothing was written, 2 when Ray
    is missing or its cluster cannot be reached."""
    from ..segmentation.scale import ScaleError, ShardsFailed, run_sharded

    def describe(shard: list[int]) -> str:
        return ", ".join(str(paths[i]) for i in shard)

    failed_shards: list[ShardsFailed] = []

    def sharded(work) -> Iterator:
        try:
            yield from run_sharded(
                args.ray,
                settings,
                work,
                len(paths),
                shard_size=1,
                progress=not args.quiet and len(paths) > 1,
                unit="input",
                describe=describe,
            )
        except ShardsFailed as err:
            failed_shards.append(err)

    try:
        if args.bag_out:
            ok = _bags_over_ray(args, sharded, vocabulary, paths, bag_topics, pairings)
        else:
            ok = _files_over_ray(args, sharded, vocabulary, paths, bag_topics, pairings, scene)
    except ScaleError as err:
        print(f"ovseg-segment: error: {err}", file=sys.stderr)
        return 2
    for err in failed_shards:
        print(f"ovseg-segment: error: {err}", file=sys.stderr)
    return 0 if ok and not failed_shards else 1


def _bags_over_ray(args, sharded, vocabulary, paths, bag_topics, pairings) -> bool:
    from .bag_writer import bag_out_paths

    work = BagShard(
        tuple(paths),
        tuple(bag_topics[p][0] for p in paths),
        tuple(pairings.get(p) for p in paths),
        tuple(bag_out_paths(list(paths), Path(args.bag_out))),
        vocabulary,
        args.bag_storage,
        args.bag_overlay,
        args.bag_passthrough,
    )
    frames = []
    for _, stats in sharded(work):
        print(stats.summary(), file=sys.stderr)
        frames.append(stats.frames)
    return bool(frames) and all(frames)


def _files_over_ray(args, sharded, vocabulary, paths, bag_topics, pairings, scene) -> bool:
    out = Path(args.out)
    try:
        timings, skipped, failed, unlocated = tally(
            gather_files(
                sharded(
                    FileShard(
                        tuple(paths), dict(bag_topics), dict(pairings), scene, vocabulary, out
                    )
                ),
                out,
            )
        )
    finally:
        for index in range(len(paths)):
            shutil.rmtree(staging_dir(out, index), ignore_errors=True)
    print(summary(timings, skipped, failed, unlocated), file=sys.stderr)
    print(f"outputs in {out}/", file=sys.stderr)
    return bool(timings) and not failed
