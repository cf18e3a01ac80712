"""The ONNX Runtime engine: the default way Tessera runs a model.

Thread safety: ONNX Runtime documents ``InferenceSession.run`` as safe to call from
several threads on one session at once (each call gets its own execution frame), so
``OnnxEngine.run`` takes no lock; tile workers share one session and its weights.
Each call's work is itself spread over ``intra_op_num_threads`` threads: with N
concurrent callers on C cores, give each engine about C / N threads (``threads=``),
or the pools oversubscribe the cores.

Threads: physical cores by default (``devices.physical_cores``), as hyper-threads add
nothing to GEMM-bound convolutions and attention; inter-op parallelism is off
(sequential execution), which is faster for the chain-shaped graphs of these models.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.engines.devices import (
    check_providers,
    ort_provider_plan,
    physical_cores,
)
from tessera.pipelines.engines.inputs import numpy_dtype
from tessera.pipelines.engines.onnx_check import check_onnx_file
from tessera.pipelines.errors import EngineError
from tessera.pipelines.plugin_system.locations import cache_dir

log = logging.getLogger(__name__)


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        msg = "ONNX Runtime is not installed; `pip install onnxruntime` (or onnxruntime-gpu)"
        raise EngineError(msg) from exc
    return onnxruntime


class OnnxEngine:
    """One ONNX Runtime session over one model file; see the module notes on threads."""

    def __init__(
        self,
        path: Path,
        *,
        device: str = "cpu",
        threads: int | None = None,
        label: str | None = None,
    ) -> None:
        ort = import_onnxruntime()
        self.path = Path(path)
        self.device = device
        verdict = check_onnx_file(self.path)  # in a child process, before ORT sees it here
        plan = ort_provider_plan(
            device,
            ort.get_available_providers(),
            trt_cache=str(cache_dir("tensorrt")) if device.startswith("tensorrt") else None,
        )
        self.threads = int(threads) if threads else physical_cores()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        t0 = time.perf_counter()
        try:
            self._session = ort.InferenceSession(
                str(self.path),
                sess_options=options,
                providers=[name for name, _ in plan.providers],
                provider_options=[opts for _, opts in plan.providers],
            )
        except Exception as exc:
            msg = f"ONNX Runtime cannot create a session on {device} ({exc})"
            raise EngineError(msg, path=self.path) from exc
        self.providers: list[str] = list(self._session.get_providers())
        check_providers(plan, self.providers, device=device, model=label or self.path.name)
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]
        self.input_specs: list[dict[str, Any]] = [
            {"name": i.name, "shape": [d if isinstance(d, int) else None for d in i.shape],
             "type": i.type}
            for i in self._session.get_inputs()
        ]
        self._dtypes = {s["name"]: numpy_dtype(s["type"]) for s in self.input_specs}
        fixed = {s["shape"][0] for s in self.input_specs if s["shape"] and s["shape"][0]}
        # A graph exported with a fixed batch size: run larger batches in slices of it.
        self.fixed_batch: int | None = fixed.pop() if len(fixed) == 1 else None
        self.description = (
            f"onnxruntime {ort.__version__} [{', '.join(self.providers)}] "
            f"threads={self.threads}"
        )
        self.verdict = verdict
        log.info(
            "ONNX session for %s on %s in %.2f s (asked for device %r)",
            label or self.path, self.providers, time.perf_counter() - t0, device,
        )

    def __repr__(self) -> str:
        return f"OnnxEngine({self.path.name}, {self.description})"

    def _feed(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs]
        extra = [n for n in inputs if n not in self.input_names]
        if missing or extra:
            msg = f"model inputs are {self.input_names}; missing {missing}, unexpected {extra}"
            raise EngineError(msg, path=self.path)
        feed = {}
        for name in self.input_names:
            arr = np.asarray(inputs[name])
            want = self._dtypes[name]
            if arr.dtype != want:
                lossless_kind = (want.kind == "f" and arr.dtype.kind in "fiub") or (
                    want.kind in "iu" and arr.dtype.kind in "iu"
                )
                if lossless_kind:
                    arr = arr.astype(want)
                else:
                    msg = f"input {name!r} must be {want}, got {arr.dtype}"
                    raise EngineError(msg, path=self.path)
            feed[name] = np.ascontiguousarray(arr)
        return feed

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name for a batch of inputs (same batch size N in every input)."""
        feed = self._feed(inputs)
        n = len(next(iter(feed.values()))) if feed else 0
        step = self.fixed_batch
        if step and n != step:
            # Slices of the graph's fixed batch size; the last one padded with its own
            # last item (zeros could be out of distribution for e.g. prompt codes).
            parts = []
            for i in range(0, n, step):
                chunk = {k: v[i : i + step] for k, v in feed.items()}
                short = step - len(next(iter(chunk.values())))
                if short:
                    chunk = {k: np.concatenate([v, np.repeat(v[-1:], short, axis=0)])
                             for k, v in chunk.items()}
                out = self._run(chunk)
                parts.append({k: v[: step - short] for k, v in out.items()})
            return {k: np.concatenate([p[k] for p in parts]) for k in self.output_names}
        return self._run(feed)

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outputs = self._session.run(self.output_names, feed)
        except Exception as exc:
            msg = f"ONNX Runtime failed to run the model ({str(exc).splitlines()[0][:300]})"
            raise EngineError(msg, path=self.path) from exc
        return dict(zip(self.output_names, outputs, strict=True))
