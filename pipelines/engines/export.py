"""torch module -> ONNX file, with a parity check against ONNX Runtime.

Exporter choice (torch 2.14): ``torch.onnx.export`` defaults to the dynamo exporter
(``torch.export`` + onnxscript), the maintained path; the TorchScript exporter still
works but warns that it will be removed. ``exporter="auto"`` (the default) therefore
tries dynamo first and falls back to TorchScript only when dynamo cannot capture the
model (data-dependent control flow, unsupported ops), and records which one produced
the file. Measured here on small CNNs and a tiny timm ViT, both gave parity ~1e-7;
dynamo is 2-5x slower to export (seconds), which only matters in tests.

Dynamic batch: tried first with each exporter, and proven by running a batch of a
different size through ONNX Runtime (a traced reshape can pin the batch while the graph
still declares it open). If the model pins its batch size, the export is retried with a
static batch and the report says so (``OnnxEngine`` runs larger batches in slices).

Opset: the requested one is passed on, but the dynamo exporter emits opset 18 natively
and silently keeps 18 when down-conversion fails; ``ParityReport.opset`` is read back
from the written file, so it is always the opset the file really has (ONNX Runtime
>= 1.14 runs 18).

The file is written into a temporary folder next to ``path`` and moved into place when
complete (with its external-data file, for models over ~1.5 GB), so a half-written
export is never mistaken for a finished one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tessera.pipelines.engines.base import ParityReport
from tessera.pipelines.engines.checkpoints import import_torch
from tessera.pipelines.errors import EngineError
from tessera.pipelines.plugin_system.integrity import sha256_file

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)
_EXTERNAL_DATA_BYTES = 3 << 29  # 1.5 GiB: protobuf's hard limit is 2 GiB


def _export_once(
    model: Any, args: tuple, names: list[str], output_names: list[str], out: Path, *,
    exporter: str, dynamic: bool, opset: int, external: bool,
) -> None:
    torch = import_torch("exporting to ONNX")
    # The exporters print progress and log a traceback when opset down-conversion fails
    # (the file then keeps opset 18, which the report states): keep both off the console.
    quiet = [logging.getLogger(name) for name in ("onnxscript", "torch.onnx")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            _call_exporter(torch, model, args, names, output_names, out, exporter=exporter,
                           dynamic=dynamic, opset=opset, external=external)
        finally:
            for q, level in zip(quiet, levels, strict=True):
                q.setLevel(level)


def _call_exporter(
    torch: Any, model: Any, args: tuple, names: list[str], output_names: list[str], out: Path,
    *, exporter: str, dynamic: bool, opset: int, external: bool,
) -> None:
    if exporter == "dynamo":
        batch = torch.export.Dim("batch")
        shapes = tuple({0: batch} for _ in names) if dynamic else None
        torch.onnx.export(
            model, args, str(out), input_names=names, output_names=output_names,
            opset_version=opset, dynamo=True, dynamic_shapes=shapes,
            external_data=external, optimize=True, verbose=False,
        )
    else:
        axes = {n: {0: "batch"} for n in [*names, *output_names]} if dynamic else None
        torch.onnx.export(
            model, args, str(out), input_names=names, output_names=output_names,
            opset_version=opset, dynamo=False, dynamic_axes=axes,
            do_constant_folding=True,
        )


def _graph_facts(path: Path) -> tuple[int, bool]:
    """(default-domain opset, whether every input's first dimension is symbolic)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    dynamic = all(
        i.type.tensor_type.shape.dim and i.type.tensor_type.shape.dim[0].dim_param
        for i in model.graph.input
    )
    return int(opset), bool(dynamic)


def _random_like(example: torch.Tensor, batch: int, gen: torch.Generator) -> torch.Tensor:
    import torch

    shape = (batch, *example.shape[1:])
    if example.is_floating_point():
        return torch.randn(shape, generator=gen, dtype=example.dtype).to(example.device)
    reps = -(-batch // example.shape[0])
    return example.repeat(reps, *([1] * (example.ndim - 1)))[:batch].clone()


def _parity(
    model: Any, example_inputs: dict[str, Any], onnx_path: Path, output_names: list[str], *,
    batch: int, seed: int,
) -> tuple[dict[str, float], float]:
    """Max |torch - ORT| per output on random inputs of ``batch`` items, and max |torch|."""
    import onnxruntime as ort
    import torch

    from tessera.pipelines.engines.torch_engine import outputs_by_name

    gen = torch.Generator().manual_seed(seed)
    inputs = {n: _random_like(t, batch, gen) for n, t in example_inputs.items()}
    with torch.inference_mode():
        ref = outputs_by_name(model(*inputs.values()), output_names)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = dict(zip(
        [o.name for o in session.get_outputs()],
        session.run(None, {n: t.detach().cpu().numpy() for n, t in inputs.items()}),
        strict=True,
    ))
    per_output = {
        n: float(np.max(np.abs(got[n].astype(np.float64) - ref[n].astype(np.float64))))
        if ref[n].size else 0.0
        for n in output_names
    }
    max_ref = max((float(np.max(np.abs(r))) if r.size else 0.0 for r in ref.values()), default=0.0)
    return per_output, max_ref


def export_onnx(
    model: torch.nn.Module,
    example_inputs: dict[str, torch.Tensor],
    path: Path,
    *,
    output_names: list[str],
    dynamic_batch: bool = True,
    opset: int = 17,
    exporter: Literal["auto", "dynamo", "torchscript"] = "auto",
    seed: int = 0,
) -> ParityReport:
    """Export ``model`` (inputs named and ordered as ``example_inputs``) to ``path``.

    Returns the parity with ONNX Runtime (CPU) on random inputs; EngineError when no
    exporter can export the model (the message lists each attempt's error).
    """
    import_torch("exporting to ONNX")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    names = list(example_inputs)
    args = tuple(example_inputs.values())
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    external = n_bytes > _EXTERNAL_DATA_BYTES
    exporters = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    attempts = [(e, d) for d in ([True, False] if dynamic_batch else [False]) for e in exporters]
    notes: list[str] = []
    example_batch = int(args[0].shape[0]) if args and args[0].ndim else 1
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=path.parent))
    try:
        done = None
        for name, dynamic in attempts:
            out = tmp / path.name
            for stale in tmp.iterdir():
                stale.unlink()
            what = f"{name} exporter ({'dynamic' if dynamic else 'static'} batch)"
            try:
                _export_once(model, args, names, output_names, out, exporter=name,
                             dynamic=dynamic, opset=opset, external=external)
                real_opset, really_dynamic = _graph_facts(out)
                # A dynamic export is proven by running another batch size through ORT:
                # a traced reshape can pin the batch while the graph still declares it open.
                batch = example_batch + 1 if really_dynamic else example_batch
                per_output, max_ref = _parity(model, example_inputs, out, output_names,
                                              batch=batch, seed=seed)
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                notes.append(f"{what} failed: {type(exc).__name__}: {first}")
                log.info(notes[-1])
                continue
            if dynamic and not really_dynamic:
                notes.append(f"{what} fixed the batch size despite dynamic axes")
            done = (name, really_dynamic, real_opset, batch, per_output, max_ref)
            break
        if done is None:
            msg = "no ONNX exporter could export the model: " + " | ".join(notes)
            raise EngineError(msg, path=path)
        for produced in tmp.iterdir():
            produced.replace(path.parent / produced.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    used, dynamic, real_opset, batch, per_output, max_ref = done
    if real_opset != opset:
        notes.append(f"asked for opset {opset}, the {used} exporter wrote opset {real_opset}")
    return ParityReport(
        path=path, exporter=used, opset=real_opset, dynamic_batch=dynamic,
        batch_checked=int(batch), max_abs_diff=max(per_output.values(), default=0.0),
        per_output=per_output, max_abs_ref=max_ref, sha256=sha256_file(path), notes=notes,
    )
