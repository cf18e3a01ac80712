"""--device -> ONNX Runtime providers: explicit, and loud when an accelerator is missing."""

from __future__ import annotations

import pytest

from tessera.pipelines.engines.devices import (
    CPU,
    CUDA,
    OPENVINO,
    TENSORRT,
    ProviderPlan,
    check_providers,
    ort_provider_plan,
    physical_cores,
)
from tessera.pipelines.errors import EngineError

ALL = [TENSORRT, CUDA, OPENVINO, CPU]


def test_cpu_is_cpu_only() -> None:
    plan = ort_provider_plan("cpu", ALL)
    assert plan.providers == [(CPU, {})] and plan.required is None


def test_cuda_with_index_keeps_cpu_fallback_for_unsupported_ops() -> None:
    plan = ort_provider_plan("cuda:1", ALL)
    assert plan.providers == [(CUDA, {"device_id": 1}), (CPU, {})]
    assert plan.required == CUDA


def test_tensorrt_chains_cuda_then_cpu_and_caches_engines() -> None:
    plan = ort_provider_plan("tensorrt", ALL, trt_cache="/cache/trt")
    assert [p for p, _ in plan.providers] == [TENSORRT, CUDA, CPU]
    assert plan.providers[0][1]["trt_engine_cache_path"] == "/cache/trt"


def test_auto_prefers_cuda_never_tensorrt_and_accepts_cpu() -> None:
    assert [p for p, _ in ort_provider_plan("auto", ALL).providers] == [CUDA, CPU]
    assert [p for p, _ in ort_provider_plan("auto", [OPENVINO, CPU]).providers] == [OPENVINO, CPU]
    plan = ort_provider_plan("auto", [CPU])
    assert plan.providers == [(CPU, {})] and plan.required is None


@pytest.mark.parametrize("device", ["cuda", "tensorrt", "openvino", "coreml", "mps"])
def test_missing_accelerator_is_an_error_with_a_remedy(device: str) -> None:
    with pytest.raises(EngineError, match=f"device '{device}' needs ONNX Runtime's") as info:
        ort_provider_plan(device, ["AzureExecutionProvider", CPU])
    assert "--device cpu" in str(info.value)


def test_silent_fallback_to_cpu_is_caught() -> None:
    plan = ProviderPlan([(CUDA, {"device_id": 0}), (CPU, {})], required=CUDA)
    with pytest.raises(EngineError, match=r"asked for --device cuda but ONNX Runtime runs m\.onnx"):
        check_providers(plan, [CPU], device="cuda", model="m.onnx")
    check_providers(plan, [CUDA, CPU], device="cuda", model="m.onnx")  # got it: fine


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu"])
def test_unknown_devices(device: str) -> None:
    with pytest.raises(EngineError):
        ort_provider_plan(device, ALL)


def test_physical_cores_is_sane() -> None:
    import os

    assert 1 <= physical_cores() <= (os.cpu_count() or 1)
