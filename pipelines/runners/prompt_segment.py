"""The prompt-segment runner: ``tessera run sam INPUT... --out DIR`` with prompts given.

Prompts come from, first found:

1. ``--option prompts='[{"points": [[x, y, 1]], "box": [x0, y0, x1, y1], "name": "..."}]'``
   (level-0 pixels; see ``tessera.pipelines.prompting.outputs``), or
   ``--option prompts=PATH.json``;
2. a file next to the input: ``<input name>.prompts.json`` or ``<input stem>.prompts.json``.

Other options: ``level`` (pyramid level, default 0), ``slice`` (Z of a volume, default
the middle), ``variant`` (the plugin's weights variant), ``value_window`` ([lo, hi] for
non-RGB data), ``format`` (``png``, ``tif``, ``npy``; default ``png``).

Outputs in the input's folder: ``annotations.geojson`` (QuPath, level 0), ``labels.<fmt>``
(prompt index per pixel at the level, with its ``.json`` sidecar giving the level-0
frame) and ``summary.json`` (per prompt: name, score, area, level-0 box; written last).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from tessera.pipelines.errors import PluginError, TesseraError
from tessera.pipelines.progress import ProgressReporter, check_cancelled
from tessera.pipelines.runners.base import RunOptions, clear_summary, write_summary


def _prompts_for(input_path: Path, options: RunOptions) -> tuple[list[Any], str]:
    from tessera.pipelines.prompting.outputs import specs_from_json

    given = options.extra.get("prompts")
    if given is not None:
        if isinstance(given, str):
            p = Path(given)
            try:
                data = json.loads(p.read_text(encoding="utf-8"))
            except OSError as exc:
                msg = f"cannot read the prompts file {p} ({exc.strerror or exc})"
                raise TesseraError(msg, path=input_path) from exc
            except ValueError as exc:
                msg = f"the prompts file {p} is not valid JSON ({exc})"
                raise TesseraError(msg, path=input_path) from exc
            return specs_from_json(data), str(p)
        return specs_from_json(given), "option"
    for candidate in (
        input_path.with_name(input_path.name + ".prompts.json"),
        input_path.with_name(input_path.stem + ".prompts.json"),
    ):
        if candidate.is_file():
            return specs_from_json(json.loads(candidate.read_text(encoding="utf-8"))), str(candidate)
    msg = (
        "no prompts: pass --option prompts='[{\"points\": [[x, y, 1]]}]' (level-0 pixels) "
        f"or put {input_path.name}.prompts.json next to the input"
    )
    raise TesseraError(msg, path=input_path)


def run(
    input_path: Path,
    plugin: Any,
    out_dir: Path,
    *,
    options: RunOptions,
    progress: ProgressReporter,
    cancel: threading.Event,
) -> dict[str, Any]:
    """Segment every prompt of one input; returns (and writes) the summary."""
    import tessera
    from tessera.pipelines.prompting.outputs import write_outputs
    from tessera.pipelines.prompting.session import PromptSession

    input_path = Path(input_path)
    out_dir = Path(out_dir)
    if options.engine != "onnx":
        msg = "the SAM plugin runs on ONNX Runtime only (its encoder and decoder are separate graphs)"
        raise PluginError(msg, path=input_path)
    try:
        specs, prompts_from = _prompts_for(input_path, options)
    except ValueError as exc:
        raise TesseraError(str(exc), path=input_path) from exc
    level = int(options.extra.get("level", 0))
    fmt = str(options.extra.get("format", "png")).lower().lstrip(".")
    if fmt not in ("png", "tif", "npy"):
        msg = f"format must be png, tif or npy, got {fmt!r}"
        raise TesseraError(msg, path=input_path)
    window = options.extra.get("value_window")
    value_window = None if window is None else (float(window[0]), float(window[1]))
    clear_summary(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    session = PromptSession.from_plugin(plugin, variant=options.extra.get("variant"))
    with tessera.open(input_path) as source:
        z = options.extra.get("slice")
        session.set_image(source, level=level, z=None if z is None else int(z), value_window=value_window,
                          precompute=False)
        progress.start(len(specs), f"segmenting {len(specs)} prompt(s)")
        results = []
        for spec in specs:
            check_cancelled(cancel)
            results.append(session.predict(spec.points_array(), spec.labels_array(), spec.box_l0_xyxy))
            progress.advance(1)
        progress.close()
        names = [s.name for s in specs]
        z_used = session.z
        geo = write_outputs(out_dir / "annotations.geojson", results, source=source, level=level, names=names)
        raster = write_outputs(out_dir / f"labels.{fmt}", results, source=source, level=level, names=names,
                               z=z_used)
    summary = {
        "input": str(input_path),
        "plugin": plugin.id if hasattr(plugin, "id") else str(plugin),
        "task": "prompt-segment",
        "prompts_from": prompts_from,
        "level": level,
        "slice": z_used,
        "model": session.runtime.describe(),
        "objects": geo["objects"],
        "outputs": {"geojson": geo["path"], "labels": raster["path"], "labels_frame": raster["sidecar"]},
        "seconds": round(time.perf_counter() - t0, 3),
    }
    write_summary(out_dir, summary)
    return summary
