"""pip install of the ROS-free core (CLI, tests, notebooks). colcon builds with CMakeLists.txt."""

from setuptools import find_packages, setup

RAY = "ray>=2.9"

setup(
    name="ovseg_ros",
    version="0.1.0",
    description="Open-vocabulary segmentation (SAM proposals + mask-adapted CLIP), "
    "ROS 2 node and command line",
    packages=find_packages(include=["ovseg_ros", "ovseg_ros.*"]),
    package_data={
        "ovseg_ros.offline": ["msgdefs/*/*.msg"],
        "ovseg_ros.evaluation": ["classes/*.txt", "classes/*.ids"],
    },
    python_requires=">=3.10",
    # Tested on 3.10 (ROS 2 Humble's, Ubuntu 22.04) and 3.11; ROS 2 Jazzy's is 3.12.
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Operating System :: POSIX :: Linux",
        "Framework :: Robot Framework :: Library",
    ],
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "open_clip_torch>=2.23",
        "segment-anything>=1.0",
        # NumPy 1.x: ROS 2's message modules and cv_bridge are built against it, and the
        # node and the real-graph tests share this environment; OpenCV 4.12+ needs NumPy 2.
        "opencv-python-headless>=4.8,<4.12",
        "numpy>=1.24,<2",
        "pillow>=9",
        "pyyaml>=6",
        "tqdm>=4.60",
        "pycocotools>=2.0.7",
        "rosbags>=0.10",
        # ovseg-eval: confusion-matrix and panoptic-quality counting
        "torchmetrics>=1.0",
        # tracking: Hungarian assignment (scipy.optimize.linear_sum_assignment)
        "scipy>=1.10",
    ],
    # "ray": --ray scale-out of ovseg-segment and ovseg-eval. The tests need it too: they
    # run --ray on a real local cluster (skipped, with the reason, where Ray is missing).
    # "vermin": the test that no feature newer than python_requires is used.
    # motmetrics: benchmarks/bench_tracking.py and the tracking tests score ids with MOT metrics
    # ruff, import-linter, mypy: test_architecture.py checks the style, layers and types
    extras_require={
        "test": [
            "pytest>=7",
            "vermin>=1.6",
            "motmetrics>=1.4",
            "ruff>=0.17,<0.18",
            "mypy>=2.4,<2.5",
            "import-linter>=2.1",
            RAY,
        ],
        "ray": [RAY],
    },
    entry_points={
        "console_scripts": [
            "ovseg-segment=ovseg_ros.offline.cli:main",
            "ovseg-eval=ovseg_ros.evaluation.cli:main",
        ]
    },
)
