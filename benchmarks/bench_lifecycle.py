"""Memory a managed node gives back at cleanup: the process's resident set (and CUDA's
allocated memory, when the models are on a GPU) before configure, after configure, after
cleanup, over two configure/cleanup cycles, with SAM vit_b and CLIP ViT-B-16 (random weights
of the real architectures: these machines have no real ones; memory depends on shapes).
Needs a sourced ROS 2 and the package built by colcon (rclpy.lifecycle):

    python3 benchmarks/bench_lifecycle.py --device cpu
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))  # workload.py

import torch

from ovseg_ros.settings.config import Settings

MIB = 2**20


def resident_mib() -> float:
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return kib / 1024


def cuda_mib() -> float:
    return torch.cuda.memory_allocated() / MIB if torch.cuda.is_available() else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cycles", type=int, default=2)
    args = parser.parse_args()

    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from workload import load_models

    from ovseg_ros.node.lifecycle_node import OvsegLifecycleNode
    from ovseg_ros.segmentation.pipeline import Segmenter

    def random_segmenter(settings: Settings) -> Segmenter:
        device = torch.device(args.device)
        models = load_models(settings, device, random_weights=True, mask_prompt=False)
        return Segmenter(settings, sam=models.sam, clip=models.clip)

    rclpy.init(args=["bench", "--ros-args", "-p", f"device:={args.device}"])
    node = OvsegLifecycleNode(make_segmenter=random_segmenter)
    gc.collect()
    rows = [("before configure", resident_mib(), cuda_mib())]
    for cycle in range(1, args.cycles + 1):
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        gc.collect()
        rows.append((f"configured ({cycle})", resident_mib(), cuda_mib()))
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        gc.collect()
        rows.append((f"cleaned up ({cycle})", resident_mib(), cuda_mib()))
    node.destroy_node()
    rclpy.try_shutdown()
    print(f"device {args.device}; SAM vit_b + CLIP ViT-B-16, random weights")
    print(f"{'':22s}{'RSS MiB':>10s}{'CUDA MiB':>10s}")
    for name, rss, cuda in rows:
        print(f"{name:22s}{rss:10.0f}{cuda:10.0f}")
    loaded = rows[1][1] - rows[0][1]
    freed = rows[1][1] - rows[2][1]
    print(
        f"configure added {loaded:.0f} MiB; cleanup gave back {freed:.0f} MiB "
        f"({100 * freed / max(loaded, 1e-9):.0f} %)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
