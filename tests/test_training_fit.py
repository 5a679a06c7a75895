"""Two-stage training on generated data: the frozen stage freezes BatchNorm too, runs resume, exports load."""

import csv
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from core.errors import InputError
from core.model.checkpoint import load_model
from training.config import TrainConfig
from training.fit import build, export, fit, load_checkpoint, training_seconds
from training.module import RoadSegmentation

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def dataset(road_tiles):
    return road_tiles


def _config(dataset, out, **changes) -> TrainConfig:
    values = dict(data=str(dataset), out=str(out), val_tiles=1, crop=64, batch_size=4, crops_per_epoch=8,
                  stage1_epochs=1, stage2_epochs=1, val_tile=160, val_overlap=0, checkpoint_every_n_steps=1,
                  log_every_n_steps=1)
    values.update(changes)
    return TrainConfig.from_dict(values)


class Snapshots(L.Callback):
    def __init__(self) -> None:
        self.states = []

    def on_train_epoch_start(self, trainer, module) -> None:
        self.states.append({k: v.clone() for k, v in module.network.backbone.state_dict().items()})

    def on_train_end(self, trainer, module) -> None:
        self.on_train_epoch_start(trainer, module)


def test_stage_one_freezes_the_backbone_and_its_batchnorm_then_stage_two_trains_it(dataset, tmp_path):
    config = _config(dataset, tmp_path)
    train_loader, val_loader, *_ = build(config)
    module = RoadSegmentation(config.to_dict())
    snapshots = Snapshots()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        callbacks=[snapshots], enable_progress_bar=False, num_sanity_val_steps=0)
    head_before = module.network.decoder.last_conv[8].weight.clone()
    trainer.fit(module, train_loader, val_loader)
    start, after_stage_one, end = snapshots.states
    for key in start:  # weights and BatchNorm running statistics alike
        assert torch.equal(start[key], after_stage_one[key]), key
    assert not torch.equal(module.network.decoder.last_conv[8].weight, head_before)
    changed = [k for k in start if "running_mean" in k and not torch.equal(after_stage_one[k], end[k])]
    assert changed, "stage 2 must train the backbone, BatchNorm statistics included"
    assert not torch.equal(after_stage_one["conv1.weight"], end["conv1.weight"])


def test_learning_rate_follows_poly_within_each_stage(dataset, tmp_path):
    config = _config(dataset, tmp_path, stage1_epochs=1, stage2_epochs=1, lr_stage1=0.01, lr_stage2=0.001)
    train_loader, val_loader, *_ = build(config)
    module = RoadSegmentation(config.to_dict())
    seen = []

    class Rates(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            groups = pl_module.optimizers().optimizer.param_groups
            seen.append((groups[0]["lr"], groups[1]["lr"]))

    L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, callbacks=[Rates()],
              enable_progress_bar=False, num_sanity_val_steps=0, limit_val_batches=0).fit(module, train_loader)
    assert seen[0] == pytest.approx((0.001, 0.01))  # backbone at a tenth of the head
    assert seen[1][1] == pytest.approx(0.01 * 0.5**0.9)  # 2 steps per stage: halfway
    assert seen[2] == pytest.approx((0.0001, 0.001))  # stage 2 restarts at its own, smaller rate


def test_a_killed_and_resumed_fit_ends_exactly_where_an_uninterrupted_one_does(dataset, tmp_path):
    def command(out):
        return [sys.executable, "-m", "training", "fit", "--data", str(dataset), "--out", str(out), "--val-tiles", "1",
                "--crop", "64", "--batch-size", "4", "--crops-per-epoch", "8", "--stage1-epochs", "1",
                "--stage2-epochs", "2", "--val-tile", "160", "--val-overlap", "0", "--checkpoint-every-n-steps", "1"]

    out = tmp_path / "run"
    process = subprocess.Popen(command(out), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / "checkpoints" / "last-step.ckpt"
    for _ in range(600):
        if checkpoint.exists() and torch.load(checkpoint, weights_only=True)["global_step"] >= 3:
            break
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    process.wait()
    killed_at = torch.load(checkpoint, weights_only=True)["global_step"]
    assert 1 <= killed_at < 6  # mid-run (2 steps per epoch: step 3 is mid-epoch)
    trained_before_kill = training_seconds(checkpoint)
    resumed = subprocess.run(command(out), cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resume      from" in resumed.stderr
    uninterrupted = subprocess.run(command(tmp_path / "straight"), cwd=REPO, capture_output=True, text=True)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-2000:]
    final = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    straight = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == straight["global_step"] == 6  # 3 epochs x 2 steps: none repeated, none lost
    # Same crops in the same order, same dropout draws, optimizer state restored: the same weights.
    for key, value in straight["state_dict"].items():
        assert torch.allclose(final["state_dict"][key].float(), value.float(), atol=1e-6), key
    # The training time survives the kill: the resumed run's total counts the part before it too.
    assert 0 < trained_before_kill < training_seconds(out / "checkpoints" / "last.ckpt")
    model_file = export(out / "checkpoints" / "best.ckpt", tmp_path / "model.pt")
    model = load_model(model_file)
    assert model.info.gsd_m == 1.0 and "val_road_iou" in model.info.metrics
    low, high = model.info.normalization.brightness  # its training images' range, for the engine's matching
    assert 0 < low <= high < 255
    assert (out / "config.yaml").exists() and (out / "logs" / "metrics.csv").exists()


def test_a_resumed_run_appends_to_its_metrics_log(tmp_path):
    from training.fit import ResumableCSVLogger

    first = ResumableCSVLogger(tmp_path, name="logs", version="")
    first.log_metrics({"train/loss": 1.0}, step=0)
    first.log_metrics({"val/road_iou": 0.2}, step=1)
    first.save()
    resumed = ResumableCSVLogger(tmp_path, name="logs", version="")
    resumed.log_metrics({"train/loss": 0.5}, step=2)
    resumed.save()
    resumed.log_metrics({"lr/head": 0.1}, step=3)  # a column the first run never logged
    resumed.save()
    with open(tmp_path / "logs" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["step"] for r in rows] == ["0", "1", "2", "3"]
    assert rows[1]["val/road_iou"] == "0.2" and rows[2]["train/loss"] == "0.5" and rows[3]["lr/head"] == "0.1"


def test_fit_in_process_returns_the_best_checkpoint_which_the_engine_reads_as_its_run_describes(dataset, tmp_path):
    from core.model.checkpoint import load_model

    best = fit(_config(dataset, tmp_path / "run", gsd_m=0.5, model={"backbone": "resnet18", "output_stride": 8,
                                                                    "layer4": "multigrid"}))
    assert best.name == "best.ckpt" and best.exists()
    # Given to the engine as it is (road-extractor extract --model RUN/checkpoints/best.ckpt), it reads imagery at
    # the run's GSD and brightness with the run's architecture, as its exported model file does; before, it was
    # taken for a bare seed checkpoint: no GSD (the input's own resolution) and output stride guessed as 16.
    module, _, _ = load_checkpoint(best)
    engine = load_model(best)
    assert engine.report.file_kind == "training checkpoint" and engine.info.gsd_m == 0.5
    assert engine.info.config == module.config.model_config()
    assert engine.info.normalization.brightness == pytest.approx(module.normalization.brightness)
    reference = module.road_model().network.eval()
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(engine.network(images), reference(images), atol=1e-5)


def test_a_candidate_replaces_the_shipped_model_only_on_a_clear_gain():
    from training.promotion import promotion_verdict

    shipped = {"heldout_road_iou": 0.371, "heldout_apls": 0.228, "lines_completeness": 0.02,
               "lines_correctness": 0.46}
    better = {"heldout_road_iou": 0.39, "heldout_apls": 0.25, "lines_completeness": 0.05, "lines_correctness": 0.5}
    assert promotion_verdict(better, shipped)[0]
    assert not promotion_verdict({**better, "heldout_road_iou": 0.375}, shipped)[0]  # +0.004: noise
    assert not promotion_verdict({**better, "heldout_apls": 0.2}, shipped)[0]
    ok, reasons = promotion_verdict({**better, "lines_completeness": 0.0}, shipped)  # 0.02 lower
    assert not ok and any(r.startswith("FAIL  lines completeness") for r in reasons)
    # Within the margin (two standard errors of an 8-origin mean) a Vegas figure is a tie; the strict rule is margin 0.
    tie = {**better, "lines_completeness": 0.009, "lines_correctness": 0.45}
    ok, reasons = promotion_verdict(tie, shipped)
    assert ok and "pass  lines completeness: 0.0200 -> 0.0090 (must not fall by more than 0.015)" in reasons
    assert not promotion_verdict(tie, shipped, lines_margin=0)[0]
    assert not promotion_verdict({**tie, "lines_correctness": 0.44}, shipped)[0]  # 0.02 lower: a loss
    assert not promotion_verdict({}, shipped)[0]
    # Figures from two arithmetics are refused, not compared; unrecorded ones are said to be unknown.
    with pytest.raises(InputError, match="bf16 arithmetic, the shipped model's from fp32"):
        promotion_verdict({**better, "lines_arithmetic": "bf16"}, {**shipped, "lines_arithmetic": "fp32"})
    ok, reasons = promotion_verdict({**better, "heldout_arithmetic": "fp32"}, shipped)
    assert ok and any("do not say their arithmetic" in r for r in reasons)
    # A mean over origin shifts is compared only with a mean over as many (a file without the count: one).
    with pytest.raises(InputError, match="mean over 8 origin shift\\(s\\), the shipped model's over 1"):
        promotion_verdict({**better, "lines_shifts": 8}, shipped)
    assert promotion_verdict({**better, "lines_shifts": 8}, {**shipped, "lines_shifts": 8})[0]
    # Figures from before the one-frame line metric (a file without the version: version 1) are not compared.
    with pytest.raises(InputError, match="line metric version 2, the shipped model's by version 1"):
        promotion_verdict({**better, "lines_metric_version": 2}, shipped)
    assert promotion_verdict({**better, "lines_metric_version": 2}, {**shipped, "lines_metric_version": 2})[0]


def test_a_run_without_validation_trains_and_returns_its_last_checkpoint(dataset, tmp_path):
    # --validate-every 0 (a GPU machine without GDAL, whose tiled validation writes GeoTIFFs): no validation tile is
    # scored, no best.ckpt is written, and the run's result is its last epoch, which the engine reads.
    config = _config(dataset, tmp_path / "run", stage1_epochs=0, stage2_epochs=2, validate_every=0,
                     epoch_snapshots=1)
    result = fit(config)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert result == checkpoints / "last.ckpt" and result.exists() and not (checkpoints / "best.ckpt").exists()
    assert sorted(p.name for p in checkpoints.glob("epoch-*.ckpt")) == ["epoch-00.ckpt", "epoch-01.ckpt"]
    with open(tmp_path / "run" / "logs" / "metrics.csv") as log:
        columns = next(csv.reader(log))
    assert "train/loss" in columns and not any(c.startswith("val/") for c in columns)
    _, metrics, provenance = load_checkpoint(result)
    assert metrics == {} and provenance["global_step"] == 4  # 2 epochs of 8 crops in batches of 4
    assert load_model(result).info.config == config.model_config()
    with pytest.raises(InputError, match="--validate-every"):
        _config(dataset, tmp_path / "bad", validate_every=-1)
