"""Regression test of each shipped model on its held-out Massachusetts tiles: the road IoU must not fall below the
figure its model card (and its own metadata) states, minus a small margin. Skips where the data is absent (a
user's machine without ../shared/data); the models themselves are part of the project and must be there."""

import pytest

from core.model.catalog import SHIPPED_MODELS, read_catalog

MARGIN = 0.01


@pytest.mark.parametrize("entry", read_catalog(SHIPPED_MODELS), ids=lambda e: e.path.name)
def test_each_shipped_model_keeps_its_held_out_road_iou(shared_data, entry):
    from core.model.checkpoint import load_model
    from training.data import find_pairs, inspect_labels, read_pair
    from training.evaluate import Inference, evaluate_tiles

    model = load_model(entry.path)
    metrics, provenance = model.info.metrics, model.info.provenance
    assert "heldout_road_iou" in metrics and provenance.get("validation_tiles"), \
        "the model file must record its held-out road IoU and the tiles it was measured on"
    pairs = {p.name: p for p in find_pairs(shared_data / "massroads")}
    held_out = [pairs[name] for name in provenance["validation_tiles"]]
    labels = inspect_labels(held_out)
    tiles = ((p.name, *read_pair(p, labels)) for p in held_out)
    result = evaluate_tiles(model, tiles, 1.0, [Inference()], graphs=False)["scales 1.0"]
    assert result["road_iou"] >= metrics["heldout_road_iou"] - MARGIN
