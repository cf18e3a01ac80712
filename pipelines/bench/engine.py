"""ONNX Runtime vs torch on the same model, batch and threads, measured side by side.

Both engines run the same input batch, alternately (ONNX first on even rounds, torch
first on odd ones) so that drifting machine load (other jobs on a shared box, thermal
throttling) hits both alike; the figures are medians over rounds, after warm-up runs.
Threads: ONNX Runtime's intra-op pool and ``torch.set_num_threads`` get the same count
(restored afterwards). Both outputs are compared too, so a fast wrong engine shows.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tessera.pipelines.progress import NullProgress, ProgressReporter


@dataclass
class EngineBench:
    """Result of ``bench_engines``: medians in seconds per batch, items per second, ratio."""

    plugin: str
    role: str
    batch: int
    threads: int
    repeats: int
    onnx_description: str
    torch_description: str
    onnx_median_s: float
    torch_median_s: float
    max_abs_diff: float
    load_avg_1min: float = float("nan")  # machine load when measured (other jobs skew both)
    onnx_times_s: list[float] = field(default_factory=list)
    torch_times_s: list[float] = field(default_factory=list)

    @property
    def onnx_items_per_s(self) -> float:
        return self.batch / self.onnx_median_s

    @property
    def torch_items_per_s(self) -> float:
        return self.batch / self.torch_median_s

    @property
    def ratio(self) -> float:
        """ONNX Runtime throughput / torch throughput (> 1: ONNX Runtime is faster)."""
        return self.torch_median_s / self.onnx_median_s

    @property
    def winner(self) -> str:
        return "onnxruntime" if self.ratio >= 1.0 else "torch"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "onnx_items_per_s": self.onnx_items_per_s,
            "torch_items_per_s": self.torch_items_per_s,
            "ratio_onnx_over_torch": self.ratio,
            "winner": self.winner,
        }


def bench_engines(
    plugin: Any,
    *,
    batch: int | None = None,
    threads: int | None = None,
    repeats: int = 10,
    warmup: int = 2,
    device: str = "cpu",
    role: str = "model",
    size_variant: str | None = None,
    progress: ProgressReporter | None = None,
) -> EngineBench:
    """Median time per batch of ONNX Runtime and torch on ``plugin``'s model for ``role``."""
    from tessera.pipelines.engines.checkpoints import import_torch
    from tessera.pipelines.engines.devices import physical_cores
    from tessera.pipelines.engines.inputs import example_inputs
    from tessera.pipelines.engines.ort_engine import OnnxEngine
    from tessera.pipelines.engines.torch_engine import TorchEngine

    torch = import_torch("tessera bench engine")
    progress = progress or NullProgress()
    batch = int(batch or plugin.manifest.input.batch_size)
    threads = int(threads or physical_cores())
    entry = plugin.manifest.file(role, "onnx", size_variant)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        onnx_engine = OnnxEngine(plugin.file_path(role, "onnx", entry.size_variant),
                                 device=device, threads=threads, label=f"{plugin.id}/{role}")
        torch_engine = TorchEngine(plugin, role=role, device=device,
                                   size_variant=size_variant or entry.size_variant)
        inputs = example_inputs(plugin, batch, role=role, specs=onnx_engine.input_specs)
        engines = {"onnx": onnx_engine, "torch": torch_engine}
        outputs = {}
        for name, engine in engines.items():
            for _ in range(max(1, warmup)):
                outputs[name] = engine.run(inputs)
        diffs = [float(np.max(np.abs(outputs["onnx"][k] - outputs["torch"][k])))
                 for k in onnx_engine.output_names if k in outputs["torch"]]
        times: dict[str, list[float]] = {"onnx": [], "torch": []}
        progress.start(repeats, f"{plugin.id}: onnxruntime vs torch, batch {batch}")
        for r in range(repeats):
            order = ("onnx", "torch") if r % 2 == 0 else ("torch", "onnx")
            for name in order:
                t0 = time.perf_counter()
                engines[name].run(inputs)
                times[name].append(time.perf_counter() - t0)
            progress.advance(1)
        progress.close()
    finally:
        torch.set_num_threads(previous_threads)
    return EngineBench(
        plugin=plugin.id, role=role, batch=batch, threads=threads, repeats=repeats,
        onnx_description=onnx_engine.description, torch_description=torch_engine.description,
        onnx_median_s=statistics.median(times["onnx"]),
        torch_median_s=statistics.median(times["torch"]),
        max_abs_diff=max(diffs, default=float("nan")),
        load_avg_1min=os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"),
        onnx_times_s=times["onnx"], torch_times_s=times["torch"],
    )
