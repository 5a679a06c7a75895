"""`python -m training pack`: a small copy of training data folders, for a machine that can take only so much (a
rented GPU with a transfer limit, a laptop): each source's training images, those finer than `--finest-gsd-m`
area-averaged down to it (training reads them at the model's GSD anyway), as JPEG (JPEG sources byte for byte),
each folder with its own `dataset.yaml`; trimmed, evenly over each source's images and largest source first, to
`--max-mb`; written whole or not at all.

The first source keeps `--keep-validation` of its validation images (listed in its packed description), so that
`fit`'s epoch-by-epoch validation still has tiles; every other source's validation images are left out: they are
the per-place table's, scored where the full data is, never copied to where training happens.
"""

from __future__ import annotations

import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from core.atomic import _UMASK, storage_refused
from core.errors import InputError, OutputError

from .data import DataError, DataSource, _read_mask, find_pairs, inspect_labels, resample_to_gsd
from .description import DESCRIPTION_NAME, DescriptionError, resolve_data


@dataclass
class PackedPair:
    name: str
    image: bytes  # JPEG
    mask: bytes  # PNG, 0 background / 255 road

    @property
    def size(self) -> int:
        return len(self.image) + len(self.mask)


@dataclass
class PackedSource:
    folder_name: str
    weight: float
    description: dict
    train: list[PackedPair]
    validation: list[PackedPair]
    trimmed: int = 0

    @property
    def size(self) -> int:
        return sum(p.size for p in self.train + self.validation)


def _encoded(image: np.ndarray, kind: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, kind, **options)
    return buffer.getvalue()


def pack_source(entry: str, first: bool, finest_gsd_m: float, quality: int, keep_validation: int) -> PackedSource:
    source = DataSource.parse(entry)
    try:
        description = resolve_data(source.path)
    except DescriptionError as exc:
        raise InputError(str(exc)) from None
    pairs = find_pairs(description.folder)
    if any(p.has_vector_roads for p in pairs):
        raise InputError(f"{source.path}: georeferenced rasters with road lines are not packed; copy that folder as "
                         f"it is")
    labels = inspect_labels(pairs)
    gsd = description.gsd_m
    # A range (a GSD not known exactly) is kept as it is: training rescales each crop within it.
    resample = description.gsd_spread == 1 and gsd is not None and gsd < finest_gsd_m
    if first and not description.validation:
        raise InputError(f"{source.path}: the first source needs validation images listed in its {DESCRIPTION_NAME} "
                         f"(validation:), which `fit` validates on")
    kept_prefixes = list(description.validation[:keep_validation]) if first else []
    packed_train, packed_val = [], []
    for pair in pairs:
        is_held = description.held_out(pair.name)
        if is_held and not any(pair.name.startswith(p) for p in kept_prefixes):
            continue
        image = np.asarray(Image.open(pair.image).convert("RGB"))
        mask = _read_mask(pair.mask)
        if mask.shape != image.shape[:2]:
            raise InputError(f"{pair.mask}: {mask.shape[1]}x{mask.shape[0]}, but its image is {image.shape[1]}x"
                             f"{image.shape[0]}; masks must match their images")
        road = labels.apply(mask)
        if resample:  # no-data pixels stay white or black in the averaged image, so the folder's rule still holds
            image, road = resample_to_gsd(image, road, gsd, finest_gsd_m)
        # A JPEG kept as it is: encoded again it would lose more and, from a lower quality, take more room.
        jpeg = pair.image.read_bytes() if not resample and pair.image.suffix.lower() in (".jpg", ".jpeg") \
            else _encoded(image, "JPEG", quality=quality)
        packed = PackedPair(pair.name, jpeg, _encoded((road == 1).astype(np.uint8) * 255, "PNG", optimize=True))
        (packed_val if is_held else packed_train).append(packed)
    if first and not packed_val:
        raise InputError(f"{source.path}: none of its validation images {', '.join(kept_prefixes)} was found")
    fields = {"place": description.place,
              "gsd_m": finest_gsd_m if resample else (list(description.gsd_range_m) if description.gsd_spread > 1
                                                       else gsd),
              "label": description.label, "label_width_m": description.label_width_m, "nodata": description.nodata,
              "validation": kept_prefixes, "terms": description.terms}
    fields = {k: v for k, v in fields.items() if v not in (None, [], "")}
    name = description.file.stem if description.file and description.file.name != DESCRIPTION_NAME \
        else description.folder.name
    return PackedSource(name, source.weight, fields, packed_train, packed_val)


def trim(sources: list[PackedSource], max_bytes: int, whole: tuple[str, ...] = ()) -> list[str]:
    """Drop training images, one at a time from the source that takes the most room (never from those named in
    `whole`), evenly over its images, until the whole fits; returns what was dropped."""
    dropped = []
    while sum(s.size for s in sources) > max_bytes:
        largest = max((s for s in sources if len(s.train) > 1 and s.folder_name not in whole), key=lambda s: s.size,
                      default=None)
        if largest is None:
            raise InputError(f"the packed data cannot fit in {max_bytes / 2**20:.1f} MB even with one training image "
                             f"per source that may be trimmed; give a larger --max-mb, fewer --whole or a lower "
                             f"--quality")
        # golden-ratio steps over the remaining images: the kept ones stay spread over the source's names
        largest.trimmed += 1
        gone = largest.train.pop(int(len(largest.train) * ((largest.trimmed * 0.6180339887) % 1)))
        dropped.append(f"{largest.folder_name}/{gone.name}")
    return dropped


def write(sources: list[PackedSource], out: Path) -> list[str]:
    """Writes the packed folders into a scratch folder beside `out` and renames it to `out` once complete: a full
    disk, a kill or Ctrl-C leaves no half pack that looks like a whole one."""
    import os
    import shutil
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for source in sources:
            folder = scratch / source.folder_name
            for sub in ("images", "masks"):
                (folder / sub).mkdir(parents=True)
            for pair in source.train + source.validation:
                (folder / "images" / f"{pair.name}.jpg").write_bytes(pair.image)
                (folder / "masks" / f"{pair.name}.png").write_bytes(pair.mask)
            (folder / DESCRIPTION_NAME).write_text(
                f"# packed by python -m training pack: {len(source.train)} training and {len(source.validation)} "
                f"validation images\n" + yaml.safe_dump(source.description, sort_keys=False, allow_unicode=True))
        os.chmod(scratch, 0o777 & ~_UMASK)  # mkdtemp's 0700 -> a folder like any other
        if out.exists():
            out.rmdir()  # empty: checked before any work
        scratch.rename(out)
    except Exception as exc:
        refused = storage_refused(exc, out.parent, [scratch])
        shutil.rmtree(scratch, ignore_errors=True)
        if refused:
            raise OutputError(f"could not write {out}: {refused}") from exc
        raise
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return [f"--data {out / source.folder_name}:{source.weight:g}" for source in sources]


def pack(entries: list[str], out: Path, max_mb: float, finest_gsd_m: float, quality: int,
         keep_validation: int, whole: tuple[str, ...] = ()) -> str:
    if not entries:
        raise InputError("no data to pack; name the training sources with --data, as for fit")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} is not empty; give a new folder")
    if not (math.isfinite(finest_gsd_m) and finest_gsd_m > 0 and 1 <= quality <= 95 and max_mb > 0
            and keep_validation >= 1):
        raise InputError("--finest-gsd-m and --max-mb must be positive, --quality 1-95, --keep-validation >= 1")
    try:
        sources = [pack_source(e, i == 0, finest_gsd_m, quality, keep_validation) for i, e in enumerate(entries)]
    except DataError as exc:
        raise InputError(str(exc)) from None
    names = [s.folder_name for s in sources]
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise InputError(f"two sources would be packed into one folder, {out / twice}; give each a description file "
                         f"of its own name (NAME.yaml with path:)")
    unknown = sorted(set(whole) - set(names))
    if unknown:
        raise InputError(f"--whole {', '.join(unknown)}: no such source; name one of "
                         f"{', '.join(s.folder_name for s in sources)}")
    dropped = trim(sources, int(max_mb * 2**20), whole)
    flags = write(sources, out)
    for source in sources:
        print(f"packed      {source.folder_name}: {len(source.train)} training + {len(source.validation)} "
              f"validation images, {source.size / 2**20:.1f} MB", file=sys.stderr)
    if dropped:
        print(f"trimmed     {len(dropped)} training images to fit {max_mb:g} MB (first: {dropped[0]})",
              file=sys.stderr)
    return " ".join(flags)
