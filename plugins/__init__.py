"""Built-in model plugins, one folder each (manifest.toml, model.py, processing.py, train.py, MODEL_CARD.md)."""
