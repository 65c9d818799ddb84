"""Set-up of the tests' Ray workers (runtime_env ``worker_process_setup_hook``).

Each worker registers the tiny CLIP (folder in OVSEG_TEST_CLIP_CONFIGS) and gets failures
injected by input name, in the worker only (the test process reads normally):
- an image or dataset image whose stem contains ``poison`` raises on every read, one whose
  stem contains ``flaky`` on its first read only; each read of such a file appends a line
  to ``<file>.attempts``;
- a bag whose folder name contains ``poison`` raises after it was segmented (so a partial
  output bag exists when the failure happens).
"""

from __future__ import annotations

import os
from pathlib import Path


class InjectedFailure(RuntimeError):
    pass


def install() -> None:
    import tiny_models

    from ovseg_ros.evaluation import evaluate
    from ovseg_ros.offline import bag_writer, inputs

    tiny_models.register_tiny_clip(Path(os.environ["OVSEG_TEST_CLIP_CONFIGS"]))
    inputs.read_image = _failing_read(inputs.read_image)
    evaluate.read_image = _failing_read(evaluate.read_image)
    bag_writer.segment_bag = _failing_bag(bag_writer.segment_bag)


def attempts(path: Path) -> int:
    """How many times a worker tried to read ``path``."""
    log = path.with_name(path.name + ".attempts")
    return len(log.read_text().splitlines()) if log.exists() else 0


def _failing_read(read):
    def read_or_fail(path):
        path = Path(path)
        if "poison" in path.stem or "flaky" in path.stem:
            with open(path.with_name(path.name + ".attempts"), "a") as log:
                log.write("read\n")
            tries = attempts(path)
            if "poison" in path.stem or tries == 1:
                raise InjectedFailure(f"injected failure reading {path.name} (try {tries})")
        return read(path)

    return read_or_fail


def _failing_bag(segment_bag):
    def segment_or_fail(segmenter, encoded, in_bag, *args, **kwargs):
        stats = segment_bag(segmenter, encoded, in_bag, *args, **kwargs)
        if "poison" in Path(in_bag).name:
            raise InjectedFailure(f"injected failure after segmenting {Path(in_bag).name}")
        return stats

    return segment_or_fail
