"""The main job on a built-in sample: a georeferenced scene with known roads -> model file (loaded strictly from
the seed's checkpoint format) -> tiled multi-scale extraction -> road GeoPackage -> metrics -> PNG preview, and the
ONNX export checked against torch.

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
from .inference import DEFAULT_SCALES, normalize
from .model import ModelConfig, build_model
from .sample import make_scene


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_output(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


SAMPLE_ORIGIN = (330000.0, 4690000.0)  # UTM 19N (EPSG:32619), near Boston: where Massachusetts Roads was drawn
SAMPLE_CRS = "EPSG:32619"


def write_sample(scene, out_dir: Path) -> tuple[Path, Path]:
    """The scene as a georeferenced GeoTIFF at its GSD, and its road centrelines as a GeoPackage."""
    import rasterio
    import shapely
    from rasterio.transform import from_origin

    from .geopackage import pyogrio_raw

    transform = from_origin(*SAMPLE_ORIGIN, scene.gsd_m, scene.gsd_m)
    raster = out_dir / "sample.tif"
    height, width = scene.roads.shape
    with atomic_output(raster) as tmp, rasterio.open(tmp, "w", driver="GTiff", width=width, height=height, count=3,
                                                       dtype="uint8", crs=SAMPLE_CRS, transform=transform,
                                                       photometric="RGB") as ds:
        ds.write(scene.image.transpose(2, 0, 1))
    lines = [shapely.LineString([transform * (x, y) for x, y in points]) for points in scene.centrelines]
    lines = [shapely.clip_by_rect(line, *rasterio.transform.array_bounds(height, width, transform))
             for line in lines]
    lines = [part for line in lines for part in shapely.get_parts(line) if part.length > 0]
    reference = out_dir / "sample_roads.gpkg"
    with atomic_output(reference) as tmp:
        tmp.unlink()
        pyogrio_raw().write(tmp, geometry=shapely.to_wkb(np.array(lines, dtype=object)), field_data=[], fields=[],
                            crs=SAMPLE_CRS, geometry_type="LineString", driver="GPKG", layer="roads")
    return raster, reference


def draw_preview(scene, roads_gpkg: Path, out: Path) -> None:
    """The imagery with the extracted road lines drawn over it."""
    import shapely
    from PIL import ImageDraw

    from .geopackage import pyogrio_raw

    picture = Image.fromarray(scene.image).convert("RGB")
    draw = ImageDraw.Draw(picture)
    geometries = pyogrio_raw().read(roads_gpkg, layer="roads", columns=[])[2]
    for line in shapely.from_wkb(geometries) if geometries is not None else []:
        points = [((x - SAMPLE_ORIGIN[0]) / scene.gsd_m, (SAMPLE_ORIGIN[1] - y) / scene.gsd_m) for x, y in line.coords]
        draw.line(points, fill=(230, 40, 40), width=3)
    _save_png(np.asarray(picture), out)


def run_demo(out_dir: Path, size: int = 384) -> dict[str, float]:
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = make_scene(size)
    sample_tif, sample_roads = write_sample(scene, out_dir)
    print(f"sample      {sample_tif} ({size}x{size} px at {scene.gsd_m} m/px in {SAMPLE_CRS}, "
          f"{scene.roads.mean():.1%} road pixels; its roads: {sample_roads.name})")

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

    from .extract import ExtractParams, extract_roads
    from .metrics import evaluate_files
    from .raster import RasterioSource
    from .vectorize import vectorize_file

    timings = {}
    with RasterioSource(sample_tif) as source:
        result = extract_roads(source, model, out_dir, ExtractParams(scales=DEFAULT_SCALES, overwrite=True))
    timings["extract"] = result.seconds
    print(f"extract     {result.probability.name}, {result.mask.name}: {result.tiles} tile(s), scales "
          f"{list(DEFAULT_SCALES)}, {result.seconds:.1f} s")
    start = time.perf_counter()
    roads_file = out_dir / "sample_roads_extracted.gpkg"
    network = vectorize_file(result.probability, roads_file, overwrite=True, workers=1)
    timings["vectorize"] = time.perf_counter() - start
    print(f"roads       {roads_file.name}: {len(network.roads)} roads, {network.total_length_m / 1000:.2f} km "
          f"({timings['vectorize']:.1f} s)")
    draw_preview(scene, roads_file, out_dir / "preview.png")
    print(f"preview     {out_dir / 'preview.png'} (extracted roads in red over the sample)")
    reference_mask = out_dir / "sample_roads_mask.tif"
    import rasterio

    with rasterio.open(result.mask) as ds:
        profile = ds.profile
    profile.update(driver="GTiff", nodata=None)
    with atomic_output(reference_mask) as tmp, rasterio.open(tmp, "w", **profile) as ds:
        ds.write(scene.roads.astype(np.uint8), 1)
    pixels = evaluate_files(result.mask, reference_mask)
    graph = evaluate_files(roads_file, sample_roads)
    iou = pixels["road_iou"]
    print(f"metrics     road IoU {iou:.3f}, F1 {pixels['f1']:.3f}, relaxed F1 {pixels['relaxed_f1']:.3f}, APLS "
          f"{graph['apls']:.3f}; mIoU {pixels['miou']:.3f} against {pixels['miou_all_background']:.3f} for "
          f"predicting background everywhere")
    print("            the weights are random, so these are chance level; a trained model ships with a later "
          "release")

    try:
        import onnxruntime as ort

        from .onnx_export import export_onnx
    except ImportError:
        print("onnx        skipped: install the onnx extra (pip install 'road-extractor[onnx]')")
        return {**timings, "road_iou": iou}
    onnx_file = export_onnx(model, out_dir / "demo_model.onnx")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    inputs = normalize(torch.from_numpy(scene.image).permute(2, 0, 1)[None], model.info.normalization)
    onnx_logits = session.run(None, {"image": inputs.numpy()})[0]
    with torch.inference_mode():
        torch_logits = model.network(inputs.contiguous()).numpy()
    difference = float(np.abs(onnx_logits - torch_logits).max())
    print(f"onnx        {onnx_file.name}: onnxruntime matches torch within {difference:.1e}")
    return {**timings, "road_iou": iou, "onnx_max_abs_diff": difference}
