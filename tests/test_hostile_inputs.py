"""Hostile inputs, each once wrong with exit status 0: the tool must refuse them with one line or handle them
right, never answer wrongly. Small real files made in the test."""

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from core.checkpoint import load_model
from core.extract import ExtractParams, extract_roads
from core.models import default_model
from core.raster import RasterioSource


@pytest.fixture(scope="module")
def suburb_float(tmp_path_factory):
    """The built-in suburb as a float32 GeoTIFF (0..255 values) and the shipped model's road fraction on it."""
    from core.sample import make_suburb

    folder = tmp_path_factory.mktemp("float")
    image = make_suburb(512).image.transpose(2, 0, 1).astype(np.float32)
    path = folder / "clean.tif"
    profile = dict(driver="GTiff", width=512, height=512, count=3, dtype="float32", crs="EPSG:32619",
                   transform=from_origin(330000, 4690000, 1, 1))
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(image)
    model = load_model(default_model())
    with RasterioSource(path, value_scale="none") as source:
        clean = extract_roads(source, model, folder / "clean", ExtractParams(scales=(1.0,))).road_fraction
    return folder, image, profile, model, clean


@pytest.mark.parametrize("nodata", [None, float("nan")], ids=["nan-pixel", "nodata-nan"])
def test_one_nan_pixel_does_not_blank_its_tile(suburb_float, nodata):
    folder, image, profile, model, clean = suburb_float
    assert clean > 0.005, "the shipped model should find the sample's streets"
    broken = image.copy()
    broken[:, 200, 300] = np.nan
    path = folder / f"nan-{nodata}.tif"
    with rasterio.open(path, "w", **{**profile, "nodata": nodata}) as ds:
        ds.write(broken)
    with RasterioSource(path, value_scale="none") as source:
        result = extract_roads(source, model, folder / f"out-{nodata}", ExtractParams(scales=(1.0,)))
    assert abs(result.road_fraction - clean) < 0.01, (result.road_fraction, clean)
    with rasterio.open(result.mask) as ds:
        assert ds.read_masks(1)[200, 300] == 0  # the NaN pixel itself is no data in the outputs
