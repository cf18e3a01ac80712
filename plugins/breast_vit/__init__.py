"""Breast-cancer ViT plugin: BreakHis-style benign/malignant tile classifier (+ 8 subtypes).

This package holds ``manifest.toml`` and must stay light: no torch import here (listing
plugins reads the manifest only). ``model.py`` (torch + timm) is imported by the torch
engine, training and export; ``processing.py`` is numpy.
"""
