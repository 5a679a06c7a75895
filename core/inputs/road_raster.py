"""What the values of a one-band road raster mean: a mask (1 road) or a probability, and on what scale.

`vectorize` and `evaluate` both read rasters that other tools made as often as ours: 0/1 and 0/255 masks, uint8
probabilities, float probabilities in 0..1, 16-bit exports. One reading serves both, so a raster is never a mask
to one command and a probability to the other, and a raster whose values mean nothing the engine can tell is
refused with the conversion that makes it readable, not scored or traced at the wrong scale."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.inputs.raster import RasterError, _rotated_grid


@dataclass(frozen=True)
class RoadValues:
    """How to turn a road raster's stored values into a road probability in 0..1: `binary` rasters are road where
    the value is 1; the others are `value / scale`. `threshold` is the probability at which a pixel is road (a
    probability raster of ours records the one it was made with). `read_as` says which, in words, for the log."""

    binary: bool
    scale: float
    threshold: float
    read_as: str
    note: str = ""

    def roads(self, values: np.ndarray) -> np.ndarray:
        """The road pixels of stored `values` (a boolean array)."""
        if self.binary:
            return values == 1
        return values / self.scale >= self.threshold - 1e-9


def _value_range(ds) -> tuple[float, float]:
    """The lowest and highest valid value, block by block (NoData and NaN left out)."""
    low, high = math.inf, -math.inf
    for _, window in ds.block_windows(1):
        values = ds.read(1, window=window, masked=True)
        values = values.compressed() if np.ma.isMaskedArray(values) else values.ravel()
        if values.dtype.kind == "f":
            values = values[np.isfinite(values)]
        if values.size:
            low, high = min(low, float(values.min())), max(high, float(values.max()))
    return low, high


def road_values(ds, path: str | Path) -> RoadValues:
    """How to read `ds` (an open one-band rasterio dataset) as roads; `RasterError` for a raster that is not a road
    mask or probability the engine can read correctly. Our own rasters say what they are (NoData 255 on masks, a
    ROLE tag); any other is told by its data type and values, since a plain 0/1 mask read as 0..255
    probabilities is 1/255 everywhere and holds no road at all."""
    path = Path(path)
    if ds.count != 1:
        raise RasterError(f"{path} has {ds.count} bands; give a road mask or probability raster (one band, as "
                          f"extract writes them), not the imagery")
    if ds.transform.b or ds.transform.d:
        raise RasterError(_rotated_grid(path, ds.transform))
    dtype = np.dtype(ds.dtypes[0])
    role = ds.tags(1).get("ROLE", "")
    threshold = float(ds.tags(1).get("THRESHOLD", 0.5))
    if dtype == np.uint8 and (ds.nodata == 255 or role.startswith("1 road")):
        return RoadValues(True, 1.0, 0.5, "a road mask (1 road, 0 background, 255 no data), as extract writes it")
    if dtype == np.uint8 and role.startswith("road probability"):
        return RoadValues(False, 255.0, threshold, "a road probability (0-255), as extract writes it")
    low, high = _value_range(ds)
    if not math.isfinite(high):
        raise RasterError(f"{path} holds no valid pixel (every one is NoData); give a raster with roads in it")
    if low >= 0 and high <= 1 and (dtype.kind != "f" or {low, high} <= {0.0, 1.0} and _only_0_1(ds)):
        return RoadValues(True, 1.0, 0.5, "a road mask (its values are 0 and 1: 1 is road)")
    if dtype.kind == "f" and low >= 0 and high <= 1:
        return RoadValues(False, 1.0, threshold, f"a road probability (floating point, values up to {high:g})")
    if dtype.kind in "iu" and low >= 0 and high <= 255:
        note = ""
        if high <= 100:
            # Percentages (0-100) are a common export; read as 0..255 none of them reaches a threshold of 0.5.
            note = (f"{path.name}: no value above {high:g}; if it holds percentages (0-100), make a 0-255 copy "
                    f"with: gdal_translate -scale 0 100 0 255 {path} {path.with_name(path.stem + '_255.tif')}")
        return RoadValues(False, 255.0, threshold, f"a road probability (values up to {high:g} read as value/255)",
                          note)
    if dtype.kind == "f":
        raise RasterError(f"{path} holds {dtype.name} values from {low:g} to {high:g}, which are neither a 0/1 "
                          f"mask nor probabilities in 0..1; rescale it to 0..1 or 0..255 (gdal_translate -ot Byte "
                          f"-scale {min(low, 0):g} {high:g} 0 255 ...)")
    raise RasterError(f"{path} holds {dtype.name} values up to {high:g}: neither a 0/1 mask nor a 0-255 "
                      f"probability; make a byte copy with: gdal_translate -ot Byte -scale {min(low, 0):g} {high:g} "
                      f"0 255 {path} {path.with_name(path.stem + '_byte.tif')}")


def _only_0_1(ds) -> bool:
    """A floating-point raster whose every valid value is 0 or 1 (a mask stored as float)."""
    for _, window in ds.block_windows(1):
        values = ds.read(1, window=window, masked=True)
        values = values.compressed() if np.ma.isMaskedArray(values) else values.ravel()
        if np.any((values != 0) & (values != 1) & np.isfinite(values)):
            return False
    return True


def background_is_nodata(ds) -> bool:
    """A road raster whose NoData value is 0, its background value: every pixel without a road would count as no
    data, and a score over what is left sees roads only."""
    return ds.nodata is not None and not math.isnan(ds.nodata) and ds.nodata == 0
