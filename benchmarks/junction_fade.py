"""Does the road probability fade where streets meet? Measured on the model card's 6 validation tiles.

    python benchmarks/junction_fade.py [--model FILE] [--data FOLDER]

The reference masks are thinned to centrelines and traced into a graph; a node where 3 or more centrelines meet is a
junction, once whiskers shorter than 5 px are pruned (a mask rendered at a fixed width thins to a short whisker at
many corners, which counting pixels with 3 neighbours took for junctions: 111 such pixels on these tiles against
96 junctions). For centreline pixels near a junction (within 6 px) and far from one (at least 20 px), the script prints
the model's mean probability and its recall at the mask threshold, and for each reference junction whether the
extracted road network has a junction within 12 m (what the lines a user gets do at street corners).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.model.catalog import default_model, open_model  # noqa: E402
from core.roads.vectorize import (  # noqa: E402
    PixelGrid,
    VectorizeParams,
    merge_close_junctions,
    prune_spurs,
    skeleton_graph,
    vectorize_array,
)
from training.config import TrainConfig  # noqa: E402
from training.data import IGNORE  # noqa: E402
from training.evaluate import Inference, predict_tile  # noqa: E402

NEAR_PX, FAR_PX, MATCH_M, WHISKER_PX = 6, 20, 12.0, 5
PIXELS = PixelGrid((0.0, 1.0, 0.0, 0.0, 0.0, -1.0), (1.0, 1.0))  # 1 m pixels, y up: (x, -y) are pixel coordinates


def reference_junctions(road: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(x, y) pixel centres where 3 or more centrelines of a reference road mask meet, inside the valid pixels."""
    graph = skeleton_graph(skeletonize(road))
    merge_close_junctions(graph, 2.5)
    prune_spurs(graph, WHISKER_PX)
    centres = np.array([graph.nodes[n]["rc"] for n in graph if graph.degree(n) >= 3]).reshape(-1, 2)
    inside = valid[centres[:, 0].round().astype(int), centres[:, 1].round().astype(int)]
    return centres[inside][:, ::-1] + 0.5


def extracted_junctions(probability: np.ndarray, params: VectorizeParams | None = None) -> np.ndarray:
    """Junctions (degree >= 3) of the engine's road network for a probability raster, in pixel coordinates."""
    network = vectorize_array(probability, PIXELS, params or VectorizeParams())
    return junctions_of(network)


def junctions_of(network) -> np.ndarray:
    """(x, y) pixel coordinates of a network's junctions of degree >= 3, for a network drawn on PIXELS."""
    return np.array([(p.x, -p.y) for p, a in zip(network.junctions, network.junction_attributes, strict=True)
                     if a["degree"] >= 3]).reshape(-1, 2)


def within(points: np.ndarray, x: float, y: float) -> bool:
    return bool(len(points)) and bool(np.min(np.hypot(points[:, 0] - x, points[:, 1] - y)) <= MATCH_M)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(default_model()))
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "massroads"))
    args = parser.parse_args()
    model = open_model(args.model)
    tiles = TrainConfig.from_dict({"data": [args.data], "val_tiles": 6, "split_seed": 0}).split().read_val()
    near_p, far_p, near_hit, far_hit = [], [], [], []
    matched = matched_reference = total = 0
    for name, image, target in tiles:
        valid = target != IGNORE
        probability, mask = predict_tile(model, image, valid, 1.0, Inference())
        centreline = skeletonize(target == 1) & valid
        centres = reference_junctions(target == 1, valid)
        at_junction = np.zeros(target.shape, bool)
        at_junction[(centres[:, 1] - 0.5).astype(int), (centres[:, 0] - 0.5).astype(int)] = True
        distance = ndimage.distance_transform_edt(~at_junction)
        near, far = centreline & (distance <= NEAR_PX), centreline & (distance >= FAR_PX)
        near_p.append(probability[near])
        far_p.append(probability[far])
        near_hit.append(mask[near])
        far_hit.append(mask[far])
        found = extracted_junctions(probability)
        # The same vectorizer on the reference mask itself: how many junctions perfect probabilities would give.
        baseline = extracted_junctions((target == 1).astype(np.float32))
        for x, y in centres:
            total += 1
            matched += within(found, x, y)
            matched_reference += within(baseline, x, y)
        if len(centres):
            print(f"{name}: {len(centres)} reference junctions, {len(found)} extracted, mean probability near/far "
                  f"{probability[near].mean():.3f}/{probability[far].mean():.3f}", flush=True)
    near_all, far_all = np.concatenate(near_p), np.concatenate(far_p)
    print(f"\ncentreline pixels within {NEAR_PX} px of a junction: {near_all.size}, mean probability "
          f"{near_all.mean():.3f}, recall {np.concatenate(near_hit).mean():.3f}")
    print(f"centreline pixels at least {FAR_PX} px from one:    {far_all.size}, mean probability "
          f"{far_all.mean():.3f}, recall {np.concatenate(far_hit).mean():.3f}")
    print(f"reference junctions with an extracted junction (degree >= 3) within {MATCH_M:g} m: {matched} of "
          f"{total} ({matched / max(total, 1):.1%}); vectorizing the reference mask itself: {matched_reference} "
          f"({matched_reference / max(total, 1):.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
