"""road-extractor's engine: model, checkpoints, inference. Imports neither Qt nor QGIS."""

__version__ = "0.1.0"
