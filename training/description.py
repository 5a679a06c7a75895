"""What a training data folder is: its ground sample distance, what its labels cover and which pixels hold no data,
in one small YAML file (`dataset.yaml`) that lives in the folder or, for a folder one cannot write to, anywhere
else with a `path:` to the folder.

    place: Las Vegas              # the row it is scored under in the per-place table (default: the folder's name)
    gsd_m: 0.381                  # metres per pixel; or [1.2, 2.4]: not known, somewhere in this range
    label: centreline             # centreline (a buffer of about one width) | surface (the whole road surface)
    label_width_m: 4.6            # centreline buffers: their width (informative; the masks are read as drawn)
    nodata: none                  # white (all bands >= 250) | black (all bands <= 3) | none
    validation: [vegas_10217]     # name prefixes of whole source images held out: scored, never trained on
    terms: "SpaceNet: CC BY-SA 4.0"
    path: ../../../shared/data/world/spacenet3_vegas   # relative to this file; only outside the folder

A folder without one is read as before this file existed: Massachusetts Roads' conventions (the run's `--gsd-m`,
centreline buffers, white no-data, validation tiles drawn by `--val-tiles`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .yaml_files import read_yaml

DESCRIPTION_NAME = "dataset.yaml"
LABEL_KINDS = ("centreline", "surface")
NODATA_RULES = ("white", "black", "none")
# Pixels whose three bands are all at or beyond these levels hold no data (JPEG rounds 255 to 250-255, 0 to 0-3).
WHITE_LEVEL, BLACK_LEVEL = 250, 3
FIELDS = ("place", "gsd_m", "label", "label_width_m", "nodata", "validation", "terms", "path")


class DescriptionError(ValueError):
    """A description file that cannot be used; the message names the file, the field and the fix."""


@dataclass(frozen=True)
class DataDescription:
    folder: Path
    place: str
    gsd_range_m: tuple[float, float] | None = None  # None: the run's --gsd-m (the folder is at the model's GSD)
    label: str = "centreline"
    label_width_m: float | None = None
    nodata: str = "white"
    validation: tuple[str, ...] = ()
    terms: str = ""
    file: Path | None = None  # where it was read from; None: the defaults of a folder without one

    @property
    def gsd_m(self) -> float | None:
        """The GSD the images are read at: the known one, or the geometric middle of a range."""
        if self.gsd_range_m is None:
            return None
        low, high = self.gsd_range_m
        return math.sqrt(low * high)

    @property
    def gsd_spread(self) -> float:
        """How far (as a factor, >= 1) the true GSD may lie from `gsd_m` either way: crops are rescaled within it."""
        if self.gsd_range_m is None:
            return 1.0
        low, high = self.gsd_range_m
        return math.sqrt(high / low)

    def held_out(self, name: str) -> bool:
        return any(name.startswith(prefix) for prefix in self.validation)


def describe_folder(folder: Path) -> DataDescription:
    """The folder's own `dataset.yaml`, else the defaults (Massachusetts Roads' conventions)."""
    own = folder / DESCRIPTION_NAME
    if own.is_file():
        return read_description(own)
    return DataDescription(folder=folder, place=folder.name)


def resolve_data(path: str | Path) -> DataDescription:
    """A `--data` entry: a folder (with or without its `dataset.yaml`) or a description file pointing at one."""
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        if not path.is_file():
            raise DescriptionError(f"{path}: no such description file; give a dataset.yaml or a data folder")
        return read_description(path)
    return describe_folder(path)


def read_description(file: Path) -> DataDescription:
    fix = f"see {DESCRIPTION_NAME} in docs/training/data.md"
    data = read_yaml(file, f"the data description {file}", fix, DescriptionError)
    if not isinstance(data, dict):
        raise DescriptionError(f"{file}: not a mapping of fields ({', '.join(FIELDS)}); {fix}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise DescriptionError(f"{file}: unknown field(s) {', '.join(unknown)}; the fields are {', '.join(FIELDS)}")

    def refuse(name: str, rule: str):
        raise DescriptionError(f"{file}: {name}: {data.get(name)!r}; give {rule}")

    folder = (file.parent / str(data["path"])).resolve() if data.get("path") else file.parent
    if not folder.is_dir():
        raise DescriptionError(f"{file}: path: {folder} is not a folder; give the folder of the image/mask pairs, "
                               f"relative to this file")
    gsd = data.get("gsd_m")
    gsd_range = None
    if gsd is not None:
        values = gsd if isinstance(gsd, list) else [gsd]
        if not (1 <= len(values) <= 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              and math.isfinite(v) and v > 0 for v in values)):
            refuse("gsd_m", "metres per pixel (0.5), or a range [low, high] where it is not known exactly")
        gsd_range = (float(min(values)), float(max(values)))
    label = data.get("label", "centreline")
    if label not in LABEL_KINDS:
        refuse("label", " or ".join(LABEL_KINDS))
    width = data.get("label_width_m")
    if width is not None and not (isinstance(width, (int, float)) and math.isfinite(width) and width > 0):
        refuse("label_width_m", "the width of the label's road buffer in metres")
    nodata = data.get("nodata", "white")
    if nodata not in NODATA_RULES:
        refuse("nodata", f"{', '.join(NODATA_RULES)} (all bands >= {WHITE_LEVEL}, all bands <= {BLACK_LEVEL}, none)")
    validation = data.get("validation") or []
    if not (isinstance(validation, list) and all(isinstance(v, str) and v for v in validation)):
        refuse("validation", "a list of image-name prefixes, one per held-out source image, quoted (\"17428735_15\")")
    return DataDescription(folder=folder, place=str(data.get("place") or folder.name), gsd_range_m=gsd_range,
                           label=label, label_width_m=float(width) if width is not None else None, nodata=nodata,
                           validation=tuple(validation), terms=str(data.get("terms", "")), file=file)
