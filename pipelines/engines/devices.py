"""From a ``--device`` string to ONNX Runtime providers or a torch device, loudly.

Device strings: ``cpu``, ``cuda`` / ``cuda:N``, ``tensorrt`` / ``tensorrt:N``,
``openvino``, ``coreml``, ``mps`` (torch; CoreML for ONNX Runtime), ``directml``, and
``auto`` (the best accelerator installed, else CPU).

ONNX Runtime falls back to the CPU provider silently when an accelerator's libraries
fail to load; a model then runs many times slower with no error. Providers are passed
explicitly here, and ``check_providers`` compares what the session actually got with
what the user asked for and raises EngineError when an explicitly requested
accelerator is missing (``auto`` accepts whatever it gets and records it).

``auto`` prefers CUDA, then CoreML, OpenVINO and DirectML. TensorRT is used only when
asked for by name: it compiles an engine per input shape (minutes on first use) and
its numerics differ from CUDA's, which should be a deliberate choice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from tessera.pipelines.errors import EngineError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
OPENVINO = "OpenVINOExecutionProvider"
COREML = "CoreMLExecutionProvider"
DIRECTML = "DmlExecutionProvider"

_AUTO_ORDER = (CUDA, COREML, OPENVINO, DIRECTML)
_NAMED = {"cuda": CUDA, "tensorrt": TENSORRT, "openvino": OPENVINO, "coreml": COREML,
          "mps": COREML, "directml": DIRECTML, "cpu": CPU}
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "tensorrt", "openvino", "coreml", "mps",
                  "directml")


@dataclass(frozen=True)
class ProviderPlan:
    """Providers to pass to ONNX Runtime, and the accelerator the user insisted on (if any)."""

    providers: list[tuple[str, dict[str, Any]]]
    required: str | None  # provider that must be active, None for cpu/auto


def _split(device: str) -> tuple[str, int]:
    name, _, index = device.strip().lower().partition(":")
    if index and not index.isdigit():
        msg = f"device index must be a number, got {device!r}"
        raise EngineError(msg)
    return name, int(index or 0)


def ort_provider_plan(device: str, available: list[str], *, trt_cache: str | None = None) -> ProviderPlan:
    """Providers for ``device`` given ONNX Runtime's ``get_available_providers()``.

    EngineError when the device names an accelerator this onnxruntime build lacks.
    """
    name, index = _split(device)
    if name == "auto":
        for prov in _AUTO_ORDER:
            if prov in available:
                opts: dict[str, Any] = {"device_id": index} if prov in (CUDA, DIRECTML) else {}
                return ProviderPlan([(prov, opts), (CPU, {})], required=None)
        return ProviderPlan([(CPU, {})], required=None)
    if name not in _NAMED:
        msg = f"unknown device {device!r}; use one of {', '.join(DEVICE_CHOICES)}"
        raise EngineError(msg)
    prov = _NAMED[name]
    if prov == CPU:
        return ProviderPlan([(CPU, {})], required=None)
    if prov not in available:
        hint = {
            CUDA: "install onnxruntime-gpu built for your CUDA version (and uninstall onnxruntime)",
            TENSORRT: "install onnxruntime-gpu with TensorRT libraries on the library path",
            OPENVINO: "install onnxruntime-openvino",
            COREML: "CoreML is available in the macOS onnxruntime wheels only",
            DIRECTML: "install onnxruntime-directml (Windows)",
        }[prov]
        msg = (
            f"device {device!r} needs ONNX Runtime's {prov}, but this onnxruntime offers only "
            f"{available}; {hint}, or pass --device cpu"
        )
        raise EngineError(msg)
    plan: list[tuple[str, dict[str, Any]]] = []
    if prov == TENSORRT:
        trt: dict[str, Any] = {"device_id": index}
        if trt_cache:
            trt |= {"trt_engine_cache_enable": True, "trt_engine_cache_path": trt_cache}
        plan.append((TENSORRT, trt))
        if CUDA in available:
            plan.append((CUDA, {"device_id": index}))
    elif prov in (CUDA, DIRECTML):
        plan.append((prov, {"device_id": index}))
    else:
        plan.append((prov, {}))
    plan.append((CPU, {}))
    return ProviderPlan(plan, required=prov)


def check_providers(plan: ProviderPlan, active: list[str], *, device: str, model: str) -> None:
    """EngineError when the session did not get the accelerator the user asked for."""
    if plan.required is not None and plan.required not in active:
        msg = (
            f"asked for --device {device} but ONNX Runtime runs {model} on {active}: the "
            f"{plan.required} could not start (driver/CUDA/cuDNN libraries missing or "
            "mismatched; ONNX Runtime's log above says which); fix the installation or pass "
            "--device cpu"
        )
        raise EngineError(msg)


def physical_cores() -> int:
    """Physical CPU cores available to this process (hyper-threads do not help GEMMs)."""
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except Exception:  # pragma: no cover - psutil is a core dependency
        physical = None
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(physical or logical or 1, logical or 1))


def torch_device(device: str) -> Any:
    """A ``torch.device`` for ``device``; EngineError when that device is not usable."""
    import torch

    name, index = _split(device)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", index)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            msg = (
                f"asked for --device {device} but torch {torch.__version__} sees no CUDA "
                "device (CPU-only build, or driver missing); pass --device cpu"
            )
            raise EngineError(msg)
        if index >= torch.cuda.device_count():
            msg = f"asked for --device {device} but only {torch.cuda.device_count()} CUDA devices exist"
            raise EngineError(msg)
        return torch.device("cuda", index)
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            msg = "asked for --device mps but this torch has no usable Apple MPS backend"
            raise EngineError(msg)
        return torch.device("mps")
    msg = f"the torch engine runs on cpu, cuda[:N], mps or auto, not {device!r}"
    raise EngineError(msg)
