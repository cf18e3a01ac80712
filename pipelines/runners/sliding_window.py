"""3D sliding-window inference with Gaussian blending, streamed in Z slabs.

What MONAI's ``sliding_window_inference`` and nnU-Net do (windows on a regular grid
with ``overlap``, each prediction weighted by a Gaussian importance map centred on the
window, summed and normalised by the summed weights), with one difference that
matters for whole CT volumes: the output is never a float map of the whole volume.
Windows are visited Z-start by Z-start; the float accumulators cover only the band of
planes the current windows touch (window depth x Y x X); when the windows of a Z start
are done, the planes before the next Z start can receive no more contributions, so
they are turned into uint8 labels (and uint8 probabilities for ``keep_probabilities``)
and the band moves on.

Resume: ``start_z`` skips planes already finished by an earlier run; the windows that
touch them are re-run only as far as later planes need them, so the result is the same
as an uninterrupted run. ``on_planes`` receives every finished slab as it is produced.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from tessera.pipelines.progress import ProgressReporter, check_cancelled


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Evenly spread window starts covering [0, length) with at least ``overlap``
    (fraction of the window) between neighbours; the last window ends at ``length``."""
    if length <= window:
        return [0]
    step = max(1, int(window * (1.0 - overlap)))
    n = math.ceil((length - window) / step) + 1
    return sorted({round(i * (length - window) / (n - 1)) for i in range(n)})


def gaussian_importance(window_zyx: tuple[int, int, int], sigma_scale: float) -> np.ndarray:
    """Separable Gaussian (max 1) over a window, sigma = ``sigma_scale`` x window size;
    zeros are lifted to the smallest positive value so every voxel has weight."""
    g = np.ones((1, 1, 1), dtype=np.float64)
    for axis, n in enumerate(window_zyx):
        x = np.arange(n, dtype=np.float64)
        sigma = max(sigma_scale * n, 1e-6)
        v = np.exp(-0.5 * ((x - (n - 1) / 2.0) / sigma) ** 2)
        shape = [1, 1, 1]
        shape[axis] = n
        g = g * v.reshape(shape)
    g /= g.max()
    positive = g[g > 0]
    g[g <= 0] = positive.min() if positive.size else 1.0
    return g.astype(np.float32)


def _padding(shape: tuple[int, ...], window: tuple[int, ...]) -> list[tuple[int, int]]:
    """Symmetric padding that makes every axis at least the window."""
    pads = []
    for n, w in zip(shape, window, strict=True):
        extra = max(0, w - n)
        pads.append((extra // 2, extra - extra // 2))
    return pads


def sliding_window_labels(
    volume: Any,
    predictor: Callable[[np.ndarray], np.ndarray],
    *,
    window_zyx: tuple[int, int, int],
    overlap: float = 0.25,
    sigma_scale: float = 0.125,
    batch_size: int = 2,
    progress: ProgressReporter | None = None,
    cancel: threading.Event | None = None,
    keep_probabilities: tuple[int, ...] = (),
    pad_value: float = 0.0,
    start_z: int = 0,
    on_planes: Callable[[int, int, np.ndarray, dict[int, np.ndarray]], None] | None = None,
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Labels of a (C, Z, Y, X) volume from a windowed ``predictor``.

    Args:
        volume: float32 model input (numpy or dask), already preprocessed (or raw, when
            the predictor preprocesses; then set ``pad_value`` to the background value).
        predictor: float32 (N, C, D, H, W) -> float32 (N, K, D, H, W) probabilities.
        window_zyx: window (D, H, W); volumes smaller than it are padded with ``pad_value``.
        overlap: fraction of the window shared by neighbouring windows, per axis.
        sigma_scale: Gaussian sigma as a fraction of the window size.
        batch_size: windows per predictor call.
        keep_probabilities: classes whose blended probability is returned as uint8 0..255.
        start_z: planes [0, start_z) were finished earlier: not produced again (zeros).
        on_planes: called as ``on_planes(z0, z1, labels[z0:z1], {k: prob[z0:z1]})``.

    Returns:
        (uint8 labels (Z, Y, X) = argmax class, {class: uint8 probability (Z, Y, X)}).
    """
    c, z, y, x = (int(s) for s in volume.shape)
    wz, wy, wx = (int(v) for v in window_zyx)
    pads = _padding((z, y, x), (wz, wy, wx))
    (pz, _), (py, _), (px, _) = pads
    zp, yp, xp = z + sum(pads[0]), y + sum(pads[1]), x + sum(pads[2])
    zs, ys, xs = (window_starts(n, w, overlap) for n, w in ((zp, wz), (yp, wy), (xp, wx)))
    importance = gaussian_importance((wz, wy, wx), sigma_scale)
    labels = np.zeros((z, y, x), dtype=np.uint8)
    probs = {k: np.zeros((z, y, x), dtype=np.uint8) for k in keep_probabilities}
    first_needed = start_z + pz  # in padded coordinates
    i0 = next((i for i, s in enumerate(zs) if s + wz > first_needed), len(zs))
    per_start = len(ys) * len(xs)
    if progress is not None:
        progress.start(len(zs) * per_start, "sliding window")
        progress.advance(i0 * per_start)

    def read_slab(p0: int) -> np.ndarray:
        """Padded-frame planes [p0, p0 + wz) as float32 (C, wz, yp, xp)."""
        out = np.full((c, wz, yp, xp), pad_value, dtype=np.float32)
        a, b = max(p0 - pz, 0), min(p0 + wz - pz, z)
        if b > a:
            target = out[:, a + pz - p0 : b + pz - p0, py : py + y, px : px + x]
            block = volume[:, a:b]
            if hasattr(block, "dask"):
                # chunk by chunk straight into the slab: computing the block first would
                # hold the whole multi-channel input (and dask's concatenation of it) twice
                # more, which set the two-stage CT flow's peak memory
                import dask.array as da

                da.store(block, target, lock=False, scheduler="synchronous")
            else:
                target[...] = np.asarray(block, dtype=np.float32)
        return out

    acc: np.ndarray | None = None
    wsum = np.zeros((wz, yp, xp), dtype=np.float32)
    origin = zs[i0] if i0 < len(zs) else 0
    for i in range(i0, len(zs)):
        s = zs[i]
        if s != origin:  # move the band: planes before s are final and were emitted
            shift = s - origin
            if acc is not None:
                acc = np.roll(acc, -shift, axis=1)
                acc[:, wz - shift :] = 0
            wsum = np.roll(wsum, -shift, axis=0)
            wsum[wz - shift :] = 0
            origin = s
        slab = read_slab(s)
        windows = [(yy, xx) for yy in ys for xx in xs]
        for b0 in range(0, len(windows), max(1, batch_size)):
            check_cancelled(cancel)
            batch = windows[b0 : b0 + batch_size]
            inp = np.stack([slab[:, :, yy : yy + wy, xx : xx + wx] for yy, xx in batch])
            out = np.asarray(predictor(inp), dtype=np.float32)
            if out.ndim != 5 or out.shape[0] != len(batch) or out.shape[2:] != (wz, wy, wx):
                msg = f"predictor returned {out.shape} for windows {inp.shape}; expected (N, K, {wz}, {wy}, {wx})"
                raise ValueError(msg)
            if acc is None:
                acc = np.zeros((out.shape[1], wz, yp, xp), dtype=np.float32)
            for (yy, xx), pred in zip(batch, out, strict=True):
                acc[:, :, yy : yy + wy, xx : xx + wx] += pred * importance
                wsum[:, yy : yy + wy, xx : xx + wx] += importance
            if progress is not None:
                progress.advance(len(batch))
        # Planes [s, next start) receive nothing more: finalise them.
        end = zs[i + 1] if i + 1 < len(zs) else zp
        lo = max(s, first_needed)
        if end > lo and acc is not None:
            band = slice(lo - s, end - s)
            p = acc[:, band] / np.maximum(wsum[band], 1e-12)[None]
            a, b = max(lo - pz, 0), min(end - pz, z)  # back to the unpadded frame
            if b > a:
                sel = slice(a + pz - lo, b + pz - lo)
                p = p[:, sel, py : py + y, px : px + x]
                labels[a:b] = np.argmax(p, axis=0).astype(np.uint8)
                slab_probs = {}
                for k in keep_probabilities:
                    probs[k][a:b] = np.clip(np.rint(p[k] * 255.0), 0, 255).astype(np.uint8)
                    slab_probs[k] = probs[k][a:b]
                if on_planes is not None:
                    on_planes(a, b, labels[a:b], slab_probs)
    return labels, probs
