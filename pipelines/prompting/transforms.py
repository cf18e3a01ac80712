"""Image preprocessing and coordinate transforms for SAM-style encoders (numpy only).

Two preprocessings, chosen by the weights:

- ``"sam"`` (segment-anything, MobileSAM, our demo weights): resize so the longest side
  is the encoder input size (aspect kept, bilinear with antialiasing, as the official
  ``ResizeLongestSide``), normalise with mean [123.675, 116.28, 103.53] and std
  [58.395, 57.12, 57.375] on the 0-255 scale, pad bottom/right with zeros;
- ``"medsam"``: squash-resize to input x input (aspect not kept; bicubic with
  antialiasing, truncated to uint8, as MedSAM's ``MedSAM_Inference.py``), per-image
  min-max to [0, 1], no padding; MedSAM takes box prompts only.

Frames: *image* coordinates are (x, y) pixels of the image given to ``preprocess``
(SAM's convention: a pixel index, the prompt encoder adds the half pixel); *input*
coordinates are pixels of the encoder input. Image -> input multiplies by the per-axis
scale, exactly as the official ``apply_coords``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

SAM_MEAN = (123.675, 116.28, 103.53)
SAM_STD = (58.395, 57.12, 57.375)
Preprocessing = Literal["sam", "medsam"]


def resized_shape(h: int, w: int, longest: int) -> tuple[int, int]:
    """(h', w') with the longest side = ``longest``, rounded half up (official rule; at
    least 1 px, where the official rule would give an empty side for slivers)."""
    scale = longest / max(h, w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


@dataclass(frozen=True)
class InputTransform:
    """How an image of ``image_hw`` became the encoder input of ``input_size``.

    ``resized_hw`` is the part of the input holding image pixels (the rest is padding).
    """

    image_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    input_size: int
    kind: Preprocessing = "sam"

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Input pixels per image pixel along x and y."""
        return self.resized_hw[1] / self.image_hw[1], self.resized_hw[0] / self.image_hw[0]

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        """Image (x, y) coordinates -> encoder input coordinates, ``[..., 2]`` float32."""
        sx, sy = self.scale_xy
        out = np.asarray(xy, np.float32).copy()
        out[..., 0] *= sx
        out[..., 1] *= sy
        return out

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """Encoder input coordinates -> image coordinates (inverse of :meth:`to_input`)."""
        sx, sy = self.scale_xy
        out = np.asarray(xy, np.float64).copy()
        out[..., 0] /= sx
        out[..., 1] /= sy
        return out


def to_rgb_uint8(image: np.ndarray, *, value_window: tuple[float, float] | None = None) -> np.ndarray:
    """Any 2D image -> uint8 (H, W, 3) RGB: uint8 RGB passes through; RGBA drops alpha;
    grey or other dtypes (CT HU, 16-bit microscopy) are windowed to 0-255 by
    ``value_window`` (lo, hi) or, when None, by the 0.5 and 99.5 percentiles."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.ndim == 3 and arr.shape[-1] == 3 and arr.dtype == np.uint8:
        return arr
    if arr.ndim == 3 and arr.shape[-1] not in (3,):
        msg = f"expected a (H, W), (H, W, 3) or (H, W, 4) image, got shape {arr.shape}"
        raise ValueError(msg)
    grey = arr.ndim == 2
    if arr.dtype == np.uint8:
        scaled = arr
    else:
        data = arr.astype(np.float32)
        if value_window is None:
            finite = data[np.isfinite(data)]
            lo, hi = (np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0))
        else:
            lo, hi = value_window
        span = float(hi - lo) if hi > lo else 1.0
        scaled = np.clip((np.nan_to_num(data, nan=lo) - lo) / span * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if grey:
        scaled = np.repeat(scaled[..., None], 3, axis=-1)
    return scaled


def resize_longest_side(image_rgb: np.ndarray, longest: int) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 with its longest side ``longest`` (the "sam" rule; the
    image itself when it already has that size)."""
    h, w = image_rgb.shape[:2]
    rh, rw = resized_shape(h, w, longest)
    if (rh, rw) == (h, w):
        return image_rgb
    # PIL's bilinear resize antialiases when shrinking, as torchvision's resize of a PIL
    # image does in the official ResizeLongestSide.
    return np.asarray(Image.fromarray(np.ascontiguousarray(image_rgb)).resize((rw, rh), Image.BILINEAR))


def preprocess(
    image_rgb: np.ndarray,
    input_size: int,
    *,
    kind: Preprocessing = "sam",
    mean: tuple[float, float, float] = SAM_MEAN,
    std: tuple[float, float, float] = SAM_STD,
) -> tuple[np.ndarray, InputTransform]:
    """uint8 (H, W, 3) RGB -> float32 encoder input ``[1, 3, size, size]`` and its
    transform."""
    img = np.asarray(image_rgb)
    if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
        msg = f"preprocess wants uint8 (H, W, 3) RGB, got {img.dtype} {img.shape}; use to_rgb_uint8"
        raise ValueError(msg)
    h, w = img.shape[:2]
    if kind == "medsam":
        from skimage.transform import resize

        # MedSAM's own inference: bicubic with antialiasing, truncated to uint8, min-max.
        resized = resize(
            img, (input_size, input_size), order=3, preserve_range=True, anti_aliasing=True
        ).astype(np.uint8).astype(np.float32)
        lo, hi = float(resized.min()), float(resized.max())
        x = (resized - lo) / max(hi - lo, 1e-8)
        out = x.transpose(2, 0, 1)[None].astype(np.float32)
        return out, InputTransform((h, w), (input_size, input_size), input_size, "medsam")
    resized = resize_longest_side(img, input_size).astype(np.float32)
    rh, rw = resized.shape[:2]
    norm = (resized - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    out = np.zeros((1, 3, input_size, input_size), np.float32)
    out[0, :, :rh, :rw] = norm.transpose(2, 0, 1)
    return out, InputTransform((h, w), (rh, rw), input_size, "sam")
