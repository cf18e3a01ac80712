"""Embedding cache: memory LRU, zarr stores with a signature, one encoder run per key."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tessera.pipelines.prompting import cache as cache_mod
from tessera.pipelines.prompting.cache import (
    EmbeddingCache,
    EmbeddingKey,
    EmbeddingMismatch,
    EmbeddingStore,
    array_identity,
    file_identity,
)
from tessera.pipelines.prompting.runtime import Embedding
from tessera.pipelines.prompting.transforms import InputTransform


def emb(value: float, n: int = 4) -> Embedding:
    return Embedding(
        arrays={"image_embeddings": np.full((1, 8, n, n), value, np.float32)},
        transform=InputTransform((30, 40), (48, 64), 64),
        encode_s=0.1,
    )


def key(i: int = 0, data: str = "img", model: str = "m1") -> EmbeddingKey:
    return EmbeddingKey(data_id=data, level=1, window=(i, 0, 64, 64), model_sha256=model)


def test_memory_lru_evicts_by_count_and_bytes():
    c = EmbeddingCache(max_items=2)
    for i in range(3):
        c.get_or_compute(key(i), lambda i=i: emb(i))
    assert len(c) == 2 and c.get(key(0)) is None and c.get(key(2)) is not None
    small = EmbeddingCache(max_bytes=emb(0).nbytes * 2 + 1)
    for i in range(4):
        small.get_or_compute(key(i), lambda i=i: emb(i))
    assert len(small) == 2


def test_one_encoder_run_per_key_under_concurrency():
    c = EmbeddingCache()
    calls = []

    def compute():
        calls.append(1)
        time.sleep(0.05)
        return emb(7)

    results = []
    threads = [threading.Thread(target=lambda: results.append(c.get_or_compute(key(), compute))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 6
    assert all(r is results[0] for r in results)
    assert c.hits["computed"] == 1 and c.hits["memory"] == 5


def test_disk_store_round_trip_and_reuse_across_caches(tmp_path):
    c1 = EmbeddingCache(disk_dir=tmp_path)
    e = c1.get_or_compute(key(3), lambda: emb(3.5))
    c2 = EmbeddingCache(disk_dir=tmp_path)  # a new process, say
    got = c2.get_or_compute(key(3), lambda: pytest.fail("the encoder must not run again"))
    assert c2.hits["disk"] == 1
    assert np.array_equal(got.arrays["image_embeddings"], e.arrays["image_embeddings"])
    assert got.transform == e.transform
    # other data or other weights go to other stores
    assert key(3, data="other").store_name != key(3).store_name
    assert key(3, model="m2").store_name != key(3).store_name


def test_explicit_store_checks_its_signature(tmp_path, monkeypatch):
    path = tmp_path / "embeddings.zarr"
    EmbeddingCache(store_path=path).get_or_compute(key(0), lambda: emb(1))
    with pytest.raises(EmbeddingMismatch, match="other image data"):
        EmbeddingStore(path, data_id="another image", model_sha256="m1")
    with pytest.raises(EmbeddingMismatch, match="other model weights"):
        EmbeddingStore(path, data_id="img", model_sha256="m2")
    monkeypatch.setattr(cache_mod, "tessera_version", lambda: "99.0")
    with pytest.warns(UserWarning, match="Tessera"):
        store = EmbeddingStore(path, data_id="img", model_sha256="m1")
    assert store.get(key(0).window_name) is not None
    c = EmbeddingCache(store_path=path)
    with pytest.raises(EmbeddingMismatch):
        c.get(key(0, data="another image"))


def test_half_written_windows_are_not_read(tmp_path):
    store = EmbeddingStore(tmp_path / "s.zarr", data_id="img", model_sha256="m1")
    store.put("w", emb(2))
    store.group["w"].attrs["complete"] = False  # as if the process died mid-write
    assert store.get("w") is None


def test_identities(tmp_path):
    f = tmp_path / "a.png"
    f.write_bytes(b"123")
    a = file_identity(f)
    f.write_bytes(b"12345")
    assert file_identity(f) != a
    x = np.zeros((4, 4), np.uint8)
    y = x.copy()
    y[0, 0] = 1
    assert array_identity(x) == array_identity(x.copy()) != array_identity(y)
