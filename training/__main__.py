import sys

print("python -m training: the fit/evaluate/doctor/ablate/export commands are not in this release yet; "
      "the model, its loader and inference are (road-extractor --help).", file=sys.stderr)
sys.exit(2)
