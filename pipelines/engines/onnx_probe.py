"""Load an ONNX model in a throw-away process and report on it as one JSON line.

Run as a script (``python -I onnx_probe.py MODEL``) by ``onnx_check``: it imports only
onnx and onnxruntime (never tessera or torch), so it starts fast and a crash inside
ONNX Runtime -- which can segfault on crafted graphs -- kills this process only.

It reports: whether the protobuf parses, every external-data location (checked to be
relative, inside the model's folder, existing, and large enough for the offset/length
the tensor claims), and whether a CPU InferenceSession can be created, with the
graph's input/output names, shapes and types.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def _tensors(graph):  # every TensorProto a graph (and its subgraphs) can hold
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def _external_locations(model, model_dir: Path) -> tuple[dict[str, int], str | None]:
    """{location: bytes the tensors need from it}, or the first problem found."""
    import onnx

    folder = model_dir.resolve()
    seen: dict[str, int] = {}
    for tensor in _tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        offset = int(info.get("offset", "0") or 0)
        length = int(info.get("length", "0") or 0)
        where = f"tensor {tensor.name!r} points to external data {location!r}"
        if not location or os.path.isabs(location) or location.startswith(("\\", "~")) or (
            len(location) > 1 and location[1] == ":"
        ):
            return seen, f"{where}: not a relative path inside the model's folder"
        target = (model_dir / location).resolve()
        if not target.is_relative_to(folder):
            return seen, f"{where}: it resolves outside the model's folder ({target})"
        if not target.is_file():
            return seen, f"{where}: the file is missing"
        if offset < 0 or length < 0 or offset + length > target.stat().st_size:
            return seen, f"{where}: offset/length run past the end of the file"
        seen[location] = max(seen.get(location, 0), offset + length)
    return seen, None


def probe(path: str) -> dict:
    model_path = Path(path)
    try:
        import onnx

        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:
        return {"ok": False, "kind": "corrupt", "message": f"not a valid ONNX file ({exc})"}
    if not model.graph.node and not model.graph.output:
        return {"ok": False, "kind": "corrupt", "message": "not a valid ONNX file (empty graph)"}
    locations, problem = _external_locations(model, model_path.parent)
    if problem:
        return {"ok": False, "kind": "external-data", "message": problem}
    del model
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
        return {"ok": False, "kind": "corrupt", "message": f"ONNX Runtime cannot load it ({msg})"}

    def meta(args):
        return [{"name": a.name, "shape": [d if isinstance(d, int) else None for d in a.shape],
                 "type": a.type} for a in args]

    return {
        "ok": True,
        "external_data": list(locations),
        "external_bytes": locations,
        "inputs": meta(session.get_inputs()),
        "outputs": meta(session.get_outputs()),
    }


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1])), flush=True)
