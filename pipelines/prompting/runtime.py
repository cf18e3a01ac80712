"""SAM at inference: an encoder graph run once per image, a decoder graph run per prompt.

``SamRuntime`` turns an image into an :class:`Embedding` (the encoder outputs plus the
transform from image to encoder input) and an embedding plus prompts into a
:class:`Prediction` (a mask of the image's size). It runs the two ONNX graphs of the
official SAM export layout (see ``tessera.plugins.sam.export``); anything with the
``Engine`` shape (``run(dict) -> dict``) can stand in for either graph.

Prompt layout sent to the decoder (as the official predictor and ONNX example): the
points, then one padding point (label -1) when there is no box, then the two box
corners (labels 2 and 3). The decoder picks, as the official export does, the
single-mask output when there are more than two prompt tokens and otherwise the best of
the three multimask outputs.

Thread safety: ``encode`` and ``predict`` keep no state between calls; the engines
(``tessera.pipelines.engines``) may be run from several threads at once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tessera.pipelines.errors import EngineError
from tessera.pipelines.prompting.transforms import (
    SAM_MEAN,
    SAM_STD,
    InputTransform,
    Preprocessing,
    preprocess,
    to_rgb_uint8,
)

#: ONNX Runtime threads for the prompt decoder when the caller does not say. The decoder
#: is a small two-way transformer for every SAM size and runs once per prompt: spreading
#: it over threads costs more in hand-offs than it gains. Measured with `tessera bench sam`
#: on the 2-core VM, idle: demo decoder p50 4.1-5.5 ms with 1 thread vs 8.8-10.3 ms with 2.
DEFAULT_DECODER_THREADS = 1


def decoder_threads(threads: int | None) -> int:
    """The decoder's thread count: the caller's, else ``DEFAULT_DECODER_THREADS``."""
    return DEFAULT_DECODER_THREADS if threads is None else threads


class Graph(Protocol):
    """The part of an inference engine the runtime uses."""

    input_names: list[str]
    output_names: list[str]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class Embedding:
    """Encoder outputs for one image and how that image became the encoder input."""

    arrays: Mapping[str, np.ndarray]  # "image_embeddings" (+ "multi_scale_feature")
    transform: InputTransform
    encode_s: float = 0.0  # wall time the encoder took (0 when loaded from a cache)

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays.values()))


@dataclass(frozen=True)
class Prediction:
    """One prompt's answer, in the pixels of the image that was encoded."""

    mask: np.ndarray  # bool (H, W)
    score: float  # predicted IoU (stability score for SAM-UNet)
    low_res_logits: np.ndarray  # float32 [1, 1, 4S, 4S]: feed back as ``mask_input``
    decode_s: float = 0.0


class SamRuntime:
    """Encoder + decoder graphs and the preprocessing their weights expect."""

    def __init__(
        self,
        encoder: Graph,
        decoder: Graph,
        *,
        input_size: int,
        preprocessing: Preprocessing = "sam",
        mean: tuple[float, float, float] = SAM_MEAN,
        std: tuple[float, float, float] = SAM_STD,
        model_id: str = "",
        box_only: bool = False,
        window_px: int | None = None,
    ) -> None:
        self.encoder = encoder
        self.decoder = decoder
        self.input_size = int(input_size)
        self.preprocessing = preprocessing
        self.mean, self.std = tuple(mean), tuple(std)
        self.model_id = model_id  # identifies the weights (sha256 of the encoder file)
        self.box_only = box_only or preprocessing == "medsam"
        self.low_res_size = 4 * (self.input_size // 16)
        # the side of the image windows a session cuts a large region into, each resized
        # to ``input_size``: the image scale the weights were trained at (the official
        # checkpoints: their input size; the demo weights: 256 px scenes at 512 px input)
        self.window_px = int(window_px or self.input_size)

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def from_onnx(
        cls,
        encoder_path: Path,
        decoder_path: Path,
        *,
        preprocessing: Preprocessing = "sam",
        device: str = "cpu",
        threads: int | None = None,
        box_only: bool = False,
        model_id: str | None = None,
        window_px: int | None = None,
    ) -> SamRuntime:
        """Open two graph files (ONNX Runtime on ``device``, files safety-checked by the
        engine); the input size is read from the encoder's input shape. ``model_id``
        (default: the encoder file's sha256) keys cached embeddings."""
        from tessera.pipelines.engines.ort_engine import OnnxEngine
        from tessera.pipelines.plugin_system.integrity import sha256_file

        enc = OnnxEngine(Path(encoder_path), device=device, threads=threads, label="SAM encoder")
        dec = OnnxEngine(Path(decoder_path), device=device, threads=decoder_threads(threads),
                         label="SAM decoder")
        return cls.from_engines(enc, dec, preprocessing=preprocessing, box_only=box_only,
                                model_id=model_id or sha256_file(Path(encoder_path)), window_px=window_px)

    @classmethod
    def from_engines(
        cls,
        encoder: Any,
        decoder: Any,
        *,
        preprocessing: Preprocessing = "sam",
        box_only: bool = False,
        model_id: str = "",
        window_px: int | None = None,
    ) -> SamRuntime:
        """Two engines (``tessera.pipelines.engines``), the input size read from the
        encoder's input spec."""
        specs = {s["name"]: s["shape"] for s in getattr(encoder, "input_specs", [])}
        shape = specs.get("image") or next(iter(specs.values()), [None])
        size = shape[-1]
        if not isinstance(size, int):
            msg = f"the encoder's input has no fixed size ({shape}); export it with a static shape"
            raise EngineError(msg, path=getattr(encoder, "path", None))
        return cls(encoder, decoder, input_size=size, preprocessing=preprocessing, model_id=model_id,
                   box_only=box_only, window_px=window_px)

    # ---- the two steps -----------------------------------------------------------------
    def encode(self, image: np.ndarray, *, value_window: tuple[float, float] | None = None) -> Embedding:
        """Any 2D image (uint8 RGB, grey, 16-bit, HU...) -> its embedding."""
        rgb = to_rgb_uint8(image, value_window=value_window)
        x, transform = preprocess(rgb, self.input_size, kind=self.preprocessing, mean=self.mean, std=self.std)
        t0 = time.perf_counter()
        out = self.encoder.run({"image": x})
        dt = time.perf_counter() - t0
        arrays = {k: np.asarray(v, np.float32) for k, v in out.items()}
        return Embedding(arrays=arrays, transform=transform, encode_s=dt)

    def prompt_arrays(
        self,
        transform: InputTransform,
        points_xy: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box_xyxy: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``point_coords [1, N, 2]`` (encoder-input frame) and ``point_labels [1, N]``."""
        coords: list[np.ndarray] = []
        labs: list[np.ndarray] = []
        if points_xy is not None and len(points_xy):
            if self.box_only:
                msg = "these weights take box prompts only (MedSAM/SAM-UNet); draw a box"
                raise ValueError(msg)
            pts = np.asarray(points_xy, np.float32).reshape(-1, 2)
            lab = np.ones(len(pts), np.float32) if labels is None else np.asarray(labels, np.float32).reshape(-1)
            if len(lab) != len(pts):
                msg = f"{len(pts)} points but {len(lab)} labels"
                raise ValueError(msg)
            if not np.all(np.isin(lab, (0, 1))):
                msg = "point labels must be 1 (positive) or 0 (negative)"
                raise ValueError(msg)
            coords.append(transform.to_input(pts))
            labs.append(lab)
            if box_xyxy is None:
                coords.append(np.zeros((1, 2), np.float32))
                labs.append(np.array([-1], np.float32))
        if box_xyxy is not None:
            box = np.asarray(box_xyxy, np.float32).reshape(2, 2)
            coords.append(transform.to_input(box))
            labs.append(np.array([2, 3], np.float32))
        if not coords:
            msg = "give at least one point or a box"
            raise ValueError(msg)
        return np.concatenate(coords)[None].astype(np.float32), np.concatenate(labs)[None].astype(np.float32)

    def predict(
        self,
        embedding: Embedding,
        *,
        points_xy: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box_xyxy: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
    ) -> Prediction:
        """The mask for prompts given in the encoded image's (x, y) pixel coordinates.

        ``mask_input``: a previous prediction's ``low_res_logits`` to refine it.
        """
        t = embedding.transform
        coords, labs = self.prompt_arrays(t, points_xy, labels, box_xyxy)
        n = self.low_res_size
        feed = dict(embedding.arrays)
        feed.update(
            point_coords=coords,
            point_labels=labs,
            mask_input=(np.zeros((1, 1, n, n), np.float32) if mask_input is None
                        else np.asarray(mask_input, np.float32).reshape(1, 1, n, n)),
            has_mask_input=np.array([0.0 if mask_input is None else 1.0], np.float32),
            orig_im_size=np.array(t.image_hw, np.float32),
        )
        feed = {k: v for k, v in feed.items() if k in self.decoder.input_names}
        t0 = time.perf_counter()
        out = self.decoder.run(feed)
        dt = time.perf_counter() - t0
        masks = out["masks"]
        return Prediction(
            mask=masks[0, 0] > 0.0,
            score=float(out["iou_predictions"].reshape(-1)[0]),
            low_res_logits=np.asarray(out["low_res_masks"][:, :1], np.float32),
            decode_s=dt,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "preprocessing": self.preprocessing,
            "model_id": self.model_id[:16],
            "encoder": getattr(self.encoder, "description", type(self.encoder).__name__),
            "decoder": getattr(self.decoder, "description", type(self.decoder).__name__),
        }
