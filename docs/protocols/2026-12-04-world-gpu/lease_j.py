"""Run J on a lent GPU machine inside one call (docs/protocols/2026-12-04-world-ottawa-kept.md): run H's model
(given as resources/models/roads-resnet18-world.pt there) taught 2 epochs of 32,000 crops with Ottawa at 4.5,
then the candidate (mean of the second
half's epochs, BatchNorm recomputed, fp16) comes back in pieces under 16 MiB.

    python3 .gpu/lease.py OUT SECONDS [--dry]     (--dry: a few crops on the CPU, to check the script here)
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

START = time.monotonic()
out, seconds, dry = Path(sys.argv[1]), float(sys.argv[2]), "--dry" in sys.argv
data = Path(".gpu/data-flags.txt").read_text().replace("ottawa:1.5", "ottawa:4.5").split()
epochs, averaged = 2, 2
common = [*data, "--init", "resources/models/roads-resnet18-world.pt", "--label-target", "one_width",
          "--backbone", "resnet18", "--augment", "sensors", "--invert-brightness", "0.2", "--stage1-epochs", "0",
          "--optimizer", "adamw", "--lr-stage2", "0.0001", "--backbone-lr-factor", "1", "--weight-decay", "0.0001",
          "--loss", "ce_dice", "--crop", "256", "--batch-size", "4" if dry else "32", "--seed", "11",
          "--precision", "auto", "--num-workers", "2" if dry else str(max(1, (os.cpu_count() or 2) - 2)),
          "--checkpoint-every-n-steps", "1000000", "--validate-every", "0"]
log = open(out / "lease.log", "a")


def say(text: str) -> None:
    print(f"[{time.monotonic() - START:6.1f} s] {text}", file=log, flush=True)
    print(f"[{time.monotonic() - START:6.1f} s] {text}", flush=True)


def fit(folder: str, crops: int, n_epochs: int, limit: float) -> int:
    command = [sys.executable, "-m", "training", "fit", *common, "--out", folder, "--stage2-epochs", str(n_epochs),
               "--crops-per-epoch", str(crops), "--epoch-snapshots", "1"]
    say(" ".join(command))
    try:
        return subprocess.run(command, stdout=log, stderr=log, timeout=limit).returncode
    except subprocess.TimeoutExpired:
        say(f"stopped at {limit:.0f} s")
        return 124


def clock(folder: str) -> float:
    state = torch.load(f"{folder}/checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    return next(v["seconds"] for v in state["callbacks"].values() if isinstance(v, dict) and "seconds" in v)


say(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}, "
    f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}, {os.cpu_count()} cpus")
crops = 64 if dry else 32_000  # run H measured about 600 crops/s on the H200: 2 epochs in under 2 minutes
rc = fit("/tmp/run-j", crops, epochs, max(60.0, seconds - (time.monotonic() - START) - (30 if dry else 80)))
snapshots = sorted(Path("/tmp/run-j/checkpoints").glob("epoch-*.ckpt"))
say(f"run rc {rc}; snapshots {[p.name for p in snapshots]}")
chosen = snapshots[-averaged:] if rc == 0 else snapshots[len(snapshots) // 2:]
for name in ("config.yaml", "logs/metrics.csv"):
    if Path("/tmp/run-j", name).exists():
        shutil.copy(Path("/tmp/run-j", name), out / Path(name).name)
if len(chosen) >= 2:
    command = [sys.executable, "-m", "training", "average", *map(str, chosen), "--out", "/tmp/world-J-avg.pt",
               "--half", "--batchnorm-from", "/tmp/run-j/config.yaml", "--batchnorm-crops", "64" if dry else "4096"]
    say(" ".join(command))
    subprocess.run(command, stdout=log, stderr=log, timeout=max(30.0, seconds - (time.monotonic() - START) - 10))
    model = Path("/tmp/world-J-avg.pt")
    if model.exists():
        blob = model.read_bytes()
        piece = 15 * 2**20
        for i in range(0, len(blob), piece):
            (out / f"world-J-avg.pt.part{i // piece}").write_bytes(blob[i:i + piece])
        say(f"model {len(blob)} bytes in {(len(blob) + piece - 1) // piece} pieces")
say("done")
