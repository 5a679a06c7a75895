"""An analyst's review of an `update-map` GeoPackage, read back as labels and as the road layer brought up to date.

In the `missing` and `unconfirmed` layers each piece has a `review` field: `new` (not looked at), `accepted` (a
road: the model was right to suggest it / the layer's road is there) or `rejected` (no road: a false suggestion /
the layer's road is gone), the meanings the layers' styles show in QGIS. What a review says:
- taught as road: the layer's roads, and accepted pieces of `missing`;
- taught as background: rejected pieces of both layers (whatever the layer draws there);
- the layer as reviewed: its roads less the rejected `unconfirmed` pieces, plus the accepted `missing` ones: what
  the next round compares with, so that it shows only what is still open.
Pieces left `new` say nothing; a review that marks nothing is refused (nothing to teach).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely

from core.atomic import atomic_output
from core.errors import InputError
from core.inputs.vectors import _pyogrio, layer_names, pyogrio_raw

REVIEWED_LAYERS = ("missing", "unconfirmed")
REVIEW_VALUES = ("new", "accepted", "rejected")


@dataclass
class Review:
    """The marked pieces of one `update-map` GeoPackage, in its CRS, and what its run compared (its metadata)."""

    path: Path
    crs_wkt: str | None
    imagery: str = ""
    layer: str = ""  # the road layer it was compared with
    model: str = ""
    accepted: dict[str, list] = field(default_factory=dict)  # layer -> LineStrings
    rejected: dict[str, list] = field(default_factory=dict)

    @property
    def roads(self) -> list:
        """Pieces taught as road beside the layer's own roads."""
        return list(self.accepted.get("missing", []))

    @property
    def not_roads(self) -> list:
        return [line for layer in REVIEWED_LAYERS for line in self.rejected.get(layer, [])]

    def counts(self) -> str:
        return ", ".join(f"{layer}: {len(self.accepted.get(layer, []))} accepted, "
                         f"{len(self.rejected.get(layer, []))} rejected" for layer in REVIEWED_LAYERS)


def read_review(path: str | Path) -> Review:
    """The review marks of an `update-map` GeoPackage; InputError for a file that is not one, a review value it
    does not know, or a review that marks nothing."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file; give the GeoPackage update-map wrote (and you reviewed)")
    names = layer_names(path) if path.suffix.lower() == ".gpkg" else []
    if not set(REVIEWED_LAYERS) <= set(names):
        raise InputError(f"{path} has no layers missing and unconfirmed; give the GeoPackage update-map wrote")
    metadata = _pyogrio()[0].read_info(path, layer="missing").get("dataset_metadata") or {}
    review = Review(path, None, metadata.get("ROAD_EXTRACTOR_IMAGERY", ""),
                    metadata.get("ROAD_EXTRACTOR_ROADS_LAYER", ""), metadata.get("ROAD_EXTRACTOR_MODEL", ""))
    for layer in REVIEWED_LAYERS:
        meta, _, geometries, (values,) = pyogrio_raw().read(path, layer=layer, columns=["review"])
        review.crs_wkt = review.crs_wkt or _wkt(meta.get("crs"))
        lines = shapely.from_wkb(geometries) if geometries is not None else []
        marks = [str(v).strip().lower() if v is not None else "new" for v in values]
        unknown = sorted({m for m in marks if m not in REVIEW_VALUES})
        if unknown:
            raise InputError(f"{path}, layer {layer}: review value(s) {', '.join(map(repr, unknown))}; use "
                             f"{', '.join(REVIEW_VALUES)}")
        usable = [(line, mark) for line, mark in zip(lines, marks, strict=True) if line is not None and
                  not line.is_empty]
        review.accepted[layer] = [line for line, mark in usable if mark == "accepted"]
        review.rejected[layer] = [line for line, mark in usable if mark == "rejected"]
    if not (review.roads or review.not_roads or review.accepted["unconfirmed"]):
        raise InputError(f"{path}: no piece of missing or unconfirmed is marked accepted or rejected; mark some in "
                         f"their review field first (QGIS: toggle editing, then the attribute form or table)")
    return review


def _wkt(crs) -> str | None:
    if not crs:
        return None
    from rasterio.crs import CRS

    return CRS.from_user_input(crs).to_wkt()


def reviewed_layer(layer_lines: list, review: Review) -> list:
    """The layer's lines (in the review's CRS) less its rejected `unconfirmed` pieces, plus accepted `missing` ones.
    A rejected piece is a stretch of one of the layer's lines: it is cut out with a hair's width of slack
    (a centimetre, in degrees for a geographic CRS)."""
    gone = review.rejected.get("unconfirmed", [])
    if gone:
        slack = 1e-7 if _geographic(review.crs_wkt) else 0.01
        cut = shapely.union_all([shapely.buffer(line, slack, cap_style="flat") for line in gone])
        kept = []
        for line in layer_lines:
            rest = line.difference(cut) if line.intersects(cut) else line
            kept.extend(part for part in shapely.get_parts(rest) if part.geom_type == "LineString" and
                        part.length > 2 * slack)
        layer_lines = kept
    return list(layer_lines) + review.roads


def _geographic(crs_wkt: str | None) -> bool:
    if not crs_wkt:
        return False
    from rasterio.crs import CRS

    return CRS.from_wkt(crs_wkt).is_geographic


def write_lines(lines: list, crs_wkt: str | None, path: str | Path, layer: str = "roads") -> Path:
    """LineStrings as a one-layer GeoPackage, written whole or not at all."""
    path = Path(path)
    with atomic_output(path) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
        tmp.unlink()
        pyogrio_raw().write(tmp, geometry=shapely.to_wkb(np.array(lines, dtype=object)) if lines else
                            np.array([], dtype=object), field_data=[], fields=[], crs=crs_wkt,
                            geometry_type="LineString", driver="GPKG", layer=layer)
    return path


def next_round(path: str | Path) -> Path:
    """The next round's GeoPackage beside a reviewed one: update.gpkg -> update-round2.gpkg -> update-round3.gpkg."""
    path = Path(path)
    found = re.fullmatch(r"(.*)-round(\d+)", path.stem)
    stem, number = (found.group(1), int(found.group(2)) + 1) if found else (path.stem, 2)
    return path.with_name(f"{stem}-round{number}{path.suffix}")
