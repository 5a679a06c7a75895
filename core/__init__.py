"""road-extractor's engine: raster windows -> model -> probabilities -> road lines (see README, Layout). Imports
neither Qt nor QGIS."""

__version__ = "0.1.0"
