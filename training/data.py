"""Training data: image/mask pairs found on disk, labels made unambiguous, crops augmented reproducibly.

The seed's codebase trains Massachusetts Roads with `ignore_index=255` on masks stored as 0/255: every road pixel
becomes "ignore", the network only ever sees background, and mIoU sits at the all-background value. Here masks are
inspected once, their values mapped to class indices (0/255 and 0/1 both become 0 = background, 1 = road), and
only real no-data becomes the ignore label: white (255, 255, 255) image pixels, where Massachusetts masks still
draw roads over nothing.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from core.options import ROAD_WIDTH_M

from .augment import Augment, imitate_sensor, invert_brightness
from .description import BLACK_LEVEL, WHITE_LEVEL, DataDescription, DescriptionError, resolve_data

IGNORE = 255
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
LOSSY_SUFFIXES = (".jpg", ".jpeg")
# (image folder, mask folder) layouts: Massachusetts as republished, and as in the original release.
FOLDER_LAYOUTS = (("images", "masks"), ("sat", "map"))


class DataError(ValueError):
    """A dataset that cannot be trained on as given; the message names the problem and the fix."""


RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb")


@dataclass(frozen=True)
class Pair:
    """An image and its labels: a mask raster, or road centrelines (a vector file) that `read_pair` rasterises
    `road_width_m` wide after resampling the georeferenced image to `gsd_m`. `area`: polygons where the centrelines
    are complete (`NAME_area.gpkg|geojson` beside them); outside, nothing is learnt or scored."""

    image: Path
    mask: Path
    gsd_m: float = 1.0
    road_width_m: float = ROAD_WIDTH_M
    area: Path | None = None
    # Mask pairs: the GSD the image and mask are stored at (None: already at `gsd_m`), what the mask covers
    # (`description.LABEL_KINDS`), which image pixels hold no data (`description.NODATA_RULES`), and the target
    # trained on: the labels as they are, or surfaces narrowed to centreline buffers (`LABEL_TARGETS`).
    image_gsd_m: float | None = None
    label: str = "centreline"
    nodata: str = "white"
    target: str = "as_is"
    label_width_m: float | None = None  # a centreline buffer's drawn width (None: not stated)

    @property
    def name(self) -> str:
        return self.image.stem.removesuffix("_sat")

    @property
    def has_vector_roads(self) -> bool:
        return self.mask.suffix.lower() in VECTOR_SUFFIXES


def find_pairs(root: str | Path, gsd_m: float = 1.0, road_width_m: float = ROAD_WIDTH_M) -> list[Pair]:
    """Image/mask pairs under `root`: `images/` + `masks/`, `sat/` + `map/` (matched by file stem), DeepGlobe's
    `NAME_sat.jpg` + `NAME_mask.png` side by side, or georeferenced rasters with road centrelines: `images/` +
    `roads/` (same stem), or `NAME.tif` + `NAME_roads.gpkg|geojson|...` side by side (SpaceNet's layout), each
    optionally with the area where its lines are complete (`areas/NAME.gpkg`, or `NAME_area.gpkg` beside it)."""
    root = Path(root)
    georeferenced = _vector_pairs(root, gsd_m, road_width_m)
    if georeferenced:
        return georeferenced
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; give the dataset folder (with images/ and masks/)")
    for image_dir, mask_dir in FOLDER_LAYOUTS:
        if (root / image_dir).is_dir() and (root / mask_dir).is_dir():
            masks = {p.stem: p for p in (root / mask_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
            images = sorted(p for p in (root / image_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            pairs = [Pair(p, masks[p.stem], gsd_m, road_width_m) for p in images if p.stem in masks]
            unmatched = [p.name for p in images if p.stem not in masks]
            if unmatched:
                raise DataError(f"{len(unmatched)} image(s) in {root / image_dir} have no mask of the same name in "
                                f"{root / mask_dir} (first: {unmatched[0]}); add the masks or remove the images")
            if pairs:
                return pairs
    satellites = sorted(root.glob("*_sat.jpg")) + sorted(root.glob("*_sat.png"))
    pairs = [Pair(p, p.with_name(p.stem.removesuffix("_sat") + "_mask.png"), gsd_m, road_width_m) for p in satellites]
    pairs = [p for p in pairs if p.mask.exists()]
    if pairs:
        return pairs
    raise DataError(f"no image/mask pairs in {root}: expected images/ + masks/, sat/ + map/, or NAME_sat.jpg + "
                    f"NAME_mask.png")


@dataclass(frozen=True)
class LabelMap:
    """How a dataset's mask values become class indices: `road_values` -> 1, everything else -> 0."""

    road_values: tuple[int, ...]
    seen_values: tuple[int, ...]

    def apply(self, mask: np.ndarray) -> np.ndarray:
        return np.isin(mask, self.road_values).astype(np.uint8)


def inspect_labels(pairs: list[Pair], sample: int = 8) -> LabelMap:
    """Looks at the masks' values: 0/255 (Massachusetts) and 0/1 are both binary road masks."""
    if pairs and all(p.has_vector_roads for p in pairs):
        return LabelMap((1,), (0, 1))  # rasterised here: 1 on roads
    seen: set[int] = set()
    for pair in pairs[:sample]:
        seen |= set(np.unique(_read_mask(pair.mask)).tolist())
    values = tuple(sorted(seen))
    if set(values) <= {0, 255}:
        return LabelMap((255,), values)
    if set(values) <= {0, 1}:
        return LabelMap((1,), values)
    raise DataError(f"the masks hold values {list(values)[:10]}; expected a binary road mask (0/255 or 0/1) - "
                    f"convert multi-class masks to road/background first")


def _vector_pairs(root: Path, gsd_m: float, road_width_m: float) -> list[Pair]:
    if not root.is_dir():
        return []

    def first(paths) -> Path | None:
        return next((p for p in paths if p.exists()), None)

    def vectors_by_stem(folder: Path) -> dict[str, Path]:
        return {p.stem: p for p in folder.iterdir() if p.suffix.lower() in VECTOR_SUFFIXES} if folder.is_dir() else {}

    candidates = []
    if (root / "images").is_dir() and (root / "roads").is_dir():
        roads, areas = vectors_by_stem(root / "roads"), vectors_by_stem(root / "areas")
        candidates = [(p, roads.get(p.stem), areas.get(p.stem)) for p in sorted((root / "images").iterdir())
                      if p.suffix.lower() in RASTER_SUFFIXES]
    else:
        for image in sorted(p for p in root.iterdir() if p.suffix.lower() in RASTER_SUFFIXES):
            candidates.append((image, first(image.with_name(f"{image.stem}_roads{s}") for s in VECTOR_SUFFIXES),
                               first(image.with_name(f"{image.stem}_area{s}") for s in VECTOR_SUFFIXES)))
    missing = [image.name for image, roads, _ in candidates if roads is None]
    pairs = [Pair(image, roads, gsd_m, road_width_m, area) for image, roads, area in candidates if roads is not None]
    if pairs and missing:
        raise DataError(f"{len(missing)} raster(s) in {root} have no road vector file (first: {missing[0]}); add "
                        f"NAME_roads.gpkg (or .geojson) beside each, or move the raster out")
    return pairs


def _read_mask(path: Path) -> np.ndarray:
    mask = np.asarray(Image.open(path))
    return mask[..., 0] if mask.ndim == 3 else mask


def read_pair(pair: Pair, labels: LabelMap) -> tuple[np.ndarray, np.ndarray]:
    """uint8 image [H, W, 3] and target [H, W]: 0 background, 1 road, IGNORE where the image has no data."""
    if pair.has_vector_roads:
        return _read_georeferenced(pair)
    image = np.asarray(Image.open(pair.image).convert("RGB"))
    mask = _read_mask(pair.mask)
    if mask.shape != image.shape[:2]:
        raise DataError(f"{pair.mask.name} is {mask.shape[1]}x{mask.shape[0]} but {pair.image.name} is "
                        f"{image.shape[1]}x{image.shape[0]}; masks must match their images")
    target = labels.apply(mask)
    if pair.nodata == "white":  # where Massachusetts' masks draw roads over nothing; JPEG rounds 255 to 250-255
        white = WHITE_LEVEL if pair.image.suffix.lower() in LOSSY_SUFFIXES else 255
        target[(image >= white).all(axis=2)] = IGNORE
    elif pair.nodata == "black":  # Shanghai's wedges outside the scene
        target[(image <= BLACK_LEVEL).all(axis=2)] = IGNORE
    if pair.image_gsd_m is not None:
        image, target = resample_to_gsd(image, target, pair.image_gsd_m, pair.gsd_m)
    if _redrawn(pair):
        target = surface_to_centreline(target, pair.road_width_m / pair.gsd_m)
    return image, target


def _redrawn(pair: Pair) -> bool:
    """Whether `read_pair` redraws the pair's labels as centreline buffers of `road_width_m`: surfaces under both
    centreline targets; under `one_width`, also buffers drawn at another width (SpaceNet's 4.6 m, a lines
    raster's 11 m), so that every place teaches one road width and width is not a thing the model must guess from
    where the imagery comes from (a pixel wider or narrower than --road-width-m is kept as drawn)."""
    if pair.target == "as_is":
        return False
    if pair.label == "surface":
        return True
    return (pair.target == "one_width" and pair.label_width_m is not None
            and abs(pair.label_width_m - pair.road_width_m) > pair.gsd_m)


LABEL_TARGETS = ("as_is", "centreline", "one_width")


def resample_to_gsd(image: np.ndarray, target: np.ndarray, image_gsd_m: float,
                    gsd_m: float) -> tuple[np.ndarray, np.ndarray]:
    """An image and its 0/1/IGNORE target from `image_gsd_m` to `gsd_m` metres per pixel.

    The image is area-averaged when it shrinks (a box filter, as GDAL's `average` the engine reads rasters with)
    and interpolated bilinearly when it grows. The mask is resampled as fractions: each new pixel's share of road
    among its valid source pixels, road where that share is at least one half, ignore where less than half of it
    holds data. A road of width w metres so stays w metres wide to within one new pixel (nearest-neighbour
    picking would keep or drop whole source rows of a thin road by where the grid falls), and a road narrower than
    half a new pixel disappears, as it would from the imagery at that GSD."""
    scale = image_gsd_m / gsd_m
    if abs(scale - 1) < 1e-3:
        return image, target
    height, width = target.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    method = Image.BOX if scale < 1 else Image.BILINEAR
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(size, method))
    valid = target != IGNORE

    def shares(plane: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(plane.astype(np.float32), mode="F").resize(size, method))

    valid_share = shares(valid)
    road_share = shares(valid & (target == 1))
    out = (road_share >= 0.5 * np.maximum(valid_share, 1e-6)).astype(np.uint8)
    out[valid_share < 0.5] = IGNORE
    return resized, out


def surface_to_centreline(target: np.ndarray, width_px: float) -> np.ndarray:
    """A road-surface target (or a buffer of another width) as a centreline buffer `width_px` wide (the labels
    Massachusetts Roads draws and the vectorizer reads): the road's skeleton widened to the buffer is road; the
    rest of the old road is IGNORE, neither road nor background, so a wide road's kerbside is not taught as
    background. A narrower buffer widens: its centreline's new band is road, as Massachusetts draws a fixed width
    whatever the road's."""
    import cv2
    from skimage.morphology import skeletonize

    road = target == 1
    if not road.any():
        return target
    skeleton = skeletonize(road)
    distance = cv2.distanceTransform((~skeleton).astype(np.uint8), cv2.DIST_L2, 5)
    out = target.copy()
    out[road] = IGNORE
    out[(distance <= width_px / 2) & (target != IGNORE)] = 1
    return out


def map_to_pixels(info, width: int, height: int) -> Callable[[np.ndarray], np.ndarray]:
    """[N, 2] map coordinates in the raster's CRS -> (column, row) on the raster resampled to width x height,
    for `shapely.transform`."""
    from affine import Affine

    to_pixels = ~(Affine.from_gdal(*info.transform) * Affine.scale(info.width / width, info.height / height))

    def pixel_xy(xy: np.ndarray) -> np.ndarray:
        cols, rows = to_pixels * (xy[:, 0], xy[:, 1])
        return np.column_stack([cols, rows])

    return pixel_xy


def _read_georeferenced(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """The raster resampled to the training GSD through core's reader (so alpha, NoData and 16-bit scaling behave
    as in inference), and its road lines buffered to `road_width_m` on that grid; no-data and pixels outside the
    pair's `area` -> IGNORE."""
    import shapely
    from rasterio.features import rasterize

    from core.inputs.raster import RasterioSource, Window
    from core.metrics import read_lines

    with RasterioSource(pair.image) as source:
        info = source.info
        if info.gsd_m is None or info.transform is None:
            raise DataError(f"{pair.image.name} has no georeferencing, so its road vectors cannot be placed; "
                            f"give a georeferenced raster (GeoTIFF with a CRS)")
        height = max(1, round(info.height * info.gsd_m[1] / pair.gsd_m))
        width = max(1, round(info.width * info.gsd_m[0] / pair.gsd_m))
        values, valid = source.read(Window(0, 0, info.width, info.height), (height, width))
    lines, _ = read_lines(pair.mask, info.crs_wkt)
    pixel_xy = map_to_pixels(info, width, height)
    radius = pair.road_width_m / 2 / pair.gsd_m
    shapes = [shapely.transform(line, pixel_xy).buffer(radius) for line in lines]
    target = rasterize(shapes, out_shape=(height, width), fill=0, default_value=1, dtype="uint8") if shapes \
        else np.zeros((height, width), np.uint8)
    target[~valid] = IGNORE
    if pair.area is not None:
        from core.inputs.vectors import read_polygons

        try:
            polygons = read_polygons(pair.area, info.crs_wkt)
        except ValueError as exc:
            raise DataError(f"{pair.area}: {exc}") from None
        inside = rasterize([shapely.transform(p, pixel_xy) for p in polygons], out_shape=(height, width), fill=0,
                           default_value=1, dtype="uint8")
        target[inside == 0] = IGNORE
    image = np.clip(values[:3], 0, 255).round().astype(np.uint8).transpose(1, 2, 0)
    return np.ascontiguousarray(image), target


def split_by_tile(pairs: list[Pair], validation: int | float, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """Whole tiles go to validation (never crops of a training tile): `validation` tiles, or a fraction."""
    count = validation if isinstance(validation, int) else max(1, round(len(pairs) * validation))
    if not 0 < count < len(pairs):
        raise DataError(f"cannot hold out {count} of {len(pairs)} tiles for validation; keep at least one for "
                        f"training and one for validation")
    order = sorted(pairs, key=lambda p: p.name)
    random.Random(seed).shuffle(order)
    return sorted(order[count:], key=lambda p: p.name), sorted(order[:count], key=lambda p: p.name)


@dataclass(frozen=True)
class DataSource:
    """One `--data` folder and how often its crops are drawn relative to the others (`PATH` or `PATH:WEIGHT`)."""

    path: str
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str) -> DataSource:
        path, _, tail = text.rpartition(":")
        try:
            weight = float(tail) if path else None
        except ValueError:
            weight = None  # a colon that is part of the path (C:\data)
        if weight is None:
            return cls(text)
        if not (math.isfinite(weight) and weight > 0):
            raise DataError(f"--data {text}: the sampling weight after the colon must be a positive number")
        return cls(path, weight)


@dataclass
class TrainingTiles:
    """The training pairs of one source, with its label map and sampling weight; `gsd_spread` >= 1: how far the
    source's true GSD may lie from the one it is read at, either way (a range in its description)."""

    pairs: list[Pair]
    labels: LabelMap
    weight: float = 1.0
    name: str = ""
    gsd_spread: float = 1.0


@dataclass
class Split:
    train: list[Pair]
    val: list[Pair]
    labels: LabelMap  # the first source's: validation tiles come from it
    sources: list[TrainingTiles] = field(default_factory=list)
    # Held-out pairs by place (the first source's validation tiles, and every source's `validation:` images), with
    # each source's label map: the per-place table of `evaluate`.
    places: dict[str, list[tuple[Pair, LabelMap]]] = field(default_factory=dict)

    def read_val(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        return [(p.name, *read_pair(p, self.labels)) for p in self.val]


def described_pairs(description: DataDescription, gsd_m: float = 1.0, road_width_m: float = ROAD_WIDTH_M,
                    target: str = "as_is") -> list[Pair]:
    """The pairs of a described folder, each carrying the description's GSD, label kind and no-data rule."""
    from dataclasses import replace

    pairs = find_pairs(description.folder, gsd_m, road_width_m)
    if description.file is None:
        return [replace(p, target=target) for p in pairs]
    if description.gsd_m is not None and any(p.has_vector_roads for p in pairs):
        raise DataError(f"{description.file}: gsd_m is for image/mask folders; georeferenced rasters carry their own")
    return [replace(p, image_gsd_m=description.gsd_m, label=description.label, nodata=description.nodata,
                    target=target, label_width_m=description.label_width_m) for p in pairs]


def split_dataset(data: str | Path | list[str], val_tiles: float, seed: int = 0, gsd_m: float = 1.0,
                  road_width_m: float = ROAD_WIDTH_M, label_target: str = "as_is") -> Split:
    """The training data of one or more `--data` sources (folders, or `dataset.yaml` descriptions of folders).
    Whole tiles of the FIRST source are held out for validation (`val_tiles`: a count, or a fraction below 1;
    or, where its description lists `validation:` images, those), so adding sources never changes the validation
    set; the images a source's description lists under `validation:` are held out from training too and scored
    by place. Every other tile trains."""
    entries = [data] if isinstance(data, (str, Path)) else list(data)
    if not entries:
        raise DataError("no training data given; name a folder with --data")
    if label_target not in LABEL_TARGETS:
        raise DataError(f"--label-target {label_target!r}: give one of {', '.join(LABEL_TARGETS)}")
    sources = [DataSource.parse(str(e)) for e in entries]
    tiles, places, val, first_labels = [], {}, [], None
    for index, source in enumerate(sources):
        try:
            description = resolve_data(source.path)
        except DescriptionError as exc:
            raise DataError(str(exc)) from None
        pairs = described_pairs(description, gsd_m, road_width_m, label_target)
        labels = inspect_labels(pairs)
        if description.validation:
            held = [p for p in pairs if description.held_out(p.name)]
            if not held:
                raise DataError(f"{description.file}: validation: no image's name starts with "
                                f"{', '.join(description.validation)}; list prefixes of images in {description.folder}")
            train = [p for p in pairs if not description.held_out(p.name)]
        elif index == 0:
            train, held = split_by_tile(pairs, int(val_tiles) if val_tiles >= 1 else val_tiles, seed)
        else:
            train, held = pairs, []
        if index == 0:
            val, first_labels = held, labels
        if held:
            places.setdefault(description.place, []).extend((p, labels) for p in held)
        if not train:
            raise DataError(f"{description.file or source.path}: every image is held out for validation; keep some "
                            f"to train on")
        tiles.append(TrainingTiles(train, labels, source.weight, Path(source.path).name, description.gsd_spread))
    return Split([p for t in tiles for p in t.pairs], val, first_labels, tiles, places)


def _pad_to(tile: tuple[np.ndarray, np.ndarray], side: int) -> tuple[np.ndarray, np.ndarray]:
    """A tile at least `side` px on each axis: smaller ones padded (image black, target IGNORE) at the far edges."""
    image, target = tile
    height, width = target.shape
    if height >= side and width >= side:
        return tile
    pad = ((0, max(0, side - height)), (0, max(0, side - width)))
    return (np.pad(image, (*pad, (0, 0))), np.pad(target, pad, constant_values=IGNORE))


class CropOrder(Sampler):
    """The crops one process trains on in an epoch, as (epoch, index) keys of `RoadCrops`: every `world`-th index
    from `rank`, starting after the crops already trained on when a run resumes mid-epoch, so a killed and resumed
    run sees exactly the crops of an uninterrupted one (Lightning restarts a plain sampler from its first index).

    `position` gives (epoch, global step) when an epoch's iteration starts; `fit` points it at the trainer, which
    has restored both from the checkpoint by then. Distribution is done here rather than by Lightning's sampler
    wrapper, which needs a sampler whose every epoch has the same length."""

    def __init__(self, length: int, batch_size: int) -> None:
        self.length, self.batch_size = length, batch_size
        self.rank, self.world = 0, 1
        self.position: Callable[[], tuple[int, int]] = lambda: (0, 0)

    def distribute(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        per_process = self.length // self.world
        return per_process - per_process % self.batch_size

    def __iter__(self):
        epoch, step = self.position()
        done = max(0, step - epoch * (len(self) // self.batch_size))
        start = done * self.batch_size * self.world
        for index in range(start + self.rank, len(self) * self.world, self.world):
            yield epoch, index


class TileShard(Sampler):
    """Validation tiles of one process (every `world`-th), none repeated: their confusion matrices are summed."""

    def __init__(self, length: int) -> None:
        self.length, self.rank, self.world = length, 0, 1

    def distribute(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world))

    def __iter__(self):
        return iter(range(self.rank, self.length, self.world))


def read_tiles(tiles: TrainingTiles, log=lambda message: None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every readable pair of a source in memory. One unreadable file among many is skipped with a line that
    names it (a crash an hour into a run helps nobody); a source that is mostly unreadable is refused."""
    read, bad = [], []
    for pair in tiles.pairs:
        try:
            read.append(read_pair(pair, tiles.labels))
        except (OSError, ValueError, SyntaxError) as exc:  # PIL: truncated, unidentified; DataError: sizes
            bad.append(pair)
            log(f"warning: skipped {pair.image.name} / {pair.mask.name}: {exc}")
    if bad and len(bad) * 2 >= len(tiles.pairs):
        raise DataError(f"{len(bad)} of {len(tiles.pairs)} image/mask pairs of {tiles.name or 'the data'} cannot be "
                        f"read (first: {bad[0].image}); check the files")
    return read


class RoadCrops(Dataset):
    """Random crops of the training tiles, each reproducible from (seed, epoch, index).

    Tiles are read once and kept in memory (51 Massachusetts tiles are 340 MB as uint8). A crop's source is drawn
    by the sources' weights, its tile by the tile's share of valid pixels in that source; the crop is redrawn
    until at least `min_valid` of it holds data (a crop of white no-data teaches nothing and made the loss NaN),
    and, for `road_share` of the crops, until it holds road. It is then taken at a random scale, flipped and
    rotated, and its colours changed by the augmentation recipe; ignore pixels stay ignore through all of it.
    """

    def __init__(self, sources: list[TrainingTiles] | list[Pair], labels: LabelMap | None = None,
                 augment: Augment | None = None, crops_per_epoch: int = 800, seed: int = 0,
                 log=lambda message: None) -> None:
        if sources and isinstance(sources[0], Pair):  # one source: (pairs, labels)
            sources = [TrainingTiles(list(sources), labels)]
        in_memory = [(read_tiles(source, log), source.weight, source.name, source.gsd_spread) for source in sources]
        self._take(in_memory, augment, crops_per_epoch, seed)

    @classmethod
    def from_arrays(cls, tiles: list[tuple[np.ndarray, np.ndarray]], augment: Augment | None = None,
                    crops_per_epoch: int = 800, seed: int = 0) -> RoadCrops:
        """Crops of (uint8 image [H, W, 3], target [H, W] 0/1/IGNORE) arrays already in memory (fine-tuning)."""
        crops = cls.__new__(cls)
        crops._take([(tiles, 1.0, "", 1.0)], augment, crops_per_epoch, seed)
        return crops

    def _take(self, sources, augment: Augment | None, crops_per_epoch: int, seed: int) -> None:
        self.augment = augment or Augment()
        self.tiles: list[tuple[np.ndarray, np.ndarray]] = []
        self.spreads: list[float] = []
        chances: list[float] = []
        # The largest window a crop is cut from; tiles smaller than it (a 572 px tile at 0.2 m is 114 px at 1 m) are
        # padded with ignore, so that a crop is never stretched to the crop size, which would change its GSD.
        reach = math.ceil(self.augment.crop / self.augment.scale_jitter[0])
        for tiles, weight, name, spread in sources:
            tiles = [_pad_to(t, math.ceil(reach * spread)) for t in tiles if (t[1] != IGNORE).any()]
            valid = np.array([(t[1] != IGNORE).sum() for t in tiles], np.float64)
            if not len(tiles):
                raise DataError(f"{name or 'a data source'} has no tile with valid pixels")
            self.tiles += tiles
            self.spreads += [spread] * len(tiles)
            chances += list(weight * valid / valid.sum())
        self.chances = np.array(chances) / sum(chances)
        self.length, self.seed, self.epoch = crops_per_epoch, seed, 0

    def brightness_range(self) -> tuple[float, float]:
        """The range of the tiles' median brightness, recorded in the model file for the engine's matching."""
        from core.extraction.brightness import image_brightness, training_range

        return training_range([image_brightness(image, target != IGNORE) for image, target in self.tiles])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def _window(self, rng: np.random.Generator, target: np.ndarray, side: int) -> tuple[int, int]:
        """A window holding at least `min_valid` data (and road, when this crop wants road), else the first one
        with enough data, else the one with the most data of up to 32 draws."""
        a = self.augment
        want_road = rng.random() < a.road_share
        enough, best, best_valid = None, (0, 0), -1.0
        for _ in range(32):
            y = int(rng.integers(0, target.shape[0] - side + 1))
            x = int(rng.integers(0, target.shape[1] - side + 1))
            window = target[y:y + side, x:x + side]
            valid = float(np.mean(window != IGNORE))
            if valid >= a.min_valid:
                if not want_road or (window == 1).any():
                    return y, x
                enough = enough or (y, x)
            if valid > best_valid:
                best, best_valid = (y, x), valid
        return enough or best

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        rng = np.random.default_rng([self.seed, epoch, index])
        which = int(rng.choice(len(self.tiles), p=self.chances))
        image, target = self.tiles[which]
        a = self.augment
        scale = math.exp(rng.uniform(math.log(a.scale_jitter[0]), math.log(a.scale_jitter[1])))
        if self.spreads[which] > 1:  # a GSD known as a range: read at its middle, each crop somewhere within it
            scale *= math.exp(rng.uniform(-math.log(self.spreads[which]), math.log(self.spreads[which])))
        source = min(round(a.crop / scale), *image.shape[:2])
        y, x = self._window(rng, target, source)
        image_crop = image[y:y + source, x:x + source]
        target_crop = target[y:y + source, x:x + source]
        if source != a.crop:
            image_crop = np.asarray(Image.fromarray(image_crop).resize((a.crop, a.crop), Image.BILINEAR))
            target_crop = np.asarray(Image.fromarray(target_crop).resize((a.crop, a.crop), Image.NEAREST))
        if a.flips:
            k = int(rng.integers(4))
            image_crop, target_crop = np.rot90(image_crop, k), np.rot90(target_crop, k)
            if rng.random() < 0.5:
                image_crop, target_crop = image_crop[:, ::-1], target_crop[:, ::-1]
        if a.recipe == "sensors":
            image_crop = imitate_sensor(image_crop, rng)
        # Drawn only when asked for, so runs without it draw the same crops as before the option existed.
        if a.invert_brightness and rng.random() < a.invert_brightness:
            image_crop = invert_brightness(image_crop)
        pixels = torch.from_numpy(np.array(image_crop)).permute(2, 0, 1).float()
        if a.colour_jitter:
            gain = 1 + rng.uniform(-a.colour_jitter, a.colour_jitter)
            bias = 255 * rng.uniform(-a.colour_jitter, a.colour_jitter) / 2
            pixels = (pixels * gain + bias).clamp(0, 255)
        return pixels, torch.from_numpy(np.array(target_crop)).long()
