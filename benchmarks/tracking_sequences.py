"""Synthetic tracking sequences with ground-truth identities, and their MOT scores.

Each sequence is a list of frames; a frame holds what the tracker gets from the segmenter
(instance image, class names, boxes, unit embeddings, a stamp) and the ground-truth object
of each instance. Objects are discs (and walls) painted in order, so later ones hide earlier
ones. The ground-truth masks are the detections, so only the assignment of ids is scored.

Appearance: each object has a fixed unit vector that shares a component with the other
objects of its class (cosine about 0.55 between two objects of one class, as CLIP
embeddings of two mugs are alike), plus fresh noise in each frame (cosine about 0.93 to its
own vector).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

HEIGHT, WIDTH = 120, 200
DIMENSION = 512
FPS = 30.0


@dataclass
class Frame:
    instance_map: np.ndarray
    labels: list[str]
    boxes: np.ndarray  # [N, 4] x, y, width, height
    embeddings: np.ndarray  # [N, D]
    truth: list[int]  # ground-truth object of each instance
    stamp: float
    centroids: np.ndarray | None = None


@dataclass
class Scene:
    """Objects of a sequence: class name and appearance per object id."""

    seed: int
    labels: dict[int, str] = field(default_factory=dict)
    vectors: dict[int, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)
        self._class_vectors: dict[str, np.ndarray] = {}

    def add(self, obj: int, label: str, like: int | None = None) -> None:
        """Object ``obj`` of class ``label``; ``like``: nearly the same appearance as it."""
        self.labels[obj] = label
        if like is not None:
            self.vectors[obj] = _unit(self.vectors[like] + 0.01 * self.rng.normal(size=DIMENSION))
            return
        if label not in self._class_vectors:
            self._class_vectors[label] = _unit(self.rng.normal(size=DIMENSION))
        own = _unit(self.rng.normal(size=DIMENSION))
        self.vectors[obj] = _unit(0.75 * self._class_vectors[label] + 0.68 * own)

    def frame(self, shapes: list[tuple[int, np.ndarray]], index: int) -> Frame:
        """A frame from (object, [H, W] bool mask) pairs in paint order; objects left with no
        pixel are not detected."""
        painted = np.zeros((HEIGHT, WIDTH), np.int32)
        for obj, mask in shapes:
            painted[mask] = obj
        visible = [obj for obj, _ in shapes if (painted == obj).any()]
        visible = list(dict.fromkeys(visible))
        instance_map = np.zeros((HEIGHT, WIDTH), np.uint16)
        boxes = []
        for number, obj in enumerate(visible, start=1):
            where = painted == obj
            instance_map[where] = number
            rows, cols = np.nonzero(where)
            boxes.append(
                (cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1)
            )
        noise = 0.018 * self.rng.normal(size=(len(visible), DIMENSION))
        embeddings = np.array([_unit(self.vectors[obj] + n) for obj, n in zip(visible, noise)])
        return Frame(
            instance_map,
            [self.labels[obj] for obj in visible],
            np.array(boxes, dtype=np.float64).reshape(-1, 4),
            embeddings.reshape(len(visible), DIMENSION),
            visible,
            index / FPS,
        )


def disc(x: float, y: float, radius: float) -> np.ndarray:
    rows, cols = np.ogrid[:HEIGHT, :WIDTH]
    return (cols - x) ** 2 + (rows - y) ** 2 <= radius**2


def rectangle(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    return mask


# ------------------------------------------------------------------ the sequences
def crossing() -> list[Frame]:
    """Two mugs cross at 3 px/frame each; where their centres meet one hides the other for
    one frame."""
    scene = Scene(1)
    scene.add(1, "mug")
    scene.add(2, "mug")
    return [
        scene.frame([(2, disc(20 + 3 * t, 60, 8)), (1, disc(140 - 3 * t, 60, 8))], t)
        for t in range(41)
    ]


def occlusion(hidden: int) -> Callable[[], list[Frame]]:
    def sequence() -> list[Frame]:
        """A mug vanishes for ``hidden`` frames and comes back where it was; another mug
        and a book stay in view."""
        scene = Scene(2 + hidden)
        scene.add(1, "mug")
        scene.add(2, "mug")
        scene.add(3, "book")
        frames = []
        for t in range(10 + hidden + 10):
            shapes = [(2, disc(150, 40, 10)), (3, rectangle(20, 80, 60, 110))]
            if not 10 <= t < 10 + hidden:
                shapes.append((1, disc(60 + 0.2 * t, 40, 10)))
            frames.append(scene.frame(shapes, t))
        return frames

    sequence.__doc__ = f"A mug hidden for {hidden} frames comes back where it was."
    return sequence


def fast_mover() -> list[Frame]:
    """A ball of radius 5 crossing the image at 12 px/frame (no overlap between frames),
    another ball still."""
    scene = Scene(3)
    scene.add(1, "ball")
    scene.add(2, "ball")
    return [
        scene.frame([(2, disc(100, 95, 5)), (1, disc(8 + 12 * t, 40, 5))], t) for t in range(16)
    ]


def camera_pan() -> list[Frame]:
    """Six objects (two of each class); at frame 10 the camera pans: everything shifts
    40 px at once."""
    scene = Scene(4)
    places = {
        1: ("mug", 30, 30),
        2: ("mug", 80, 30),
        3: ("book", 40, 80),
        4: ("book", 95, 85),
        5: ("chair", 130, 40),
        6: ("chair", 150, 90),
    }
    for obj, (label, _, _) in places.items():
        scene.add(obj, label)
    frames = []
    for t in range(20):
        shift = -40 if t >= 10 else 0
        frames.append(
            scene.frame([(obj, disc(x + shift + 40, y, 9)) for obj, (_, x, y) in places.items()], t)
        )
    return frames


def sliver() -> list[Frame]:
    """A mug slides behind a wall until a 2 px sliver shows, then slides back out."""
    scene = Scene(5)
    scene.add(1, "mug")
    scene.add(2, "wall")
    path = list(range(60, 115, 3)) + [114] + list(range(111, 57, -3))  # 114: 2 px show
    wall = rectangle(104, 0, 200, 120)
    return [scene.frame([(1, disc(x, 60, 12)), (2, wall)], t) for t, x in enumerate(path)]


def dropped_detections() -> list[Frame]:
    """Eight objects drifting smoothly; each detection is dropped with probability 0.1."""
    scene = Scene(6)
    rng = np.random.default_rng(60)
    classes = ["mug", "mug", "book", "book", "chair", "chair", "ball", "ball"]
    for obj, label in enumerate(classes, start=1):
        scene.add(obj, label)
    start = np.array([(25 + 50 * (k % 4), 30 + 60 * (k // 4)) for k in range(8)], float)
    velocity = rng.normal(0, 0.8, (8, 2))
    frames = []
    for t in range(60):
        position = start + velocity * t
        shapes = [(obj, disc(*position[obj - 1], 8)) for obj in range(1, 9) if rng.random() >= 0.1]
        frames.append(scene.frame(shapes, t))
    return frames


def swap_while_hidden() -> list[Frame]:
    """Two mugs that look alike go behind a wall, swap places there, and come out (the hard
    case: nothing the tracker sees tells them apart)."""
    scene = Scene(7)
    scene.add(1, "mug")
    scene.add(2, "mug", like=1)
    scene.add(3, "wall")
    wall = rectangle(70, 0, 130, 120)
    frames = []
    for t in range(30):
        if t < 10:
            a, b = 40 + 4 * t, 160 - 4 * t
        elif t < 20:
            a, b = 100, 100
        else:
            a, b = 100 + 4 * (t - 19), 100 - 4 * (t - 19)
        frames.append(scene.frame([(1, disc(a, 40, 8)), (2, disc(b, 80, 8)), (3, wall)], t))
    return frames


SEQUENCES: dict[str, tuple[Callable[[], list[Frame]], str]] = {
    "crossing, one hidden 1 frame": (crossing, "0 switches"),
    "occlusion 3 frames": (occlusion(3), "0 switches"),
    "occlusion 8 frames": (occlusion(8), "0 switches"),
    "occlusion 30 frames": (occlusion(30), "0 switches"),
    "fast mover, 12 px/frame, radius 5": (fast_mover, "<= 1 switch, IDF1 >= 0.9"),
    "camera pan, 40 px in one frame": (camera_pan, "0 switches"),
    "sliver behind an occluder": (sliver, "0 switches"),
    "10 % of detections dropped": (dropped_detections, "IDF1 >= 0.95"),
    "two alike swap while hidden": (swap_while_hidden, "report (hard case)"),
}


def score(frames: list[Frame], ids_of: Callable[[Frame], list[int]]) -> dict[str, float]:
    """MOTA, IDF1 and ID switches (py-motmetrics) of the ids ``ids_of`` gives each frame:
    each instance is its ground-truth object's only possible match."""
    import motmetrics as mm

    accumulator = mm.MOTAccumulator(auto_id=True)
    for frame in frames:
        ids = ids_of(frame)
        distances = np.full((len(frame.truth), len(ids)), np.nan)
        np.fill_diagonal(distances, 0.0)
        accumulator.update(frame.truth, ids, distances)
    summary = mm.metrics.create().compute(accumulator, metrics=["mota", "idf1", "num_switches"])
    return {
        "mota": float(summary["mota"].iloc[0]),
        "idf1": float(summary["idf1"].iloc[0]),
        "switches": int(summary["num_switches"].iloc[0]),
    }


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)
