"""The main job on a built-in sample: model file -> inspect -> strict load -> multi-scale inference -> ONNX.

Until a trained model ships with the project, the network here has random weights: the run shows that every
stage works and what each costs, not road quality, and says so.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .atomic import atomic_output
from .checkpoint import load_model, save_model
from .inference import DEFAULT_SCALES, normalize, predict_logits, predict_probabilities
from .model import ModelConfig, build_model
from .sample import make_scene


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_output(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def run_demo(out_dir: Path, size: int = 384) -> dict[str, float]:
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = make_scene(size)
    _save_png(scene.image, out_dir / "sample.png")
    _save_png(scene.roads.astype(np.uint8) * 255, out_dir / "sample_roads.png")
    print(f"sample      {out_dir / 'sample.png'} ({size}x{size} px at {scene.gsd_m} m/px, "
          f"{scene.roads.mean():.1%} road pixels)")

    torch.manual_seed(0)
    config = ModelConfig(backbone="resnet18")
    network = build_model(config)
    # The seed's author saves {'state_dict', 'epoch', 'best_pred'} from a DataParallel model: show it loads as is.
    seed_file = out_dir / "seed_checkpoint.pth"
    with atomic_output(seed_file) as tmp:
        torch.save({"state_dict": {f"module.{k}": v for k, v in network.state_dict().items()},
                    "epoch": 0, "best_pred": 0.0}, tmp)
    model = load_model(seed_file, gsd_m=scene.gsd_m)
    report = model.report
    print(f"seed file   {seed_file.name}: {report.file_kind}, prefix {report.stripped_prefix!r} removed, "
          f"{len(report.matched)} tensors matched, {len(report.missing)} missing, "
          f"{len(report.unexpected)} unexpected")
    model.info.provenance = {"trained": "no - random weights, for the demo of the plumbing"}
    model_file = save_model(out_dir / "demo_model.pt", model.network, model.info)
    print(f"model file  {model_file.name}: {config.backbone}, OS{config.output_stride}, attention "
          f"{config.attention}, {model_file.stat().st_size / 1e6:.1f} MB (inspect it: road-extractor inspect "
          f"{model_file})")

    image = torch.from_numpy(scene.image).permute(2, 0, 1)[None]
    inputs = normalize(image, model.info.normalization)
    timings = {}
    with torch.inference_mode():
        for name, scales in (("single-scale", (1.0,)), ("multi-scale", DEFAULT_SCALES)):
            start = time.perf_counter()
            predict_logits(model.network, inputs, scales)
            timings[name] = time.perf_counter() - start
            print(f"inference   {name} {list(scales)}: {timings[name]:.2f} s, "
                  f"{size * size / 1e6 / timings[name]:.2f} MP/s on the CPU")
        probabilities = predict_probabilities(model.network, inputs)[0, 1].numpy()
    _save_png((probabilities * 255).round().astype(np.uint8), out_dir / "road_probability.png")
    predicted = probabilities > 0.5
    union = np.logical_or(predicted, scene.roads).sum()
    iou = float(np.logical_and(predicted, scene.roads).sum() / union) if union else 1.0
    print(f"probability {out_dir / 'road_probability.png'}")
    print(f"road IoU    {iou:.3f} against the sample's known roads - the weights are random, so this is chance "
          f"level; a trained model ships with a later release")

    try:
        import onnxruntime as ort

        from .onnx_export import export_onnx
    except ImportError:
        print("onnx        skipped: install the onnx extra (pip install 'road-extractor[onnx]')")
        return {**timings, "road_iou": iou}
    onnx_file = export_onnx(model, out_dir / "demo_model.onnx")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(None, {"image": inputs.numpy()})[0]
    with torch.inference_mode():
        torch_logits = model.network(inputs).numpy()
    difference = float(np.abs(onnx_logits - torch_logits).max())
    print(f"onnx        {onnx_file.name}: onnxruntime matches torch within {difference:.1e}")
    return {**timings, "road_iou": iou, "onnx_max_abs_diff": difference}
