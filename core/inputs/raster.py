"""Window sources: where the engine's pixels come from, at the resolution it asks for.

`RasterioSource` reads files (GeoTIFF, VRT, JPEG2000, PNG...) window by window with GDAL's resampling, so the
whole raster is never in memory. `ArraySource` serves an in-memory array (the QGIS plugin fills it with what it
reads through QGIS's providers, so web layers work too). Both answer `read(window, out_shape)` with float32
band values and a validity mask (alpha, NoData and dataset masks all folded in).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from core.errors import InputError

# WGS84, for metres per degree at a latitude.
_WGS84_A = 6378137.0
_WGS84_E2 = 6.69437999014e-3
BAND_PRESETS = {"rgb": (1, 2, 3), "bgr": (3, 2, 1), "rgbnir": (1, 2, 3), "nirrg": (2, 3, 1)}
PERCENTILES = (2.0, 98.0)


class RasterError(InputError):
    """An input raster that cannot be used as given; the message names the problem and the fix."""


@dataclass(frozen=True)
class Window:
    """A window in (possibly fractional) pixel coordinates of a source: columns [x, x+width), rows [y, y+height)."""

    x: float
    y: float
    width: float
    height: float


@dataclass
class RasterInfo:
    path: str
    width: int
    height: int
    band_count: int
    dtype: str
    crs_wkt: str | None
    transform: tuple[float, float, float, float, float, float] | None  # GDAL order: x0, dx, rx, y0, ry, dy
    gsd_m: tuple[float, float] | None  # metres per pixel along x and y
    bands: tuple[int, ...]  # 1-based band indices fed to the model, in the model's band order
    value_range: tuple[tuple[float, float], ...] | None  # per model band: values mapped to 0..255, None for 8-bit
    notes: list[str] = field(default_factory=list)

    @property
    def is_geographic(self) -> bool:
        return bool(self.crs_wkt) and "PROJCS" not in self.crs_wkt and "PROJCRS" not in self.crs_wkt


class WindowSource(Protocol):
    info: RasterInfo

    def read(self, window: Window, out_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Band values [C, h, w] float32 (scaled to 0..255 where the input is not 8-bit) and validity [h, w] bool,
        resampled from `window` to `out_shape`. Outside the raster is invalid."""
        ...

    def read_valid(self, window: Window, out_shape: tuple[int, int]) -> np.ndarray:
        """The validity part of `read` alone (cheaper where the source can skip the band values)."""
        ...

    def overview(self) -> tuple[np.ndarray, np.ndarray]:
        """`read` of the whole raster decimated to `sample_shape`, for statistics over all of it; read once, kept."""
        ...

    def close(self) -> None: ...


def metres_per_degree(latitude: float) -> tuple[float, float]:
    """Metres per degree of longitude and of latitude on the WGS84 ellipsoid."""
    phi = math.radians(latitude)
    w = math.sqrt(1 - _WGS84_E2 * math.sin(phi) ** 2)
    meridional = _WGS84_A * (1 - _WGS84_E2) / w**3
    prime_vertical = _WGS84_A / w
    return math.radians(1) * prime_vertical * math.cos(phi), math.radians(1) * meridional


MAX_GSD_M = 1000.0  # metres per pixel: coarser than any imagery roads can be seen in


SAMPLE_SIDE = 1024  # a decimated read of at most this many pixels a side is enough for a raster's statistics


def sample_shape(width: int, height: int) -> tuple[int, int]:
    """The (rows, columns) of a decimated read of a whole raster: statistics such as value percentiles or the median
    brightness need no more, and GDAL reads overviews for it where they exist."""
    step = max(1, math.ceil(max(width, height) / SAMPLE_SIDE))
    return max(1, height // step), max(1, width // step)


def checked_gsd(value, what: str, error: type[InputError] = RasterError) -> float:
    """A ground sample distance in metres per pixel (an input's or a model's), refused unless it is a positive,
    finite, plausible number."""
    gsd = float(value)
    if not (math.isfinite(gsd) and 0 < gsd <= MAX_GSD_M):
        raise error(f"{what} is {value}; give the metres per pixel as a positive number (e.g. 1.0), at most "
                    f"{MAX_GSD_M:g}")
    return gsd


def parse_bands(spec: str | Sequence[int] | None, band_count: int, colorinterp: Sequence[str] = ()) -> tuple[int, ...]:
    """`None` -> the red, green, blue bands by colour interpretation, else bands 1, 2, 3; "bgr" etc. or "3,2,1"."""
    if spec is None:
        names = [c.lower() for c in colorinterp]
        if all(c in names for c in ("red", "green", "blue")):
            return tuple(names.index(c) + 1 for c in ("red", "green", "blue"))
        if band_count >= 3:
            return (1, 2, 3)
        raise RasterError(f"the raster has {band_count} band{'s' if band_count > 1 else ''}; the model needs 3 "
                          f"(red, green, blue) - give --bands 1,1,1 to feed a grey band to all three")
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key in BAND_PRESETS:
            bands = BAND_PRESETS[key]
        else:
            try:
                bands = tuple(int(part) for part in key.split(","))
            except ValueError:
                raise RasterError(f"--bands {spec!r} is not understood; give 1-based band numbers like 3,2,1 or one "
                                  f"of {', '.join(BAND_PRESETS)}") from None
    else:
        bands = tuple(int(b) for b in spec)
    bad = [b for b in bands if not 1 <= b <= band_count]
    if bad:
        raise RasterError(f"--bands asks for band {bad[0]} but the raster has {band_count} band(s); band numbers "
                          f"start at 1")
    return bands


def _nodata_fits(nodata: float | None, dtype: str) -> bool:
    if nodata is None or (isinstance(nodata, float) and math.isnan(nodata)):
        return nodata is not None and np.issubdtype(np.dtype(dtype), np.floating)
    kind = np.dtype(dtype)
    if np.issubdtype(kind, np.integer):
        limits = np.iinfo(kind)
        return float(nodata).is_integer() and limits.min <= nodata <= limits.max
    return True


def _rotated_grid(path: Path, transform) -> str:
    """The refusal of a grid that is not north-up: its rows and columns are not the map's axes, so pixel sizes,
    windows and lengths taken from the x and y terms alone would all be wrong (a 30-degree rotation reads 0.87 m
    pixels as 1 m; 90 degrees leaves no x term at all)."""
    import math

    column_angle = math.degrees(math.atan2(transform.d, transform.a))
    row_angle = math.degrees(math.atan2(transform.b, -transform.e))
    shape = (f"rotated {column_angle:.1f} degrees" if abs(column_angle - row_angle) < 0.01
             else f"skewed (columns at {column_angle:.1f}, rows at {row_angle:.1f} degrees)")
    return (f"the grid of {path} is {shape}, not north-up, which the engine cannot read correctly; make a "
            f"north-up copy with: gdalwarp -r bilinear {path} {path.with_name(path.stem + '_north_up.tif')}")


def check_complete(ds, path: Path) -> None:
    """Reads the raster's last block (bottom right, every band): where a copy or download was cut short, that is
    the part missing, and GDAL's own error later ("Read failed. See previous exception") names no file; in a
    mosaic of many it would stop a region run hours in."""
    from rasterio.errors import RasterioIOError
    from rasterio.windows import Window

    block_height, block_width = ds.block_shapes[0]
    row, col = max(0, ds.height - block_height), max(0, ds.width - block_width)
    try:
        ds.read(window=Window(col, row, ds.width - col, ds.height - row))
    except RasterioIOError:  # GDAL's reason is "Read failed. See previous exception for details."
        raise RasterError(f"{path} cannot be read at its end (rows {row}-{ds.height - 1}); the file is cut short or "
                          f"damaged: copy or download it again") from None


def _grey_palette(ds, band: int) -> bool:
    """A colour table that is the grey ramp of its own bit depth (GDAL gives 1-bit GeoTIFFs a black and white one):
    its indices are the grey values, stretched like any low-bit band."""
    bits = int(ds.tags(band, "IMAGE_STRUCTURE").get("NBITS", 8))
    try:
        table = ds.colormap(band)
    except ValueError:
        return False
    top = (1 << bits) - 1
    return bits < 8 and all(r == g == b == round(i * 255 / top) for i, (r, g, b, *_) in table.items() if i <= top)


class RasterioSource:
    """A raster file read through rasterio, window by window."""

    def __init__(self, path: str | Path, bands: str | Sequence[int] | None = None, gsd_m: float | None = None,
                 value_scale: str = "auto") -> None:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

        self._rasterio = rasterio
        path = Path(path)
        if not path.exists():
            raise RasterError(f"{path}: no such file; check the path")
        if path.is_dir():
            raise RasterError(f"{path} is a folder; give the path of a raster file (GeoTIFF, VRT, JPEG2000, PNG...)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._ds = rasterio.open(path)
        except RasterioIOError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else "unreadable"
            raise RasterError(f"{path} is not a raster GDAL can read ({reason}); give a GeoTIFF or another GDAL "
                              f"raster") from None
        ds = self._ds
        # A VRT (or a raster with sidecar files) opens without its sources; the first read would fail with GDAL's
        # "Read failed. See previous exception", naming nothing.
        missing = [f for f in ds.files[1:] if not f.startswith("/vsi") and not Path(f).exists()]
        if missing:
            ds.close()
            raise RasterError(f"{path} refers to {missing[0]}, which does not exist"
                              + (f" (nor {len(missing) - 1} more)" if len(missing) > 1 else "")
                              + "; restore the file or rebuild the VRT")
        try:
            check_complete(ds, path)
            self.info = self._describe(path, bands, gsd_m, value_scale)
        except BaseException:
            ds.close()
            raise

    def _describe(self, path: Path, bands_spec, gsd_m: float | None, value_scale: str) -> RasterInfo:
        ds = self._ds
        notes: list[str] = []
        colorinterp = [c.name for c in ds.colorinterp]
        if "palette" in colorinterp and not _grey_palette(ds, colorinterp.index("palette") + 1):
            # The values are indices into a colour table: fed as grey (`--bands 1,1,1`) they are no image at all,
            # and resampling them blends unrelated colours. GDAL expands them losslessly.
            raise RasterError(f"{path} holds palette (colour table) indices, not colours; make an RGB copy with: "
                              f"gdal_translate -expand rgb {path} {path.with_name(path.stem + '_rgb.tif')}")
        bands = parse_bands(bands_spec, ds.count, colorinterp)
        self._bands = bands
        self._scale_ranges = None
        self._raw_overview: tuple[np.ndarray, np.ndarray] | None = None
        self._alpha = next((i + 1 for i, c in enumerate(colorinterp) if c == "alpha"), None)
        dtype = ds.dtypes[bands[0] - 1]
        nodata = ds.nodata
        self._nodata = nodata if _nodata_fits(nodata, dtype) else None
        if nodata is not None and self._nodata is None:
            notes.append(f"NoData value {nodata:g} cannot occur in {dtype} bands and is ignored"
                         + ("; the alpha band marks valid pixels" if self._alpha else ""))
        georeferenced = ds.crs is not None and not ds.transform.is_identity
        if georeferenced and (ds.transform.b or ds.transform.d):
            raise RasterError(_rotated_grid(path, ds.transform))
        gcps, _ = ds.gcps
        if not georeferenced and gcps and gsd_m is None:
            raise RasterError(f"{path} is placed by {len(gcps)} ground control points, not by a geotransform, so "
                              f"its pixel size and place are unknown until it is warped; make a georeferenced copy "
                              f"with: gdalwarp -r bilinear {path} {path.with_name(path.stem + '_warped.tif')}")
        transform = tuple(ds.transform.to_gdal()) if georeferenced else None
        if gsd_m is not None:
            gsd = (checked_gsd(gsd_m, "--gsd"),) * 2
            if not georeferenced:
                notes.append(f"no georeferencing: {gsd[0]:g} m per pixel as --gsd says; outputs have no CRS, in "
                             f"metres from the image's top-left corner")
        elif not georeferenced:
            gsd = None
        elif ds.crs.is_geographic:
            lon = ds.transform.c + ds.transform.a * ds.width / 2
            lat = ds.transform.f + ds.transform.e * ds.height / 2
            if not -90 <= lat <= 90 or not -360 <= lon <= 360:
                raise RasterError(f"{path} says its CRS is geographic but its centre ({lon:g}, {lat:g}) is not a "
                                  f"longitude/latitude; fix its georeferencing or give --gsd")
            per_lon, per_lat = metres_per_degree(lat)
            gsd = (abs(ds.transform.a) * per_lon, abs(ds.transform.e) * per_lat)
            notes.append(f"geographic CRS: {gsd[0]:.3f} x {gsd[1]:.3f} m per pixel at latitude {lat:.4f}")
        else:
            try:
                factor = ds.crs.linear_units_factor[1] if ds.crs.linear_units_factor else 1.0
            except Exception:  # noqa: BLE001 - rasterio's CRSError: a local (engineering) CRS has no known unit
                raise RasterError(f"{path} has a local (engineering) CRS whose unit GDAL cannot convert to metres, "
                                  f"so its pixel size is unknown; give --gsd METRES_PER_PIXEL, or assign its "
                                  f"projected CRS (gdal_edit.py -a_srs EPSG:...)") from None
            gsd = (abs(ds.transform.a) * factor, abs(ds.transform.e) * factor)
        self._scale_ranges = self._value_ranges(bands, dtype, value_scale, notes)
        return RasterInfo(str(path), ds.width, ds.height, ds.count, dtype,
                          ds.crs.to_wkt() if georeferenced else None, transform, gsd, bands,
                          self._scale_ranges, notes)

    def _value_ranges(self, bands, dtype: str, value_scale: str, notes: list[str]):
        if value_scale not in ("auto", "percentile", "none"):
            raise RasterError(f"value scaling {value_scale!r} is not known; use auto, percentile or none")
        bits = int(self._ds.tags(bands[0], "IMAGE_STRUCTURE").get("NBITS", 8))
        if dtype == "uint8" and bits < 8 and value_scale != "none":
            # A 1-bit (or 2- or 4-bit) raster holds 0..2^bits-1: read as 8-bit grey it would be black.
            top = (1 << bits) - 1
            notes.append(f"{bits}-bit bands: values 0..{top} stretched to 0..255")
            return ((0.0, float(top)),) * len(bands)
        if value_scale == "none" or (value_scale == "auto" and dtype == "uint8"):
            return None
        values, valid = self._unscaled_overview()
        if valid.any() and all(float(data[valid].min()) == float(data[valid].max()) for data in values):
            raise RasterError(f"{self._ds.name} holds one value ({float(values[0][valid][0]):g}) in every valid pixel "
                              f"of every band read: there is no image to find roads in; check the file (an export "
                              f"that failed, or the wrong band)")
        ranges = []
        for band, data in zip(bands, values, strict=True):
            sample = data[valid]
            if sample.size == 0:
                raise RasterError(f"{self._ds.name} has no valid pixels (everything is NoData or transparent)")
            low, high = np.percentile(sample, PERCENTILES)
            if high <= low:
                high = low + 1
            ranges.append((float(low), float(high)))
            notes.append(f"band {band} ({dtype}): values {low:g}..{high:g} (the {PERCENTILES[0]:g}-"
                         f"{PERCENTILES[1]:g}% percentiles) mapped to 0..255")
        return tuple(ranges)

    def _inside(self, window: Window, out_shape: tuple[int, int]):
        """The part of `window` inside the raster, and where it lands in the output (rows r0:r1, cols c0:c1);
        None when nothing is inside. GDAL reads fractional windows exactly; what lies outside is invalid."""
        from rasterio.windows import Window as RioWindow

        ds = self._ds
        x0, y0 = max(window.x, 0.0), max(window.y, 0.0)
        x1, y1 = min(window.x + window.width, ds.width), min(window.y + window.height, ds.height)
        if x1 <= x0 or y1 <= y0:
            return None
        h, w = out_shape
        sx, sy = w / window.width, h / window.height
        c0, r0 = round((x0 - window.x) * sx), round((y0 - window.y) * sy)
        c1, r1 = round((x1 - window.x) * sx), round((y1 - window.y) * sy)
        if c1 <= c0 or r1 <= r0:
            return None
        return RioWindow(x0, y0, x1 - x0, y1 - y0), (r0, r1, c0, c1)

    def read(self, window: Window, out_shape: tuple[int, int], scaled: bool = True) -> tuple[np.ndarray, np.ndarray]:
        from rasterio.enums import Resampling

        bands = self._bands
        values = np.zeros((len(bands), *out_shape), np.float32)
        valid = np.zeros(out_shape, bool)
        placed = self._inside(window, out_shape)
        if placed is None:
            return values, valid
        inner, (r0, r1, c0, c1) = placed
        downsampling = inner.width > (c1 - c0) * 1.5
        data = self._ds.read(list(bands), window=inner, out_shape=(len(bands), r1 - r0, c1 - c0),
                             resampling=Resampling.average if downsampling else Resampling.bilinear)
        # NaN or infinite values (float rasters, and their spread by bilinear resampling) are no data: never fed to
        # the network, where one NaN pixel turns every logit of its tile into NaN.
        finite = np.isfinite(data)
        values[:, r0:r1, c0:c1] = np.where(finite, data, 0)
        valid[r0:r1, c0:c1] = self._valid(inner, (r1 - r0, c1 - c0), bands, data) & finite.all(axis=0)
        return (self._scaled(values) if scaled else values), valid

    def _scaled(self, values: np.ndarray) -> np.ndarray:
        """Band values mapped to 0..255 by the value ranges (in place); as they are for 8-bit rasters."""
        for i, (low, high) in enumerate(self._scale_ranges or ()):
            values[i] = np.clip((values[i] - low) * (255.0 / (high - low)), 0, 255)
        return values

    def _unscaled_overview(self) -> tuple[np.ndarray, np.ndarray]:
        # One decimated read serves the value ranges and the brightness: without overviews GDAL reads the whole
        # file for it, which on a large mosaic takes minutes.
        if self._raw_overview is None:
            ds = self._ds
            self._raw_overview = self.read(Window(0, 0, ds.width, ds.height), sample_shape(ds.width, ds.height),
                                           scaled=False)
        return self._raw_overview

    def overview(self) -> tuple[np.ndarray, np.ndarray]:
        values, valid = self._unscaled_overview()
        return self._scaled(values.copy()), valid.copy()

    def read_valid(self, window: Window, out_shape: tuple[int, int]) -> np.ndarray:
        """Only the validity of `read`: alpha, NoData and dataset masks, without reading the bands where none of
        them needs the values."""
        valid = np.zeros(out_shape, bool)
        placed = self._inside(window, out_shape)
        if placed is not None:
            inner, (r0, r1, c0, c1) = placed
            valid[r0:r1, c0:c1] = self._valid(inner, (r1 - r0, c1 - c0), self._bands, None)
        return valid

    def _valid(self, window, shape, bands, data: np.ndarray | None) -> np.ndarray:
        from rasterio.enums import Resampling

        ds = self._ds
        if self._alpha is not None:
            alpha = ds.read(self._alpha, window=window, out_shape=shape, resampling=Resampling.nearest)
            return alpha > 0
        valid = np.ones(shape, bool)
        if self._nodata is not None:
            raw = ds.read(list(bands), window=window, out_shape=(len(bands), *shape), resampling=Resampling.nearest)
            nodata = self._nodata
            is_nodata = np.isnan(raw) if isinstance(nodata, float) and math.isnan(nodata) else raw == nodata
            valid &= ~is_nodata.all(axis=0)
        if any(flag.name == "per_dataset" for flag in ds.mask_flag_enums[bands[0] - 1]):
            valid &= ds.dataset_mask(window=window, out_shape=shape, resampling=Resampling.nearest) > 0
        if np.issubdtype(np.dtype(self._ds.dtypes[bands[0] - 1]), np.floating):
            if data is None:
                data = ds.read(list(bands), window=window, out_shape=(len(bands), *shape),
                               resampling=Resampling.nearest)
            valid &= np.isfinite(data).all(axis=0)
        return valid

    def close(self) -> None:
        self._ds.close()

    def __enter__(self) -> RasterioSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ArraySource:
    """An in-memory raster [H, W, C] or [C, H, W] (uint8 values, or already scaled to 0..255)."""

    def __init__(self, array: np.ndarray, *, gsd_m: float | tuple[float, float] | None,
                 transform: tuple[float, float, float, float, float, float] | None = None,
                 crs_wkt: str | None = None, valid: np.ndarray | None = None, channels_last: bool = True) -> None:
        data = np.asarray(array)
        if data.ndim == 2:
            data = data[None]
        elif channels_last:
            data = np.moveaxis(data, -1, 0)
        if data.shape[0] < 3:
            raise RasterError(f"the array has {data.shape[0]} band(s); the model needs 3 (red, green, blue)")
        self._data = data[:3]
        height, width = data.shape[1:]
        self._valid = np.ones((height, width), bool) if valid is None else np.asarray(valid, bool)
        gsd = (gsd_m, gsd_m) if isinstance(gsd_m, (int, float)) else gsd_m
        self.info = RasterInfo("<array>", width, height, data.shape[0], str(data.dtype), crs_wkt, transform, gsd,
                               (1, 2, 3), None)

    def read(self, window: Window, out_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        import torch
        import torch.nn.functional as F

        h, w = out_shape
        height, width = self.info.height, self.info.width
        x0, y0 = max(int(math.floor(window.x)), 0), max(int(math.floor(window.y)), 0)
        x1 = min(int(math.ceil(window.x + window.width)), width)
        y1 = min(int(math.ceil(window.y + window.height)), height)
        values = np.zeros((3, h, w), np.float32)
        valid = np.zeros((h, w), bool)
        if x1 <= x0 or y1 <= y0:
            return values, valid
        # Sample the integer crop at the output pixel centres with exact fractional alignment.
        ys = (np.arange(h) + 0.5) * (window.height / h) + window.y
        xs = (np.arange(w) + 0.5) * (window.width / w) + window.x
        crop = torch.from_numpy(np.ascontiguousarray(self._data[:, y0:y1, x0:x1], dtype=np.float32))[None]
        mask = torch.from_numpy(self._valid[y0:y1, x0:x1].astype(np.float32))[None, None]
        gy = torch.from_numpy(((ys - y0) / (y1 - y0)) * 2 - 1).float()
        gx = torch.from_numpy(((xs - x0) / (x1 - x0)) * 2 - 1).float()
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None]
        values = F.grid_sample(crop, grid, mode="bilinear", align_corners=False, padding_mode="border")[0].numpy()
        inside = ((ys >= 0) & (ys < height))[:, None] & ((xs >= 0) & (xs < width))[None, :]
        valid = F.grid_sample(mask, grid, mode="nearest", align_corners=False)[0, 0].numpy() > 0.5
        return values, valid & inside

    def read_valid(self, window: Window, out_shape: tuple[int, int]) -> np.ndarray:
        return self.read(window, out_shape)[1]

    def overview(self) -> tuple[np.ndarray, np.ndarray]:
        info = self.info
        return self.read(Window(0, 0, info.width, info.height), sample_shape(info.width, info.height))

    def close(self) -> None:
        pass
