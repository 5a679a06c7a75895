"""The main job on the built-in sample runs end to end and writes its files."""

import numpy as np
import rasterio
from PIL import Image

from core.demo import run_demo
from core.sample import make_scene


def test_sample_scene_is_repeatable_and_has_roads():
    a, b = make_scene(128, seed=3), make_scene(128, seed=3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.roads, b.roads)
    assert 0.02 < a.roads.mean() < 0.3


def test_demo_writes_every_output(tmp_path, capsys):
    results = run_demo(tmp_path, size=160)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"sample.tif", "sample_roads.gpkg", "seed_checkpoint.pth", "demo_model.pt", "demo_model.onnx",
            "sample_road_probability.tif", "sample_road_mask.tif", "sample_roads_extracted.gpkg",
            "preview.png"} <= names
    assert not [n for n in names if ".part" in n or n.startswith(".")]
    assert np.asarray(Image.open(tmp_path / "preview.png")).shape == (160, 160, 3)
    with rasterio.open(tmp_path / "sample_road_probability.tif") as ds:
        assert ds.crs.to_epsg() == 32619 and ds.width == 160
    assert results["onnx_max_abs_diff"] < 1e-3
    assert 0 <= results["road_iou"] <= 1
    out = capsys.readouterr().out
    assert "prefix 'module.' removed" in out and "weights are random" in out and "APLS" in out


def test_the_suburb_sample_is_repeatable_and_its_roads_match_their_centrelines():
    import shapely

    from core.sample import make_suburb

    a, b = make_suburb(256, seed=5), make_suburb(256, seed=5)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.roads, b.roads)
    assert 0.02 < a.roads.mean() < 0.15  # a suburb: a few per cent of the pixels are road
    inside = []
    for line in a.centrelines:
        for x, y in shapely.LineString(line).segmentize(2).coords:
            if 0 <= x < 256 and 0 <= y < 256:
                inside.append(a.roads[int(y), int(x)])
    assert np.mean(inside) > 0.99  # the centrelines run inside the road mask
    road_grey = a.image[a.roads].mean(axis=0)
    assert np.ptp(road_grey) < 12 and 90 < road_grey.mean() < 140  # grey asphalt, as in the Massachusetts tiles
