"""``PromptSession``: interactive SAM on any Source, in level-0 coordinates.

The object the viewer's prompt tool (and ``tessera sam``) drives::

    session = PromptSession.from_plugin("sam")
    session.set_image(source, level=2, region_l0=(x0, y0, x1, y1))   # encodes (cached)
    result = session.predict(points_l0_xy=[[x, y]], labels=[1])      # decoder only
    result.mask.polygons_l0(), result.mask.rasterize_l0(...), result.score

``set_image`` chooses the region (the whole level when it is small, else the given
level-0 box), splits it into encoder windows with a halo when it is larger than the
encoder input, and computes (or finds in the cache) each window's embedding.
``predict`` maps level-0 prompts into the window that holds them best, runs only the
decoder, and returns the mask with its exact level-0 frame. Both are thread-safe and
free of Qt: the viewer calls ``set_image`` from a worker thread whenever the view
settles and ``predict`` on every prompt change.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.progress import NullProgress, ProgressReporter, check_cancelled
from tessera.pipelines.prompting.cache import (
    EmbeddingCache,
    EmbeddingKey,
    array_identity,
    file_identity,
)
from tessera.pipelines.prompting.regions import (
    LevelMask,
    LevelWindow,
    choose_window,
    level_window_for_l0_box,
    read_window,
    tile_windows,
    whole_level,
)
from tessera.pipelines.prompting.runtime import Embedding, SamRuntime
from tessera.pipelines.sources.base import Source


@dataclass(frozen=True)
class PromptResult:
    """One prompt's mask (window pixels of one level, with its level-0 frame)."""

    mask: LevelMask
    score: float
    low_res_logits: np.ndarray
    window_index: int
    encode_s: float  # encoder time this prompt waited for (0 when the embedding was cached)
    decode_s: float

    def polygons_l0(self) -> list:
        return self.mask.polygons_l0()

    def to_features(self, *, class_name: str | None = "SAM", colour: str | None = "#ffd400") -> list[dict]:
        """QuPath annotations with the score and the level as measurements."""
        return self.mask.to_features(
            class_name=class_name, colour=colour,
            measurements={"sam_score": self.score, "level": float(self.mask.window.level),
                          "area_l0_px": self.mask.area_l0_px},
        )


@dataclass
class _ImageState:
    source: Source
    data_id: str
    level: int
    z: int | None
    region: LevelWindow
    windows: list[LevelWindow]
    value_window: tuple[float, float] | None
    generation: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def as_source(image: Source | np.ndarray | str | Path) -> Source:
    """A Source for a path (``tessera.open``), a Source, or an in-memory array
    ((H, W), (H, W, 3|4) or (Z, H, W))."""
    if isinstance(image, Source):
        return image
    if isinstance(image, (str, Path)):
        from tessera.pipelines.sources import open_source

        return open_source(Path(image))
    import dask.array as da

    arr = np.asarray(image)
    if arr.ndim == 2:
        axes = "YX"
    elif arr.ndim == 3 and arr.shape[-1] in (3, 4):
        axes = "YXC"
    elif arr.ndim == 3:
        axes = "ZYX"
    else:
        msg = f"cannot prompt on an array of shape {arr.shape}"
        raise ValueError(msg)
    src = Source(path=Path("<array>"), format="array", reader="memory", levels=[da.from_array(arr, chunks=-1)], axes=axes)
    src.metadata["data_id"] = array_identity(arr)
    return src


def _data_id(source: Source) -> str:
    if "data_id" in source.metadata:
        return str(source.metadata["data_id"])
    try:
        return file_identity(source.path)
    except OSError:
        return f"unsaved:{id(source)}"


class PromptSession:
    """Set an image region once, prompt it many times (see the module docstring)."""

    def __init__(
        self,
        runtime: SamRuntime,
        *,
        cache: EmbeddingCache | None = None,
        halo_px: int | None = None,
        max_windows: int = 64,
    ) -> None:
        self.runtime = runtime
        self.cache = cache if cache is not None else EmbeddingCache()
        self.tile_px = runtime.window_px
        self.halo_px = halo_px if halo_px is not None else runtime.window_px // 8
        self.max_windows = max_windows
        self._lock = threading.RLock()
        self._state: _ImageState | None = None
        self._generation = 0

    @classmethod
    def from_plugin(
        cls, plugin: Any = "sam", *, variant: str | None = None, cache: EmbeddingCache | None = None, **kwargs: Any
    ) -> PromptSession:
        """A session on a plugin's shipped graphs (roles 'encoder' and 'decoder')."""
        from tessera.pipelines.prompting.plugin import runtime_from_plugin

        return cls(runtime_from_plugin(plugin, variant=variant), cache=cache, **kwargs)

    # ---- image -------------------------------------------------------------------------
    def set_image(
        self,
        image: Source | np.ndarray | str | Path,
        *,
        level: int = 0,
        region_l0: tuple[float, float, float, float] | None = None,
        z: int | None = None,
        value_window: tuple[float, float] | None = None,
        precompute: bool = True,
        progress: ProgressReporter | None = None,
        cancel: threading.Event | None = None,
    ) -> LevelWindow:
        """Choose the region (level-0 box (x0, y0, x1, y1), or the whole level) and encode
        its windows (cached). ``precompute=False`` encodes a window only when a prompt
        first needs it (any region size; the CLI does this on whole slides).
        ``value_window``: intensity window for non-RGB data (e.g. (-1000, 1000) HU); None
        stretches each window's 0.5-99.5 percentiles. Volumes default to the middle slice."""
        source = as_source(image)
        if not 0 <= level < len(source.levels):
            msg = f"level {level} does not exist ({len(source.levels)} levels)"
            raise ValueError(msg)
        if "Z" in source.axes and z is None:
            z = source.spatial_shape(level)[0] // 2
        region = whole_level(source, level) if region_l0 is None else level_window_for_l0_box(source, level, region_l0)
        windows = tile_windows(region, self.tile_px, self.halo_px)
        if precompute and len(windows) > self.max_windows:
            msg = (
                f"the region is {region.lvl_hw[1]} x {region.lvl_hw[0]} px at level {level}: "
                f"{len(windows)} encoder windows; choose a coarser level or a smaller region"
            )
            raise ValueError(msg)
        with self._lock:
            self._generation += 1
            state = _ImageState(source, _data_id(source), level, z, region, windows, value_window, self._generation)
            self._state = state
        if precompute:
            self.encode_windows(progress=progress, cancel=cancel)
        return region

    def encode_windows(self, *, progress: ProgressReporter | None = None,
                       cancel: threading.Event | None = None) -> int:
        """Encode (or find cached) every window of the current region; returns how many
        were done. Stops quietly when another ``set_image`` replaces the region, so a
        viewer can warm the rest of a view in the background after answering the
        first prompt from its own window."""
        with self._lock:
            state = self._state
        if state is None:
            return 0
        progress = progress or NullProgress()
        progress.start(len(state.windows), "encoding the region")
        done = 0
        for i in range(len(state.windows)):
            check_cancelled(cancel)
            if self._state is not state:
                break
            self._embedding(state, i)
            done += 1
            progress.advance(1)
        progress.close()
        return done

    @property
    def region(self) -> LevelWindow | None:
        with self._lock:
            return None if self._state is None else self._state.region

    @property
    def z(self) -> int | None:
        """The Z slice of a volume the session works on (None for 2D images)."""
        with self._lock:
            return None if self._state is None else self._state.z

    @property
    def windows(self) -> list[LevelWindow]:
        with self._lock:
            return [] if self._state is None else list(self._state.windows)

    def _key(self, state: _ImageState, i: int) -> EmbeddingKey:
        w = state.windows[i]
        return EmbeddingKey(
            data_id=state.data_id,
            level=state.level,
            window=(w.lvl_yx[0], w.lvl_yx[1], w.lvl_hw[0], w.lvl_hw[1]),
            model_sha256=self.runtime.model_id,
            z=state.z,
            value_window=state.value_window,
        )

    def _embedding(self, state: _ImageState, i: int) -> tuple[Embedding, float]:
        """The window's embedding and the encoder seconds this call spent (0 if cached)."""
        spent = [0.0]

        def compute() -> Embedding:
            t0 = time.perf_counter()
            pixels = read_window(state.source, state.windows[i], z=state.z)
            emb = self.runtime.encode(pixels, value_window=state.value_window)
            spent[0] = time.perf_counter() - t0
            return emb

        if state.data_id.startswith("unsaved:"):
            return compute(), spent[0]
        emb = self.cache.get_or_compute(self._key(state, i), compute, self.runtime.preprocessing)
        return emb, spent[0]

    # ---- prompts -----------------------------------------------------------------------
    def predict(
        self,
        points_l0_xy: np.ndarray | list | None = None,
        labels: np.ndarray | list | None = None,
        box_l0_xyxy: np.ndarray | list | None = None,
        mask_input: PromptResult | None = None,
    ) -> PromptResult:
        """The mask for prompts in level-0 pixel coordinates (labels 1 positive, 0
        negative). ``mask_input``: a previous result on the same window to refine."""
        with self._lock:
            state = self._state
        if state is None:
            msg = "call set_image before predict"
            raise RuntimeError(msg)
        pts = None if points_l0_xy is None or len(points_l0_xy) == 0 else np.asarray(points_l0_xy, np.float64).reshape(-1, 2)
        box = None if box_l0_xyxy is None else np.asarray(box_l0_xyxy, np.float64).reshape(2, 2)
        if pts is None and box is None:
            msg = "give at least one point or a box"
            raise ValueError(msg)
        region = state.region
        rel = [region.l0_to_window(a) for a in (pts, box) if a is not None]
        allp = np.concatenate(rel)
        if pts is not None and labels is not None:
            lab = np.asarray(labels).reshape(-1)
            positives = rel[0][lab == 1] if (lab == 1).any() else rel[0]
            anchor = positives if box is None else np.concatenate([positives, rel[-1]])
        else:
            anchor = allp
        bbox = (anchor[:, 0].min(), anchor[:, 1].min(), anchor[:, 0].max(), anchor[:, 1].max())
        i = choose_window(state.windows, region, bbox)
        window = state.windows[i]
        emb, encode_s = self._embedding(state, i)
        pts_w = None if pts is None else window.l0_to_window(pts)
        box_w = None if box is None else window.l0_to_window(box).reshape(4)
        low_res = None
        if mask_input is not None and mask_input.window_index == i and mask_input.mask.window == window:
            low_res = mask_input.low_res_logits
        pred = self.runtime.predict(emb, points_xy=pts_w, labels=labels, box_xyxy=box_w, mask_input=low_res)
        return PromptResult(
            mask=LevelMask(pred.mask, window),
            score=pred.score,
            low_res_logits=pred.low_res_logits,
            window_index=i,
            encode_s=encode_s,
            decode_s=pred.decode_s,
        )


def extend_through_slices(
    session: PromptSession,
    image: Source | np.ndarray | str | Path,
    first: PromptResult,
    z_first: int,
    *,
    z_stop: int,
    level: int = 0,
    region_l0: tuple[float, float, float, float] | None = None,
    value_window: tuple[float, float] | None = None,
    min_score: float = 0.5,
    margin_px: float = 2.0,
    cancel: threading.Event | None = None,
) -> dict[int, PromptResult]:
    """Carry a mask from slice ``z_first`` towards ``z_stop`` (inclusive, either
    direction) of a volume: each next slice is prompted with the previous mask's box
    (grown by ``margin_px`` level pixels) and a positive click on its most interior pixel,
    as micro-sam's volumetric segmentation does. Stops at an empty mask or a score below
    ``min_score``. Returns {z: result}, the first slice included."""
    from scipy import ndimage as ndi

    out = {z_first: first}
    step = 1 if z_stop >= z_first else -1
    prev = first
    for z in range(z_first + step, z_stop + step, step):
        check_cancelled(cancel)
        bbox = prev.mask.l0_bbox_xyxy()
        if bbox is None:
            break
        dy, dx = prev.mask.window.downsample_yx
        box = (bbox[0] - margin_px * dx, bbox[1] - margin_px * dy, bbox[2] + margin_px * dx, bbox[3] + margin_px * dy)
        depth = ndi.distance_transform_edt(prev.mask.mask)
        iy, ix = np.unravel_index(int(np.argmax(depth)), depth.shape)
        click = prev.mask.window.window_to_l0(np.array([[ix, iy]], np.float64))
        session.set_image(image, level=level, region_l0=region_l0, z=z, value_window=value_window, precompute=False)
        result = session.predict(points_l0_xy=click, labels=[1], box_l0_xyxy=box)
        if not result.mask.mask.any() or result.score < min_score:
            break
        out[z] = result
        prev = result
    return out
