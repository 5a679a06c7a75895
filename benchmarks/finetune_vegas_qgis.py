"""The Vegas fine-tuning run of benchmarks/finetune_vegas.py, through QGIS's Processing algorithm "Fine-tune road
model" in a headless QGIS (the engine process does the work, as in the plugin). Prints before/after.

    QT_QPA_PLATFORM=offscreen python benchmarks/finetune_vegas_qgis.py [--minutes M]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), "/usr/share/qgis/python/plugins"]

from finetune_vegas import VEGAS, halves  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=8.0)
    args = parser.parse_args()
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    import processing

    from road_extractor.processing_provider import RoadExtractorProvider

    provider = RoadExtractorProvider()  # kept referenced: the registry does not own a Python provider
    app.processingRegistry().addProvider(provider)
    folder = Path(tempfile.mkdtemp(prefix="finetune-vegas-qgis-"))
    north, south = halves(VEGAS / "vegas_img0.tif", folder)
    started = time.perf_counter()
    result = processing.run("road_extractor:finetune_road_model", {
        "RASTERS": [str(VEGAS / "vegas_img0.tif")], "ROADS": str(VEGAS / "vegas_img0_roads.geojson"),
        "TRAIN_AREA": str(north), "CHECK_AREA": str(south), "MINUTES": args.minutes,
        "OUTPUT_MODEL": str(folder / "vegas.pt")})
    print(f"Processing 'Fine-tune road model', {args.minutes:g} min budget, {time.perf_counter() - started:.0f} s "
          f"wall clock: completeness {result['BEFORE_COMPLETENESS']:.3f} -> {result['AFTER_COMPLETENESS']:.3f}, "
          f"correctness {result['BEFORE_CORRECTNESS']:.3f} -> {result['AFTER_CORRECTNESS']:.3f}, road IoU "
          f"{result['BEFORE_ROAD_IOU']:.3f} -> {result['AFTER_ROAD_IOU']:.3f}; model {result['MODEL_FILE']}")
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
