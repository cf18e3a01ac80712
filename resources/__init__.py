"""Data files: shipped model weights, icons, small samples (read with importlib.resources)."""
