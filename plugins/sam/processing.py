"""Numpy processing of the SAM plugin (no torch): the prompting runtime's preprocessing,
and meaningful example inputs for validation and benchmarks.

The prompt-segment task is driven by ``tessera.pipelines.runners.prompt_segment`` and
``tessera.pipelines.prompting.PromptSession``; preprocessing (longest side -> encoder
input, mean/std on 0-255, pad; or MedSAM's squash + min-max) is
``tessera.pipelines.prompting.transforms.preprocess``, selected per weights variant by
``params.variants.<variant>.preprocessing`` in the manifest.
"""

from __future__ import annotations

import numpy as np

from tessera.pipelines.prompting.transforms import InputTransform, preprocess, to_rgb_uint8

__all__ = ["InputTransform", "example_inputs", "preprocess", "to_rgb_uint8"]

_DEMO_INPUT = 256
_DEMO_DIM = 128


def example_inputs(role: str, batch: int) -> dict[str, np.ndarray]:
    """Inputs with meaning for the demo graphs, ``batch`` items: normalised random images
    for the encoder; for the decoder, embeddings each with one click plus the padding
    point, no mask input, and a shared original size of 200 x 256 px."""
    rng = np.random.default_rng(0)
    s = _DEMO_INPUT // 16
    if role == "encoder":
        return {"image": rng.standard_normal((batch, 3, _DEMO_INPUT, _DEMO_INPUT)).astype(np.float32)}
    if role == "decoder":
        return {
            "image_embeddings": rng.standard_normal((batch, _DEMO_DIM, s, s)).astype(np.float32),
            "point_coords": np.repeat(np.array([[[100.0, 80.0], [0.0, 0.0]]], np.float32), batch, axis=0),
            "point_labels": np.repeat(np.array([[1.0, -1.0]], np.float32), batch, axis=0),
            "mask_input": np.zeros((batch, 1, 4 * s, 4 * s), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.array([200.0, 256.0], np.float32),
        }
    msg = f"the SAM plugin has roles 'encoder' and 'decoder', not {role!r}"
    raise ValueError(msg)
