"""A models folder serves each imagery resolution with the model listed for it (`catalog.json`): the engine, the
worker's model description, region runs and fine-tuning pick the same one, say which in the log, and refuse a
catalog they cannot read with one line. The shipped folder's catalog lists files that are there."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import InputError
from core.model.catalog import SHIPPED_MODELS, choice_note, choose, read_catalog, resolve_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def two_models(random_model_file, tmp_path):
    """A folder holding two (identical, randomly initialised) models: one for 0.85-1.15 m, one for the rest."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(random_model_file, folder / "home.pt")
    shutil.copy(random_model_file, folder / "world.pt")
    (folder / "catalog.json").write_text(json.dumps({"models": [
        {"file": "home.pt", "gsd_m": [0.85, 1.15], "covers": "1 m aerial"},
        {"file": "world.pt", "covers": "the rest"}]}))
    return folder


def _sample(tmp_path: Path, gsd_m: float) -> Path:
    """The generated suburb as a GeoTIFF claiming `gsd_m` metres per pixel."""
    import rasterio
    from rasterio.transform import from_origin

    from core.frontends.demo import SAMPLE_CRS, SAMPLE_ORIGIN
    from core.inputs.sample import make_suburb

    scene = make_suburb(128)
    path = tmp_path / f"at-{gsd_m:g}.tif"
    with rasterio.open(path, "w", driver="GTiff", width=128, height=128, count=3, dtype="uint8", crs=SAMPLE_CRS,
                       transform=from_origin(*SAMPLE_ORIGIN, gsd_m, gsd_m)) as ds:
        ds.write(scene.image.transpose(2, 0, 1))
    return path


def test_each_resolution_gets_the_model_listed_for_it(two_models):
    catalog = read_catalog(two_models)
    assert [e.path.name for e in catalog] == ["home.pt", "world.pt"]
    assert resolve_model(two_models, 1.0).name == "home.pt" and resolve_model(two_models, 0.3).name == "world.pt"
    assert resolve_model(two_models, 1.15).name == "home.pt" and resolve_model(two_models, 1.2).name == "world.pt"
    assert resolve_model(two_models, None).name == "home.pt"  # resolution unknown: the first
    assert resolve_model(two_models / "world.pt", 1.0).name == "world.pt"  # a file named is the file run
    note = choice_note(two_models, 0.3)
    assert note.startswith("model: world.pt, picked for imagery at 0.30 m per pixel") and "home.pt takes 0.85-1.15" \
        in note
    assert choice_note(two_models / "home.pt", 0.3) is None


def test_the_shipped_catalog_lists_files_that_are_there():
    catalog = read_catalog(SHIPPED_MODELS)
    assert catalog and all(entry.path.exists() for entry in catalog), catalog
    assert catalog[-1].gsd_band_m is None, "the last shipped model must take every resolution the others do not"
    for gsd in (0.1, 0.3, 1.0, 2.0, 10.0):
        assert choose(catalog, gsd).path.exists()


@pytest.mark.parametrize("content, says", [
    ("{not json", "does not parse"),
    ('{"models": [{"file": "home.pt", "gsd_m": [2, 1]}]}', "not a band"),
    ('{"models": []}', "lists no model"),
    ('{"models": [{"gsd_m": [1, 2]}]}', "does not parse"),
], ids=["not json", "band reversed", "empty", "no file"])
def test_a_catalog_that_cannot_be_read_is_refused_with_one_line(two_models, content, says):
    (two_models / "catalog.json").write_text(content)
    with pytest.raises(InputError, match=says):
        resolve_model(two_models, 1.0)


def test_a_folder_of_several_models_without_a_catalog_is_refused(two_models):
    (two_models / "catalog.json").unlink()
    with pytest.raises(InputError, match="without a catalog.json and holds 2 model files"):
        resolve_model(two_models, 1.0)
    (two_models / "world.pt").unlink()
    assert resolve_model(two_models, 0.3).name == "home.pt"  # one file: that one


def test_extraction_and_the_model_description_pick_by_the_rasters_resolution(two_models, tmp_path):
    from core.frontends.worker import describe_model

    for gsd, expected in ((1.0, "home.pt"), (0.5, "world.pt")):
        out = tmp_path / f"out-{gsd:g}"
        done = subprocess.run([sys.executable, "-m", "core.frontends.cli", "extract", str(_sample(tmp_path, gsd)),
                               "--model", str(two_models), "--out", str(out), "--tta-scales", "1", "--no-vectorize"],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert f"model: {expected}, picked for imagery at {gsd:.2f} m per pixel" in done.stderr, done.stderr
    described = describe_model(str(two_models), 0.5)
    assert Path(described["path"]).name == "world.pt"
    assert [e["file"] for e in described["catalog"]] == ["home.pt", "world.pt"]
    assert described["catalog"][1]["serves"] == "every other resolution"
    done = subprocess.run([sys.executable, "-m", "core.frontends.cli", "extract", str(_sample(tmp_path, 1.0)),
                           "--model", str(tmp_path), "--out", str(tmp_path / "bad")], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "bad").exists()
