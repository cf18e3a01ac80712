"""The SAM prompt tool without Qt: prompts in, masks out, commits kept.

``PromptTool`` wraps a ``PromptSession`` (pipelines/prompting) for one image layer:
- ``ensure_region(view_l0_xyxy, level, z)`` encodes the region in view once (slow, a
  worker thread calls it; cached by the session), and again only when prompts leave it;
- ``predict(points, labels, box)`` runs only the decoder (fast) and keeps the result as
  the preview;
- ``commit(name, class)`` turns the preview into a numbered mask (for the labels layer)
  and QuPath annotations; ``clear()`` forgets the prompts and the preview;
- ``extend(z_from, n)`` carries a committed CT mask to neighbouring slices.

Coordinates: prompts are level-0 pixel indices (x, y) — napari's data coordinates of
level 0, so a click needs no conversion but the layer's scale. ``placement`` gives the
scale/translate (world units) that put a level-L window's pixels over the image.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tessera.app.viewer.frame import SourceFrame


def level_for_screen(source: Any, l0_per_screen_px: float) -> int:
    """The coarsest level that still has at least one pixel per screen pixel: what
    the user sees is what SAM sees."""
    return source.best_level_for_downsample(max(1.0, l0_per_screen_px))


def placement(window: Any, frame: SourceFrame) -> tuple[tuple[float, float], tuple[float, float]]:
    """(scale, translate) in world units of a level window's pixel grid: window pixel
    (i, j) is centred at level-0 ((i + y0 + 0.5) * dy - 0.5, ...), as ``window_to_l0``."""
    (y0, x0), (dy, dx) = window.lvl_yx, window.downsample_yx
    sy, sx = frame.yx_spacing
    return (dy * sy, dx * sx), (((y0 + 0.5) * dy - 0.5) * sy, ((x0 + 0.5) * dx - 0.5) * sx)


@dataclass
class Commit:
    """One committed mask: its label value, name, class and the session result."""

    label: int
    name: str
    class_name: str
    result: Any
    z: int | None = None


@dataclass
class PromptTool:
    """Prompt state and results for one image (see the module docstring)."""

    session: Any
    source: Any
    value_window: tuple[float, float] | None = None
    commits: list[Commit] = field(default_factory=list)
    preview: Any = None
    _region_key: tuple | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def is_volume(self) -> bool:
        return "Z" in self.source.axes

    def ensure_region(self, view_l0_xyxy: tuple[float, float, float, float], level: int, z: int | None = None,
                      *, prompts_l0_xy: np.ndarray | None = None, cancel: threading.Event | None = None) -> bool:
        """Encode the view's region at ``level`` (slice ``z`` of a volume) unless the
        current region already holds every prompt; returns True when it encoded."""
        region = self.session.region
        if region is not None and self._region_key is not None and self._region_key[1:] == (level, z):
            if prompts_l0_xy is None or len(prompts_l0_xy) == 0:
                return False
            x0, y0, x1, y1 = region.l0_box_xyxy
            p = np.asarray(prompts_l0_xy, float).reshape(-1, 2)
            if ((p[:, 0] >= x0) & (p[:, 0] < x1) & (p[:, 1] >= y0) & (p[:, 1] < y1)).all():
                return False
        h, w = self.source.spatial_shape(0)[-2:]
        vx0, vy0, vx1, vy1 = view_l0_xyxy
        box = (max(0.0, vx0), max(0.0, vy0), min(float(w), vx1), min(float(h), vy1))
        if self.is_volume:
            box = None  # a CT slice is small: the whole slice
        # encode lazily: the first prompt needs only its own window; warm() does the rest
        self.session.set_image(self.source, level=level, region_l0=box, z=z, value_window=self.value_window,
                               precompute=False, cancel=cancel)
        self._region_key = (box, level, z)
        return True

    def warm(self, cancel: threading.Event | None = None) -> int:
        """Encode the region's remaining windows (a worker thread, after the first
        prompt), unless the region has more than the session's ``max_windows``; returns
        how many windows were encoded or found cached."""
        if len(self.session.windows) > self.session.max_windows:
            return 0
        return self.session.encode_windows(cancel=cancel)

    def predict(self, points_l0_xy: np.ndarray | None, labels: np.ndarray | None,
                box_l0_xyxy: np.ndarray | None = None) -> Any:
        """The decoder's mask for these prompts (the new preview)."""
        result = self.session.predict(points_l0_xy=points_l0_xy, labels=labels, box_l0_xyxy=box_l0_xyxy)
        with self._lock:
            self.preview = result
        return result

    def commit(self, name: str = "", class_name: str = "SAM") -> Commit | None:
        """Keep the preview as the next numbered mask; None when there is none."""
        with self._lock:
            if self.preview is None or not self.preview.mask.mask.any():
                return None
            label = len(self.commits) + 1
            c = Commit(label, name or f"{class_name} {label}", class_name, self.preview, self.session.z)
            self.commits.append(c)
            self.preview = None
            return c

    def clear(self) -> None:
        with self._lock:
            self.preview = None

    def extend(self, commit: Commit, n_slices: int, *, cancel: threading.Event | None = None) -> dict[int, Any]:
        """Carry ``commit`` (a CT slice mask) up to ``n_slices`` slices each way; returns
        {z: result} for the slices reached (the committed one included)."""
        from tessera.pipelines.prompting.session import extend_through_slices

        if commit.z is None:
            msg = "extending to neighbouring slices needs a volume"
            raise ValueError(msg)
        level = commit.result.mask.window.level
        depth = self.source.spatial_shape(level)[0]
        out = dict(extend_through_slices(self.session, self.source, commit.result, commit.z,
                                         z_stop=max(0, commit.z - n_slices), level=level,
                                         value_window=self.value_window, cancel=cancel))
        out.update(extend_through_slices(self.session, self.source, commit.result, commit.z,
                                         z_stop=min(depth - 1, commit.z + n_slices), level=level,
                                         value_window=self.value_window, cancel=cancel))
        self._region_key = None  # the session now sits on another slice
        return out

    def features(self, colours: dict[str, str] | None = None) -> list[dict]:
        """QuPath annotations of every committed mask (volumes: slice in the name)."""
        colours = colours or {}
        out = []
        for c in self.commits:
            name = c.name if c.z is None else f"{c.name} (z {c.z})"
            out.extend(c.result.mask.to_features(class_name=c.class_name, colour=colours.get(c.class_name, "#ffd400"),
                                                 measurements={"sam_score": float(c.result.score)}, name=name))
        return out
