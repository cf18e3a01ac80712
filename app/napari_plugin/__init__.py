"""Tessera inside plain napari (npe2): a reader for every format Tessera opens, the
Tessera docks, and synthetic sample data. The manifest is ``napari.yaml`` next to this
file; every command in it is imported lazily by its ``python_name``."""
