"""The main job on a built-in sample: a georeferenced wooded suburb with known roads -> the shipped model (or one
the user names) -> tiled multi-scale extraction -> probability and mask rasters -> road GeoPackage -> metrics
against the known roads -> PNG preview, and the shipped ONNX export checked against torch on the same imagery.

The sample is synthetic (drawn after the Massachusetts Roads tiles the model was trained on, see
`core.inputs.sample.make_suburb`), so its figures say the model works end to end on imagery of that kind; the model's
figures on real held-out tiles are in its own file and its card (resources/models/README.md).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.atomic import atomic_output
from core.extraction.inference import DEFAULT_SCALES, normalize
from core.inputs.sample import make_suburb
from core.model.catalog import open_model, resolve_model


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

    from core.inputs.vectors import pyogrio_raw

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
    """The imagery with the extracted road lines (red) and their nodes, junctions and road ends (yellow), over it."""
    import shapely
    from PIL import ImageDraw

    from core.inputs.vectors import pyogrio_raw

    def pixels(x: float, y: float) -> tuple[float, float]:
        return (x - SAMPLE_ORIGIN[0]) / scene.gsd_m, (SAMPLE_ORIGIN[1] - y) / scene.gsd_m

    picture = Image.fromarray(scene.image).convert("RGB")
    draw = ImageDraw.Draw(picture)
    reader = pyogrio_raw()
    lines = reader.read(roads_gpkg, layer="roads", columns=[])[2]
    for line in shapely.from_wkb(lines) if lines is not None else []:
        draw.line([pixels(x, y) for x, y in line.coords], fill=(230, 40, 40), width=3)
    junctions = reader.read(roads_gpkg, layer="junctions", columns=[])[2]
    for point in shapely.from_wkb(junctions) if junctions is not None else []:
        x, y = pixels(point.x, point.y)
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=(255, 220, 0), outline=(0, 0, 0))
    _save_png(np.asarray(picture), out)


def describe_model(path: Path, model) -> str:
    info = model.info
    config, metrics = info.config, info.metrics
    text = (f"model       {path.name}: {config.backbone}, OS{config.output_stride}, attention {config.attention}, "
            f"trained at {info.gsd_m} m/px")
    if "heldout_road_iou" in metrics:
        tiles = len(info.provenance.get("validation_tiles", []))
        data = info.provenance.get("data", "its data")
        data = Path(str(data[0] if isinstance(data, list) and data else data)).name  # validation: the first folder
        f1, apls = metrics.get("heldout_f1", float("nan")), metrics.get("heldout_apls", float("nan"))
        text += (f"; on {tiles} held-out tiles of {data}: road IoU {metrics['heldout_road_iou']:.3f}, "
                 f"F1 {f1:.3f}, APLS {apls:.3f}")
    places = info.place_lines()
    if places:
        text += "\nby place    " + "\n            ".join(places)
    return text


def run_demo(out_dir: Path, size: int = 512, model: str | Path | None = None) -> dict[str, float]:
    """Runs the main job on the suburb sample with `model` (the shipped one by default) and returns its figures."""
    # The model first: a missing or unreadable file is an error with its fix, and nothing has been written yet.
    model_path = resolve_model(model)
    road_model = open_model(model_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = make_suburb(size)
    sample_tif, sample_roads = write_sample(scene, out_dir)
    print(f"sample      {sample_tif} (a synthetic wooded suburb, {size}x{size} px at {scene.gsd_m} m/px in "
          f"{SAMPLE_CRS}, {scene.roads.mean():.1%} road pixels; its road centrelines: {sample_roads.name})")
    print(describe_model(model_path, road_model))

    from core.extraction.extract import ExtractParams, extract_roads
    from core.inputs.raster import RasterioSource
    from core.metrics import evaluate_files
    from core.roads.vectorize import vectorize_file

    timings = {}
    with RasterioSource(sample_tif) as source:
        result = extract_roads(source, road_model, out_dir, ExtractParams(scales=DEFAULT_SCALES, overwrite=True))
    timings["extract"] = result.seconds
    print(f"extract     {result.probability.name}, {result.mask.name}: {result.tiles} tile(s), scales "
          f"{list(DEFAULT_SCALES)}, {result.seconds:.1f} s")
    start = time.perf_counter()
    roads_file = out_dir / "sample_roads_extracted.gpkg"
    network = vectorize_file(result.probability, roads_file, overwrite=True, workers=1)
    timings["vectorize"] = time.perf_counter() - start
    print(f"roads       {roads_file.name}: {len(network.roads)} roads, {network.total_length_m / 1000:.2f} km, "
          f"{network.junction_count} junctions ({timings['vectorize']:.1f} s)")
    draw_preview(scene, roads_file, out_dir / "preview.png")
    print(f"preview     {out_dir / 'preview.png'} (extracted roads in red, their junctions and ends in yellow, over "
          f"the sample)")

    import rasterio

    reference_mask = out_dir / "sample_roads_mask.tif"
    with rasterio.open(result.mask) as ds:
        profile = ds.profile
    profile.update(driver="GTiff", nodata=None)
    with atomic_output(reference_mask) as tmp, rasterio.open(tmp, "w", **profile) as ds:
        ds.write(scene.roads.astype(np.uint8), 1)
    pixels = evaluate_files(result.mask, reference_mask)
    graph = evaluate_files(roads_file, sample_roads)
    figures = {"road_iou": pixels["road_iou"], "f1": pixels["f1"], "relaxed_f1": pixels["relaxed_f1"],
               "apls": graph["apls"], "miou": pixels["miou"], "miou_all_background": pixels["miou_all_background"]}
    print(f"metrics     against the sample's known roads: road IoU {figures['road_iou']:.3f}, F1 {figures['f1']:.3f}, "
          f"relaxed F1 {figures['relaxed_f1']:.3f}, APLS {figures['apls']:.3f}; mIoU {figures['miou']:.3f} against "
          f"{figures['miou_all_background']:.3f} for predicting background everywhere")
    print("            (synthetic imagery: the model's figures on real held-out imagery are in its card, "
          "resources/models/README.md)")
    return {**timings, **figures, **_check_onnx(model_path, road_model, scene, out_dir)}


def _check_onnx(model_path: Path, road_model, scene, out_dir: Path) -> dict[str, float]:
    """The model exported to ONNX here (the project ships only the torch file: the ONNX twin is made from it in
    seconds, `road-extractor export MODEL --onnx OUT.onnx`), run by onnxruntime on the sample: the same road
    probabilities as torch."""
    if model_path.suffix.lower() == ".onnx":
        return {}
    try:
        import onnxruntime as ort

        from core.model.onnx_export import export_onnx
    except ImportError:
        print("onnx        skipped: install the onnx extra (pip install 'road-extractor[onnx]')")
        return {}
    onnx_file = out_dir / model_path.with_suffix(".onnx").name
    started = time.perf_counter()
    export_onnx(road_model, onnx_file, half=True)
    print(f"onnx        exported {onnx_file} in {time.perf_counter() - started:.1f} s")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    inputs = normalize(torch.from_numpy(scene.image).permute(2, 0, 1)[None], road_model.info.normalization)
    onnx_logits = session.run(None, {"image": inputs.numpy()})[0]
    with torch.inference_mode():
        torch_logits = road_model.network.eval()(inputs.contiguous()).numpy()
    # Road probabilities are what users get (stored in 1/255 steps); logits differ by float summation order only.
    onnx_road, torch_road = (torch.softmax(torch.as_tensor(logits), dim=1)[:, 1].numpy()
                             for logits in (onnx_logits, torch_logits))
    difference = float(np.abs(onnx_road - torch_road).max())
    print(f"onnx        {onnx_file.name}: onnxruntime's road probabilities match torch's within {difference:.1e} "
          f"(logits within {float(np.abs(onnx_logits - torch_logits).max()):.1e})")
    return {"onnx_max_probability_diff": difference}
