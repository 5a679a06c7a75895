"""Georeferenced extraction on real rasters: alignment, seams, masks, areas, devices, bad inputs, cancellation."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from torch import nn

from core.errors import OutputError
from core.extraction import devices
from core.extraction.devices import DeviceError, resolve_device, resolve_precision
from core.extraction.extract import ExtractParams, extract_roads
from core.inputs.area import area_from_bbox, area_from_vector
from core.inputs.raster import ArraySource, RasterError, RasterioSource, Window
from core.model import ModelConfig, build_model
from core.model.checkpoint import Architecture, LoadReport, ModelInfo, RoadModel, load_model, save_model
from core.progress import Cancelled, CancelToken

REPO = Path(__file__).resolve().parents[1]
MASS_TILE = "massroads/images/10078735_15.png"


class LocalNet(nn.Module):
    """A network whose output depends only on a 7x7 neighbourhood: any difference between tilings is the engine's."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 2, 3, padding=1))

    def forward(self, x):
        return self.body(x)


def _road_model(network: nn.Module, gsd_m: float | None = 1.0) -> RoadModel:
    config = ModelConfig(backbone="resnet18")
    return RoadModel(network.eval(), ModelInfo(config=config, gsd_m=gsd_m), LoadReport("local.pt", "test"),
                     Architecture(config, {}))


@pytest.fixture(scope="module")
def deeplab_file(tmp_path_factory):
    torch.manual_seed(5)
    config = ModelConfig(backbone="resnet18")
    return save_model(tmp_path_factory.mktemp("model") / "tiny.pt", build_model(config),
                      ModelInfo(config=config, gsd_m=1.0))


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(1), ds.profile, ds.read_masks(1), ds.tags()


def _extract(path, out, model, **kwargs):
    area = kwargs.pop("area", None)
    gsd = kwargs.pop("gsd_m", None)
    with RasterioSource(path, gsd_m=gsd) as source:
        return extract_roads(source, model, out, ExtractParams(scales=(1.0,), **kwargs), area)


# --------------------------------------------------------------------------------------------- seams & grids


def test_many_tiles_equal_one_tile_on_a_real_image(shared_data, tmp_path):
    model = _road_model(LocalNet())
    image = shared_data / MASS_TILE
    many = _extract(image, tmp_path / "many", model, gsd_m=1.0, tile=128, overlap=32)
    one = _extract(image, tmp_path / "one", model, gsd_m=1.0, tile=1536, overlap=0)
    assert many.tiles == 256 and one.tiles == 1  # 16 x 16 at a stride of 96
    a, b = _read(many.probability)[0].astype(int), _read(one.probability)[0].astype(int)
    assert np.abs(a - b).max() <= 2  # of 255: float rounding only
    assert (_read(many.mask)[0] == _read(one.mask)[0]).mean() > 0.999


def test_many_tiles_equal_one_tile_through_resampling_in_degrees(shared_data, tmp_path):
    """SpaceNet Vegas: 0.24 x 0.30 m pixels in EPSG:4326, processed at 1 m and written back on the input's grid."""
    model = _road_model(LocalNet())
    image = shared_data / "spacenet/vegas_img0.tif"
    many = _extract(image, tmp_path / "many", model, tile=64, overlap=16)
    one = _extract(image, tmp_path / "one", model, tile=512, overlap=0)
    assert many.tiles > 20 and one.tiles == 1
    a, profile, _, tags = _read(many.probability)
    b = _read(one.probability)[0]
    # GDAL averages whole source pixels under each target pixel, so a tile's window origin moves a few values by
    # a few grey levels (measured: at most 8 of 255, over 0.5% of pixels); no tile edge shows beyond that.
    difference = np.abs(a.astype(int) - b.astype(int))
    assert difference.max() <= 10 and (difference > 2).mean() < 0.01 and difference.mean() < 0.3
    # This network's probabilities sit near 0.5, where one grey level flips the mask: agreement is not 100%.
    assert (_read(many.mask)[0] == _read(one.mask)[0]).mean() > 0.98
    with rasterio.open(image) as source:
        assert profile["crs"] == source.crs and profile["transform"] == source.transform
        assert (profile["width"], profile["height"]) == (source.width, source.height)
    params = json.loads(tags["ROAD_EXTRACTOR_PARAMS"])
    assert params["processing_scale"][0] == pytest.approx(0.2427, abs=1e-3)
    assert params["processing_scale"][1] == pytest.approx(0.2996, abs=1e-3)


def test_output_at_the_models_resolution(shared_data, tmp_path):
    model = _road_model(LocalNet())
    result = _extract(shared_data / "odd/hro_colorado_0.15m.tif", tmp_path, model, output_resolution="model",
                      tile=64, overlap=8)
    _, profile, _, _ = _read(result.probability)
    assert profile["transform"].a == pytest.approx(1.0, rel=0.01)
    assert profile["width"] == round(383 * 0.1498)


def test_array_source_matches_the_file_source(shared_data, tmp_path):
    model = _road_model(LocalNet())
    path = shared_data / "odd/hro_colorado_0.15m.tif"
    with rasterio.open(path) as ds:
        array, transform, crs = ds.read(), ds.transform.to_gdal(), ds.crs.to_wkt()
    gsd = (0.14981552941953233, 0.1499978958645129)
    from_file = _extract(path, tmp_path / "file", model, tile=64, overlap=16)
    source = ArraySource(array, gsd_m=gsd, transform=transform, crs_wkt=crs, channels_last=False)
    from_array = extract_roads(source, model, tmp_path / "array", ExtractParams(scales=(1.0,), tile=64, overlap=16))
    a, b = _read(from_file.probability)[0].astype(int), _read(from_array.probability)[0].astype(int)
    assert np.abs(a - b).mean() < 3  # GDAL's averaging vs bilinear sampling when shrinking 6.7x


# ------------------------------------------------------------------------------------------- bands & masks


def test_alpha_band_and_out_of_range_nodata_become_nodata(shared_data, tmp_path):
    """The drone orthophoto: RGB + alpha, and a NoData value (-10000) its byte bands cannot hold."""
    model = _road_model(LocalNet())
    path = shared_data / "odd/pix4d_alpha_nodata_0.35m.tif"
    result = _extract(path, tmp_path, model, tile=128, overlap=16)
    mask, _, _, _ = _read(result.mask)
    probability, _, probability_mask, _ = _read(result.probability)
    with rasterio.open(path) as ds:
        transparent = ds.read(4) == 0
    assert (mask[transparent] == 255).all() and (probability_mask[transparent] == 0).all()
    assert (probability[transparent] == 0).all()
    opaque_nodata = (mask == 255) & ~transparent
    assert opaque_nodata.mean() < 0.01  # only a rim at the alpha edge, from the processing grid


def test_sixteen_bit_is_scaled_by_percentiles_not_by_255(shared_data, tmp_path):
    model = _road_model(LocalNet())
    with rasterio.open(shared_data / "odd/hro_colorado_0.15m.tif") as ds:
        rgb, profile = ds.read(), ds.profile
    profile.update(dtype="uint16", driver="GTiff", photometric="RGB")
    wide = tmp_path / "uint16.tif"
    with rasterio.open(wide, "w", **profile) as out:
        out.write(rgb.astype(np.uint16) * 40 + 1000)
    with RasterioSource(wide) as source:
        assert source.info.value_range is not None and source.info.value_range[0][0] > 1000
        assert any("percentiles" in note for note in source.info.notes)
    result = _extract(wide, tmp_path / "wide", model, tile=64, overlap=16)
    eight = _extract(shared_data / "odd/hro_colorado_0.15m.tif", tmp_path / "eight", model, tile=64, overlap=16)
    # The same picture either way: the stretch only moves values by the 2-98% clip.
    assert (_read(result.mask)[0] == _read(eight.mask)[0]).mean() > 0.8


def test_band_mapping(shared_data, tmp_path):
    path = shared_data / "odd/hro_colorado_0.15m.tif"
    with RasterioSource(path, bands="bgr") as source:
        assert source.info.bands == (3, 2, 1)
        window_bgr, _ = source.read(source_window := Window(0, 0, 32, 32), (32, 32))
    with RasterioSource(path, bands="1,2,3") as source:
        window_rgb, _ = source.read(source_window, (32, 32))
    assert np.array_equal(window_bgr[0], window_rgb[2])
    with pytest.raises(RasterError, match="band 5 but the raster has 3"):
        RasterioSource(path, bands="1,2,5")
    with pytest.raises(RasterError, match="not understood"):
        RasterioSource(path, bands="red")


# ---------------------------------------------------------------------------------------------------- area


def test_bbox_in_another_crs(shared_data, tmp_path):
    """The SpaceNet tile is in degrees; the box is given in UTM 11N metres."""
    path = shared_data / "spacenet/vegas_img0.tif"
    with rasterio.open(path) as ds:
        from rasterio.warp import transform_bounds

        west, south, east, north = transform_bounds(ds.crs, "EPSG:32611", *ds.bounds)
    box = (west, south, (west + east) / 2, (south + north) / 2)  # the south-west quarter
    with RasterioSource(path) as source:
        area = area_from_bbox(source.info, box, "EPSG:32611")
        assert area.x0 == 0 and area.y1 == 1300
        # A UTM rectangle is not a rectangle in degrees: its envelope is a little larger.
        assert abs(area.x1 - 650) < 16 and abs(area.y0 - 650) < 16
        result = extract_roads(source, _road_model(LocalNet()), tmp_path, ExtractParams(scales=(1.0,), tile=64,
                                                                                        overlap=8), area)
    _, profile, _, _ = _read(result.probability)
    assert abs(profile["width"] - 650) < 16 and abs(profile["height"] - 650) < 16
    with RasterioSource(path) as source, pytest.raises(RasterError, match="does not overlap the raster"):
        area_from_bbox(source.info, (0, 0, 1, 1), "EPSG:4326")
    with RasterioSource(path) as source, pytest.raises(RasterError, match="not a CRS"):
        area_from_bbox(source.info, box, "EPSG:99999999")


def _write_polygons(path: Path, polygons, crs: str) -> Path:
    import pyogrio
    import shapely

    pyogrio.raw.write(path, geometry=shapely.to_wkb(np.array(polygons, dtype=object)), field_data=[], fields=[],
                      crs=crs, geometry_type="Polygon", driver="GPKG")
    return path


def test_aoi_polygons_limit_tiles_and_clip_results(shared_data, tmp_path):
    import shapely

    path = shared_data / "spacenet/vegas_img0.tif"
    with rasterio.open(path) as ds:
        left, bottom, right, top = ds.bounds
    # A small triangle in the north-west corner of the tile, in Web Mercator to exercise reprojection.
    from rasterio.warp import transform_geom

    triangle = shapely.Polygon([(left, top), (left + (right - left) * 0.4, top), (left, top - (top - bottom) * 0.4)])
    mercator = shapely.geometry.shape(transform_geom("EPSG:4326", "EPSG:3857", shapely.geometry.mapping(triangle)))
    aoi = _write_polygons(tmp_path / "aoi.gpkg", [mercator], "EPSG:3857")
    model = _road_model(LocalNet())
    with RasterioSource(path) as source:
        area = area_from_vector(source.info, aoi)
        clipped = extract_roads(source, model, tmp_path / "aoi", ExtractParams(scales=(1.0,), tile=32, overlap=0),
                                area)
        whole = extract_roads(source, model, tmp_path / "whole",
                              ExtractParams(scales=(1.0,), tile=32, overlap=0),
                              area_from_bbox(source.info, (left, bottom, right, top)))
    mask, profile, _, _ = _read(clipped.mask)
    assert abs(profile["width"] - 520) <= 1 and abs(profile["height"] - 520) <= 1
    assert mask[0, 0] != 255 and mask[-1, -1] == 255  # inside the triangle / outside it
    assert 0.4 < (mask != 255).mean() < 0.6  # half the square
    assert clipped.tiles < whole.tiles / 4  # only the window around the triangle is computed
    empty = _write_polygons(tmp_path / "far.gpkg", [shapely.box(0, 0, 1, 1)], "EPSG:4326")
    with RasterioSource(path) as source, pytest.raises(RasterError, match="does not overlap"):
        area_from_vector(source.info, empty)


def test_aoi_skips_tiles_that_do_not_touch_it(shared_data, tmp_path):
    import shapely

    path = shared_data / "spacenet/vegas_img0.tif"
    with rasterio.open(path) as ds:
        left, bottom, right, top = ds.bounds
    strip = shapely.box(left, top - (top - bottom) * 0.05, right, top)  # a thin strip along the top
    aoi = _write_polygons(tmp_path / "strip.gpkg", [strip], "EPSG:4326")

    class CountingNet(LocalNet):
        calls = 0

        def forward(self, x):
            CountingNet.calls += x.shape[0]
            return super().forward(x)

    with RasterioSource(path) as source:
        extract_roads(source, _road_model(CountingNet()), tmp_path / "o", ExtractParams(scales=(1.0,), tile=32,
                                                                                        overlap=0),
                      area_from_vector(source.info, aoi))
    assert CountingNet.calls == 10  # one row of tiles across 316 px, not the 10 x 1 rows of the whole window


def test_aoi_bad_files(shared_data, tmp_path):
    path = shared_data / "spacenet/vegas_img0.tif"
    text = tmp_path / "notes.txt"
    text.write_text("not a vector file")
    lines = tmp_path / "roads.geojson"
    lines.write_text((shared_data / "spacenet/vegas_img0_roads.geojson").read_text())
    with RasterioSource(path) as source:
        with pytest.raises(RasterError, match="no such file"):
            area_from_vector(source.info, tmp_path / "missing.gpkg")
        with pytest.raises(RasterError, match="not a vector file OGR can read"):
            area_from_vector(source.info, text)
        with pytest.raises(RasterError, match="has no polygons.*LineString"):
            area_from_vector(source.info, lines)


# ----------------------------------------------------------------------------------------- devices & batches


def test_device_choices():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="not known; use auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="torch sees no CUDA GPU.*use device cpu"):
            resolve_device("cuda:0")


@pytest.mark.parametrize("flags, auto", [({"avx2"}, "fp32"), ({"avx2", "avx512_bf16"}, "bf16"),
                                         ({"amx_bf16", "amx_tile"}, "bf16")])
def test_cpu_precision_follows_the_cpu_flags(monkeypatch, flags, auto):
    """auto = bf16 exactly where /proc/cpuinfo shows native bf16 arithmetic; bf16 is refused where it would be
    emulated; fp16 never runs on a CPU. (The flags are substituted: one machine has only one kind of CPU.)"""
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset(flags))
    cpu = torch.device("cpu")
    chosen = resolve_precision("auto", cpu)
    assert chosen.name == auto and (chosen.autocast is torch.bfloat16) == (auto == "bf16")
    assert chosen.lightning == {"fp32": "32-true", "bf16": "bf16-mixed"}[auto]
    assert "auto" in chosen.why and (auto == "fp32" or next(iter(flags & {"amx_bf16", "avx512_bf16"})) in chosen.why)
    assert resolve_precision("fp32", cpu).autocast is None
    if auto == "fp32":
        with pytest.raises(DeviceError, match="no native bf16 arithmetic.*use fp32 or auto"):
            resolve_precision("bf16", cpu)
    else:
        assert resolve_precision("bf16", cpu).autocast is torch.bfloat16
    with pytest.raises(DeviceError, match="fp16 runs on a GPU only"):
        resolve_precision("fp16", cpu)
    with pytest.raises(DeviceError, match="precision 'fp8' is not known"):
        resolve_precision("fp8", cpu)


def test_this_machines_cpu_flags_are_read():
    flags = devices.cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this system")
    assert devices.native_cpu_bf16() in (None, *devices.NATIVE_BF16_CPU_FLAGS)
    assert resolve_precision("auto", torch.device("cpu")).name == ("bf16" if devices.native_cpu_bf16() else "fp32")


def test_bf16_and_fp32_extraction_agree_on_a_real_tile(shared_data, tmp_path):
    """The shipped model on a Massachusetts validation tile (1000x1000 px of it, one scale; 25229185_15, whose crop
    is 97% imagery and 2.6% road: the first tile's is 98% white no-data, where version 2 drew false roads along the
    no-data edge and version 3 none at all): the bf16 and fp32 masks must agree where fp32 is confident and the
    probabilities to a mean absolute difference below 0.01. Runs
    where the CPU (or GPU) has native bf16; elsewhere bf16 is refused, which test_cpu_precision... covers."""
    if resolve_precision("auto", resolve_device("auto")).name != "bf16":
        pytest.skip("this machine has no native bf16 arithmetic (no amx_bf16/avx512_bf16 flag, no bf16 GPU)")
    from PIL import Image

    from core.model.catalog import default_model

    image = np.asarray(Image.open(shared_data / "massroads/images/25229185_15.png").convert("RGB"))[:1000, :1000]
    source = ArraySource(image, gsd_m=1.0)
    model = load_model(default_model())
    results = {}
    for precision in ("fp32", "bf16"):
        result = extract_roads(source, model, tmp_path / precision,
                               ExtractParams(scales=(1.0,), precision=precision))
        assert any(precision in note for note in result.notes if note.startswith("precision"))
        results[precision] = (_read(result.probability)[0].astype(np.float32) / 255, _read(result.mask)[0] == 1)
        tags = json.loads(rasterio.open(result.probability).tags()["ROAD_EXTRACTOR_PARAMS"])
        assert tags["precision_used"] == precision
    (p32, m32), (p16, m16) = results["fp32"], results["bf16"]
    iou = (m32 & m16).sum() / max(1, (m32 | m16).sum())
    assert m32.sum() > 2_000, "the shipped model should find roads on this tile"
    # bf16 moves probabilities by about 1/100, so it can only flip pixels whose probability lies near the threshold:
    # the masks must agree wherever fp32 is at least 0.1 away from it. (How many pixels lie near the threshold
    # depends on the tile, so the road IoU between the masks is reported, not judged: 0.97-0.99 here.)
    confident = np.abs(p32 - 0.5) >= 0.1
    flipped = (m32 != m16) & confident
    print(f"bf16 vs fp32 on 1000x1000 px: road IoU {iou:.4f}, mean |dp| {np.abs(p32 - p16).mean():.5f}, "
          f"{flipped.sum()} confident pixels flipped")
    assert np.abs(p32 - p16).mean() < 0.01
    assert flipped.sum() <= 1e-4 * confident.sum(), f"bf16 flipped {flipped.sum()} pixels fp32 was sure of"


def test_out_of_memory_halves_the_batch_and_goes_on(shared_data, tmp_path):
    class SmallMemoryNet(LocalNet):
        def forward(self, x):
            if x.shape[0] > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().forward(x)

    messages = []
    with RasterioSource(shared_data / "spacenet/vegas_img0.tif") as source:
        reference = extract_roads(source, _road_model(LocalNet()), tmp_path / "ref",
                                  ExtractParams(scales=(1.0,), tile=64, overlap=16, batch_size=1))
        result = extract_roads(source, _road_model(SmallMemoryNet()), tmp_path / "oom",
                               ExtractParams(scales=(1.0,), tile=64, overlap=16, batch_size=8),
                               log=messages.append)
    assert messages[-2:] == ["CUDA out of memory: batch size halved to 4, continuing",
                             "CUDA out of memory: batch size halved to 2, continuing"]
    assert np.array_equal(_read(result.probability)[0], _read(reference.probability)[0])


# --------------------------------------------------------------------------------------- progress & cancel


def test_progress_reports_and_cancel_leaves_nothing(shared_data, tmp_path):
    seen = []
    cancel = CancelToken()

    def progress(p):
        seen.append(p)
        if p.tiles_done >= 3:
            cancel.cancel()

    out = tmp_path / "out"
    with RasterioSource(shared_data / "spacenet/vegas_img0.tif") as source, pytest.raises(Cancelled):
        extract_roads(source, _road_model(LocalNet()), out, ExtractParams(scales=(1.0,), tile=32, overlap=8),
                      progress=progress, cancel=cancel)
    assert not out.exists()  # no output, no temporary folder, not even the output folder the run made
    kept = tmp_path / "kept"
    kept.mkdir()
    cancel = CancelToken()
    with RasterioSource(shared_data / "spacenet/vegas_img0.tif") as source, pytest.raises(Cancelled):
        extract_roads(source, _road_model(LocalNet()), kept, ExtractParams(scales=(1.0,), tile=32, overlap=8),
                      progress=progress, cancel=cancel)
    assert kept.is_dir() and list(kept.iterdir()) == []  # a folder the user made stays
    assert [p.tiles_done for p in seen] == [1, 2, 3] * 2
    assert all(0 < p.fraction < 1 and p.megapixels_per_s > 0 and p.eta_s > 0 for p in seen)

    finished = []
    with RasterioSource(shared_data / "spacenet/vegas_img0.tif") as source:
        extract_roads(source, _road_model(LocalNet()), out, ExtractParams(scales=(1.0,), tile=128, overlap=8),
                      progress=finished.append)
    assert finished[-1].fraction == 1.0 and finished[-1].stage == "writing"
    fractions = [p.fraction for p in finished]
    assert fractions == sorted(fractions)


def test_a_one_tile_raster_shows_progress_within_the_tile_and_a_cancel_acts_after_one_pass(tmp_path):
    """All 8 flips and rotations at 3 scales are 24 network passes over one tile: progress moves with each pass,
    and a cancel stops the run after the pass that is running, not after all 24 (it took 20 s in QGIS)."""
    path = tmp_path / "one_tile.tif"
    with rasterio.open(path, "w", driver="GTiff", width=96, height=96, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000, 4000000, 1, 1)) as ds:
        ds.write(np.random.default_rng(0).integers(0, 255, (3, 96, 96), dtype=np.uint8))
    passes = []
    network = LocalNet()
    network.register_forward_hook(lambda *_: passes.append(1))
    params = ExtractParams(scales=(0.75, 1.0, 1.25), augment="d4", tile=128, overlap=8)
    seen = []
    with RasterioSource(path) as source:
        extract_roads(source, _road_model(network), tmp_path / "whole", params, progress=seen.append)
    inference = [p.fraction for p in seen if p.stage == "inference"]
    assert len(passes) == 24 and inference == [i / 24 for i in range(1, 25)]
    passes.clear()
    cancel = CancelToken()
    with RasterioSource(path) as source, pytest.raises(Cancelled):
        extract_roads(source, _road_model(network), tmp_path / "cancelled", params, cancel=cancel,
                      progress=lambda p: cancel.cancel())
    assert len(passes) == 1 and not (tmp_path / "cancelled").exists()


# ------------------------------------------------------------------------------------------ bad inputs


def test_existing_output_is_kept_unless_overwrite(shared_data, tmp_path):
    model = _road_model(LocalNet())
    path = shared_data / "odd/hro_colorado_0.15m.tif"
    first = _extract(path, tmp_path, model, tile=32, overlap=4)
    before = first.probability.read_bytes()
    with pytest.raises(OutputError, match="already exists; allow overwriting"):
        _extract(path, tmp_path, model, tile=32, overlap=4)
    assert first.probability.read_bytes() == before
    _extract(path, tmp_path, model, tile=32, overlap=4, overwrite=True)


def test_small_rasters(tmp_path):
    model = _road_model(LocalNet())
    for size, ok in ((40, True), (20, False)):
        path = tmp_path / f"small{size}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                           crs="EPSG:32633", transform=from_origin(500000, 4000000, 1, 1)) as ds:
            ds.write(np.full((3, size, size), 120, np.uint8))
        if ok:  # smaller than a tile: one tile the raster's size
            assert _extract(path, tmp_path / "out", model, tile=512).tiles == 1
        else:
            with pytest.raises(RasterError, match="20x20 pixels at the model's resolution; the model needs at least"):
                _extract(path, tmp_path / "out", model, tile=512)


def test_single_band_raster_names_the_fix(tmp_path):
    path = tmp_path / "grey.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000, 4000000, 1, 1)) as ds:
        ds.write(np.zeros((1, 64, 64), np.uint8))
    with pytest.raises(RasterError, match="has 1 band; the model needs 3.*--bands 1,1,1"):
        RasterioSource(path)
    with RasterioSource(path, bands="1,1,1") as source:
        assert source.info.bands == (1, 1, 1)


def test_gsd_far_from_the_models_warns(shared_data, tmp_path):
    messages = []
    with RasterioSource(shared_data / "odd/hro_colorado_0.15m.tif") as source:
        extract_roads(source, _road_model(LocalNet()), tmp_path, ExtractParams(scales=(1.0,), tile=32, overlap=4),
                      log=messages.append)
    assert any(m.startswith("warning: the input is 0.15 m/px and the model was trained at 1 m/px (6.7x apart)")
               for m in messages)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "core", *map(str, args)], capture_output=True, text=True, cwd=REPO)


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda d: d / "missing.tif", "no such file"),
        (lambda d: (d / "notes.tif").write_text("hello") and d / "notes.tif", "not a raster GDAL can read"),
        (lambda d: d, "holds no rasters"),  # a folder is a set of rasters (region scale): an empty one is named
    ],
)
def test_cli_bad_rasters(tmp_path, deeplab_file, make_input, message):
    result = _cli("extract", make_input(tmp_path), "--model", deeplab_file, "--out", tmp_path / "out")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_truncated_geotiff(shared_data, tmp_path, deeplab_file):
    cut = tmp_path / "cut.tif"
    cut.write_bytes((shared_data / "spacenet/vegas_img0.tif").read_bytes()[:200_000])
    result = _cli("extract", cut, "--model", deeplab_file, "--out", tmp_path / "out", "--quiet")
    assert result.returncode in (1, 2) and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() or not any(p.suffix == ".tif" for p in (tmp_path / "out").iterdir())


def test_cli_bad_model_png_without_gsd_and_unwritable_out(shared_data, tmp_path, deeplab_file):
    png = shared_data / MASS_TILE
    not_model = tmp_path / "model.pt"
    not_model.write_text("weights")
    result = _cli("extract", png, "--model", not_model, "--out", tmp_path / "out", "--gsd", "1")
    assert result.returncode == 2 and "not a PyTorch model file" in result.stderr
    result = _cli("extract", png, "--model", deeplab_file, "--out", tmp_path / "out")
    assert result.returncode == 2 and "has no georeferencing" in result.stderr and "--gsd" in result.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = _cli("extract", png, "--model", deeplab_file, "--out", blocker / "sub", "--gsd", "1")
    assert result.returncode == 2 and "cannot create the output folder" in result.stderr


def test_cli_end_to_end_with_the_real_network(shared_data, tmp_path, deeplab_file):
    result = _cli("extract", shared_data / "odd/hro_colorado_0.15m.tif", "--model", deeplab_file, "--out", tmp_path,
                  "--tta-scales", "0.75,1,1.25", "--flip-tta", "--tile", "64", "--overlap", "16")
    assert result.returncode == 0, result.stderr
    assert "hro_colorado_0.15m_road_probability.tif" in result.stdout
    with rasterio.open(tmp_path / "hro_colorado_0.15m_road_mask.tif") as ds:
        assert ds.tags()["ROAD_EXTRACTOR_PARAMS"] and ds.nodata == 255 and ds.width == 383
        assert json.loads(ds.tags()["ROAD_EXTRACTOR_PARAMS"])["augment"] == "flip"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hro_colorado_0.15m_road_mask.tif",
                                                          "hro_colorado_0.15m_road_probability.tif",
                                                          "hro_colorado_0.15m_roads.gpkg"]
    assert "hro_colorado_0.15m_roads.gpkg:" in result.stdout
    from pyogrio import read_info

    metadata = read_info(tmp_path / "hro_colorado_0.15m_roads.gpkg", layer="roads")["dataset_metadata"]
    assert json.loads(metadata["road_extractor_model"])["gsd_m"] == 1.0  # the model's description, from the raster
    assert json.loads(metadata["road_extractor_params"])["augment"] == "flip"
    # Run again: every output exists, so nothing is touched without --overwrite.
    again = _cli("extract", shared_data / "odd/hro_colorado_0.15m.tif", "--model", deeplab_file, "--out", tmp_path)
    assert again.returncode == 2 and "already exists; allow overwriting" in again.stderr


def test_loaded_model_runs(deeplab_file):
    assert load_model(deeplab_file).info.gsd_m == 1.0
