"""Regression test of each shipped model on its held-out Massachusetts tiles: the road IoU must not fall below the
figure its model card (and its own metadata) states, minus a small margin. Skips where the data is absent (a
user's machine without ../shared/data); the models themselves are part of the project and must be there."""

from pathlib import Path

import pytest

from core.model.catalog import SHIPPED_MODELS, read_catalog

REPO = Path(__file__).resolve().parents[1]

MARGIN = 0.01


@pytest.mark.parametrize("entry", read_catalog(SHIPPED_MODELS), ids=lambda e: e.path.name)
def test_each_shipped_model_keeps_its_held_out_road_iou(shared_data, entry):
    from core.model.checkpoint import load_model
    from training.data import described_pairs, inspect_labels, read_pair
    from training.description import resolve_data
    from training.evaluate import Inference, evaluate_tiles

    model = load_model(entry.path)
    metrics, provenance = model.info.metrics, model.info.provenance
    assert "heldout_road_iou" in metrics and provenance.get("validation_tiles"), \
        "the model file must record its held-out road IoU and the tiles it was measured on"
    # The tiles read at the model's own GSD, as its figures were measured (`evaluate --gsd-m`): the 1 m tiles
    # resampled for the 0.5 m world model.
    gsd = model.info.gsd_m or 1.0
    pairs = {p.name: p for p in described_pairs(resolve_data(REPO / "datasets" / "massachusetts.yaml"), gsd)}
    held_out = [pairs[name] for name in provenance["validation_tiles"]]
    labels = inspect_labels(held_out)
    tiles = ((p.name, *read_pair(p, labels)) for p in held_out)
    result = evaluate_tiles(model, tiles, gsd, [Inference()], graphs=False)["scales 1.0"]
    assert result["road_iou"] >= metrics["heldout_road_iou"] - MARGIN
