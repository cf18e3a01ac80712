"""Is an ONNX file safe to open in this process? Checked once per file content.

ONNX Runtime parses untrusted protobufs in C++ and can crash the whole process on a
crafted or damaged model, so before the first session for a file this module loads it
in a child process (``onnx_probe.py``), which also refuses external-data references
leaving the model's folder. The verdict is cached by the file's sha256 and the
onnxruntime version: in memory, and (for accepted files) on disk under the cache
folder, so a model costs one child process per installation, not per run.

The verdict covers the ``.onnx`` bytes only, so the external-data files an accepted
model uses are re-checked in this process at every open (cheap: their names and the
byte counts the tensors need are in the cached verdict): a link planted next to the
model later, or a truncated data file, is caught despite the cached verdict.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tessera.pipelines.errors import CorruptFile, EngineError, ModelFileRefused
from tessera.pipelines.plugin_system.integrity import sha256_file
from tessera.pipelines.plugin_system.locations import cache_dir

_lock = threading.Lock()
_verdicts: dict[str, OnnxVerdict] = {}
PROBE_SCRIPT = Path(__file__).with_name("onnx_probe.py")


@dataclass(frozen=True)
class OnnxVerdict:
    """What the child process found: accepted or not, and the graph's interface."""

    ok: bool
    kind: str = ""  # "corrupt" | "external-data" | "crashed" when not ok
    message: str = ""
    external_data: list[str] = field(default_factory=list)
    external_bytes: dict[str, int] = field(default_factory=dict)  # location -> bytes needed
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)


def probe_command(model_path: Path) -> list[str]:
    """The child command; ``-I`` keeps the user's PYTHON* variables and site out of it."""
    return [sys.executable, "-I", str(PROBE_SCRIPT), str(model_path)]


def _ort_version() -> str:
    try:
        return importlib.metadata.version("onnxruntime")
    except importlib.metadata.PackageNotFoundError:
        for dist in ("onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"):
            try:
                return importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
    return "unknown"


def _run_probe(model_path: Path) -> OnnxVerdict:
    timeout_s = float(os.environ.get("TESSERA_ONNX_PROBE_TIMEOUT", "600"))
    try:
        proc = subprocess.run(
            probe_command(model_path), capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        msg = f"loading the model took longer than {timeout_s:.0f} s in the safety check"
        return OnnxVerdict(False, "crashed", msg)
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        msg = f"ONNX Runtime crashed ({name}) loading this model: the file is damaged or crafted"
        return OnnxVerdict(False, "crashed", msg)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        msg = f"the ONNX safety check failed (exit {proc.returncode}: {tail})"
        return OnnxVerdict(False, "crashed", msg)
    data = json.loads(lines[-1])
    return OnnxVerdict(
        ok=bool(data["ok"]),
        kind=data.get("kind", ""),
        message=data.get("message", ""),
        external_data=list(data.get("external_data", [])),
        external_bytes=dict(data.get("external_bytes", {})),
        inputs=list(data.get("inputs", [])),
        outputs=list(data.get("outputs", [])),
    )


def _disk_entry(sha: str) -> Path:
    return cache_dir("onnx-verdicts") / f"{sha}-ort{_ort_version()}.json"


def check_onnx_file(path: str | os.PathLike[str]) -> OnnxVerdict:
    """Verdict for the ONNX file at ``path``; raises when it must not be opened here.

    CorruptFile when it does not parse, does not load or crashes ONNX Runtime;
    ModelFileRefused when its external data points outside its folder.
    """
    model_path = Path(path)
    if not model_path.is_file():
        msg = "ONNX file not found"
        raise EngineError(msg, path=model_path)
    sha = sha256_file(model_path)
    with _lock:
        verdict = _verdicts.get(sha)
    if verdict is None:
        entry = _disk_entry(sha)
        try:
            verdict = OnnxVerdict(**json.loads(entry.read_text()))
        except (OSError, ValueError, TypeError):
            verdict = _run_probe(model_path)
            if verdict.ok:
                tmp = entry.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(verdict.__dict__))
                tmp.replace(entry)
        with _lock:
            _verdicts[sha] = verdict
    if not verdict.ok:
        if verdict.kind == "external-data":
            raise ModelFileRefused(verdict.message + "; refusing the model", path=model_path)
        raise CorruptFile(verdict.message, path=model_path)
    folder = model_path.parent.resolve()
    for location in verdict.external_data:
        target = (model_path.parent / location).resolve()
        if not target.is_relative_to(folder):
            msg = f"external data {location!r} now resolves to {target}, outside the model's folder"
            raise ModelFileRefused(msg + "; refusing the model", path=model_path)
        needed = verdict.external_bytes.get(location, 0)
        if not target.is_file() or target.stat().st_size < needed:
            msg = (f"external data {location!r} is missing or shorter than the {needed} bytes "
                   "the model needs (offset/length run past the end of the file)")
            raise CorruptFile(msg, path=model_path)
    return verdict


def forget_verdicts() -> None:
    """Drop the in-memory verdicts (tests; the disk cache is keyed by content anyway)."""
    with _lock:
        _verdicts.clear()
