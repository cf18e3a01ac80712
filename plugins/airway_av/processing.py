"""Pre- and post-processing of the airway / artery-vein plugin (numpy and scipy only).

The two-stage flow (``predict_volume``, the segment-3d hook of INTERFACES.md section 3):

1. the CT in HU, resampled to the model's voxel spacing (linear) when it differs;
2. HU window [-1000, 400] -> [0, 1];
3. lung mask (threshold, connected components, morphology): the lung context prior;
4. airway model by Gaussian-blended sliding window at its fixed cube size -> keep the
   largest 26-connected component;
5. distance from the airway (mm, clipped): the distance-transform prior;
6. artery-vein model over CT + lung context + distance + vessel-window CT channels;
   vessel components (26-connected) that never touch the lung mask are dropped (ribs,
   spine and chest wall are not pulmonary vessels);
7. labels uint8 (1 airway, 2 artery, 3 vein) back on the input grid (nearest).

Both networks read one tensor per window: image channels then three coordinate
channels (the position in the whole model-grid volume, each axis in [-1, 1]). Those
channels are built lazily (dask), so a 512x512x400 CT never holds float copies of
every channel at once.

Choices the paper leaves open (see MODEL_CARD.md): the distance prior is the
distance to the segmented airway in mm, clipped at ``DISTANCE_CLIP_MM`` and scaled to
[0, 1] (quantised to 8 bits); the lung context map is the binary lung mask.
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

HU_WINDOW = (-1000.0, 400.0)
#: the artery-vein model's second CT channel: a soft-tissue/contrast window in which
#: the ~50-110 HU between contrast-filled arteries and veins spans a sixth of the range
#: (in the full window it is a fourteenth, under the lung-vessel contrast)
VESSEL_WINDOW = (-200.0, 400.0)
DISTANCE_CLIP_MM = 20.0
#: label values of the output (class index in the manifest)
AIRWAY, ARTERY, VEIN = 1, 2, 3
#: the lung mask is computed on a grid with voxels of at least this size (a coarse prior)
_LUNG_GRID_MM = 1.4
#: planes per chunk of the lazy model inputs: the sliding window computes only the chunks
#: its slab of planes touches, so small chunks waste little work and memory per slab
INPUT_CHUNK_Z = 16

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------
# Channels
# ---------------------------------------------------------------------------------


def window_hu(hu: np.ndarray, window: Sequence[float] = HU_WINDOW) -> np.ndarray:
    """Clip HU to ``window`` and map it linearly to [0, 1] (float32)."""
    lo, hi = float(window[0]), float(window[1])
    out = np.asarray(hu, dtype=np.float32)
    out = (np.clip(out, lo, hi) - np.float32(lo)) / np.float32(hi - lo)
    return out.astype(np.float32, copy=False)


def _block_reduce_any(mask: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Mean-pool a boolean volume by integer ``factors`` (edges padded), as float32."""
    pads = [(0, (-n) % f) for n, f in zip(mask.shape, factors, strict=True)]
    m = np.pad(mask, pads, mode="edge") if any(p[1] for p in pads) else mask
    z, y, x = (n // f for n, f in zip(m.shape, factors, strict=True))
    fz, fy, fx = factors
    return m.reshape(z, fz, y, fy, x, fx).mean(axis=(1, 3, 5), dtype=np.float32)


def lung_mask(hu: np.ndarray, spacing_mm: Sequence[float]) -> np.ndarray:
    """Boolean lung mask (ZYX) of a chest CT in HU: the lung context prior.

    Air-like voxels (< -400 HU) inside the body (the largest non-air component with
    each axial slice's holes filled), large components only (each at least 10 % of
    the largest, so the outside air, bowel gas and noise drop out), then closed and
    hole-filled slice by slice so vessels and airway walls inside the lungs belong to
    them. Computed on a ~1.4 mm grid and brought back by nearest neighbour.
    """
    hu = np.asarray(hu)
    spacing = np.asarray(spacing_mm, dtype=float)
    factors = tuple(max(1, math.floor(_LUNG_GRID_MM / s)) for s in spacing)
    air_fine = hu < -400
    air = _block_reduce_any(air_fine, factors) >= 0.5 if factors != (1, 1, 1) else air_fine
    del air_fine
    coarse_spacing = spacing * np.asarray(factors)
    from tessera.pipelines.metrics.components import keep_largest_component, label_counts

    body = keep_largest_component(~air, connectivity=6)
    for z in range(body.shape[0]):
        body[z] = ndi.binary_fill_holes(body[z])
    candidates = air & body
    labels, n = ndi.label(candidates)
    if n == 0:
        return np.zeros(hu.shape, dtype=bool)
    sizes = label_counts(labels, n + 1)
    sizes[0] = 0
    keep = sizes >= 0.1 * sizes.max()
    lungs = keep[labels]
    del labels
    # close small gaps (vessel walls, fissures) with a ~3 mm ball, then fill per slice
    radius = np.maximum(np.rint(3.0 / coarse_spacing).astype(int), 1)
    zz, yy, xx = np.ogrid[-radius[0]:radius[0] + 1, -radius[1]:radius[1] + 1,
                          -radius[2]:radius[2] + 1]
    ball = (zz / max(radius[0], 1)) ** 2 + (yy / radius[1]) ** 2 + (xx / radius[2]) ** 2 <= 1.0
    lungs = ndi.binary_closing(np.pad(lungs, [(r, r) for r in radius]), structure=ball)
    lungs = lungs[radius[0]:lungs.shape[0] - radius[0], radius[1]:lungs.shape[1] - radius[1],
                  radius[2]:lungs.shape[2] - radius[2]]
    lungs &= body
    for z in range(lungs.shape[0]):
        lungs[z] = ndi.binary_fill_holes(lungs[z])
    if factors == (1, 1, 1):
        return lungs
    idx = [np.minimum(np.arange(n) // f, m - 1)
           for n, f, m in zip(hu.shape, factors, lungs.shape, strict=True)]
    return lungs[np.ix_(*idx)]


def airway_distance(airway: np.ndarray, spacing_mm: Sequence[float],
                    clip_mm: float = DISTANCE_CLIP_MM, slab: int = 64) -> np.ndarray:
    """Distance to the nearest airway voxel, clipped at ``clip_mm``, as uint8 (255 = clip).

    The artery-vein model's distance prior (arteries run beside the bronchi). Exact
    up to the clip: the EDT runs over Z slabs with a halo of ``clip_mm``, so memory
    stays bounded for whole-lung volumes.
    """
    airway = np.asarray(airway, dtype=bool)
    spacing = np.asarray(spacing_mm, dtype=float)
    out = np.full(airway.shape, 255, dtype=np.uint8)
    if not airway.any():
        return out
    halo = math.ceil(clip_mm / spacing[0]) + 1
    nz = airway.shape[0]
    has = airway.any(axis=(1, 2))
    rows, cols = np.indices(airway.shape[1:])
    for z0 in range(0, nz, slab):
        z1 = min(z0 + slab, nz)
        a, b = max(0, z0 - halo), min(nz, z1 + halo)
        if not has[a:b].any():
            continue
        # Only the nearest-airway indices from scipy; distances plane by plane. scipy's own
        # distance step holds the indices, a grid of indices and float64 offsets for the
        # whole slab at once (~50 bytes a voxel): that set the CT flow's peak memory.
        nearest = ndi.distance_transform_edt(~airway[a:b], sampling=spacing, return_distances=False,
                                             return_indices=True)
        for k in range(z0 - a, z1 - a):
            d = np.sqrt(((nearest[0, k] - k) * spacing[0]) ** 2
                        + ((nearest[1, k] - rows) * spacing[1]) ** 2
                        + ((nearest[2, k] - cols) * spacing[2]) ** 2)
            out[a + k] = np.rint(np.minimum(d, clip_mm) * (255.0 / clip_mm)).astype(np.uint8)
        del nearest
    return out


def coordinate_channels(shape_zyx: Sequence[int], chunk_z: int = INPUT_CHUNK_Z) -> Any:
    """Lazy (3, Z, Y, X) float32 dask array: z, y, x voxel positions mapped to [-1, 1]."""
    import dask.array as da

    shape = tuple(int(s) for s in shape_zyx)
    chunks = (min(chunk_z, shape[0]), shape[1], shape[2])
    axes = []
    for axis, n in enumerate(shape):
        line = (da.arange(n, chunks=chunks[axis], dtype=np.float32) * np.float32(2.0 / max(n - 1, 1))
                - np.float32(1.0))
        view = [None, None, None]
        view[axis] = slice(None)
        axes.append(da.broadcast_to(line[tuple(view)], shape, chunks=chunks))
    return da.stack(axes)


def coordinate_array(shape_zyx: Sequence[int]) -> np.ndarray:
    """The same coordinate channels as a numpy array (small volumes, training)."""
    return np.asarray(coordinate_channels(shape_zyx).compute(scheduler="synchronous"))


def airway_input(hu: np.ndarray, chunk_z: int = INPUT_CHUNK_Z) -> Any:
    """Lazy (4, Z, Y, X) airway model input: windowed CT + coordinates."""
    import dask.array as da

    hu_d = da.from_array(hu, chunks=(min(chunk_z, hu.shape[0]), *hu.shape[1:]))
    ct = hu_d.map_blocks(window_hu, dtype=np.float32)
    return da.concatenate([ct[None], coordinate_channels(hu.shape, chunk_z)], axis=0)


def artery_vein_input(hu: np.ndarray, lungs: np.ndarray, distance_u8: np.ndarray,
                      chunk_z: int = INPUT_CHUNK_Z) -> Any:
    """Lazy (7, Z, Y, X) AV model input: windowed CT, lung context, distance, the CT in
    the vessel window, coordinates."""
    import dask.array as da

    chunks = (min(chunk_z, hu.shape[0]), *hu.shape[1:])
    hu_d = da.from_array(hu, chunks=chunks)
    ct = hu_d.map_blocks(window_hu, dtype=np.float32)
    vessel = hu_d.map_blocks(window_hu, VESSEL_WINDOW, dtype=np.float32)
    lung = da.from_array(lungs, chunks=chunks).astype(np.float32)
    dist = da.from_array(distance_u8, chunks=chunks).astype(np.float32) / np.float32(255.0)
    return da.concatenate([da.stack([ct, lung, dist, vessel]),
                           coordinate_channels(hu.shape, chunk_z)], axis=0)


# ---------------------------------------------------------------------------------
# Sanity of the input
# ---------------------------------------------------------------------------------


def ct_warnings(hu: np.ndarray, metadata: dict[str, Any]) -> list[str]:
    """Reasons to doubt the volume is a CT in HU (empty when it looks like one).

    A DICOM modality other than CT, or values outside a HU-like range: a chest CT has
    air (about -1000 HU) and nothing below -1100 or above ~4000 outside metal.
    """
    notes = []
    modality = str(metadata.get("modality") or "").upper()
    if modality and modality != "CT":
        notes.append(f"the DICOM modality is {modality}, not CT: the model expects a CT in "
                     "Hounsfield units and its labels are not meaningful here")
    sample = np.asarray(hu).ravel()[:: max(1, hu.size // 2_000_000)]
    lo, hi = np.percentile(sample, [0.5, 99.5])
    if lo > -500 or lo < -1500 or hi > 5000:
        notes.append(f"the values ({lo:.0f} to {hi:.0f} at the 0.5/99.5 percentiles) do not look "
                     "like CT Hounsfield units (air is about -1000): is this a CT, and is the "
                     "rescale slope/intercept applied?")
    return notes


# ---------------------------------------------------------------------------------
# The two-stage flow
# ---------------------------------------------------------------------------------


def _engine_predictor(plugin: Any, options: Any, role: str, sigmoid_to_two: bool
                      ) -> Callable[[np.ndarray], np.ndarray]:
    """A window predictor float32 (N, C, D, H, W) -> (N, K, D, H, W) for one role."""
    from tessera.pipelines.engines import create_engine

    engine = create_engine(plugin, engine=options.engine, device=options.device, role=role)
    spec = plugin.manifest.role_spec(role)
    name_in, name_out = spec.inputs[0], spec.outputs[0]

    def predict(x: np.ndarray) -> np.ndarray:
        p = np.asarray(engine.run({name_in: np.ascontiguousarray(x, dtype=np.float32)})[name_out],
                       dtype=np.float32)
        if sigmoid_to_two:
            return np.concatenate([1.0 - p, p], axis=1)
        return p

    return predict


def segment_airway_vessels(
    hu: np.ndarray,
    spacing_mm: Sequence[float],
    *,
    airway_predictor: Callable[[np.ndarray], np.ndarray],
    av_predictor: Callable[[np.ndarray], np.ndarray],
    window_zyx: Sequence[int],
    overlap: float = 0.25,
    batch_size: int = 2,
    progress: Any = None,
    cancel: threading.Event | None = None,
    sliding_window: Callable[..., tuple[np.ndarray, dict[int, np.ndarray]]] | None = None,
    distance_clip_mm: float = DISTANCE_CLIP_MM,
) -> dict[str, Any]:
    """Both stages on a volume already on the model grid (HU, ZYX).

    ``*_predictor``: window predictors returning class probabilities (airway: [bg,
    airway]; AV: [bg, artery, vein]). ``sliding_window``: defaults to the runner's
    ``sliding_window_labels``. Returns labels, the airway probability (uint8), the lung
    mask and the distance map (uint8).
    """
    if sliding_window is None:
        from tessera.pipelines.runners.sliding_window import sliding_window_labels

        sliding_window = sliding_window_labels
    from tessera.pipelines.metrics.components import (
        keep_components_touching,
        keep_largest_component,
    )

    window = tuple(int(v) for v in window_zyx)
    common = {"window_zyx": window, "overlap": overlap, "batch_size": batch_size,
              "progress": progress, "cancel": cancel}
    lungs = lung_mask(hu, spacing_mm)
    # outside the volume is air: pad the CT channel with 0 (= -1000 HU windowed)
    air_labels, air_probs = sliding_window(airway_input(hu), airway_predictor,
                                           keep_probabilities=(1,), **common)
    airway = keep_largest_component(air_labels == 1)
    del air_labels
    distance = airway_distance(airway, spacing_mm, clip_mm=distance_clip_mm)
    av_labels, _ = sliding_window(artery_vein_input(hu, lungs, distance), av_predictor, **common)
    # pulmonary vessels enter the lungs: drop vessel components that never touch them
    vessels = keep_components_touching(av_labels > 0, lungs)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[(av_labels == 1) & vessels] = ARTERY
    labels[(av_labels == 2) & vessels] = VEIN
    del vessels
    labels[airway] = AIRWAY
    return {"labels": labels, "airway_probability": air_probs[1], "lungs": lungs,
            "airway_distance": distance}


def predict_volume(source: Any, plugin: Any, options: Any, progress: Any,
                   cancel: threading.Event | None) -> dict[str, Any]:
    """segment-3d hook: labels (1 airway, 2 artery, 3 vein) on the input grid.

    Also returns ``metrics`` (airway tree length in mm, branch count, generations
    reached, volumes per label in ml) and ``notes`` (warnings about the input), both
    JSON-ready, for the run summary.
    """
    from tessera.pipelines.metrics.overlap import volumes_ml
    from tessera.pipelines.metrics.tree import tree_summary
    from tessera.pipelines.runners.segment_3d import (
        labels_to_grid,
        model_grid_shape,
        resample_linear,
    )

    manifest = plugin.manifest
    spec = manifest.input
    level = source.levels[0]
    hu = np.asarray(level.compute(scheduler="synchronous") if hasattr(level, "compute") else level)
    notes = ct_warnings(hu, source.metadata)
    for note in notes:
        warnings.warn(f"{source.path}: {note}", UserWarning, stacklevel=2)
        log.warning("%s: %s", source.path, note)
    spacing = (tuple(float(s) for s in source.spacing)
               if source.spacing is not None and source.spacing_unit == "mm" else None)
    if spacing is None:
        spacing = tuple(float(s) for s in (spec.target_spacing_mm or (1.0, 1.0, 1.0)))
        notes.append("the volume has no spacing in mm; assumed the model's "
                     f"{spacing} mm, so volumes and lengths are in that unit")
    target = tuple(spec.target_spacing_mm) if spec.target_spacing_mm else spacing
    grid = model_grid_shape(hu.shape, spacing, target)
    model_hu = hu if grid == tuple(hu.shape) else resample_linear(hu, grid)
    if grid != tuple(hu.shape):
        notes.append(f"resampled {tuple(hu.shape)} -> {grid} voxels for the model's {target} mm")
    del hu
    out = segment_airway_vessels(
        model_hu, target,
        airway_predictor=_engine_predictor(plugin, options, "airway", sigmoid_to_two=True),
        av_predictor=_engine_predictor(plugin, options, "artery-vein", sigmoid_to_two=False),
        window_zyx=spec.size_px, overlap=spec.overlap or 0.25,
        batch_size=options.effective_batch_size(spec.batch_size), progress=progress,
        cancel=cancel,
        distance_clip_mm=float(manifest.params.get("distance_clip_mm", DISTANCE_CLIP_MM)),
    )
    tree = tree_summary(out["labels"] == AIRWAY, target)
    labels = labels_to_grid(out["labels"], tuple(source.shape))
    names = {AIRWAY: "airway", ARTERY: "artery", VEIN: "vein"}
    metrics = {
        "airway_tree_length_mm": tree["tree_length_mm"],
        "airway_branch_count": tree["branch_count"],
        "airway_generations": tree["generations"],
        "volumes_ml": {k: round(v, 3) for k, v in volumes_ml(labels, spacing, names).items()},
    }
    return {"labels": labels, "metrics": metrics, "notes": notes}
