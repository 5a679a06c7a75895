"""Brightness matching: a raster darker or brighter than the model's training imagery is brought into its range by
one gamma curve measured on the whole raster; one inside the range reaches the network exactly as it is."""

import json

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from core.errors import InputError
from core.extraction.brightness import (
    MASSACHUSETTS_BRIGHTNESS,
    apply_gamma,
    gamma_for,
    image_brightness,
    median_brightness,
    training_range,
    widened,
)
from core.extraction.extract import ExtractParams, extract_roads
from core.inputs.raster import ArraySource
from core.model import ModelConfig
from core.model.checkpoint import Architecture, LoadReport, ModelInfo, Normalization, RoadModel, load_model, save_model


class RecordingNet(nn.Module):
    """Keeps every input it is given (normalised) and answers background."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        self.seen.append(x.detach().float().clone())
        return torch.zeros(x.shape[0], 2, *x.shape[2:]) + self.bias


def _recording_model(brightness=None) -> RoadModel:
    config = ModelConfig(backbone="resnet18")
    info = ModelInfo(config=config, gsd_m=1.0, normalization=Normalization(brightness=brightness))
    return RoadModel(RecordingNet().eval(), info, LoadReport("recording", "test"), Architecture(config, {}))


def _fed_values(model: RoadModel) -> np.ndarray:
    """What the network saw, back in 0..255 (one tile)."""
    norm = model.info.normalization
    (x,) = model.network.seen
    mean = torch.tensor(norm.mean).view(1, -1, 1, 1)
    std = torch.tensor(norm.std).view(1, -1, 1, 1)
    return ((x * std + mean) * norm.scale)[0].numpy()


def _image(median: float, size: int = 96) -> np.ndarray:
    """Greys spread around `median`, with a white no-data corner that must not count."""
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(median, 12, (size, size, 1)).repeat(3, axis=2), 0, 249).astype(np.uint8)
    image[: size // 4, : size // 4] = 255
    return image


def test_the_gamma_brings_a_median_to_the_nearer_end_of_the_range_and_leaves_one_inside_alone():
    low, high = 50.0, 100.0
    assert gamma_for(75.0, (low, high)) == 1.0 and gamma_for(None, (low, high)) == 1.0
    dark, bright = _image(25), _image(180)
    for image, goal in ((dark, low), (bright, high)):
        valid = np.ones(image.shape[:2], bool)
        median = image_brightness(image, valid, step=1)
        gamma = gamma_for(median, (low, high))
        assert (gamma < 1) == (goal == low)
        after = apply_gamma(np.moveaxis(image, -1, 0).astype(np.float32), gamma)
        assert median_brightness(after, valid) == pytest.approx(goal, abs=1.0)
        assert after.max() == pytest.approx(255.0)  # white stays white
    inside = np.full((3, 4, 4), 80.0, np.float32)
    assert apply_gamma(inside, 1.0) is inside
    # Saturated white (no-data in many products) is left out of the median; all of it gives no median.
    assert image_brightness(dark, np.ones(dark.shape[:2], bool), step=1) < 30
    assert median_brightness(np.full((3, 5, 5), 255.0), np.ones((5, 5), bool)) is None
    assert 1 / 3 <= gamma_for(0.0, (low, high)) <= 3 and 1 / 3 <= gamma_for(255.0, (low, high)) <= 3


def test_a_dark_raster_reaches_the_network_brightened_into_the_models_range(tmp_path):
    dark = _image(25, size=160)
    model = _recording_model()
    result = extract_roads(ArraySource(dark, gsd_m=1.0), model, tmp_path / "auto",
                           ExtractParams(scales=(1.0,), tile=256))
    fed = _fed_values(model)
    assert median_brightness(fed, np.ones(fed.shape[1:], bool)) == pytest.approx(MASSACHUSETTS_BRIGHTNESS[0], abs=2)
    assert any("gamma" in note and "--brightness none" in note for note in result.notes), result.notes
    with rasterio.open(result.probability) as ds:  # the curve applied is in the outputs' metadata
        assert 0.4 < json.loads(ds.tags()["ROAD_EXTRACTOR_PARAMS"])["gamma"] < 1

    model = _recording_model()
    result = extract_roads(ArraySource(dark, gsd_m=1.0), model, tmp_path / "none",
                           ExtractParams(scales=(1.0,), tile=256, brightness="none"))
    assert np.allclose(_fed_values(model), np.moveaxis(dark, -1, 0), atol=1e-3)
    assert not any(note.startswith("brightness") for note in result.notes)


def test_the_range_a_model_file_records_is_the_one_matched_and_a_raster_inside_it_is_untouched(tmp_path):
    image = _image(25, size=160)
    model = _recording_model(brightness=(20.0, 90.0))  # this model learnt from imagery as dark as this
    result = extract_roads(ArraySource(image, gsd_m=1.0), model, tmp_path / "inside",
                           ExtractParams(scales=(1.0,), tile=256))
    assert np.allclose(_fed_values(model), np.moveaxis(image, -1, 0), atol=1e-3)
    assert any("left as they are" in note for note in result.notes)


def test_the_range_survives_the_model_file_and_a_bad_one_is_refused(tmp_path):
    config = ModelConfig(backbone="resnet18")
    from core.model import build_model

    info = ModelInfo(config=config, gsd_m=1.0, normalization=Normalization(brightness=(52.5, 101.0)))
    path = save_model(tmp_path / "m.pt", build_model(config), info)
    assert load_model(path).info.normalization.brightness == (52.5, 101.0)
    data = info.normalization.to_dict()
    assert Normalization.from_dict({k: v for k, v in data.items() if k != "brightness"}).brightness is None
    with pytest.raises(InputError, match="brightness range"):
        Normalization.from_dict({**data, "brightness": [120, 300]})


def test_training_and_fine_tuning_ranges():
    assert training_range(list(range(1, 101))) == pytest.approx((10.9, 90.1))
    assert training_range([None]) == MASSACHUSETTS_BRIGHTNESS
    # A model fine-tuned on a dark raster must read that raster as it was fine-tuned on it: as it is.
    assert widened((53.0, 101.0), [25.0, None]) == (25.0, 101.0)
    assert widened(None, [140.0]) == (MASSACHUSETTS_BRIGHTNESS[0], 140.0)


def test_a_16_bit_raster_is_read_whole_once_for_its_value_range_and_its_brightness(tmp_path, monkeypatch):
    """Without overviews GDAL reads the whole file for a decimated read: the value percentiles and the median
    brightness come from the same one, and the median is measured on values already mapped to 0..255."""
    from rasterio.transform import from_origin

    from core.inputs.raster import RasterioSource, Window, sample_shape

    size = 1100  # decimated to 550 px: a read of that shape is the whole-raster sample
    rng = np.random.default_rng(1)
    data = rng.normal(3000, 300, (3, size, size)).clip(0, 65535).astype(np.uint16)
    path = tmp_path / "sixteen.tif"
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(500000, 4000000, 1.0, 1.0)) as ds:
        ds.write(data)
    whole = sample_shape(size, size)
    shapes = []
    read = RasterioSource.read

    def counting(self, window, out_shape, scaled=True):
        shapes.append(tuple(out_shape))
        return read(self, window, out_shape, scaled)

    monkeypatch.setattr(RasterioSource, "read", counting)
    model = _recording_model()
    with RasterioSource(path) as source:
        result = extract_roads(source, model, tmp_path / "out", ExtractParams(scales=(1.0,), tile=256))
        assert shapes.count(whole) == 1, shapes[:5]
        values, valid = source.overview()
        expected = read(source, Window(0, 0, size, size), whole)
        assert np.array_equal(values, expected[0]) and np.array_equal(valid, expected[1])
    # The 2-98% percentiles mapped to 0..255 put these values' median near 128 (unscaled it would be 3000).
    (note,) = [n for n in result.notes if n.startswith("brightness:")]
    assert 120 <= int(note.split("median ")[1].split()[0]) <= 136, note
