"""The update-map review loop (issue 32, item 3): an analyst's marks in the GeoPackage (written here as QGIS's editing
writes them: through OGR, QGIS's own GeoPackage provider, feature by feature) become labels; `python -m training
review` fine-tunes on them and compares again against the layer as reviewed; each round's files are named by
round; a review that marks nothing, or a value the field does not know, is refused with one line."""

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import shapely

from core.errors import InputError
from core.roads.review import Review, next_round, read_review, reviewed_layer

REPO = Path(__file__).resolve().parents[1]
TINY = ["--minutes", "0.05"]


def test_rounds_are_named_by_number():
    assert next_round(Path("/x/update.gpkg")) == Path("/x/update-round2.gpkg")
    assert next_round(Path("/x/update-round2.gpkg")) == Path("/x/update-round3.gpkg")
    assert next_round(Path("/x/my-round-trip.gpkg")) == Path("/x/my-round-trip-round2.gpkg")


def test_the_layer_as_reviewed_loses_rejected_stretches_and_gains_accepted_roads():
    layer = [shapely.LineString([(0, 0), (100, 0)]), shapely.LineString([(0, 50), (100, 50)])]
    review = Review(Path("u.gpkg"), None, accepted={"missing": [shapely.LineString([(0, 90), (40, 90)])],
                                                    "unconfirmed": []},
                    rejected={"missing": [shapely.LineString([(0, 70), (30, 70)])],
                              "unconfirmed": [shapely.LineString([(20, 0), (60, 0)])]})
    updated = reviewed_layer(layer, review)
    assert sum(line.length for line in updated) == pytest.approx(100 - 40 + 100 + 40, abs=0.1)
    assert not any(line.intersects(shapely.Point(40, 0)) for line in updated)
    assert [line.length for line in review.not_roads] == [30, 40] and len(review.roads) == 1


@pytest.fixture(scope="module")
def first_round(tmp_path_factory, constant_model):
    """update-map of the generated suburb against half its lines, by a model that sees no road: every road of
    the layer comes back unconfirmed."""
    from core.frontends.demo import write_sample
    from core.inputs.sample import make_suburb
    from core.metrics import read_lines

    folder = tmp_path_factory.mktemp("review")
    raster, roads = write_sample(make_suburb(256), folder)
    lines, _ = read_lines(roads)
    half = folder / "half.geojson"
    half.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {
        "name": "EPSG:32619"}}, "features": [{"type": "Feature", "properties": {}, "geometry":
                                              shapely.geometry.mapping(line)} for line in lines[::2]]}))
    update = folder / "update.gpkg"
    done = subprocess.run([sys.executable, "-m", "core.frontends.cli", "update-map", str(raster), "--roads", str(half),
                           "--out", str(update), "--model", str(constant_model(-4.0)), "--tta-scales", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return folder, raster, half, update


def _mark(update: Path, layer: str, marks: dict[int, str] | None = None, every: str | None = None) -> None:
    """Sets the review field of features `marks` ({fid: value}), or of every feature to `every`."""
    from osgeo import ogr  # GDAL's Python bindings come with QGIS (python3-gdal)

    dataset = ogr.Open(str(update), 1)
    table = dataset.GetLayerByName(layer)
    for feature in table:
        value = every if every is not None else (marks or {}).get(feature.GetFID())
        if value is not None:
            feature.SetField("review", value)
            table.SetFeature(feature)
    dataset = None  # closing writes


def test_a_review_that_marks_nothing_or_a_value_it_does_not_know_is_refused(first_round, tmp_path):
    import shutil

    folder, raster, half, update = first_round
    copy = tmp_path / "update.gpkg"
    shutil.copy(update, copy)
    for layer in ("missing", "unconfirmed"):  # as update-map wrote it, whatever ran first
        _mark(copy, layer, every="new")
    with pytest.raises(InputError, match="no piece of missing or unconfirmed is marked"):
        read_review(copy)
    _mark(copy, "unconfirmed", {1: "maybe"})
    with pytest.raises(InputError, match="review value.*'maybe'"):
        read_review(copy)
    done = subprocess.run([sys.executable, "-m", "training", "review", str(copy), *TINY], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["update.gpkg"]


def test_a_round_teaches_the_review_and_compares_again_against_the_layer_as_reviewed(first_round):
    from core.metrics import read_lines
    from core.model.checkpoint import load_model

    folder, raster, half, update = first_round
    with sqlite3.connect(update) as db:
        (pieces,) = db.execute("SELECT COUNT(*) FROM unconfirmed").fetchone()
    assert pieces >= 2
    _mark(update, "unconfirmed", {1: "rejected", 2: "accepted"})
    marked = read_review(update)
    assert marked.imagery == str(raster) and marked.layer == str(half) and marked.model.endswith("-4.pt")
    done = subprocess.run([sys.executable, "-m", "training", "review", str(update), *TINY], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "unconfirmed: 1 accepted, 1 rejected" in done.stderr and "labels      incomplete" in done.stderr
    round2 = folder / "update-round2.gpkg"
    for path in (round2, folder / "update-round2.pt", folder / "update-round2-roads.gpkg"):
        assert path.exists(), sorted(p.name for p in folder.iterdir())
    assert load_model(folder / "update-round2.pt").info.provenance["parent"].endswith("-4.pt")
    layer, crs = read_lines(half)
    reviewed, _ = read_lines(folder / "update-round2-roads.gpkg", crs)
    gone = marked.rejected["unconfirmed"][0].length
    assert sum(g.length for g in reviewed) == pytest.approx(sum(g.length for g in layer) - gone, rel=0.01)
    again = subprocess.run(
        [sys.executable, "-c", "import sys, pyogrio; print(pyogrio.read_info(sys.argv[1], layer='missing')"
         "['dataset_metadata']['ROAD_EXTRACTOR_ROADS_LAYER'])", str(round2)], capture_output=True, text=True)
    assert again.stdout.strip() == str(folder / "update-round2-roads.gpkg"), again.stderr
    assert not list(folder.glob(".review-*")) and not list(folder.glob(".update-map-*"))
