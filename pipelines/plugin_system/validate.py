"""The plugin contract, checked: what ``tessera plugins validate`` and the shared test run.

``validate_plugin(plugin)`` returns a list of ``Problem`` (empty = the plugin keeps the
contract). It checks, in order:

1. files: each listed file inside the folder, present, sha256 as in the manifest;
2. model card present and non-empty;
3. hooks: each declared hook importable and of the right kind (a missing train extra is
   a note, not an error, so the check also runs where torch is not installed);
4. processing: the task kind's pre/post-processing resolvable (plugin's or default);
5. (``deep``, ONNX Runtime) per role with an ONNX file: tensor names match
   ``[models.<role>]``, a random batch runs, outputs are finite with the batch size and,
   for the ``model`` role, the task kind's shapes ([N, K] for tile-classify, [N, K, H, W],
   [N, K, D, H, W]) with K the manifest's class count; then raw input through the
   plugin's processing gives probabilities summing to 1;
6. (``deep``, torch installed) per role with torch weights and a model hook: the torch
   module gives the same outputs as ONNX Runtime within the role's ``parity_atol`` +
   1e-3 x max|output|.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np

from tessera.pipelines.errors import MissingDependency, PluginError, TesseraError
from tessera.pipelines.plugin_system.integrity import resolve_inside, verify_sha256
from tessera.pipelines.plugin_system.manifest import Manifest
from tessera.pipelines.plugin_system.registry import Plugin

Severity = Literal["error", "warning", "note"]


@dataclass(frozen=True)
class Problem:
    """One finding: how bad, where (field, file, hook or role), and what is wrong."""

    severity: Severity
    where: str
    message: str

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        return f"{self.severity}: {self.where}: {self.message}"


def _spatial_ndim(task: str) -> int | None:
    return {"tile-classify": 0, "segment-2d": 2, "segment-3d": 3}.get(task)


def _check_files(plugin: Plugin, out: list[Problem]) -> set[str]:
    good: set[str] = set()
    for i, entry in enumerate(plugin.manifest.files):
        where = f"files[{i}] {entry.path}"
        try:
            verify_sha256(resolve_inside(plugin.root, entry.path), entry.sha256)
        except TesseraError as exc:
            out.append(Problem("error", where, exc.message))
        else:
            good.add(entry.path)
    return good


def _check_hooks(plugin: Plugin, out: list[Problem]) -> None:
    for name in type(plugin.manifest.hooks).model_fields:
        try:
            obj = plugin.hook(name)
        except MissingDependency as exc:
            out.append(Problem("note", f"hooks.{name}", f"not checked: {exc.message}"))
            continue
        except TesseraError as exc:
            out.append(Problem("error", f"hooks.{name}", exc.message))
            continue
        if obj is None:
            continue
        if name == "processing" and not isinstance(obj, ModuleType):
            out.append(Problem("error", "hooks.processing", "must name a module"))
        elif name != "processing" and not callable(obj):
            out.append(Problem("error", f"hooks.{name}", f"{obj!r} is not callable"))
    for role, spec in plugin.manifest.models.items():
        if spec.build is None:
            continue
        try:
            plugin.resolve(spec.build, what=f"models.{role}.build")
        except MissingDependency as exc:
            out.append(Problem("note", f"models.{role}.build", f"not checked: {exc.message}"))
        except TesseraError as exc:
            out.append(Problem("error", f"models.{role}.build", exc.message))


def _check_outputs(
    manifest: Manifest, role: str, outputs: dict[str, np.ndarray], batch: int, engine: str,
    fixed_batch: int | None, out: list[Problem],
) -> None:
    where = f"{engine} {role}"
    for name, value in outputs.items():
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            out.append(Problem("error", where, f"output {name!r} has NaN or infinite values"))
        if not fixed_batch and (value.ndim == 0 or value.shape[0] != batch):
            out.append(Problem("error", where, f"output {name!r} has shape {value.shape}, "
                                               f"not batch-first with {batch} items"))
    n_spatial = _spatial_ndim(manifest.task)
    if role != "model" or n_spatial is None:
        return
    logits = outputs.get(manifest.role_spec(role).outputs[0])
    if logits is None:
        return
    n_classes = len(manifest.output.classes)
    expected_ndim = 2 + n_spatial
    if logits.ndim != expected_ndim:
        out.append(Problem("error", where, f"{manifest.task} needs logits with {expected_ndim} "
                                           f"dimensions, got shape {logits.shape}"))
        return
    if n_classes and logits.shape[1] != n_classes and not (logits.shape[1] == 1 and n_classes == 2):
        out.append(Problem("error", where, f"logits have {logits.shape[1]} channels for "
                                           f"{n_classes} classes in output.classes"))
    if n_spatial and list(logits.shape[2:]) != list(manifest.input.size_px):
        out.append(Problem("warning", where, f"spatial output {list(logits.shape[2:])} differs "
                                             f"from input.size_px {manifest.input.size_px}"))


def _raw_input(manifest: Manifest, batch: int, rng: np.random.Generator) -> np.ndarray | None:
    size = list(manifest.input.size_px)
    if manifest.task in ("tile-classify", "segment-2d"):
        return rng.integers(0, 256, (batch, *size, len(manifest.input.channels)), dtype=np.uint8)
    if manifest.task == "segment-3d":
        lo, hi = manifest.input.value_window or (0.0, 1.0)
        return rng.uniform(lo - 0.1 * (hi - lo), hi, (batch, *size)).astype(np.float32)
    return None


def _check_processing_pipeline(
    plugin: Plugin, engine: Any, batch: int, out: list[Problem]
) -> None:
    from tessera.pipelines.plugin_system.tasks import resolve_processing

    manifest = plugin.manifest
    raw = _raw_input(manifest, batch, np.random.default_rng(1))
    if raw is None:
        return
    try:
        proc = resolve_processing(plugin)
    except MissingDependency as exc:
        out.append(Problem("note", "processing", f"not checked: {exc.message}"))
        return
    except TesseraError as exc:
        out.append(Problem("error", "processing", exc.message))
        return
    if proc.predict_volume is not None and manifest.task == "segment-3d":
        return  # a multi-stage flow: its own runner test covers it
    if proc.preprocess is None or proc.postprocess is None:
        out.append(Problem("error", "processing", f"{manifest.task} needs preprocess and "
                                                  "postprocess (plugin's or default)"))
        return
    try:
        probs = np.asarray(proc.postprocess(engine.run(proc.preprocess(raw, manifest)), manifest))
    except Exception as exc:
        out.append(Problem("error", "processing", f"raw input -> preprocess -> model -> "
                                                  f"postprocess failed: {type(exc).__name__}: {exc}"))
        return
    n_classes = len(manifest.output.classes)
    spatial = list(manifest.input.size_px) if _spatial_ndim(manifest.task) else []
    expected = [batch, n_classes, *spatial]
    if list(probs.shape[:2]) != expected[:2] or (
        spatial and len(probs.shape) != len(expected)
    ):
        out.append(Problem("error", "processing", f"postprocess gave shape {probs.shape}, "
                                                  f"expected {expected}"))
        return
    sums = probs.sum(axis=1)
    if not np.all(np.isfinite(probs)) or not np.allclose(sums, 1.0, atol=1e-3):
        out.append(Problem("error", "processing", "postprocess output is not class "
                                                  "probabilities summing to 1"))


def _torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def validate_plugin(plugin: Plugin, *, deep: bool = True, batch: int = 2) -> list[Problem]:
    """Every way ``plugin`` breaks the plugin contract (see the module docstring)."""
    from tessera.pipelines.engines.inputs import example_inputs

    out: list[Problem] = []
    manifest = plugin.manifest
    good_files = _check_files(plugin, out)
    card = plugin.model_card_path
    if not card.is_file() or not card.read_text(encoding="utf-8", errors="replace").strip():
        out.append(Problem("error", "model_card", f"{manifest.model_card} is missing or empty"))
    _check_hooks(plugin, out)
    if not deep:
        return out
    roles = list(dict.fromkeys(f.role for f in manifest.files))
    if not roles:
        out.append(Problem("note", "files", "no model files listed; nothing to run"))
    for role in roles:
        spec = manifest.role_spec(role)
        onnx_entry = next((f for f in manifest.files if f.role == role and f.format == "onnx"),
                          None)
        torch_entry = next((f for f in manifest.files
                            if f.role == role and f.format in ("safetensors", "pytorch")), None)
        onnx_out: dict[str, np.ndarray] | None = None
        inputs: dict[str, np.ndarray] | None = None
        if onnx_entry is not None and onnx_entry.path in good_files:
            from tessera.pipelines.engines.ort_engine import OnnxEngine

            where = f"onnx {role}"
            try:
                engine = OnnxEngine(plugin.file_path(role, "onnx", onnx_entry.size_variant),
                                    threads=1, label=f"{plugin.id}/{role}")
            except TesseraError as exc:
                out.append(Problem("error", where, exc.message))
                engine = None
            if engine is not None:
                if engine.input_names != spec.inputs or engine.output_names != spec.outputs:
                    out.append(Problem(
                        "error", where,
                        f"graph tensors {engine.input_names} -> {engine.output_names} differ "
                        f"from [models.{role}] {spec.inputs} -> {spec.outputs}",
                    ))
                try:
                    inputs = example_inputs(plugin, batch, role=role, specs=engine.input_specs)
                    onnx_out = engine.run(inputs)
                except TesseraError as exc:
                    out.append(Problem("error", where, exc.message))
                except Exception as exc:
                    out.append(Problem("error", where, f"{type(exc).__name__}: {exc}"))
                if onnx_out is not None:
                    _check_outputs(manifest, role, onnx_out, batch, "onnx", engine.fixed_batch,
                                   out)
                    if role == "model":
                        _check_processing_pipeline(plugin, engine, batch, out)
        if torch_entry is None or torch_entry.path not in good_files:
            continue
        if not _torch_available():
            out.append(Problem("note", f"torch {role}", "not checked: torch is not installed"))
            continue
        if manifest.hooks.model is None and spec.build is None:
            out.append(Problem("warning", f"torch {role}",
                               "torch weights are listed but no model hook builds the module"))
            continue
        from tessera.pipelines.engines.torch_engine import TorchEngine

        where = f"torch {role}"
        try:
            t_engine = TorchEngine(plugin, role=role, size_variant=torch_entry.size_variant)
            if inputs is None:
                inputs = example_inputs(plugin, batch, role=role)
            torch_out = t_engine.run(inputs)
        except TesseraError as exc:
            out.append(Problem("error", where, exc.message))
            continue
        except Exception as exc:
            out.append(Problem("error", where, f"{type(exc).__name__}: {exc}"))
            continue
        _check_outputs(manifest, role, torch_out, batch, "torch", None, out)
        if onnx_out is None:
            continue
        for name in spec.outputs:
            a, b = onnx_out.get(name), torch_out.get(name)
            if a is None or b is None or a.shape != b.shape:
                out.append(Problem("error", f"parity {role}", f"output {name!r}: onnx shape "
                                   f"{getattr(a, 'shape', None)} vs torch {getattr(b, 'shape', None)}"))
                continue
            diff = float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
            scale = float(np.max(np.abs(b))) if b.size else 0.0
            limit = spec.parity_atol + 1e-3 * scale
            if not diff <= limit:
                out.append(Problem("error", f"parity {role}", f"output {name!r}: max |torch - "
                                   f"onnx| = {diff:.3g} > {limit:.3g}"))
    return out


def validate_path_or_id(target: str) -> tuple[Plugin | None, list[Problem]]:
    """Load then validate; a plugin that does not even load is one error Problem."""
    from tessera.pipelines.plugin_system.registry import get_plugin

    try:
        plugin = get_plugin(target)
    except PluginError as exc:
        return None, [Problem("error", exc.path or target, exc.message)]
    return plugin, validate_plugin(plugin)
