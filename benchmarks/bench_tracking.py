"""Tracking quality on synthetic sequences with ground-truth identities (MOTA, IDF1, ID
switches by py-motmetrics): the mask-IoU tracker this package had (reference/iou_tracker.py)
and the current one (ovseg_ros/scene/tracking.py: motion, appearance, re-identification) side by
side on the same frames. Ground-truth masks are the detections, so only the ids are scored.

    python benchmarks/bench_tracking.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # reference/
sys.path.append(str(Path(__file__).resolve().parent))

from tracking_sequences import SEQUENCES, score

from ovseg_ros.scene.tracking import Tracker
from reference.iou_tracker import ReferenceTracker


def run(name: str) -> dict[str, dict[str, float]]:
    """Both trackers' scores on one sequence."""
    build, _ = SEQUENCES[name]
    frames = build()
    old, new = ReferenceTracker(), Tracker()
    return {
        "iou tracker": score(frames, lambda f: old.update(f.instance_map, f.labels)),
        "new tracker": score(
            frames,
            lambda f: new.update(
                f.instance_map,
                f.labels,
                boxes=f.boxes,
                embeddings=f.embeddings,
                centroids=f.centroids,
                stamp=f.stamp,
            ),
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)
    results = {name: run(name) for name in SEQUENCES}
    header = f"{'sequence':38s} {'target':26s} | {'IoU tracker':^22s} | {'new tracker':^22s}"
    print(header)
    print(f"{'':38s} {'':26s} | {'MOTA   IDF1   switches':22s} | {'MOTA   IDF1   switches':22s}")
    print("-" * len(header))
    for name, (_, target) in SEQUENCES.items():
        cells = [
            f"{r['mota']:5.2f}  {r['idf1']:5.2f}  {r['switches']:8d}"
            for r in results[name].values()
        ]
        print(f"{name:38s} {target:26s} | {cells[0]:22s} | {cells[1]:22s}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
