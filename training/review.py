"""One round of the update-map review loop: "Teach from my review" (issue 32).

The analyst marks pieces of an `update-map` GeoPackage accepted or rejected (`core.roads.review`); a round then
1. fine-tunes the model that made the GeoPackage on the layer's roads plus the accepted pieces as road, the
   rejected ones as background, and the rest as an incomplete map (`--labels incomplete`: background only near
   drawn roads where the parent sees none), with every guarantee of `training.finetune`;
2. compares the imagery again, with the new model, against the layer as reviewed (rejected roads removed,
   accepted ones added), so the next GeoPackage shows only what is still open.
Each round's files sit beside the reviewed GeoPackage, named by round: `update-round2.gpkg` (the comparison),
`update-round2.pt` (its model), `update-round2-roads.gpkg` (the layer as reviewed): the layer brought up to date.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from core.atomic import check_output_file
from core.errors import InputError


def teach_from_review(review_path: str, minutes: float, *, imagery: str = "", layer: str = "", init: str = "",
                      out: str = "", overwrite: bool = False, inference: dict | None = None,
                      log: Callable[[str], None] = print, progress=None, cancelled=lambda: False) -> dict:
    """The round after `review_path`; imagery, layer and model default to what that GeoPackage's run used."""
    from core.frontends.jobs import UpdateMapJob, run_update_map
    from core.metrics import read_lines
    from core.roads.review import next_round, read_review, reviewed_layer, write_lines

    from .finetune import FinetuneSpec, finetune

    review = read_review(review_path)
    imagery, layer, init = imagery or review.imagery, layer or review.layer, init or review.model
    for what, path in (("imagery", imagery), ("road layer", layer)):
        if not path or not Path(path).exists():
            raise InputError(f"the {what} {path or '(not recorded)'} of {review.path.name} is not there; give it "
                             f"(--{'raster' if what == 'imagery' else 'roads'})")
    compared = Path(out) if out else next_round(review.path)
    model_out, layer_out = compared.with_suffix(".pt"), compared.with_name(f"{compared.stem}-roads.gpkg")
    for path in (compared, model_out, layer_out):
        check_output_file(path, overwrite)
    log(f"review      {review.path.name}: {review.counts()}")
    lines, _ = read_lines(layer, review.crs_wkt)
    updated = reviewed_layer(lines, review)
    with tempfile.TemporaryDirectory(prefix=".review-", dir=compared.parent) as scratch:
        roads = write_lines(lines + review.roads, review.crs_wkt, Path(scratch) / "roads.gpkg")
        not_roads = write_lines(review.not_roads, review.crs_wkt, Path(scratch) / "not_roads.gpkg")
        created: list[Path] = []  # a round that fails leaves none of its files
        try:
            taught = finetune(FinetuneSpec(rasters=[imagery], roads=str(roads), not_roads=str(not_roads) if
                                           review.not_roads else "", labels="incomplete", minutes=minutes,
                                           init=init, out=str(model_out), overwrite=True,
                                           **{k: v for k, v in (inference or {}).items()
                                              if k in ("device", "precision")}),
                              log=log, progress=progress, cancelled=cancelled)
            created.append(model_out)
            created.append(write_lines(updated, review.crs_wkt, layer_out))
            job = UpdateMapJob(input=imagery, roads=str(layer_out), out=str(compared), model=taught["model"],
                               overwrite=True, **(inference or {}))
            result = run_update_map(job, log=log)
        except BaseException:
            for path in created:
                path.unlink(missing_ok=True)
            raise
    return {**result, "model": taught["model"], "roads_layer": str(layer_out), "taught": taught}
