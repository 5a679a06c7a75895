"""Raster windows -> network -> blended road probabilities and masks, on one raster or a region."""
