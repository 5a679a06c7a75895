"""The repository stays light enough to clone quickly and to carry to a GPU machine (which takes at most 64 MiB)."""

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRACKED_LIMIT_MB = 48


def test_tracked_files_stay_under_48_mb():
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (an unpacked release): nothing to measure")
    files = [REPO / name for name in listed.decode().split("\0") if name]
    sizes = {f.relative_to(REPO).as_posix(): f.stat().st_size for f in files if f.is_file()}
    total = sum(sizes.values()) / 1e6
    largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
    assert total <= TRACKED_LIMIT_MB, (f"tracked files weigh {total:.1f} MB (limit {TRACKED_LIMIT_MB}); largest: "
                                       + ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in largest))
    assert not any(name.endswith(".onnx") for name in sizes), "ONNX files are made from model files, not tracked"
