"""ONNX export for the Deepness QGIS plugin (`export --for deepness`): the file is read and run the way Deepness's
segmentation path does (its metadata parsing, its preprocessing, onnxruntime, its thresholding and argmax), and
the road mask it gives on held-out Massachusetts tiles is the engine's own one-scale mask on the same pixels.

Deepness itself is not installed here (it is a QGIS plugin); `deepness_mask` follows its code
(PUTvision/qgis-plugin-deepness: processing/models/model_base.py, preprocessing_utils.py, segmentor.py and
map_processor/map_processor_segmentation.py), written anew."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import rasterio

from core.extraction.extract import ExtractParams, extract_roads
from core.frontends.cli import main
from core.inputs.raster import ArraySource
from core.model.catalog import DEFAULT_MODEL
from core.model.checkpoint import CheckpointError, ModelInfo, load_model, save_model
from core.options import DEEPNESS_TILE

# Held-out tiles of the shipped model (its provenance's validation_tiles), windows with roads and no white no-data.
# The first two lie inside the model's brightness range, where the engine leaves values as they are; the third is
# darker (median 43), where the engine brightens it and Deepness cannot.
WINDOWS = [("25229185_15", 0, 988), ("22229080_15", 988, 0)]
DARK_WINDOW = ("25229185_15", 988, 0)
MIN_IOU = 0.98


@pytest.fixture(scope="module")
def shipped():
    return load_model(DEFAULT_MODEL)  # fp16 in the file, fp32 once loaded


@pytest.fixture(scope="module")
def deepness_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("deepness") / "roads.onnx"
    assert main(["export", str(DEFAULT_MODEL), "--onnx", str(out), "--for", "deepness"]) == 0
    return out


def deepness_metadata(session) -> dict:
    """What Deepness reads from the file: every value through json.loads, class names sorted by int(key)."""
    raw = session.get_modelmeta().custom_metadata_map
    values = {key: json.loads(raw[key]) for key in ("model_type", "class_names", "resolution", "tile_size",
                                                   "tiles_overlap", "standardization_mean", "standardization_std",
                                                   "seg_thresh", "seg_small_segment")}
    names = sorted(values["class_names"].items(), key=lambda kv: int(kv[0]))
    assert [int(k) for k, _ in names] == list(range(len(names))), "Deepness refuses non-consecutive class ids"
    values["class_names"] = [name for _, name in names]
    return values


def deepness_mask(session, tile: np.ndarray) -> np.ndarray:
    """One tile [H, W, C] uint8 through Deepness's segmentation path -> the road mask."""
    meta = deepness_metadata(session)
    batch = tile[None, :, :, :session.get_inputs()[0].shape[-3]]  # its channel limit
    batch = np.float32(batch * (1.0 / 255.0))  # its normalize_values_to_01
    batch = (batch - np.float32(meta["standardization_mean"])) / np.float32(meta["standardization_std"])
    batch = np.transpose(batch, (0, 3, 1, 2))  # NHWC -> NCHW
    result = session.run(None, {session.get_inputs()[0].name: batch})[0]
    result[result < meta["seg_thresh"]] = 0.0  # its probability threshold, then argmax over classes
    classes = np.argmax(result, axis=1)[0]
    return classes == meta["class_names"].index("road")


def engine_mask(model, tile: np.ndarray, out, **params) -> tuple[np.ndarray, list[str]]:
    result = extract_roads(ArraySource(tile, gsd_m=model.info.gsd_m), model, out,
                           ExtractParams(scales=(1.0,), precision="fp32", device="cpu", **params))
    with rasterio.open(result.mask) as ds:
        return ds.read(1) == 1, result.notes


def window(data, name: str, y: int, x: int) -> np.ndarray:
    from PIL import Image

    image = np.asarray(Image.open(data / "massroads" / "images" / f"{name}.png").convert("RGB"))
    return np.ascontiguousarray(image[y:y + DEEPNESS_TILE, x:x + DEEPNESS_TILE])


def road_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_metadata_is_what_deepness_reads(deepness_file, shipped):
    session = ort.InferenceSession(str(deepness_file), providers=["CPUExecutionProvider"])
    meta = deepness_metadata(session)
    assert str(meta["model_type"]).capitalize() == "Segmentor"  # Deepness's own comparison
    assert meta["class_names"] == ["background", "road"]
    assert meta["resolution"] == pytest.approx(shipped.info.gsd_m * 100)  # cm per pixel
    assert meta["tile_size"] == DEEPNESS_TILE
    assert json.loads(session.get_modelmeta().custom_metadata_map["tiles_size"]) == DEEPNESS_TILE  # its docs' key
    assert 0 < meta["tiles_overlap"] < 50 and meta["seg_small_segment"] == 0 and meta["seg_thresh"] == 0.5
    # Deepness takes the tile size from the input and checks a 4-D square output with one channel per class.
    (image,), (output,) = session.get_inputs(), session.get_outputs()
    assert image.type == output.type == "tensor(float)"
    assert image.shape[1:] == [3, DEEPNESS_TILE, DEEPNESS_TILE] and isinstance(image.shape[0], str)  # batch free
    assert output.shape[1:] == [2, DEEPNESS_TILE, DEEPNESS_TILE]


def test_probabilities_sum_to_one(deepness_file):
    session = ort.InferenceSession(str(deepness_file), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (2, DEEPNESS_TILE, DEEPNESS_TILE, 3), dtype=np.uint8)
    batch = np.transpose(np.float32(tiles / 255.0), (0, 3, 1, 2))
    probabilities = session.run(None, {"image": batch})[0]
    assert probabilities.shape == (2, 2, DEEPNESS_TILE, DEEPNESS_TILE)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("place", WINDOWS, ids=[f"{n}@{y},{x}" for n, y, x in WINDOWS])
def test_deepness_path_gives_the_engines_mask(shared_data, deepness_file, shipped, tmp_path, place):
    tile = window(shared_data, *place)
    session = ort.InferenceSession(str(deepness_file), providers=["CPUExecutionProvider"])
    ours, notes = engine_mask(shipped, tile, tmp_path)
    assert any("values left as they are" in note for note in notes), notes  # no brightness curve in between
    theirs = deepness_mask(session, tile)
    assert ours.sum() > 1000, "the window must hold roads for the comparison to mean something"
    assert road_iou(theirs, ours) >= MIN_IOU


def test_dark_imagery_differs_only_by_the_engines_brightness_matching(shared_data, deepness_file, shipped,
                                                                     tmp_path):
    """Deepness feeds the pixels as they are; the engine brightens imagery darker than the model's training
    imagery. With that turned off (--brightness none) the two masks agree again."""
    tile = window(shared_data, *DARK_WINDOW)
    session = ort.InferenceSession(str(deepness_file), providers=["CPUExecutionProvider"])
    theirs = deepness_mask(session, tile)
    as_is, _ = engine_mask(shipped, tile, tmp_path / "none", brightness="none")
    assert road_iou(theirs, as_is) >= MIN_IOU


def test_engine_refuses_a_deepness_export(deepness_file):
    from core.model.catalog import open_model

    with pytest.raises(CheckpointError, match="export for deepness"):  # an InputError: one line, exit 2
        open_model(deepness_file)


def test_deepness_export_needs_onnx_and_a_gsd(random_model_file, tmp_path, capsys):
    assert main(["export", str(random_model_file), "--for", "deepness"]) == 2
    assert "--onnx" in capsys.readouterr().err
    model = load_model(random_model_file)
    no_gsd = save_model(tmp_path / "no-gsd.pt", model.network, ModelInfo(config=model.info.config))
    out = tmp_path / "x.onnx"
    assert main(["export", str(no_gsd), "--onnx", str(out), "--for", "deepness"]) == 2
    assert "--gsd" in capsys.readouterr().err
    assert not out.exists()
