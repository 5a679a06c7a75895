"""The rule that decides whether a candidate model replaces the shipped one (`python -m training promote`)."""

from __future__ import annotations

from core.errors import InputError

# How far a candidate's reference-line completeness or correctness may lie below the shipped model's and still count
# as "not lower": about two standard errors of the paired difference of two 8-origin means on the Vegas tile
# (0.004-0.009 across the candidates of the model card). Without it, a copy of the shipped model trained again would
# fail about half of the time. Fixed on 2026-11-29 before the first candidate it was applied to was trained.
LINES_MARGIN = 0.015


def promotion_verdict(candidate: dict, shipped: dict, lines_margin: float = LINES_MARGIN) -> tuple[bool, list[str]]:
    """Whether a candidate replaces the shipped model, from both models' flat metrics (`held_out_metrics`): held-out
    road IoU at least 0.01 higher, held-out APLS not lower, and, where both were scored against reference lines
    (the Vegas tile), completeness and correctness not lower by more than `lines_margin`, all in the same
    arithmetic (else InputError). Each model version adds ~34 MB to the repository's history, so only clear gains
    ship."""
    reasons, ok = [], True
    # bf16 rounding alone moves the shipped model's Vegas figures by 0.05 (README, "Candidates"): figures from two
    # arithmetics are not compared.
    for key, what in (("heldout_arithmetic", "validation tiles"), ("lines_arithmetic", "reference lines")):
        new, old = candidate.get(key), shipped.get(key)
        if new and old and new != old:
            raise InputError(f"the candidate's {what} figures come from {new} arithmetic, the shipped model's from "
                             f"{old}; score both with the same `python -m training evaluate --precision`")
        if new and not old:
            reasons.append(f"note  the shipped model's {what} figures do not say their arithmetic (the candidate's: "
                           f"{new})")

    # One origin's Vegas figure moves by 0.04 (sd) with the raster's origin alone: a mean over shifts is compared
    # only with a mean over as many.
    if "lines_completeness" in candidate and "lines_completeness" in shipped:
        new, old = candidate.get("lines_shifts", 1), shipped.get("lines_shifts", 1)
        if new != old:
            raise InputError(f"the candidate's reference-line figures are the mean over {new} origin shift(s), the "
                             f"shipped model's over {old}; score both with the same `python -m training evaluate "
                             f"--line-shifts`")
        # Pooled figures of other reference sets (a tile's halves beside the whole tile, say) are other figures.
        new, old = candidate.get("lines_references"), shipped.get("lines_references")
        if new and old and new != old:
            raise InputError(f"the candidate's reference-line figures pool {new}, the shipped model's {old}; score "
                             f"both with the same `python -m training evaluate --lines`")
        if candidate.get("lines_overlapping_references") or shipped.get("lines_overlapping_references"):
            raise InputError("a model's reference-line figures pool reference sets that cover one raster (areas of "
                             "it), counting their shared ground more than once; score both with --lines of whole "
                             "rasters only (the model card's: --lines ../shared/data/spacenet)")
        # Figures from before the one-frame fix were off by up to tens of metres in geographic CRSs.
        new, old = candidate.get("lines_metric_version", 1), shipped.get("lines_metric_version", 1)
        if new != old:
            raise InputError(f"the candidate's reference-line figures were measured by line metric version {new}, "
                             f"the shipped model's by version {old}; score both again with this version's "
                             f"`python -m training evaluate`")

    def rule(name: str, passed: bool, text: str) -> None:
        nonlocal ok
        ok &= passed
        reasons.append(f"{'pass' if passed else 'FAIL'}  {name}: {text}")

    new, old = candidate.get("heldout_road_iou"), shipped.get("heldout_road_iou")
    if new is None or old is None:
        return False, ["FAIL  held-out road IoU missing: evaluate both on the same tiles first"]
    rule("road IoU", new >= old + 0.01, f"{old:.4f} -> {new:.4f} (needs +0.01)")
    new, old = candidate.get("heldout_apls", float("nan")), shipped.get("heldout_apls", float("nan"))
    rule("APLS", new >= old - 1e-9, f"{old:.4f} -> {new:.4f} (must not fall)")
    allowed = f"must not fall by more than {lines_margin:g}" if lines_margin else "must not fall"
    for name in ("lines_completeness", "lines_correctness"):
        if name in candidate and name in shipped:
            rule(name.replace("_", " "), candidate[name] >= shipped[name] - lines_margin - 1e-9,
                 f"{shipped[name]:.4f} -> {candidate[name]:.4f} ({allowed})")
    return ok, reasons


# The per-place rule (issue 30), fixed in docs/protocols/2026-12-02-world-labels.md before its first candidates ran.
PLACES_MEAN_GAIN = 0.03  # the mean relaxed F1 over the places must rise by this much
PLACE_FALL = 0.02  # and no place's relaxed F1 may fall by more than this
HOME_IOU_FALL = 0.01  # nor the first place's (Massachusetts') road IoU by more than this


def places_verdict(candidate: dict, shipped: dict) -> tuple[bool, list[str]]:
    """Whether a candidate replaces the shipped model by the per-place table (`evaluate --places`): the mean
    relaxed F1 over the places at least PLACES_MEAN_GAIN higher, no place lower by more than PLACE_FALL, the
    held-out Massachusetts road IoU lower by no more than HOME_IOU_FALL; both tables of the same places, images
    and arithmetic (else InputError). Reference-line figures are reported beside it, deciding nothing."""
    new_table, old_table = candidate.get("places"), shipped.get("places")
    if not new_table or not old_table:
        return False, ["FAIL  per-place figures missing: evaluate both models with --places (the shipped model's "
                       "with --json, given to promote as --shipped-evaluation)"]
    if list(new_table) != list(old_table):
        raise InputError(f"the candidate was scored on the places {', '.join(new_table)}, the shipped model on "
                         f"{', '.join(old_table)}; score both with the same --config datasets/places.yaml")
    for place in new_table:
        if sorted(new_table[place]["tile_names"]) != sorted(old_table[place]["tile_names"]):
            raise InputError(f"{place}: the two models were scored on other held-out images; score both with the "
                             f"same descriptions (datasets/)")
    # The table's grid (`gsd_m` of --config datasets/places.yaml): the same images read at 1 m or at 0.5 m are
    # other references (tables written before 2026-12-04 do not say; they were read at 1 m).
    new, old = (next(iter(table.values())).get("table_gsd_m", 1.0) for table in (new_table, old_table))
    if new != old:
        raise InputError(f"the candidate's per-place table was read at {new:g} m per pixel, the shipped model's at "
                         f"{old:g} m; score both with the same --config datasets/places.yaml (--gsd-m)")
    new, old = candidate.get("places_arithmetic"), shipped.get("places_arithmetic")
    if new and old and new != old:
        raise InputError(f"the candidate's per-place figures come from {new} arithmetic, the shipped model's from "
                         f"{old}; score both with the same `python -m training evaluate --precision`")
    reasons, ok = [], True

    def rule(name: str, passed: bool, text: str) -> None:
        nonlocal ok
        ok &= passed
        reasons.append(f"{'pass' if passed else 'FAIL'}  {name}: {text}")

    new_mean = sum(v["relaxed_f1"] for v in new_table.values()) / len(new_table)
    old_mean = sum(v["relaxed_f1"] for v in old_table.values()) / len(old_table)
    rule("mean relaxed F1", new_mean >= old_mean + PLACES_MEAN_GAIN - 1e-9,
         f"{old_mean:.4f} -> {new_mean:.4f} over {len(new_table)} places (needs +{PLACES_MEAN_GAIN:g})")
    for place in new_table:
        new, old = new_table[place]["relaxed_f1"], old_table[place]["relaxed_f1"]
        rule(f"{place} relaxed F1", new >= old - PLACE_FALL - 1e-9,
             f"{old:.4f} -> {new:.4f} (must not fall by more than {PLACE_FALL:g})")
    first = next(iter(new_table))
    new, old = new_table[first]["road_iou"], old_table[first]["road_iou"]
    rule(f"{first} road IoU", new >= old - HOME_IOU_FALL - 1e-9,
         f"{old:.4f} -> {new:.4f} (must not fall by more than {HOME_IOU_FALL:g})")
    for name in ("lines_completeness", "lines_correctness", "lines_apls"):
        if name in candidate and name in shipped:
            reasons.append(f"note  {name.replace('_', ' ')}: {shipped[name]:.4f} -> {candidate[name]:.4f} (reported, "
                           f"deciding nothing)")
    return ok, reasons
