"""SAM latency: encoder per window, decoder per prompt, re-prompt on a cached region.

What an interactive user feels is the time from a click to a mask when the region's
embedding is already cached (the decoder, the prompt mapping and the cache lookup):
``reprompt`` measures exactly that through ``PromptSession.predict``. ``decoder`` is the
decoder graph plus the numpy prompt preparation (``SamRuntime.predict``); ``encoder`` is
one window through the encoder graph with its preprocessing.

Prompts alternate between one click, a box, and click + box, at random places inside
the image (fixed seed); box-only weights get boxes. Figures are medians (p50) and 95th percentiles over prompts,
after warm-up calls; several runtimes are measured in one run, interleaved per
round, so that the load of a shared machine hits them alike.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tessera.pipelines.progress import NullProgress, ProgressReporter
from tessera.pipelines.prompting.cache import EmbeddingCache
from tessera.pipelines.prompting.runtime import SamRuntime
from tessera.pipelines.prompting.session import PromptSession


@dataclass
class RuntimeLatency:
    """Latencies of one model (seconds)."""

    name: str
    input_size: int
    description: str
    encoder_median_s: float
    decoder_p50_s: float
    decoder_p95_s: float
    reprompt_p50_s: float
    reprompt_p95_s: float
    encoder_times_s: list[float] = field(default_factory=list)
    decoder_times_s: list[float] = field(default_factory=list)
    reprompt_times_s: list[float] = field(default_factory=list)


@dataclass
class SamBench:
    models: list[RuntimeLatency]
    prompts: int
    encoder_repeats: int
    threads: int | None
    load_avg_1min: float = float("nan")
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _prompts(rng: np.random.Generator, h: int, w: int, n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        x, y = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        bw, bh = rng.uniform(0.05, 0.3) * w, rng.uniform(0.05, 0.3) * h
        box = np.array([x - bw / 2, y - bh / 2, x + bw / 2, y + bh / 2])
        kind = i % 3
        out.append({
            "points": None if kind == 1 else np.array([[x, y]]),
            "labels": None if kind == 1 else np.array([1.0]),
            "box": None if kind == 0 else box,
        })
    return out


def bench_sam(
    runtimes: dict[str, SamRuntime],
    image: np.ndarray,
    *,
    prompts: int = 60,
    encoder_repeats: int = 3,
    warmup: int = 3,
    threads: int | None = None,
    progress: ProgressReporter | None = None,
) -> SamBench:
    """Measure every runtime on the same image and prompts (image: (H, W, 3) uint8 no
    larger than the smallest encoder input, so each model encodes one window)."""
    progress = progress or NullProgress()
    rng = np.random.default_rng(0)
    h, w = image.shape[:2]
    plist = _prompts(rng, h, w, prompts)
    results: dict[str, dict[str, list[float]]] = {n: {"enc": [], "dec": [], "re": []} for n in runtimes}
    embeddings = {}
    sessions = {}
    for name, rt in runtimes.items():
        for _ in range(max(1, warmup // 2)):
            embeddings[name] = rt.encode(image)
        s = PromptSession(rt, cache=EmbeddingCache())
        s.set_image(image)
        sessions[name] = s
    progress.start(len(runtimes) * (encoder_repeats + 2 * prompts), "benchmarking SAM")
    for _ in range(encoder_repeats):  # interleaved: load drifts hit every model alike
        for name, rt in runtimes.items():
            t0 = time.perf_counter()
            rt.encode(image)
            results[name]["enc"].append(time.perf_counter() - t0)
            progress.advance(1)
    def fit(p: dict[str, Any], rt: SamRuntime) -> dict[str, Any]:
        # box-only weights (MedSAM, SAM-UNet) get the prompt's box
        if not rt.box_only or p["box"] is not None:
            return p if not rt.box_only else {**p, "points": None, "labels": None}
        x, y = p["points"][0]
        return {"points": None, "labels": None, "box": np.array([x - 20, y - 20, x + 20, y + 20])}

    for name, rt in runtimes.items():
        emb, s = embeddings[name], sessions[name]
        for p0 in plist[:warmup]:
            p = fit(p0, rt)
            rt.predict(emb, points_xy=p["points"], labels=p["labels"], box_xyxy=p["box"])
            s.predict(p["points"], p["labels"], p["box"])
    for p0 in plist:
        for name, rt in runtimes.items():
            p = fit(p0, rt)
            emb, s = embeddings[name], sessions[name]
            t0 = time.perf_counter()
            rt.predict(emb, points_xy=p["points"], labels=p["labels"], box_xyxy=p["box"])
            t1 = time.perf_counter()
            r = s.predict(p["points"], p["labels"], p["box"])
            t2 = time.perf_counter()
            if r.encode_s:
                msg = "the re-prompt ran the encoder: the region was not cached"
                raise RuntimeError(msg)
            results[name]["dec"].append(t1 - t0)
            results[name]["re"].append(t2 - t1)
            progress.advance(2)
    progress.close()
    models = []
    for name, rt in runtimes.items():
        r = results[name]
        models.append(RuntimeLatency(
            name=name, input_size=rt.input_size,
            description=str(rt.describe().get("encoder")),
            encoder_median_s=statistics.median(r["enc"]),
            decoder_p50_s=_percentile(r["dec"], 50), decoder_p95_s=_percentile(r["dec"], 95),
            reprompt_p50_s=_percentile(r["re"], 50), reprompt_p95_s=_percentile(r["re"], 95),
            encoder_times_s=r["enc"], decoder_times_s=r["dec"], reprompt_times_s=r["re"],
        ))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return SamBench(models=models, prompts=prompts, encoder_repeats=encoder_repeats, threads=threads,
                    load_avg_1min=load)
