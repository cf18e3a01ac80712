"""Reproducible training of the demo weights on synthetic eDOS (torch; ``train`` extra).

Recipe (deterministic on CPU for a seed):

1. Data: ``tessera.pipelines.synthetic.edos`` with generator seed ``DATA_SEED`` (101, distinct
   from the seed-0 demo screening set), all 30 metals x 6 supports x 9 adsorbates, ``VARIANTS``
   structural variants per SAC. Arrays are binned along energy exactly as the demo model's
   first layer does (mean of 32 points), so the full [4000, 9, 6] arrays never sit in memory.
2. Split by SAC (metal, support), never by sample: 70 % train, 15 % validation (epoch
   selection), 15 % test (the reported held-out MAE). A test SAC's every adsorbate and variant
   is unseen.
3. MSE on standardised targets, Adam (lr 1e-3, the paper's) with cosine decay, batch 32,
   the epoch with the lowest validation MAE kept.
4. Export: ``sac_cnn_demo.safetensors`` and ``sac_cnn_demo.onnx`` (opset 17, dynamic batch,
   torch/onnxruntime parity checked), ``metrics.json``, ``parity.png``.

``publish(run_dir)`` copies a run's weights (and its metrics and parity plot) into the plugin's
``weights/`` and writes their sha256 into ``manifest.toml``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.progress import NullProgress, ProgressReporter

DATA_SEED = 101
VARIANTS = 2
EPOCHS = 10
BATCH = 32
SIZE = "demo"
ONNX_NAME = "sac_cnn_demo.onnx"
SAFETENSORS_NAME = "sac_cnn_demo.safetensors"
PLUGIN_DIR = Path(__file__).resolve().parent


def _pool(factor: int):
    def pool(edos: np.ndarray) -> np.ndarray:
        e, o, c = edos.shape
        # [E, 9, 6] -> [9, 6, E / factor]: energy last, as the branches convolve along it
        return edos.reshape(e // factor, factor, o, c).mean(1).transpose(1, 2, 0).astype(np.float32)

    return pool


def split_by_sac(metals: list[str], supports: list[str], seed: int) -> dict[str, np.ndarray]:
    """Boolean masks train/val/test over samples, assigning whole SACs (70/15/15 %)."""
    sacs = sorted(set(zip(metals, supports, strict=True)))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(sacs))
    n_val = n_test = round(0.15 * len(sacs))
    role = {}
    for rank, i in enumerate(order):
        role[sacs[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    labels = np.array([role[s] for s in zip(metals, supports, strict=True)])
    return {k: labels == k for k in ("train", "val", "test")}


def train(
    out_dir: Path,
    *,
    seed: int = 0,
    quick: bool = False,
    progress: ProgressReporter | None = None,
    epochs: int | None = None,
    variants: int | None = None,
) -> dict[str, Any]:
    """Train the demo model; write weights, ONNX and metrics to ``out_dir``; return metrics.

    ``quick`` trains a few steps on a small subset (a smoke test of the recipe, not a model).
    """
    import torch

    from tessera.pipelines.synthetic.edos import generate_samples
    from tessera.plugins.sac_cnn.model import build_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = progress or NullProgress()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    threads = torch.get_num_threads()
    cpu0, wall0 = time.process_time(), time.perf_counter()

    model = build_model(SIZE)
    factor = model.cfg.input_pool
    kw: dict[str, Any] = {"seed": DATA_SEED, "n_variants": variants or VARIANTS}
    if quick:
        kw.update(metals=["Sc", "Fe", "Co", "Ni", "Cu", "Ru"], supports=["N-graphene", "BN"], n_variants=1)
    data = generate_samples(**kw, transform=_pool(factor), progress=progress)
    masks = split_by_sac(data.metal, data.support, seed)
    x_all = torch.from_numpy(data.edos)
    y_all = torch.from_numpy(data.e_ads_ev.astype(np.float32))
    tr = torch.from_numpy(np.flatnonzero(masks["train"]))
    y_mean, y_std = float(y_all[tr].mean()), float(y_all[tr].std())
    scale = 1.0 / float(np.percentile(data.edos[masks["train"]].max(axis=-1), 99.0))
    model.input_scale.fill_(scale)
    model.target_mean_ev.fill_(y_mean)
    model.target_std_ev.fill_(y_std)

    n_epochs = 2 if quick else (epochs or EPOCHS)
    steps_per_epoch = (len(tr) + BATCH - 1) // BATCH
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n_epochs * steps_per_epoch, eta_min=1e-5)
    gen = torch.Generator().manual_seed(seed)

    def predict(idx: np.ndarray) -> np.ndarray:
        model.eval()
        out = []
        with torch.no_grad():
            for s in range(0, len(idx), 256):
                z = model.forward_pooled(x_all[idx[s : s + 256]])
                out.append((z * y_std + y_mean).numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    val_idx = np.flatnonzero(masks["val"])
    test_idx = np.flatnonzero(masks["test"])
    best = (np.inf, -1, None)
    history = []
    progress.start(n_epochs * steps_per_epoch, "training sac-cnn")
    for epoch in range(n_epochs):
        model.train()
        perm = tr[torch.randperm(len(tr), generator=gen)]
        total = 0.0
        for s in range(0, len(perm), BATCH):
            b = perm[s : s + BATCH]
            target = (y_all[b] - y_mean) / y_std
            loss = torch.nn.functional.mse_loss(model.forward_pooled(x_all[b]), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
            progress.advance(1)
        val_mae = float(np.abs(predict(val_idx) - data.e_ads_ev[val_idx]).mean())
        history.append({"epoch": epoch + 1, "train_mse_std": total / len(tr), "val_mae_ev": val_mae})
        if val_mae < best[0]:
            best = (val_mae, epoch + 1, {k: v.clone() for k, v in model.state_dict().items()})
    progress.close()
    model.load_state_dict(best[2])

    pred = predict(test_idx)
    truth = data.e_ads_ev[test_idx]
    ads = np.array(data.adsorbate)[test_idx]
    per_ads = {z: float(np.abs(pred[ads == z] - truth[ads == z]).mean()) for z in dict.fromkeys(ads)}
    metrics: dict[str, Any] = {
        "size": SIZE,
        "seed": seed,
        "data_seed": DATA_SEED,
        "quick": quick,
        "n_train": int(masks["train"].sum()),
        "n_val": int(masks["val"].sum()),
        "n_test": len(test_idx),
        "epochs": n_epochs,
        "best_epoch": best[1],
        "val_mae_ev": best[0],
        "test_mae_ev": float(np.abs(pred - truth).mean()),
        "test_rmse_ev": float(np.sqrt(((pred - truth) ** 2).mean())),
        "test_mae_per_adsorbate_ev": per_ads,
        "noise_floor_mae_ev": float(np.abs(data.e_ads_ev - data.e_ads_clean_ev)[test_idx].mean()),
        "cpu_seconds": round(time.process_time() - cpu0, 1),
        "wall_seconds": round(time.perf_counter() - wall0, 1),
        "torch_threads": threads,
        "history": history,
    }
    _export(model, out_dir, metrics)
    _parity_plot(truth, pred, ads, out_dir / "parity.png", metrics["test_mae_ev"])
    np.savez_compressed(out_dir / "test_predictions.npz", e_true_ev=truth, e_pred_ev=pred, adsorbate=ads,
                        metal=np.array(data.metal)[test_idx], support=np.array(data.support)[test_idx])
    (out_dir / "train_metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return metrics


def _export(model: Any, out_dir: Path, metrics: dict[str, Any]) -> None:
    import torch
    from safetensors.torch import save_file

    model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / SAFETENSORS_NAME),
              metadata={"size": SIZE, "format": "pt"})
    example = torch.rand(2, 4000, 9, 6, generator=torch.Generator().manual_seed(0))
    metrics["onnx_max_abs_diff_ev"] = export_onnx_model(model, example, out_dir / ONNX_NAME)


def export_onnx_model(model: Any, example: Any, path: Path) -> float:
    """Export ``model`` (input ``edos``, output ``e_ads``) to ONNX; returns max |torch - ORT| (eV)."""
    from tessera.pipelines.engines import export_onnx

    report = export_onnx(model, {"edos": example}, path, output_names=["e_ads"], dynamic_batch=True)
    return float(report.max_abs_diff)


def _parity_plot(truth: np.ndarray, pred: np.ndarray, ads: np.ndarray, path: Path, mae: float) -> None:
    from tessera.pipelines.catalysis.plots import parity_figure, save_figure

    fig = parity_figure(truth, pred, ads, title=f"Held-out SACs: MAE {mae:.3f} eV")
    save_figure(fig, path.with_suffix(""), formats=("png",))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def publish(run_dir: Path) -> dict[str, str]:
    """Copy a finished run's weights into the plugin and record their sha256 in manifest.toml."""
    import shutil

    run_dir = Path(run_dir)
    weights = PLUGIN_DIR / "weights"
    weights.mkdir(exist_ok=True)
    digests = {}
    for name in (ONNX_NAME, SAFETENSORS_NAME):
        shutil.copyfile(run_dir / name, weights / name)
        digests[name] = _sha256(weights / name)
    manifest = PLUGIN_DIR / "manifest.toml"
    text = manifest.read_text(encoding="utf-8")
    for name, digest in digests.items():
        pattern = rf'(path = "weights/{re.escape(name)}"\s*\nsha256 = ")[0-9a-f]*(")'
        text, n = re.subn(pattern, rf"\g<1>{digest}\g<2>", text)
        if n != 1:
            msg = f"manifest.toml has no [[files]] entry for weights/{name}"
            raise RuntimeError(msg)
    manifest.write_text(text, encoding="utf-8")
    for extra in ("train_metrics.json", "parity.png"):
        if (run_dir / extra).exists():
            shutil.copyfile(run_dir / extra, weights / extra)
    return digests


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - developer entry point
    """``python -m tessera.plugins.sac_cnn.train [OUT_DIR] [--publish]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    out = Path(next((a for a in args if not a.startswith("--")), "sac-cnn-train"))
    if "--publish-only" not in args:
        metrics = train(out, seed=0)
        print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2))
    if "--publish" in args or "--publish-only" in args:
        print(json.dumps(publish(out), indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    os.nice(10)
    sys.exit(main())
