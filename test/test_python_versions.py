"""The code runs on every Python the package supports (setup.py's python_requires): vermin
finds no feature newer than the oldest of them in the package, tests, benchmarks and scripts."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def oldest_supported() -> str:
    """'3.10' from setup.py's python_requires='>=3.10'."""
    match = re.search(r'python_requires=">=(\d+\.\d+)"', (REPO / "setup.py").read_text())
    assert match, "setup.py has no python_requires='>=X.Y'"
    return match.group(1)


def test_no_feature_newer_than_the_oldest_supported_python():
    # vermin cannot tell bytes.decode from Python 2's str.decode: that one is excluded.
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, vermin; sys.exit(vermin.main())",
            f"--target={oldest_supported()}-",
            "--violations",
            "--no-tips",
            "--eval-annotations",
            "--exclude",
            "str.decode",
            *(
                str(REPO / folder)
                for folder in ("ovseg_ros", "test", "benchmarks", "reference", "scripts", "launch")
            ),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
