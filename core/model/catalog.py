"""The models that ship with the project, and the one the engine takes for an imagery's resolution when the user
names none.

A models folder may hold several models, each for a band of ground sample distances, listed in its
`catalog.json` (first match wins; an entry without a band takes every resolution no earlier entry took):

    {"models": [{"file": "roads-resnet18-massachusetts.pt", "gsd_m": [0.85, 1.15], "covers": "..."},
                {"file": "roads-resnet18-world.pt", "covers": "..."}]}

Why a folder and not one file: no single ResNet-18 kept Massachusetts' 1 m figures while learning the other
places (docs/protocols/2026-12-02-world-*.md), so each resolution is served by the model that scored best on it.
`--model FOLDER` picks from any such folder the same way; `--model FILE` always runs that file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from core.errors import InputError

SHIPPED_MODELS = Path(__file__).resolve().parents[2] / "resources" / "models"
CATALOG_FILE = "catalog.json"
# The shipped model of the first releases: still the default where a folder has no catalog.
DEFAULT_MODEL = SHIPPED_MODELS / "roads-resnet18-massachusetts.pt"


@dataclass(frozen=True)
class CatalogEntry:
    path: Path
    gsd_band_m: tuple[float, float] | None  # None: every resolution that no earlier entry serves
    covers: str = ""

    def serves(self, gsd_m: float) -> bool:
        return self.gsd_band_m is None or self.gsd_band_m[0] <= gsd_m <= self.gsd_band_m[1]

    def band_words(self) -> str:
        return "every other resolution" if self.gsd_band_m is None else \
            f"{self.gsd_band_m[0]:g}-{self.gsd_band_m[1]:g} m per pixel"


def read_catalog(folder: str | Path) -> list[CatalogEntry]:
    """The folder's catalog; a folder without one holds a single model file (or is refused)."""
    folder = Path(folder)
    listing = folder / CATALOG_FILE
    if not listing.exists():
        if folder.resolve() == SHIPPED_MODELS.resolve():
            return [CatalogEntry(DEFAULT_MODEL, None)]
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".pt", ".pth", ".onnx"))
        if len(files) != 1:
            raise InputError(f"{folder} is a folder without a {CATALOG_FILE} and holds {len(files)} model files; "
                             f"give one model file, or list them with the resolution each serves in {CATALOG_FILE}")
        return [CatalogEntry(files[0], None)]
    try:
        entries = json.loads(listing.read_text())["models"]
        catalog = []
        for entry in entries:
            band = entry.get("gsd_m")
            if band is not None:
                low, high = (float(v) for v in band)
                if not (0 < low <= high and math.isfinite(high)):
                    raise ValueError(f"gsd_m {band} is not a band of metres per pixel (low <= high, above 0)")
                band = (low, high)
            catalog.append(CatalogEntry(folder / entry["file"], band, str(entry.get("covers", ""))))
    except (ValueError, KeyError, TypeError) as error:  # json.JSONDecodeError is a ValueError
        raise InputError(f"{listing} does not parse ({error}); it lists {{\"models\": [{{\"file\": ..., \"gsd_m\": "
                         f"[LOW, HIGH]}}, ...]}}") from None
    if not catalog:
        raise InputError(f"{listing} lists no model")
    return catalog


def choose(catalog: list[CatalogEntry], gsd_m: float | None) -> CatalogEntry:
    """The entry for imagery of `gsd_m` metres per pixel; the first entry where the resolution is not known."""
    if gsd_m is None:
        return catalog[0]
    for entry in catalog:
        if entry.serves(gsd_m):
            return entry
    raise InputError(f"none of the models of {catalog[0].path.parent} serves imagery of {gsd_m:g} m per pixel "
                     f"({', '.join(f'{e.path.name}: {e.band_words()}' for e in catalog)}); give a model file with "
                     f"--model")


def default_model(gsd_m: float | None = None) -> Path:
    """The shipped model for imagery of `gsd_m`; a clear error where a checkout or package lacks it."""
    path = choose(read_catalog(SHIPPED_MODELS), gsd_m).path
    if not path.exists():
        raise InputError(f"the shipped road model {path} is missing from this installation; give a model "
                         f"file with --model (python -m training export makes one from a training run)")
    return path


def resolve_model(path: str | Path | None, gsd_m: float | None = None) -> Path:
    """The model file to run: `path` itself when it is a file; picked by `gsd_m` from a models folder (the
    shipped one when `path` is empty)."""
    if not path:
        return default_model(gsd_m)
    if Path(path).is_dir():
        return choose(read_catalog(path), gsd_m).path
    return Path(path)


def choice_note(path: str | Path | None, gsd_m: float | None) -> str | None:
    """One line for the log when the engine picked a model by resolution (None when the user named a file or the
    folder holds one model)."""
    if path and not Path(path).is_dir():
        return None
    catalog = read_catalog(path or SHIPPED_MODELS)
    if len(catalog) < 2:
        return None
    chosen = choose(catalog, gsd_m)
    others = "; ".join(f"{e.path.name} takes {e.band_words()}" for e in catalog if e is not chosen)
    at = "resolution unknown" if gsd_m is None else f"{gsd_m:.2f} m per pixel"
    return f"model: {chosen.path.name}, picked for imagery at {at} ({others}; --model FILE runs another)"


def imagery_gsd(gsd_xy: tuple[float, float] | None) -> float | None:
    """One figure for a raster's pixel size (x and y may differ slightly): their geometric mean."""
    return None if gsd_xy is None else math.sqrt(gsd_xy[0] * gsd_xy[1])


def open_model(path: str | Path | None, gsd_m: float | None = None):
    """A model for inference from any file the engine runs: the project's model file, a seed checkpoint, a state
    dict (through `core.model.checkpoint`), or an ONNX export (through onnxruntime); None or a models folder means
    the model it holds for `gsd_m`."""
    resolved = resolve_model(path, gsd_m)
    if resolved.suffix.lower() == ".onnx":
        from core.model.onnx_model import load_onnx_model

        return load_onnx_model(resolved)
    from core.model.checkpoint import load_model

    return load_model(resolved)
