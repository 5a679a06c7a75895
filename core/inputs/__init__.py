"""What runs go over: rasters read in windows at the model's GSD, areas to extract, tiles, vector files."""
