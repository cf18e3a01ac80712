"""What every inference engine looks like, and what an ONNX export reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Engine(Protocol):
    """Runs one model: batch-first numpy in, numpy out; ``run`` is safe to call from threads.

    ``description`` says what actually runs it, e.g. "onnxruntime 1.32.0
    [CPUExecutionProvider] threads=2" -- record it next to any result or timing.
    """

    input_names: list[str]
    output_names: list[str]
    description: str

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class ParityReport:
    """How an exported ONNX file compares with the torch module it came from.

    ``max_abs_diff`` is the largest |torch - onnxruntime| over all outputs on random
    inputs of ``batch_checked`` items (a batch size different from the export example
    when ``dynamic_batch``, which proves the batch axis really is dynamic).
    """

    path: Path
    exporter: str  # "dynamo" or "torchscript"
    opset: int  # the opset the file really has (the dynamo exporter may keep a newer one)
    dynamic_batch: bool
    batch_checked: int
    max_abs_diff: float
    per_output: dict[str, float] = field(default_factory=dict)
    max_abs_ref: float = 0.0  # largest |torch output|, to judge max_abs_diff against
    sha256: str = ""
    notes: list[str] = field(default_factory=list)

    def within(self, atol: float = 1e-4, rtol: float = 1e-3) -> bool:
        """True when max_abs_diff <= atol + rtol * max_abs_ref."""
        return self.max_abs_diff <= atol + rtol * self.max_abs_ref
