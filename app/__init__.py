"""Faces of Tessera: the CLI, the desktop viewer and the napari plugin."""
