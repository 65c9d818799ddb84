"""Scale-out on Ray: one Segmenter replica per GPU (or one on a CPU-only cluster), inputs
sharded, results gathered back in input order, a failed shard retried (a bounded number of
times) on another replica, then reported while the other shards' results still come back.

Ray is an optional extra (``pip install ovseg_ros[ray]``) and is imported only here, only
when ``--ray`` is given.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..settings.config import Settings


class ScaleError(RuntimeError):
    """Ray is missing, the cluster cannot be reached, or shards failed after their retries."""


class ShardsFailed(ScaleError):
    """Shards failed after their retries; ``failures``: one line per shard, with its error.
    Raised after every other shard's items were yielded."""

    def __init__(self, failures: list[str], tries: int):
        self.failures = failures
        super().__init__(
            f"{len(failures)} shard(s) failed {tries} time(s), their outputs are "
            "missing:\n" + "\n".join(f"  - {f}" for f in failures)
        )


def connect(address: str) -> Any:
    """``ray`` after ray.init: 'auto' joins RAY_ADDRESS or a running cluster, else starts a
    local one; anything else is a cluster address. An already initialised Ray is kept."""
    try:
        import ray
    except ImportError:
        raise ScaleError("--ray needs Ray: pip install 'ovseg_ros[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(
                address=None if address == "auto" else address,
                include_dashboard=False,
                log_to_driver=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise ScaleError(f"cannot reach the Ray cluster at {address!r}: {err}") from None
    return ray


def replicas(ray: Any) -> tuple[int, float]:
    """(number of replicas, GPUs each): one per GPU in the cluster, else one on CPUs."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    return (gpus, 1.0) if gpus else (1, 0.0)


class _Replica:
    """The Ray actor: a Segmenter built once, then ``work(segmenter, shard)`` per shard."""

    def __init__(self, settings: Settings, setup: Callable[[], None] | None = None):
        if setup is not None:
            setup()
        from .pipeline import Segmenter

        self.segmenter = Segmenter(
            settings.replace(
                device="cuda"
                if settings.device in ("auto", "cuda") and _has_cuda()
                else settings.device
            )
        )

    def run(self, work: Callable, shard: Sequence[int]) -> list:
        """``work(segmenter, shard)`` on this replica: one result per index in the shard."""
        return work(self.segmenter, shard)


_ENCODED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def encoded_once(segmenter: Any, vocabulary: Any) -> Any:
    """``segmenter.encode_vocabulary(vocabulary)``, computed once per replica: every shard's
    outputs then carry the vocabulary version of the single-process run (each encode counts
    the version up)."""
    per_replica = _ENCODED.setdefault(segmenter, {})
    if vocabulary not in per_replica:
        per_replica[vocabulary] = segmenter.encode_vocabulary(vocabulary)
    return per_replica[vocabulary]


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def shards(count: int, parts: int) -> list[list[int]]:
    """0..count-1 in ``parts`` contiguous runs of near-equal size (none empty)."""
    parts = max(1, min(parts, count))
    size, extra = divmod(count, parts)
    out, start = [], 0
    for k in range(parts):
        end = start + size + (1 if k < extra else 0)
        out.append(list(range(start, end)))
        start = end
    return out


def run_sharded(
    address: str,
    settings: Settings,
    work: Callable,
    count: int,
    *,
    shard_size: int = 8,
    retries: int = 1,
    progress: bool = True,
    unit: str = "image",
    describe: Callable[[list[int]], str] | None = None,
    setup: Callable[[], None] | None = None,
) -> Iterator:
    """Yield ``work(segmenter, shard)``'s items for shards of 0..count-1, in index order.

    ``work`` must be picklable and return one item per index of its shard. A shard whose
    task fails is retried up to ``retries`` times, each on the next replica (a replica whose
    process died is restarted). A shard that still fails is left out and the others go on;
    after the last item, ScaleError names every failed shard (``describe(shard)``, default
    its index range) with its last error.
    """
    ray = connect(address)
    count_replicas, gpus = replicas(ray)
    actor = ray.remote(num_gpus=gpus, num_cpus=0 if gpus else 1, max_restarts=retries)(_Replica)
    pool = [actor.remote(settings, setup) for _ in range(count_replicas)]
    describe = describe or (lambda shard: f"{unit}s {shard[0]}..{shard[-1]}")
    pending = {}
    todo = shards(count, max(1, -(-count // shard_size)))
    tries = dict.fromkeys(range(len(todo)), 0)
    done: dict[int, list] = {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=count, unit=unit)

    def submit(k: int) -> None:
        replica = pool[(k + tries[k]) % len(pool)]
        pending[replica.run.remote(work, todo[k])] = k
        tries[k] += 1

    for k in range(len(todo)):
        submit(k)
    failures = []
    next_out = 0
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            k = pending.pop(ready[0])
            try:
                done[k] = ray.get(ready[0])
            except Exception as err:  # a task or actor error: Ray's exceptions vary
                if tries[k] <= retries:
                    submit(k)
                    continue
                failures.append(f"{describe(todo[k])}: {_cause(err)}")
                done[k] = []
            if bar is not None:
                bar.update(len(todo[k]))
            while next_out in done:
                yield from done.pop(next_out)
                next_out += 1
    finally:
        if bar is not None:
            bar.close()
        for replica in pool:
            ray.kill(replica)
    if failures:
        raise ShardsFailed(failures, retries + 1)


def _cause(err: Exception) -> str:
    """The worker's own exception for a task error (Ray wraps it), else Ray's message."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    return f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
