"""Headless training of road models (`python -m training`). Needs no QGIS."""
