"""Probabilities -> skeleton -> graph -> road lines and junctions, and their GeoPackage."""
