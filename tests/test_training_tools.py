"""doctor, evaluate, ablate, soft-clDice, initialisation from ImageNet and seed files, and DDP with 2 gloo processes,
all on generated tiles with real training steps."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import InputError
from core.extraction.brightness import MASSACHUSETTS_BRIGHTNESS
from core.metrics import pixel_metrics
from core.model import ModelConfig, build_model
from core.model.checkpoint import ModelInfo, save_model
from training.__main__ import main
from training.ablate import parse_grid, scoring, variants
from training.config import TrainConfig, read_config
from training.data import find_pairs, inspect_labels, read_pair, split_by_tile
from training.doctor import overfit_findings
from training.evaluate import Inference, predict_tile
from training.fit import fit, road_model
from training.losses import soft_cldice_loss, soft_skeleton

REPO = Path(__file__).resolve().parents[1]
TINY = ["--val-tiles", "1", "--crop", "64", "--batch-size", "2", "--crops-per-epoch", "4", "--val-tile", "160",
        "--val-overlap", "0", "--log-every-n-steps", "1"]


def _tiny_config(data: Path, out: Path, **changes) -> TrainConfig:
    values = dict(data=str(data), out=str(out), val_tiles=1, crop=64, batch_size=2, crops_per_epoch=4,
                  stage1_epochs=1, stage2_epochs=1, val_tile=160, val_overlap=0, log_every_n_steps=1)
    return TrainConfig.from_dict({**values, **changes})


@pytest.fixture(scope="module")
def trained_run(road_tiles, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    return fit(_tiny_config(road_tiles, out, stage2_epochs=2))


def test_doctor_explains_0_255_masks_and_the_flat_seed_gate_and_overfits_one_batch(road_tiles, capsys, tmp_path):
    report = tmp_path / "doctor.json"
    code = main(["doctor", "--data", str(road_tiles), *TINY, "--overfit-steps", "200", "--json", str(report)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "[WARN] labels" in out and "every road pixel is ignored" in out
    findings = {f["check"]: f for f in json.loads(report.read_text())}
    targets = [read_pair(p, inspect_labels(find_pairs(road_tiles)))[1] for p in find_pairs(road_tiles)]
    val = split_by_tile(find_pairs(road_tiles), 1)[1][0]
    val_target = read_pair(val, inspect_labels([val]))[1]
    assert findings["balance"]["figures"]["miou_all_background"] == pytest.approx(
        (1 - np.mean(val_target[val_target != 255] == 1)) / 2)
    assert 0 < findings["balance"]["figures"]["road_fraction"] < max(np.mean(t == 1) for t in targets)
    assert findings["stages"]["figures"]["stage1_trainable"] < findings["stages"]["figures"]["stage2_trainable"]
    assert all(v > 0 for v in findings["gradients"]["figures"]["grad_norms"].values())
    gates = findings["attention"]["figures"]
    assert findings["attention"]["level"] == "warn"  # the seed's spatial gate: ~0.5 everywhere
    assert all(abs(g["spatial_mean"] - 0.5) < 0.05 for g in gates.values())
    overfit = findings["overfit"]
    assert overfit["level"] == "ok", overfit["text"]
    assert overfit["figures"]["loss_last"] <= 0.2 * overfit["figures"]["loss_first"]
    assert overfit["figures"]["steps"] <= 200
    print(overfit["text"])  # the steps it needed on this CPU


def test_overfit_check_fails_when_nothing_can_learn(road_tiles):
    config = _tiny_config(road_tiles, "unused")
    images = torch.rand(2, 3, 64, 64) * 255
    target = (torch.rand(2, 64, 64) > 0.9).long()
    finding = overfit_findings(config, images, target, steps=5, lr=0.0)[0]
    assert finding.level == "fail" and "did NOT fall below" in finding.text and finding.figures["steps"] == 5


def test_soft_skeleton_is_thin_and_cldice_rewards_connected_roads():
    bar = torch.zeros(1, 1, 32, 32)
    bar[..., 12:21, 4:28] = 1  # a road 9 px wide
    skeleton = soft_skeleton(bar, iterations=10)
    assert skeleton[0, 0, 16, 8:24].min() > 0.9 and skeleton[0, 0, :, 8:24].sum(0).max() < 2.5
    target = bar[:, 0].long()

    def logits(mask):
        return torch.stack([-8 * (mask * 2 - 1), 8 * (mask * 2 - 1)], dim=1)

    broken = bar[:, 0].clone()
    broken[..., 14:18] = 0  # a 4 px gap across the road
    whole_loss = soft_cldice_loss(logits(bar[:, 0]), target)
    broken_loss = soft_cldice_loss(logits(broken), target)
    assert whole_loss < 0.02 and broken_loss > whole_loss + 0.05


def test_evaluate_pools_tiles_and_matches_the_engine_on_each(road_tiles, trained_run, tmp_path, capsys):
    report = tmp_path / "eval.json"
    code = main(["evaluate", str(trained_run), "--data", str(road_tiles), *TINY, "--json", str(report)])
    assert code == 0
    results = json.loads(report.read_text())
    assert set(results) == {"scales 1.0", "scales 0.75/1/1.25"}
    pair = split_by_tile(find_pairs(road_tiles), 1)[1][0]
    image, target = read_pair(pair, inspect_labels([pair]))
    _, mask = predict_tile(road_model(trained_run), image, target != 255, 1.0, Inference(tile=160, overlap=0))
    direct = pixel_metrics(mask, target == 1, target == 255)
    single = results["scales 1.0"]
    for key in ("road_iou", "f1", "precision", "recall", "miou", "miou_all_background"):
        assert single[key] == pytest.approx(direct[key], nan_ok=True), key
    assert single["arithmetic"] == Inference(tile=160, overlap=0).arithmetic  # what this machine ran
    assert 0 <= single["apls"] <= 1 and 0 <= single["relaxed_f1"] <= 1
    assert "| scales 0.75/1/1.25 |" in capsys.readouterr().out


def test_export_writes_the_model_file_and_onnx(trained_run, tmp_path):
    import onnx

    from core.model.checkpoint import load_model

    assert main(["export", str(trained_run), "--out", str(tmp_path / "m.pt"), "--half",
                 "--onnx", str(tmp_path / "m.onnx")]) == 0
    model = load_model(tmp_path / "m.pt")
    assert model.info.gsd_m == 1.0 and 0 <= model.info.metrics["val_road_iou"] <= 1
    described = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    assert "val_road_iou" in json.dumps(described)


def test_export_records_the_held_out_figures_and_their_tiles(road_tiles, trained_run, tmp_path, capsys):
    from core.model.checkpoint import load_model

    evaluation = tmp_path / "eval.json"
    assert main(["evaluate", str(trained_run), "--data", str(road_tiles), *TINY, "--no-graphs", "--precision", "fp32",
                 "--json", str(evaluation)]) == 0
    results = json.loads(evaluation.read_text())
    assert main(["export", str(trained_run), "--out", str(tmp_path / "m.pt"), "--evaluation", str(evaluation)]) == 0
    info = load_model(tmp_path / "m.pt").info
    assert info.metrics["heldout_road_iou"] == results["scales 1.0"]["road_iou"]
    assert info.metrics["heldout_precision"] == results["scales 1.0"]["precision"]  # the pixels', a number
    assert info.metrics["heldout_arithmetic"] == "fp32"  # the arithmetic asked for, recorded for `promote`
    assert info.metrics["heldout_multiscale_f1"] == results["scales 0.75/1/1.25"]["f1"]
    held_out = split_by_tile(find_pairs(road_tiles), 1)[1]
    assert info.provenance["validation_tiles"] == [p.name for p in held_out]
    # A model file (an average, say) takes the figures of its own evaluation: the same weights, bit for bit, with
    # the figures added to what it already says about itself.
    assert main(["export", str(tmp_path / "m.pt"), "--out", str(tmp_path / "h.pt"), "--half"]) == 0
    bare = torch.load(tmp_path / "h.pt", weights_only=True)
    bare["info"]["metrics"] = {"val_road_iou": 0.25}
    torch.save(bare, tmp_path / "bare.pt")
    assert main(["export", str(tmp_path / "bare.pt"), "--out", str(tmp_path / "r.pt"), "--half", "--evaluation",
                 str(evaluation)]) == 0
    recorded = torch.load(tmp_path / "r.pt", weights_only=True)
    assert all(torch.equal(tensor, recorded["state_dict"][name]) for name, tensor in bare["state_dict"].items())
    assert recorded["info"]["metrics"]["val_road_iou"] == 0.25
    assert recorded["info"]["metrics"]["heldout_road_iou"] == results["scales 1.0"]["road_iou"]

    evaluation.write_text(json.dumps({"scales 0.75/1/1.25": results["scales 0.75/1/1.25"]}))
    assert main(["export", str(trained_run), "--out", str(tmp_path / "n.pt"), "--evaluation", str(evaluation)]) == 2
    assert "no single-scale result" in capsys.readouterr().err and not (tmp_path / "n.pt").exists()
    evaluation.write_text("{not json")
    assert main(["export", str(trained_run), "--out", str(tmp_path / "n.pt"), "--evaluation", str(evaluation)]) == 2
    assert "is not JSON" in capsys.readouterr().err and not (tmp_path / "n.pt").exists()


def test_ablate_trains_each_variant_and_writes_the_table(road_tiles, tmp_path, capsys):
    out = tmp_path / "ablation"
    args = ["ablate", "--data", str(road_tiles), "--out", str(out), *TINY, "--stage1-epochs", "0",
            "--stage2-epochs", "1", "--grid", "attention=seed,none"]
    assert main(args) == 0
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["variant"], r["inference"]) for r in rows] == [
        ("attention=seed", "scales 1.0"), ("attention=seed", "scales 0.75/1/1.25"),
        ("attention=none", "scales 1.0"), ("attention=none", "scales 0.75/1/1.25")]
    seed_params, none_params = float(rows[0]["parameters_m"]), float(rows[2]["parameters_m"])
    expected = sum(p.numel() for p in build_model(ModelConfig(backbone="resnet18")).parameters()) / 1e6
    assert seed_params == pytest.approx(expected, rel=1e-6) and none_params < seed_params
    assert all(float(r["gflops_512"]) > 1 and float(r["mp_per_s"]) > 0 for r in rows)
    assert (out / "results.md").read_text().count("| attention=") == 4
    capsys.readouterr()
    assert main(args) == 0  # a second run reuses the finished variants instead of training them again
    assert capsys.readouterr().err.count("reused the finished results") == 2
    # Figures scored with other vectorizer or brightness settings are scored again from the checkpoint, not trained
    # again and not mixed into one table with figures from the settings of now.
    finished = out / "attention-none" / "ablation_rows.json"
    best = out / "attention-none" / "checkpoints" / "best.ckpt"
    trained_at = best.stat().st_mtime_ns
    stale = json.loads(finished.read_text())
    for row in stale:
        row["scoring"]["vectorize"]["bridge_m"] = 24.0
        del row["scoring"]["brightness"]  # and scored before the engine matched brightness
        row["apls"] = -1.0
    finished.write_text(json.dumps(stale))
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count("reused the finished results") == 1 and err.count("scored again") == 1
    rescored = json.loads(finished.read_text())
    assert best.stat().st_mtime_ns == trained_at
    assert all(row["apls"] >= 0 and row["scoring"] == scoring() for row in rescored)
    assert [row["train_minutes"] for row in rescored] == [row["train_minutes"] for row in stale]
    # Reference centrelines added later (--lines): each variant gets its line figures, its tile figures are kept.
    lines = tmp_path / "lines"
    _georeferenced_scene_with_a_road(lines)
    assert main([*args, "--lines", str(lines)]) == 0
    assert capsys.readouterr().err.count("scored again") == 2
    with_lines = json.loads(finished.read_text())
    assert [r["road_iou"] for r in with_lines] == [r["road_iou"] for r in rescored]
    assert all(0 <= r["lines_completeness"] <= 1 for r in with_lines) and best.stat().st_mtime_ns == trained_at
    assert "lines_completeness" in (out / "results.csv").read_text()
    # Rows from before --line-shifts were scored from one origin: reused as such. Asked for two origins, the lines
    # (only) are scored again.
    for row in with_lines:
        del row["scoring"]["line_shifts"]
    finished.write_text(json.dumps(with_lines))
    assert main([*args, "--lines", str(lines)]) == 0
    assert capsys.readouterr().err.count("reused the finished results") == 2
    assert main([*args, "--lines", str(lines), "--line-shifts", "2"]) == 0
    assert capsys.readouterr().err.count("scored again") == 2
    two = json.loads(finished.read_text())
    assert all(r["scoring"]["line_shifts"] == 2 for r in two) and best.stat().st_mtime_ns == trained_at
    assert [r["road_iou"] for r in two] == [r["road_iou"] for r in rescored]
    # Rows from before the one-frame line metric (no version recorded: version 1) have their lines scored again.
    for row in two:
        del row["scoring"]["line_metric_version"]
    finished.write_text(json.dumps(two))
    assert main([*args, "--lines", str(lines), "--line-shifts", "2"]) == 0
    err = capsys.readouterr().err
    assert err.count("scored again") == 1 and err.count("reused the finished results") == 1
    assert all(r["scoring"]["line_metric_version"] == 2 for r in json.loads(finished.read_text()))


def test_val_lines_scores_the_reference_lines_every_epoch_as_evaluate_does(road_tiles, tmp_path, capsys):
    lines = tmp_path / "lines"
    _georeferenced_scene_with_a_road(lines)
    out = tmp_path / "run"
    # From the shipped model, backbone frozen, at a small rate, so there are lines to score (a model trained from
    # scratch for four steps finds none, and zeros would agree with anything).
    args = ["fit", "--data", str(road_tiles), "--out", str(out), *TINY, "--stage1-epochs", "2", "--stage2-epochs", "0",
            "--init", str(REPO / "resources/models/roads-resnet18-massachusetts.pt"), "--lr-stage1", "1e-5",
            "--val-lines", str(lines)]
    assert main(args) == 0
    with open(out / "logs" / "metrics.csv") as handle:
        logged = [r for r in csv.DictReader(handle) if r.get("val_lines/completeness")]
    assert [int(r["epoch"]) for r in logged] == [0, 1]  # every epoch, not the sanity check
    assert capsys.readouterr().err.count("val_lines   epoch") == 2
    # The last epoch's figures are what `evaluate --lines` gives its checkpoint (the same engine path).
    report = tmp_path / "lines.json"
    assert main(["evaluate", str(out / "checkpoints" / "last.ckpt"), "--data", str(road_tiles), *TINY, "--lines",
                 str(lines), "--skip-tiles", "--json", str(report)]) == 0
    evaluated = json.loads(report.read_text())["lines"]["scales 1.0"]
    assert evaluated["completeness"] > 0.5
    for name in ("completeness", "correctness", "apls"):
        assert float(logged[-1][f"val_lines/{name}"]) == pytest.approx(evaluated[name], abs=1e-6), name
    # The best checkpoint is still chosen by the validation tiles' road IoU alone.
    best = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert any("val/road_iou" in str(v.get("monitor")) for v in best["callbacks"].values() if isinstance(v, dict))
    # A folder without reference lines is refused before any training.
    refused = tmp_path / "refused"
    assert main([*args[:4], str(refused), *args[5:-1], str(road_tiles)]) == 2  # --val-lines: training tiles
    assert "--lines" in capsys.readouterr().err and not refused.exists()


def test_epoch_snapshots_and_their_average(road_tiles, random_model_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", "--data", str(road_tiles), "--out", str(out), *TINY, "--stage1-epochs", "0",
                 "--stage2-epochs", "2", "--epoch-snapshots", "1"]) == 0
    checkpoints = out / "checkpoints"
    snapshots = sorted(checkpoints.glob("epoch-*.ckpt"))
    assert [p.name for p in snapshots] == ["epoch-00.ckpt", "epoch-01.ckpt"]
    first, second = (road_model(p).network.state_dict() for p in snapshots)
    last = road_model(checkpoints / "last.ckpt").network.state_dict()
    assert all(torch.equal(second[k], last[k]) for k in last)  # the epoch's weights, as the run ended it
    changed = [k for k in first if first[k].is_floating_point() and not torch.equal(first[k], second[k])]
    assert changed  # two different epochs, or the mean below would prove nothing
    averaged = tmp_path / "averaged.pt"
    assert main(["average", *map(str, snapshots), "--out", str(averaged)]) == 0
    mean = road_model(averaged).network.state_dict()
    for key in changed:
        assert torch.allclose(mean[key], (first[key] + second[key]) / 2, atol=1e-6), key
    provenance = road_model(averaged).info.provenance
    assert provenance["averaged"] == [str(p) for p in snapshots]
    # It says what the run trained on and how, as an exported checkpoint does, and which steps it is the mean of.
    assert provenance["data"] == [str(road_tiles)] and provenance["trained_with"] == "python -m training fit"
    steps = [road_model(p).info.provenance["global_step"] for p in snapshots]
    assert provenance["averaged_steps"] == steps and steps[0] < steps[1] and "global_step" not in provenance
    # A file that records no brightness range reads imagery as Massachusetts Roads': the mean takes that in too.
    low, high = road_model(snapshots[0]).info.normalization.brightness
    assert main(["average", str(snapshots[0]), str(random_model_file), "--out", str(tmp_path / "wide.pt")]) == 0
    assert road_model(tmp_path / "wide.pt").info.normalization.brightness == (
        min(low, MASSACHUSETTS_BRIGHTNESS[0]), max(high, MASSACHUSETTS_BRIGHTNESS[1]))
    # Another architecture, or a single model, is refused with one line; nothing is written.
    other = tmp_path / "other.pt"
    config = ModelConfig(backbone="resnet18", attention="none")
    save_model(other, build_model(config), ModelInfo(config=config, gsd_m=1.0))
    capsys.readouterr()
    assert main(["average", str(snapshots[0]), str(other), "--out", str(tmp_path / "mixed.pt")]) == 2
    assert "another network" in capsys.readouterr().err and not (tmp_path / "mixed.pt").exists()
    # Same tensors, other dilations: output stride 8 computes something else with the same weights.
    stride8 = ModelConfig(backbone="resnet18", output_stride=8)
    save_model(other, build_model(stride8), ModelInfo(config=stride8, gsd_m=1.0))
    assert main(["average", str(snapshots[0]), str(other), "--out", str(tmp_path / "mixed.pt")]) == 2
    assert "output_stride 8 against 16" in capsys.readouterr().err and not (tmp_path / "mixed.pt").exists()
    assert main(["average", str(snapshots[0]), "--out", str(tmp_path / "one.pt")]) == 2
    assert "at least two" in capsys.readouterr().err


def test_average_can_recompute_batchnorm_statistics_for_the_mean_weights(trained_run, tmp_path, capsys):
    """Averaged running statistics describe none of the averaged networks; --batchnorm-from sets them from a pass
    over the run's training crops. The first BatchNorm sees conv1's output directly, so its new running mean must be
    the mean of conv1's output over exactly those crops."""
    from core.extraction.inference import normalize
    from training.fit import training_crops

    run = trained_run.parent.parent
    config = TrainConfig.from_dict({**read_config(run / "config.yaml"), "precision": "fp32"})
    config.save(tmp_path / "config.yaml")
    first, second = run / "checkpoints" / "last.ckpt", trained_run
    plain, recomputed = tmp_path / "plain.pt", tmp_path / "recomputed.pt"
    assert main(["average", str(first), str(second), "--out", str(plain)]) == 0
    assert main(["average", str(first), str(second), "--out", str(recomputed), "--batchnorm-from",
                 str(tmp_path / "config.yaml"), "--batchnorm-crops", "6"]) == 0
    model = road_model(recomputed)
    assert model.info.provenance["batchnorm_recomputed"]["crops"] == 6
    network = model.network.eval()
    outputs = []
    network.backbone.conv1.register_forward_hook(lambda module, args, output: outputs.append(output))
    with torch.no_grad():
        for images, _ in torch.utils.data.DataLoader(training_crops(config, config.split(), 6), batch_size=2):
            network(normalize(images, model.info.normalization))
    expected = torch.stack([o.mean(dim=(0, 2, 3)) for o in outputs]).mean(dim=0)
    assert torch.allclose(network.backbone.bn1.running_mean, expected, rtol=1e-4, atol=1e-5)
    averaged = road_model(plain).network.backbone.bn1.running_mean
    assert not torch.allclose(averaged, expected, rtol=1e-4, atol=1e-5)  # the test tells the two apart
    # Weights are the plain mean's either way: only the statistics are recomputed.
    assert torch.equal(network.backbone.conv1.weight, road_model(plain).network.backbone.conv1.weight)
    capsys.readouterr()
    assert main(["average", str(first), str(second), "--out", str(tmp_path / "x.pt"), "--batchnorm-crops", "4"]) == 2
    assert "--batchnorm-from" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()


def _georeferenced_scene_with_a_road(folder: Path) -> None:
    """A 200 m UTM scene with one east-west road drawn in it and its centreline as GeoJSON (SpaceNet's layout)."""
    import rasterio
    from rasterio.transform import from_origin

    folder.mkdir()
    image = np.full((3, 200, 200), 90, np.uint8)
    image[:, 96:104, :] = 200
    with rasterio.open(folder / "scene.tif", "w", driver="GTiff", width=200, height=200, count=3, dtype="uint8",
                       crs="EPSG:32619", transform=from_origin(500000.0, 4650000.0, 1.0, 1.0)) as ds:
        ds.write(image)
    (folder / "scene_roads.geojson").write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name",
        "properties": {"name": "urn:ogc:def:crs:EPSG::32619"}}, "features": [{"type": "Feature", "properties": {},
        "geometry": {"type": "LineString", "coordinates": [[500000.0, 4649899.5], [500200.0, 4649899.5]]}}]}))


def test_grid_axes_are_typed_and_unknown_ones_are_refused():
    assert parse_grid(["output_stride=16,8", "attention_residual=true,false"]) == {
        "output_stride": [16, 8], "attention_residual": [True, False]}
    with pytest.raises(ValueError, match="OPTION=VALUE"):
        parse_grid(["colour=red"])


def test_one_at_a_time_trains_the_base_once_and_changes_one_axis_per_variant(road_tiles, tmp_path):
    base = TrainConfig.from_dict({"data": [str(road_tiles)], "val_tiles": 2, "seed": 0,
                                  "model": {"layer4": "plain", "attention": "seed"}})
    grid = parse_grid(["seed=0,1", "layer4=plain,multigrid", "attention=seed,psa,none"])
    named = variants(base, grid, tmp_path, one_at_a_time=True)
    assert [name for name, _ in named] == ["base", "seed=1", "layer4=multigrid", "attention=psa", "attention=none"]
    # An axis added later keeps every name, so the finished variants are reused.
    axes = ["seed=0,1", "layer4=plain,multigrid", "attention=seed,psa,none"]
    more = variants(base, parse_grid([*axes, "loss=ce_dice_cldice"]), tmp_path, one_at_a_time=True)
    assert [name for name, _ in more][:5] == [name for name, _ in named] and more[-1][0] == "loss=ce_dice_cldice"
    assert [(c.seed, c.model["layer4"], c.model["attention"]) for _, c in named][1:3] == [
        (1, "plain", "seed"), (0, "multigrid", "seed")]
    assert len(variants(base, grid, tmp_path)) == 12  # the product
    # Another seed draws other crops and weights but holds out the same tiles, so its figure measures noise only.
    held_out = {c.seed: [p.name for p in c.split().val] for _, c in named}
    assert held_out[1] == held_out[0]
    # ... and another split seed holds out other tiles (4 tiles, 2 held out: seeds 0 and 1 differ).
    assert [p.name for p in TrainConfig.from_dict({**base.to_dict(), "split_seed": 1}).split().val] != held_out[0]


def _plausible(name: str, value: torch.Tensor) -> torch.Tensor:
    """Weights a real file could hold, each changed from the network's own initialisation so the test sees they
    were loaded: positive BatchNorm variances and initialisation-sized convolutions (plain randn weights blow up
    18 layers deep into NaN, which `fit` refuses as a diverged run)."""
    if not value.is_floating_point():
        return value
    if name.endswith("running_var"):
        return torch.rand_like(value) + 0.5
    return value * (1 + 0.2 * torch.randn_like(value)) + 0.01 * torch.randn_like(value)


def _imagenet_file(path: Path) -> dict:
    """A file laid out like torchvision's resnet18-f37072fd.pth: backbone names, plus the classifier."""
    torch.manual_seed(1)
    state = build_model(ModelConfig(backbone="resnet18")).backbone.state_dict()
    state = {k: _plausible(k, v) for k, v in state.items()}
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)
    torch.save(state, path)
    return state


def _seed_file(path: Path) -> dict:
    """The seed's format: {'state_dict': ...} saved from nn.DataParallel ('module.' prefixes)."""
    torch.manual_seed(2)
    network = build_model(ModelConfig(backbone="resnet18"))
    state = {k: _plausible(k, v) for k, v in network.state_dict().items()}
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 50}, path)
    return {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}


@pytest.mark.parametrize("make_file", [_imagenet_file, _seed_file], ids=["imagenet", "seed"])
def test_init_loads_weights_reports_them_and_stage_one_keeps_the_backbone(road_tiles, tmp_path, make_file):
    init = tmp_path / "init.pth"
    backbone = make_file(init)
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "training", "fit", "--data", str(road_tiles), "--out", str(out),
                             *TINY, "--stage1-epochs", "1", "--stage2-epochs", "0", "--init", str(init)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"init        {init}" in result.stderr and "backbone" in result.stderr
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for key, value in backbone.items():
        if key.startswith("fc."):
            continue
        assert torch.equal(state[f"network.backbone.{key}"], value), key


def test_ddp_with_two_gloo_processes_pools_validation_over_ranks(road_tiles, tmp_path):
    out = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "training", "fit", "--data", str(road_tiles), "--out", str(out), "--val-tiles", "2",
         "--crop", "64", "--batch-size", "2", "--crops-per-epoch", "8", "--val-tile", "160", "--val-overlap", "0",
         "--stage1-epochs", "1", "--stage2-epochs", "1", "--accelerator", "cpu", "--devices", "2",
         "--strategy", "ddp", "--log-every-n-steps", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world_size=2" in result.stderr.replace(" ", "") or "MEMBER: 2/2" in result.stderr
    final = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == 4  # 8 crops / (2 per batch x 2 processes) = 2 steps per epoch, 2 epochs
    with open(out / "logs" / "metrics.csv") as handle:
        logged = [float(r["val/road_iou"]) for r in csv.DictReader(handle) if r.get("val/road_iou")]
    # The pooled figure both ranks logged equals one process evaluating both tiles with the same weights.
    pairs = split_by_tile(find_pairs(road_tiles), 2)[1]
    labels = inspect_labels(pairs)
    model = road_model(out / "checkpoints" / "last.ckpt")
    counts = np.zeros(3)
    for pair in pairs:
        image, target = read_pair(pair, labels)
        _, mask = predict_tile(model, image, target != 255, 1.0, Inference(tile=160, overlap=0))
        keep = target != 255
        p, t = mask[keep], target[keep] == 1
        counts += [np.sum(p & t), np.sum(p & ~t), np.sum(~p & t)]
    assert logged[-1] == pytest.approx(counts[0] / counts.sum(), abs=1e-6)


def test_line_shifts_score_each_raster_from_several_origins_and_report_the_mean(tmp_path, capsys):
    import rasterio

    from training.evaluate import shifted_copy

    lines = tmp_path / "lines"
    _georeferenced_scene_with_a_road(lines)
    # A shifted copy is the same ground: its pixel (0, 0) is the original's (3, 3), at the same coordinates.
    copy = shifted_copy(lines / "scene.tif", 3, tmp_path)
    with rasterio.open(lines / "scene.tif") as original, rasterio.open(copy) as shifted:
        assert (shifted.width, shifted.height) == (197, 197) and shifted.crs == original.crs
        assert np.array_equal(shifted.read(), original.read()[:, 3:, 3:])
        assert shifted.xy(0, 0) == original.xy(3, 3)
    model = str(REPO / "resources/models/roads-resnet18-massachusetts.pt")
    common = ["evaluate", model, "--lines", str(lines), "--skip-tiles"]  # no --data: only lines are scored
    assert main([*common, "--json", str(tmp_path / "one.json")]) == 0
    assert main([*common, "--line-shifts", "3", "--json", str(tmp_path / "three.json")]) == 0
    one = json.loads((tmp_path / "one.json").read_text())["lines"]["scales 1.0"]
    three = json.loads((tmp_path / "three.json").read_text())["lines"]["scales 1.0"]
    assert one["shifts"] == 1 and "by_shift" not in one and three["shifts"] == 3
    by_shift = three["by_shift"]
    assert len(by_shift) == 3 and by_shift[0]["completeness"] == one["completeness"] > 0.5
    assert three["completeness"] == pytest.approx(np.mean([s["completeness"] for s in by_shift]))
    assert three["completeness_sd"] == pytest.approx(np.std([s["completeness"] for s in by_shift], ddof=1))
    assert all(s["completeness"] > 0.5 for s in by_shift)  # every origin finds the road where the reference has it
    assert [r["shift"] for r in three["rasters"]] == [0, 1, 2]
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        main([*common, "--line-shifts", "0"])
    assert refused.value.code == 2 and "give a whole number from 1" in capsys.readouterr().err
    assert main(["evaluate", model, "--skip-tiles"]) == 2  # nothing to score
    assert "--skip-tiles leaves nothing to score" in capsys.readouterr().err


def test_references_complete_in_part_of_a_raster_are_scored_inside_their_areas(tmp_path, monkeypatch, capsys):
    """One raster, its west and east halves labelled in two folders (`NAME_area.geojson` beside each): each half is
    scored inside its area only, on one shared extraction, and the halves add up to the whole reference."""
    import training.evaluate

    whole = tmp_path / "whole"
    _georeferenced_scene_with_a_road(whole)
    for name, (x0, x1) in {"west": (500000.0, 500100.0), "east": (500100.0, 500200.0)}.items():
        (tmp_path / name).mkdir()
        for file in ("scene.tif", "scene_roads.geojson"):
            (tmp_path / name / file).symlink_to(whole / file)
        ring = [[x0, 4649800.0], [x1, 4649800.0], [x1, 4650000.0], [x0, 4650000.0], [x0, 4649800.0]]
        (tmp_path / name / "scene_area.geojson").write_text(json.dumps({"type": "FeatureCollection", "crs": {
            "type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32619"}}, "features": [
            {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    extractions = []
    real_extract = training.evaluate.extract_roads
    monkeypatch.setattr(training.evaluate, "extract_roads",
                        lambda *args, **kwargs: extractions.append(args) or real_extract(*args, **kwargs))
    model = str(REPO / "resources/models/roads-resnet18-massachusetts.pt")
    assert main(["evaluate", model, "--lines", str(tmp_path / "west"), "--lines", str(tmp_path / "east"),
                 "--skip-tiles", "--json", str(tmp_path / "halves.json")]) == 0
    assert len(extractions) == 2  # one per inference (one scale, three scales), not one per half as well
    halves = json.loads((tmp_path / "halves.json").read_text())["lines"]["scales 1.0"]
    rows = halves["rasters"]
    assert [r["raster"] for r in rows] == [f"scene.tif in {half}/scene_area.geojson" for half in ("west", "east")]
    assert [r["reference_km"] for r in rows] == pytest.approx([0.1, 0.1])
    assert all(r["completeness"] > 0.5 for r in rows)
    assert main(["evaluate", model, "--lines", str(whole), "--skip-tiles", "--json",
                 str(tmp_path / "whole.json")]) == 0
    one = json.loads((tmp_path / "whole.json").read_text())["lines"]["scales 1.0"]
    assert halves["reference_km"] == pytest.approx(one["reference_km"]) and halves["proposal_km"] == pytest.approx(
        one["proposal_km"], abs=0.002)
    # Each set's own figures are kept beside the pooled ones; disjoint halves pool honestly, so nothing is flagged.
    assert list(halves["by_reference"]) == halves["references"] == [r["raster"] for r in rows]
    assert halves["by_reference"][rows[0]["raster"]]["reference_km"] == pytest.approx(0.1)
    assert halves["overlapping_references"] is False and "references" in one and "by_reference" not in one
    # The whole raster beside one of its halves: the pooled row counts the half twice, and says so.
    capsys.readouterr()
    assert main(["evaluate", model, "--lines", str(whole), "--lines", str(tmp_path / "west"), "--skip-tiles",
                 "--json", str(tmp_path / "both.json")]) == 0
    out = capsys.readouterr().out
    both = json.loads((tmp_path / "both.json").read_text())["lines"]["scales 1.0"]
    assert both["overlapping_references"] is True and "counts their shared ground more than once" in out
    assert "| scales 1.0, scene.tif in west/scene_area.geojson |" in out
    from training.fit import line_metrics
    from training.promotion import promotion_verdict

    flat = {"heldout_road_iou": 0.5, "heldout_apls": 0.5}
    with pytest.raises(InputError, match="pool reference sets that cover one raster"):
        promotion_verdict({**flat, **line_metrics({"lines": {"scales 1.0": both}})},
                          {**flat, "lines_completeness": 0.1, "lines_correctness": 0.1})
    with pytest.raises(InputError, match="score both with the same `python -m training evaluate --lines`"):
        promotion_verdict({**flat, **line_metrics({"lines": {"scales 1.0": halves}})},
                          {**flat, **line_metrics({"lines": {"scales 1.0": one}})})
    # A NAME_area file that is no area (the road lines themselves) is refused before any raster is extracted.
    bad = tmp_path / "bad"
    bad.mkdir()
    for file in ("scene.tif", "scene_roads.geojson"):
        (bad / file).symlink_to(whole / file)
    (bad / "scene_area.geojson").symlink_to(whole / "scene_roads.geojson")
    extractions.clear()
    capsys.readouterr()
    assert main(["evaluate", model, "--lines", str(tmp_path / "west"), "--lines", str(bad), "--skip-tiles"]) == 2
    error = capsys.readouterr().err
    assert extractions == [] and f"--lines {bad}: {bad / 'scene_area.geojson'}: it has no polygons" in error


def test_vegas_halves_split_the_tile_and_its_reference_lines_in_two(shared_data, tmp_path):
    """benchmarks/vegas_halves.py: two areas that tile the SpaceNet raster without overlap, read by `evaluate
    --lines` as two reference sets whose road lengths add up to the whole tile's."""
    import rasterio
    import shapely

    from core.metrics import check_reference_area, lines_inside, read_lines, reference_in_area, to_local_metres
    from training.evaluate import _areas_overlap, line_references

    spacenet = shared_data / "spacenet"
    if not (spacenet / "vegas_img0.tif").exists():
        pytest.skip(f"the SpaceNet Las Vegas tile is not in {spacenet}")
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "vegas_halves.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    pairs = line_references([str(tmp_path / "west"), str(tmp_path / "east")])
    assert [p.area.parent.name for p in pairs] == ["west", "east"] and not _areas_overlap(pairs)
    with rasterio.open(spacenet / "vegas_img0.tif") as ds:
        bounds = shapely.box(*ds.bounds)
    truth, lines_crs = read_lines(spacenet / "vegas_img0_roads.geojson")
    areas, lengths = [], []
    for pair in pairs:
        check_reference_area(pair.mask, pair.area)
        inside, area = reference_in_area(truth, lines_crs, pair.area, pair.mask, pair.mask)
        areas.append(area)
        lengths.append(sum(line.length for line in to_local_metres(inside)[0]))
    assert shapely.union_all(areas).symmetric_difference(bounds).area < 1e-9 * bounds.area
    west_end = areas[0].bounds[2]  # the cut lies at pixel column 650 of 1300: the tile's middle
    assert west_end == pytest.approx((bounds.bounds[0] + bounds.bounds[2]) / 2)
    whole = sum(line.length for line in to_local_metres(lines_inside(truth, bounds))[0])
    assert sum(lengths) == pytest.approx(whole, rel=1e-6) and min(lengths) > 0.2 * whole
    # The whole tile beside one of its halves shares ground: a pooled figure of the two would count it twice.
    assert _areas_overlap(line_references([str(spacenet), str(tmp_path / "west")]))
