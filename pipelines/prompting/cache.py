"""Embedding cache: in memory (LRU) and on disk (zarr with a signature), as micro-sam does.

A key says which pixels were encoded by which weights: the data identity (a file's
resolved path, size and modification time, or a content hash for in-memory arrays),
the pyramid level, the Z slice for volumes, the window (level pixels) and the model's
sha256. A second prompt on the same window finds the embedding here and never reruns
the encoder.

On disk, one zarr group per (data, model) holds a subgroup per encoded window (the
encoder outputs as arrays, the input transform as attributes). The group's attributes
are its *signature* (data identity, model sha256, preprocessing, Tessera version): a
store opened for other data or another model raises :class:`EmbeddingMismatch`; one
written by another Tessera version is used with a warning. A window is marked complete
only after its arrays are written, so a crash never leaves a half-written embedding
that is later read as whole.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.errors import TesseraError
from tessera.pipelines.prompting.runtime import Embedding
from tessera.pipelines.prompting.transforms import InputTransform

FORMAT_VERSION = 1


class EmbeddingMismatch(TesseraError, ValueError):
    """An embedding store belongs to other data or other weights than asked for."""


def tessera_version() -> str:
    try:
        from importlib.metadata import version

        return version("tessera")
    except Exception:  # pragma: no cover - source tree never installed
        return "0.0.0+unknown"


def file_identity(path: Path) -> str:
    """``resolved path|size|mtime_ns`` of a file or folder: changes when it is rewritten."""
    p = Path(path).resolve()
    st = p.stat()
    size = st.st_size
    if p.is_dir():
        size = sum(e.stat().st_size for e in os.scandir(p) if e.is_file())
    return f"{p}|{size}|{st.st_mtime_ns}"


def array_identity(array: np.ndarray) -> str:
    """``array:`` + a content hash, dtype and shape of an in-memory image."""
    a = np.ascontiguousarray(array)
    digest = hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest()
    return f"array:{digest}:{a.dtype}:{'x'.join(map(str, a.shape))}"


@dataclass(frozen=True)
class EmbeddingKey:
    """Which window of which data, encoded by which weights."""

    data_id: str
    level: int
    window: tuple[int, int, int, int]  # lvl_y0, lvl_x0, h, w (level pixels)
    model_sha256: str
    z: int | None = None
    value_window: tuple[float, float] | None = None

    @property
    def window_name(self) -> str:
        y0, x0, h, w = self.window
        z = "" if self.z is None else f"z{self.z}_"
        vw = "" if self.value_window is None else f"_v{self.value_window[0]:g}_{self.value_window[1]:g}"
        return f"l{self.level}_{z}y{y0}_x{x0}_h{h}_w{w}{vw}"

    @property
    def store_name(self) -> str:
        digest = hashlib.sha1(f"{self.data_id}|{self.model_sha256}".encode()).hexdigest()[:24]
        return f"{digest}.zarr"


class EmbeddingStore:
    """One zarr group of embeddings for one (data, model), with its signature checked."""

    def __init__(self, path: Path, *, data_id: str, model_sha256: str, preprocessing: str = "sam") -> None:
        import zarr

        self.path = Path(path)
        self._lock = threading.Lock()
        signature = {
            "data_id": data_id,
            "model_sha256": model_sha256,
            "preprocessing": preprocessing,
            "format": FORMAT_VERSION,
            "tessera_version": tessera_version(),
        }
        exists = self.path.exists()
        self.group = zarr.open_group(str(self.path), mode="a")
        if exists and "signature" in self.group.attrs:
            self._check(dict(self.group.attrs["signature"]), signature)
        else:
            self.group.attrs["signature"] = signature
        self.signature = signature

    def _check(self, found: dict[str, Any], want: dict[str, Any]) -> None:
        for field_name, what in (("data_id", "image data"), ("model_sha256", "model weights"),
                                 ("preprocessing", "preprocessing"), ("format", "store format")):
            if found.get(field_name) != want[field_name]:
                msg = (
                    f"embeddings here were computed for other {what} "
                    f"({found.get(field_name)!r}, now {want[field_name]!r}); "
                    "delete the store or choose another embeddings path"
                )
                raise EmbeddingMismatch(msg, path=self.path)
        if found.get("tessera_version") != want["tessera_version"]:
            warnings.warn(
                f"{self.path}: embeddings written by Tessera {found.get('tessera_version')}, "
                f"this is {want['tessera_version']}; using them",
                stacklevel=3,
            )

    def get(self, name: str) -> Embedding | None:
        with self._lock:
            if name not in self.group:
                return None
            sub = self.group[name]
            attrs = dict(sub.attrs)
            if not attrs.get("complete"):
                return None
            arrays = {k: np.asarray(sub[k][...], np.float32) for k in attrs["outputs"]}
        t = attrs["transform"]
        transform = InputTransform(tuple(t["image_hw"]), tuple(t["resized_hw"]), int(t["input_size"]), t["kind"])
        return Embedding(arrays=arrays, transform=transform)

    def put(self, name: str, emb: Embedding) -> None:
        with self._lock:
            sub = self.group.require_group(name)
            sub.attrs["complete"] = False
            for k, arr in emb.arrays.items():
                sub.create_array(k, shape=arr.shape, dtype="float32", chunks=arr.shape, overwrite=True)[...] = arr
            t = emb.transform
            sub.attrs.update(
                {
                    "outputs": list(emb.arrays),
                    "transform": {"image_hw": list(t.image_hw), "resized_hw": list(t.resized_hw),
                                  "input_size": t.input_size, "kind": t.kind},
                    "complete": True,
                }
            )


class EmbeddingCache:
    """Memory LRU in front of optional zarr stores; ``get_or_compute`` runs the encoder
    at most once per key even when several threads ask at the same time."""

    def __init__(
        self,
        *,
        max_items: int = 64,
        max_bytes: int = 1 << 30,
        disk_dir: Path | None = None,
        store_path: Path | None = None,
    ) -> None:
        """``disk_dir``: a folder of stores named by data and model (an automatic cache);
        ``store_path``: one explicit store for one image (micro-sam's embedding path)."""
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.disk_dir = None if disk_dir is None else Path(disk_dir)
        self.store_path = None if store_path is None else Path(store_path)
        self._mem: OrderedDict[EmbeddingKey, Embedding] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._inflight: dict[EmbeddingKey, threading.Lock] = {}
        self._stores: dict[Path, EmbeddingStore] = {}
        self.hits = {"memory": 0, "disk": 0, "computed": 0}

    def _store(self, key: EmbeddingKey, preprocessing: str) -> EmbeddingStore | None:
        if self.store_path is not None:
            path = self.store_path
        elif self.disk_dir is not None:
            path = self.disk_dir / key.store_name
        else:
            return None
        with self._lock:
            store = self._stores.get(path)
            if store is None:
                store = EmbeddingStore(path, data_id=key.data_id, model_sha256=key.model_sha256,
                                       preprocessing=preprocessing)
                self._stores[path] = store
            elif (store.signature["data_id"], store.signature["model_sha256"]) != (key.data_id, key.model_sha256):
                msg = "this embeddings path already holds another image's embeddings"
                raise EmbeddingMismatch(msg, path=path)
        return store

    def _remember(self, key: EmbeddingKey, emb: Embedding) -> None:
        with self._lock:
            if key in self._mem:
                self._mem.move_to_end(key)
                return
            self._mem[key] = emb
            self._bytes += emb.nbytes
            while self._mem and (len(self._mem) > self.max_items or self._bytes > self.max_bytes):
                _, old = self._mem.popitem(last=False)
                self._bytes -= old.nbytes

    def get(self, key: EmbeddingKey, preprocessing: str = "sam") -> Embedding | None:
        with self._lock:
            emb = self._mem.get(key)
            if emb is not None:
                self._mem.move_to_end(key)
                self.hits["memory"] += 1
                return emb
        store = self._store(key, preprocessing)
        if store is not None:
            emb = store.get(key.window_name)
            if emb is not None:
                self._remember(key, emb)
                with self._lock:
                    self.hits["disk"] += 1
                return emb
        return None

    def get_or_compute(self, key: EmbeddingKey, compute: Callable[[], Embedding], preprocessing: str = "sam") -> Embedding:
        emb = self.get(key, preprocessing)
        if emb is not None:
            return emb
        with self._lock:
            gate = self._inflight.setdefault(key, threading.Lock())
        with gate:  # one thread computes, the others wait and then read the result
            emb = self.get(key, preprocessing)
            if emb is None:
                emb = compute()
                self._remember(key, emb)
                store = self._store(key, preprocessing)
                if store is not None:
                    store.put(key.window_name, emb)
                with self._lock:
                    self.hits["computed"] += 1
        with self._lock:
            self._inflight.pop(key, None)
        return emb

    def __len__(self) -> int:
        return len(self._mem)
