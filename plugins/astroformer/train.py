"""Reproduce the shipped demo weights: Astroformer ``demo`` on synthetic Galaxy10 cutouts.

Recipe (the paper's regularisation at a size a laptop CPU trains in minutes):

- data: ``tessera.pipelines.synthetic.galaxies.render_cutouts``: class-balanced cutouts
  of the ten classes, 64 x 64 px at 1.048"/px (the 67" Galaxy10 box), with PSF, noise,
  field stars and neighbouring galaxies, coloured with the Galaxy10 asinh stretch;
  training cutouts are indices [0, n_train) of the seed, held-out ones
  [1_000_000, 1_000_000 + n_val) (disjoint by construction);
- augmentation: random flips and 90-degree rotations (a galaxy has no up), then mixup
  (alpha 0.8) with label smoothing 0.1 and a soft-target cross entropy, as the paper
  (timm ``Mixup`` and ``SoftTargetCrossEntropy``);
- AdamW (lr 2e-3, weight decay 0.05), linear warm-up then cosine decay, batch 64;
- normalisation: x / 255, mean = std = 0.5 per channel (the manifest's).

Deterministic for a seed on a given machine: every random draw comes from seeded
generators (numpy for data and mixup, torch for init and shuffling), torch runs with
deterministic algorithms on one thread (channels-last tensors).

Outputs in ``out_dir``: ``astroformer_demo.safetensors``, ``astroformer_demo.onnx``
(parity with torch checked), ``confusion.csv`` and the metrics dict it returns (also
``metrics.json`` when run through ``tessera train``).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.progress import NullProgress, ProgressReporter

SIZE = "demo"
INPUT_PX = 64
PXSCALE_ARCSEC = 1.048  # 0.262 x 4: the Galaxy10 box at 64 px
HELD_OUT_START = 1_000_000
MEAN = STD = 0.5


def _normalise(torch: Any, batch_uint8: Any) -> Any:
    """uint8 NHWC -> normalised float NCHW in channels-last memory (faster convs on CPU)."""
    x = (batch_uint8.permute(0, 3, 1, 2).float() / 255.0 - MEAN) / STD
    return x.contiguous(memory_format=torch.channels_last)


def _augment(torch: Any, x: Any, gen: Any) -> Any:
    """Random flip and quarter turn per batch half (cheap, orientation-free classes)."""
    n = x.shape[0]
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    k = int(torch.randint(0, 4, (1,), generator=gen))
    return torch.rot90(x, k, dims=(-2, -1))


def evaluate(model: Any, images: np.ndarray, labels: np.ndarray, *, batch: int = 256) -> dict[str, Any]:
    """Top-1 accuracy and confusion matrix (rows: truth, columns: prediction) of a torch
    model on uint8 cutouts [N, 64, 64, 3]."""
    import torch

    model.eval()
    preds = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = _normalise(torch, torch.from_numpy(images[i : i + batch]))
            preds.append(model(x).argmax(1).numpy())
    pred = np.concatenate(preds) if preds else np.zeros(0, int)
    k = 10
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels.astype(int), pred), 1)
    return {"top1": float((pred == labels).mean()) if len(labels) else float("nan"),
            "confusion": confusion, "predictions": pred}


def train(
    out_dir: Path,
    *,
    seed: int = 0,
    quick: bool = False,
    progress: ProgressReporter | None = None,
    n_train: int | None = None,
    n_val: int | None = None,
    epochs: int | None = None,
    export: bool = True,
) -> dict[str, Any]:
    """Train the demo Astroformer and export it; returns metrics (see module docstring).

    ``n_train``, ``n_val``, ``epochs`` override the recipe (quick: 120, 40, 1);
    ``export=False`` skips the ONNX export (tests of determinism).
    """
    import torch
    from safetensors.torch import save_file
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy

    from tessera.pipelines.engines import export_onnx
    from tessera.pipelines.plugin_system.integrity import sha256_file
    from tessera.pipelines.synthetic.galaxies import GALAXY10_CLASSES, render_cutouts
    from tessera.plugins.astroformer.model import build_model, parameter_count

    progress = progress or NullProgress()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_train = n_train or (120 if quick else 6000)
    n_val = n_val or (40 if quick else 1000)
    epochs = epochs or (1 if quick else 14)
    batch = 64 if not quick else 32

    torch.manual_seed(seed)
    np.random.seed(seed)  # timm's Mixup draws lambdas from numpy's global generator
    torch.use_deterministic_algorithms(True)
    threads_before = torch.get_num_threads()
    # one thread: reproducible reductions, and on a shared 2-core machine two OpenMP
    # threads spin-waiting on each other cost ~5x the CPU time for the same steps
    torch.set_num_threads(1)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        train_set = render_cutouts(n_train, seed=seed, size_px=INPUT_PX, pxscale_arcsec=PXSCALE_ARCSEC,
                                   progress=progress)
        val_set = render_cutouts(n_val, seed=seed, size_px=INPUT_PX, pxscale_arcsec=PXSCALE_ARCSEC,
                                 start=HELD_OUT_START, progress=progress)
        data_cpu_s = time.process_time() - cpu0

        model = build_model(SIZE, num_classes=len(GALAXY10_CLASSES), drop_path_rate=0.05)
        model = model.to(memory_format=torch.channels_last)
        optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
        steps_per_epoch = math.ceil(n_train / batch)
        total = epochs * steps_per_epoch
        warmup = max(1, min(total // 10, 2 * steps_per_epoch))

        def lr_at(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            t = (step - warmup) / max(1, total - warmup)
            return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * t))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lr_at)
        mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.1,
                      num_classes=len(GALAXY10_CLASSES))
        criterion = SoftTargetCrossEntropy()
        gen = torch.Generator().manual_seed(seed)
        images = torch.from_numpy(train_set.images)
        labels = torch.from_numpy(train_set.labels.astype(np.int64))
        progress.start(total, "training astroformer demo")
        history = []
        step = 0
        for _epoch in range(epochs):
            model.train()
            order = torch.randperm(n_train, generator=gen)
            running = 0.0
            for i in range(0, n_train - batch + 1, batch):  # full batches (mixup pairs flips)
                idx = order[i : i + batch]
                x = _augment(torch, _normalise(torch, images[idx]), gen)
                x, y = mixup(x, labels[idx])
                loss = criterion(model(x), y)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                scheduler.step()
                running += float(loss.detach())
                step += 1
                progress.advance()
            history.append(running / max(1, n_train // batch))
        train_cpu_s = time.process_time() - cpu0 - data_cpu_s
        progress.close()

        result = evaluate(model, val_set.images, val_set.labels)
        train_acc = evaluate(model, train_set.images[:1000], train_set.labels[:1000])["top1"]
        model = model.to(memory_format=torch.contiguous_format).eval()
        weights = out_dir / "astroformer_demo.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
        onnx_path = out_dir / "astroformer_demo.onnx"
        parity = None
        if export:
            example = {"input": torch.zeros(2, 3, INPUT_PX, INPUT_PX)}
            parity = export_onnx(model, example, onnx_path, output_names=["logits"])
        confusion = result["confusion"]
        with (out_dir / "confusion.csv").open("w", encoding="utf-8") as fh:
            fh.write("truth/predicted," + ",".join(str(k) for k in range(len(GALAXY10_CLASSES))) + "\n")
            for k, row in enumerate(confusion):
                fh.write(f"{k}," + ",".join(str(int(v)) for v in row) + "\n")
        metrics = {
            "size": SIZE,
            "parameters": parameter_count(model),
            "input_px": INPUT_PX,
            "pxscale_arcsec": PXSCALE_ARCSEC,
            "n_train": n_train,
            "n_val": n_val,
            "epochs": epochs,
            "batch": batch,
            "steps": step,
            "seed": seed,
            "heldout_top1": result["top1"],
            "train_top1_first1000": train_acc,
            "per_class_recall": [float(confusion[k, k] / max(1, confusion[k].sum()))
                                 for k in range(len(GALAXY10_CLASSES))],
            "confusion": confusion.tolist(),
            "loss_per_epoch": history,
            "cpu_seconds_data": round(data_cpu_s, 1),
            "cpu_seconds_training": round(train_cpu_s, 1),
            "cpu_seconds_total": round(time.process_time() - cpu0, 1),
            "wall_seconds_total": round(time.perf_counter() - wall0, 1),
            "torch_threads": 1,
            "onnx_max_abs_diff": None if parity is None else parity.max_abs_diff,
            "onnx_exporter": None if parity is None else parity.exporter,
            "onnx_opset": None if parity is None else parity.opset,
            "files": {p.name: sha256_file(p) for p in (weights, onnx_path) if p.exists()},
        }
        (out_dir / "train_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        return metrics
    finally:
        torch.set_num_threads(threads_before)
        torch.use_deterministic_algorithms(False)

