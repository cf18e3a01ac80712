"""Fakes and sources for the prompting tests (no torch).

``DiskGraphs`` stands in for the encoder/decoder ONNX graphs with the same input and
output names: the encoder counts its calls and returns the mean colour as an
"embedding"; the decoder returns a disk of ``radius_px`` (image pixels) around the first
positive point (or the box centre), mapped back through ``orig_im_size`` exactly as a
real decoder's output is, so tests can follow coordinates end to end.
"""

from __future__ import annotations

import threading

import dask.array as da
import numpy as np
import pytest

from tessera.pipelines.prompting.runtime import SamRuntime
from tessera.pipelines.prompting.transforms import resized_shape
from tessera.pipelines.sources.base import Source


class FakeEncoder:
    def __init__(self) -> None:
        self.input_names = ["image"]
        self.output_names = ["image_embeddings"]
        self.calls = 0
        self._lock = threading.Lock()

    def run(self, inputs):
        with self._lock:
            self.calls += 1
        x = inputs["image"]
        return {"image_embeddings": np.broadcast_to(x.mean(axis=(2, 3))[:, :, None, None], (1, 3, 4, 4)).copy()}


class FakeDecoder:
    def __init__(self, input_size: int, radius_px: float = 5.0) -> None:
        self.input_names = ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input",
                            "orig_im_size"]
        self.output_names = ["masks", "iou_predictions", "low_res_masks"]
        self.input_size = input_size
        self.radius_px = radius_px
        self.last: dict | None = None

    def run(self, inputs):
        self.last = inputs
        coords, labels = inputs["point_coords"][0], inputs["point_labels"][0]
        h, w = (int(v) for v in inputs["orig_im_size"])
        rh, rw = resized_shape(h, w, self.input_size)
        pos = coords[labels == 1]
        if len(pos):
            cx, cy = pos[0]
        else:
            box = coords[np.isin(labels, (2, 3))]
            cx, cy = box.mean(axis=0)
        cx, cy = cx * w / rw, cy * h / rh  # input frame -> image frame
        yy, xx = np.mgrid[0:h, 0:w]
        logits = self.radius_px - np.hypot(xx - cx, yy - cy)
        n = self.input_size // 4
        return {
            "masks": logits[None, None].astype(np.float32),
            "iou_predictions": np.array([[0.9]], np.float32),
            "low_res_masks": np.zeros((1, 1, n, n), np.float32),
        }


def fake_runtime(input_size: int = 64, radius_px: float = 5.0, window_px: int | None = None) -> SamRuntime:
    return SamRuntime(FakeEncoder(), FakeDecoder(input_size, radius_px), input_size=input_size, model_id="fake-model",
                      window_px=window_px)


@pytest.fixture
def runtime() -> SamRuntime:
    return fake_runtime()


def pyramid_source(l0: np.ndarray, level_shapes: list[tuple[int, int]], *, path: str = "<pyramid>") -> Source:
    """A Source over ``l0`` (H, W[, C]) with coarser levels of the given (h, w) shapes
    (nearest sampling), so downsamples can be non-integers such as 2.0004."""
    levels = [da.from_array(l0, chunks=64)]
    H, W = l0.shape[:2]
    for h, w in level_shapes:
        ys = np.minimum(((np.arange(h) + 0.5) * H / h).astype(int), H - 1)
        xs = np.minimum(((np.arange(w) + 0.5) * W / w).astype(int), W - 1)
        levels.append(da.from_array(l0[ys][:, xs], chunks=64))
    axes = "YXC" if l0.ndim == 3 else "YX"
    src = Source(path=path, format="test pyramid", reader="memory", levels=levels, axes=axes)
    src.metadata["data_id"] = f"test:{path}:{l0.shape}"
    return src


@pytest.fixture(autouse=True)
def _synchronous_dask():
    """Reads in these tests compute on the calling thread (dask's threaded scheduler
    would leave its pool's threads behind, which the suite treats as a leak)."""
    import dask

    with dask.config.set(scheduler="synchronous"):
        yield
