"""Reproduces the shipped demo weights: a tiny SAM and a tiny SAM-UNet on synthetic objects.

Recipe (deterministic for a seed, CPU, one thread):

1. data: ``tessera.pipelines.synthetic.objects`` scenes (H&E-like cells and glands,
   CT-like organs and vessels, ultrasound-like lesions and vessels; low contrast, faint
   boundaries, speckle), 256 x 256 px; held-out scenes from another seed. Augmentation:
   flips/90° turns, crops to a random aspect ratio padded bottom/right (as the runtime
   pads a non-square region), blur by down/up-sampling.
2. tiny SAM ("demo" config of ``model.py``: ViT 128-d, 8 blocks, 4 global, 256 px input,
   16 x 16 embeddings; the official decoder at 128-d): per step one prompt layout for the
   batch (box; one positive point; two points; box + point), prompts laid out exactly as
   the ONNX runtime sends them. Loss as SAM: 20 x focal + dice on the single-mask output,
   the same on the best of the three multimask outputs, and MSE of the IoU head; masks
   compared with the area-averaged truth at 128 x 128. 4500 steps at 4e-4 with a
   150-step warm-up and a cosine decay, AdamW (weight decay 0.05), 4 images x 4 objects
   per step, gradient norm clipped at 1 (2000 steps left it under-trained: held-out IoU
   was still rising at the end). Further phases (warm restarts with a fresh AdamW,
   ``--extra-phase STEPS:LR``) are supported but not part of the shipped recipe: a 3000-step
   restart at 3e-4 after the 2000 steps raised the training loss for its first 350 steps
   (tried, stopped); one longer schedule did better.
3. tiny SAM-UNet: the tiny SAM's ViT frozen, its prompt encoder and decoder as a start
   (the medical token and its hypernetwork from SAM's single-mask token and MLP);
   a slim ResNet branch (one basic block per stage, 16-128 channels) with adapters, the
   multi-scale fusion and the medical token trained with box prompts (20 x focal + dice).
4. export: encoder and decoder ONNX graphs (``export.py``), safetensors, held-out IoU
   through the ONNX Runtime path exactly as users get it.

Run: ``python -m tessera.plugins.sam.train --out DIR`` (add ``--quick`` for a smoke run);
``--install`` copies the results into the plugin's ``weights/`` and writes their sha256
into ``manifest.toml``. Finished phases are kept in DIR and reused by a rerun with the
same recipe (each phase is deterministic, so the result is the same).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.progress import NullProgress, ProgressReporter
from tessera.pipelines.synthetic.objects import (
    ObjectScene,
    centre_point,
    make_scenes,
    mask_box,
    sample_box,
    sample_points,
)

IMG = 256
PROMPT_KINDS = ("box", "point", "points", "box+point")
PROMPT_WEIGHTS = (0.35, 0.35, 0.15, 0.15)


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of one training run."""

    n_train_scenes: int = 2000
    n_val_scenes: int = 150
    sam_steps: int = 4500
    # further SAM phases after the first: (steps, peak lr), each a fresh AdamW with a short
    # warm-up and a cosine decay (a warm restart), data drawn from its own seeded stream
    sam_extra_phases: tuple[tuple[int, float], ...] = ()
    phase_warmup: int = 50
    unet_steps: int = 1200
    batch_images: int = 4
    objects_per_image: int = 4
    loss_px: int = 128  # masks are compared with the (area-averaged) truth at this size
    lr: float = 4e-4
    unet_lr: float = 5e-4
    weight_decay: float = 0.05
    warmup: int = 150
    focal_weight: float = 20.0

    @classmethod
    def quick(cls) -> Recipe:
        return cls(n_train_scenes=24, n_val_scenes=6, sam_steps=6, unet_steps=4, batch_images=2,
                   objects_per_image=2, warmup=2, sam_extra_phases=((3, 1e-4),))


# ---------------------------------------------------------------------------------------
# samples
# ---------------------------------------------------------------------------------------
def _augment(rng: np.random.Generator, scene: ObjectScene) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Flipped/turned, maybe cropped to an aspect ratio and blurred: (image uint8 padded
    to IMG x IMG, labels padded, valid (h, w))."""
    img, lab = scene.image, scene.labels
    k = int(rng.integers(4))
    img, lab = np.rot90(img, k), np.rot90(lab, k)
    if rng.random() < 0.5:
        img, lab = img[:, ::-1], lab[:, ::-1]
    h, w = lab.shape
    if rng.random() < 0.3:
        short = int(rng.integers(IMG // 2, IMG))
        if rng.random() < 0.5:
            y0 = int(rng.integers(0, h - short + 1))
            img, lab = img[y0 : y0 + short], lab[y0 : y0 + short]
        else:
            x0 = int(rng.integers(0, w - short + 1))
            img, lab = img[:, x0 : x0 + short], lab[:, x0 : x0 + short]
    if rng.random() < 0.25:
        from PIL import Image

        f = rng.uniform(0.5, 0.9)
        hh, ww = lab.shape
        small = Image.fromarray(np.ascontiguousarray(img)).resize(
            (max(8, int(ww * f)), max(8, int(hh * f))), Image.BILINEAR
        )
        img = np.asarray(small.resize((ww, hh), Image.BILINEAR))
    hh, ww = lab.shape
    out_img = np.zeros((IMG, IMG, 3), np.uint8)
    out_lab = np.zeros((IMG, IMG), np.int32)
    out_img[:hh, :ww] = img
    out_lab[:hh, :ww] = lab
    return out_img, out_lab, (hh, ww)


def _prompt(rng: np.random.Generator, kind: str, mask: np.ndarray, others: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (N, 2) x, y and labels (N,) in the runtime's layout for ``kind``."""
    pad = (np.zeros((1, 2), np.float32), np.full(1, -1, np.float32))
    if kind == "box":
        return sample_box(rng, mask).reshape(2, 2), np.array([2, 3], np.float32)
    if kind == "point":
        c, lab = sample_points(rng, mask, n_pos=1)
        return np.concatenate([c, pad[0]]), np.concatenate([lab, pad[1]])
    if kind == "points":
        if rng.random() < 0.5:
            c, lab = sample_points(rng, mask, n_pos=1, n_neg=1, exclude=None)
        else:
            c, lab = sample_points(rng, mask, n_pos=2)
        return np.concatenate([c, pad[0]]), np.concatenate([lab, pad[1]])
    c, lab = sample_points(rng, mask, n_pos=1)
    box = sample_box(rng, mask).reshape(2, 2)
    return np.concatenate([c, box]), np.concatenate([lab, [2, 3]]).astype(np.float32)


def make_batch(
    rng: np.random.Generator, scenes: list[ObjectScene], recipe: Recipe, kind: str
) -> dict[str, np.ndarray]:
    """Images (B, 3, IMG, IMG) uint8-valued float32 (0-255, zero padding), prompts
    (B*K, N, 2)/(B*K, N), targets (B*K, IMG, IMG) float32."""
    images, coords, labels, targets, valid = [], [], [], [], []
    k = recipe.objects_per_image
    while len(images) < recipe.batch_images:
        scene = scenes[int(rng.integers(len(scenes)))]
        img, lab, hw = _augment(rng, scene)
        ids, counts = np.unique(lab[lab > 0], return_counts=True)
        ids = ids[counts >= 100]
        if len(ids) == 0:
            continue
        chosen = rng.choice(ids, size=k, replace=len(ids) < k)
        images.append(img)
        valid.append(hw)
        for i in chosen:
            mask = lab == i
            c, lb = _prompt(rng, kind, mask, lab)
            coords.append(c)
            labels.append(lb)
            targets.append(mask.astype(np.float32))
    return {
        "images": np.stack(images).transpose(0, 3, 1, 2).astype(np.float32),
        "coords": np.stack(coords).astype(np.float32),
        "labels": np.stack(labels).astype(np.float32),
        "targets": np.stack(targets),
        "valid_hw": np.array(valid, np.int64),
    }


# ---------------------------------------------------------------------------------------
# losses and schedule
# ---------------------------------------------------------------------------------------
def _target(masks: np.ndarray, px: int) -> Any:
    """(M, IMG, IMG) truth -> (M, 1, px, px) coverage fractions (area average)."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(masks).unsqueeze(1)
    return F.adaptive_avg_pool2d(t, px) if px != t.shape[-1] else t


def _lr_at(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))


def _normalise_padded(images: np.ndarray, valid_hw: np.ndarray) -> Any:
    """Normalise on the 0-255 scale, then zero the padding outside each image's valid
    (h, w), as the runtime pads after normalising."""
    import torch

    x = torch.from_numpy(images)
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    out = (x - mean) / std
    for b, (h, w) in enumerate(valid_hw):
        out[b, :, int(h):, :] = 0
        out[b, :, :, int(w):] = 0
    return out


# ---------------------------------------------------------------------------------------
# training loops
# ---------------------------------------------------------------------------------------
def _phase_tag(recipe: Recipe, seed: int, phase: int) -> str:
    phases = [(recipe.sam_steps, recipe.lr), *recipe.sam_extra_phases][: phase + 1]
    return json.dumps({"seed": seed, "phases": phases, "batch": recipe.batch_images,
                       "objects": recipe.objects_per_image, "scenes": recipe.n_train_scenes})


def train_sam(
    scenes: list[ObjectScene], recipe: Recipe, seed: int, progress: ProgressReporter,
    log: Callable[[str], None], val_scenes: list[ObjectScene] | None = None, eval_every: int = 500,
    checkpoint: Path | None = None, phase_dir: Path | None = None,
) -> Any:
    """All SAM phases; after each, the weights go to ``phase_dir/sam_demo.phase<i>.safetensors``
    (tagged with the recipe), and a later run with the same recipe starts after the last
    finished phase instead of redoing it (each phase is deterministic)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from tessera.plugins.sam.model import build_sam

    torch.manual_seed(seed)
    model = build_sam("demo").train()
    phases = [(recipe.sam_steps, recipe.lr, recipe.warmup), *((s, lr, recipe.phase_warmup)
                                                              for s, lr in recipe.sam_extra_phases)]
    for i, (steps, lr, warmup) in enumerate(phases):
        saved = None if phase_dir is None else phase_dir / f"sam_demo.phase{i}.safetensors"
        if saved is not None and saved.exists():
            with safe_open(str(saved), "pt") as fh:
                tag = (fh.metadata() or {}).get("recipe")
            if tag == _phase_tag(recipe, seed, i):
                model.load_state_dict(load_file(saved))
                log(f"sam phase {i}: reusing {saved.name}")
                continue
        rng = np.random.default_rng(seed + 1 + 1000 * i)
        _train_sam_phase(model, scenes, recipe, rng, steps, lr, warmup, progress, log, val_scenes,
                         eval_every, checkpoint, phase=i)
        if saved is not None:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, saved,
                      metadata={"recipe": _phase_tag(recipe, seed, i)})
    return model.eval()


def _train_sam_phase(
    model: Any, scenes: list[ObjectScene], recipe: Recipe, rng: np.random.Generator, steps: int, lr: float,
    warmup: int, progress: ProgressReporter, log: Callable[[str], None], val_scenes: list[ObjectScene] | None,
    eval_every: int, checkpoint: Path | None, phase: int,
) -> None:
    import torch
    import torch.nn.functional as F

    from tessera.plugins.sam.sam_unet import mask_losses

    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "pos" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
    )
    progress.start(steps, f"training tiny SAM (phase {phase + 1})")
    t0 = time.process_time()
    running = 0.0
    for step in range(steps):
        kind = str(rng.choice(PROMPT_KINDS, p=PROMPT_WEIGHTS))
        batch = make_batch(rng, scenes, recipe, kind)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, lr, warmup)
        x = _normalise_padded(batch["images"], batch["valid_hw"])
        emb = model.image_encoder(x).repeat_interleave(recipe.objects_per_image, 0)
        coords = torch.from_numpy(batch["coords"])
        labels = torch.from_numpy(batch["labels"])
        target = _target(batch["targets"], recipe.loss_px)
        sparse = model.prompt_encoder.embed_points(coords, labels)
        dense = model.prompt_encoder.no_mask_dense(sparse.shape[0])
        masks, iou = model.mask_decoder.predict_masks(emb, model.prompt_encoder.get_dense_pe(), sparse, dense)
        px = recipe.loss_px
        up = F.interpolate(masks, (px, px), mode="bilinear", align_corners=False)
        m, t = up.shape[0], up.shape[1]
        per = mask_losses(up.reshape(m * t, 1, px, px), target.repeat_interleave(t, 0), recipe.focal_weight)
        per = per.reshape(m, t)
        with torch.no_grad():
            pred = up > 0
            gt = target > 0.5
            inter = (pred & gt).flatten(2).sum(-1).float()
            union = (pred | gt).flatten(2).sum(-1).float().clamp(min=1)
            true_iou = inter / union
        loss = per[:, 0].mean() + per[:, 1:].min(dim=1).values.mean() + F.mse_loss(iou, true_iou)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running = 0.98 * running + 0.02 * float(loss.detach()) if step else float(loss.detach())
        progress.advance(1)
        if step % 50 == 0 or step == steps - 1:
            log(f"sam phase {phase} step {step} loss {running:.4f} cpu {time.process_time() - t0:.0f}s")
        if val_scenes and ((step + 1) % eval_every == 0 or step == steps - 1):
            model.eval()
            res = evaluate(lambda im, pt, box: predict_torch(model, im, pt, box), val_scenes)
            log(f"sam phase {phase} step {step + 1} held-out iou box {res['iou_box']:.4f} "
                f"point {res['iou_point']:.4f}")
            if checkpoint is not None:
                from safetensors.torch import save_file

                save_file({k: v.contiguous() for k, v in model.state_dict().items()}, checkpoint)
            model.train()
    progress.close()


def train_sam_unet(
    sam: Any, scenes: list[ObjectScene], recipe: Recipe, seed: int, progress: ProgressReporter,
    log: Callable[[str], None],
) -> Any:
    import torch
    import torch.nn.functional as F

    from tessera.plugins.sam.sam_unet import (
        SamUNet,
        SamUNetConfig,
        mask_losses,
        sam_unet_state_from_sam,
    )

    torch.manual_seed(seed + 7)
    rng = np.random.default_rng(seed + 8)
    cfg = demo_unet_config()
    model = SamUNet(cfg)
    model.load_state_dict(sam_unet_state_from_sam(sam.state_dict(), model))
    with torch.no_grad():  # the medical token and its hypernetwork start as SAM's single-mask ones
        model.mask_decoder.med_token.weight.copy_(model.mask_decoder.sam_mask_decoder.mask_tokens.weight[:1])
        model.mask_decoder.hf_mlp.load_state_dict(
            model.mask_decoder.sam_mask_decoder.output_hypernetworks_mlps[0].state_dict()
        )
    model.freeze_vit()
    model.train()
    model.vit.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe.unet_lr, weight_decay=recipe.weight_decay)
    progress.start(recipe.unet_steps, "training tiny SAM-UNet")
    t0 = time.process_time()
    running = 0.0
    for step in range(recipe.unet_steps):
        batch = make_batch(rng, scenes, recipe, "box")
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, recipe.unet_steps, recipe.unet_lr, recipe.warmup)
        x = _normalise_padded(batch["images"], batch["valid_hw"])
        emb, multi = model.encode(x)
        k = recipe.objects_per_image
        emb, multi = emb.repeat_interleave(k, 0), multi.repeat_interleave(k, 0)
        coords = torch.from_numpy(batch["coords"])
        labels = torch.from_numpy(batch["labels"])
        target = _target(batch["targets"], recipe.loss_px)
        sparse = model.prompts.embed_points(coords, labels)
        dense = model.prompts.no_mask_dense(sparse.shape[0])
        logits = model.mask_decoder(emb, model.prompts.get_dense_pe(), sparse, dense, multi)
        up = F.interpolate(logits, (recipe.loss_px, recipe.loss_px), mode="bilinear", align_corners=False)
        loss = mask_losses(up, target, cfg.focal_weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        running = 0.98 * running + 0.02 * float(loss.detach()) if step else float(loss.detach())
        progress.advance(1)
        if step % 50 == 0 or step == recipe.unet_steps - 1:
            log(f"unet step {step} loss {running:.4f} cpu {time.process_time() - t0:.0f}s")
    progress.close()
    _ = SamUNetConfig  # the config type is part of the exported metadata
    return model.eval()


def demo_unet_config() -> Any:
    """The tiny SAM-UNet: the demo SAM plus a slim ResNet branch."""
    from tessera.plugins.sam.sam_unet import UNET_CONFIGS

    return UNET_CONFIGS["demo"]


# ---------------------------------------------------------------------------------------
# evaluation (held-out scenes, through any predictor)
# ---------------------------------------------------------------------------------------
def held_out_prompts(scenes: list[ObjectScene], min_area_px: int = 100) -> list[dict[str, Any]]:
    """Every object of the held-out scenes with its evaluation prompts: the tight box
    and one positive point at the object's most interior pixel."""
    out = []
    for si, scene in enumerate(scenes):
        for i in range(1, scene.n_objects + 1):
            mask = scene.mask(i)
            if mask.sum() < min_area_px:
                continue
            out.append(
                {"scene": si, "instance": i, "kind": scene.kinds[i - 1], "mask": mask,
                 "box": mask_box(mask), "point": centre_point(mask)}
            )
    return out


def predict_torch(model: Any, image: np.ndarray, point: np.ndarray | None, box: np.ndarray | None) -> np.ndarray:
    """A torch prediction for a 256 x 256 scene with the runtime's prompt layout and the
    official ONNX mask selection (best multimask output for two prompt tokens or fewer,
    the single-mask output otherwise)."""
    import torch
    import torch.nn.functional as F

    h, w = image.shape[:2]
    with torch.no_grad():
        x = _normalise_padded(image.transpose(2, 0, 1)[None].astype(np.float32), np.array([[h, w]]))
        emb = model.image_encoder(x)
        if box is not None:
            coords, labels = box.reshape(1, 2, 2), np.array([[2, 3]], np.float32)
        else:
            coords = np.concatenate([point.reshape(1, 2), np.zeros((1, 2), np.float32)])[None]
            labels = np.array([[1, -1]], np.float32)
        c, lab = torch.from_numpy(coords.astype(np.float32)), torch.from_numpy(labels)
        sparse = model.prompt_encoder.embed_points(c, lab)
        dense = model.prompt_encoder.no_mask_dense(1)
        masks, iou_pred = model.mask_decoder.predict_masks(emb, model.prompt_encoder.get_dense_pe(), sparse, dense)
        idx = 0 if c.shape[1] > 2 else 1 + int(torch.argmax(iou_pred[0, 1:]))
        up = F.interpolate(masks[:, idx : idx + 1], (IMG, IMG), mode="bilinear", align_corners=False)
    return (up[0, 0, :h, :w] > 0).numpy()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def evaluate(
    predict: Callable[[np.ndarray, np.ndarray | None, np.ndarray | None], np.ndarray],
    scenes: list[ObjectScene],
    *,
    kinds: tuple[str, ...] = ("box", "point"),
) -> dict[str, Any]:
    """Mean held-out IoU per prompt kind. ``predict(image, point_xy or None, box or None)``
    returns a boolean mask of the image's size."""
    results: dict[str, list[float]] = {k: [] for k in kinds}
    per_kind: dict[str, dict[str, list[float]]] = {k: {} for k in kinds}
    for item in held_out_prompts(scenes):
        image = scenes[item["scene"]].image
        for k in kinds:
            pred = predict(image, item["point"] if k == "point" else None, item["box"] if k == "box" else None)
            v = iou(pred, item["mask"])
            results[k].append(v)
            per_kind[k].setdefault(item["kind"], []).append(v)
    return {
        **{f"iou_{k}": float(np.mean(v)) for k, v in results.items()},
        "n_objects": len(results[kinds[0]]),
        "by_object_kind": {
            k: {obj: round(float(np.mean(v)), 4) for obj, v in d.items()} for k, d in per_kind.items()
        },
    }


# ---------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------
def train(
    out_dir: Path,
    *,
    seed: int = 0,
    quick: bool = False,
    progress: ProgressReporter | None = None,
    log: Callable[[str], None] = print,
    stages: tuple[str, ...] = ("sam", "unet", "export"),
    recipe: Recipe | None = None,
    eval_every: int = 500,
) -> dict[str, Any]:
    """Train the tiny SAM and SAM-UNet, export them, and measure held-out IoU through
    ONNX Runtime. Writes into ``out_dir``: ``sam_demo.safetensors``, ``encoder.onnx``,
    ``decoder.onnx``, ``sam_unet_demo.safetensors``, ``unet_encoder.onnx``,
    ``unet_decoder.onnx``, ``metrics.json``; returns the metrics."""
    import torch
    from safetensors.torch import load_file, save_file

    from tessera.plugins.sam.model import Sam, sam_config

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    progress = progress or NullProgress()
    recipe = recipe or (Recipe.quick() if quick else Recipe())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"seed": seed, "quick": quick, "recipe": recipe.__dict__}
    t0 = time.process_time()
    train_scenes = make_scenes(seed, recipe.n_train_scenes)
    val_scenes = make_scenes(seed + 10_000, recipe.n_val_scenes)
    log(f"{len(train_scenes)} training scenes, {len(val_scenes)} held-out, cpu {time.process_time() - t0:.0f}s")

    sam_path = out_dir / "sam_demo.safetensors"
    if "sam" in stages:
        sam = train_sam(train_scenes, recipe, seed, progress, log, val_scenes[:30], eval_every,
                        checkpoint=out_dir / "sam_demo.partial.safetensors", phase_dir=out_dir)
        save_file({k: v.contiguous() for k, v in sam.state_dict().items()}, sam_path,
                  metadata={"config": json.dumps(sam_config("demo").to_dict()), "variant": "demo"})
    sam = Sam(sam_config("demo"))
    sam.load_state_dict(load_file(sam_path))
    sam.eval()
    metrics["cpu_s_sam"] = time.process_time() - t0

    unet_path = out_dir / "sam_unet_demo.safetensors"
    if "unet" in stages:
        unet = train_sam_unet(sam, train_scenes, recipe, seed, progress, log)
        save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, unet_path,
                  metadata={"config": json.dumps(demo_unet_config().to_dict()), "variant": "demo-unet"})
    metrics["cpu_s_total_training"] = time.process_time() - t0

    if "export" in stages:
        from tessera.plugins.sam import export
        from tessera.plugins.sam.sam_unet import SamUNet

        parity = export.export_sam(sam, out_dir / "encoder.onnx", out_dir / "decoder.onnx")
        metrics["onnx_parity_sam"] = parity
        if unet_path.exists():
            unet = SamUNet(demo_unet_config())
            unet.load_state_dict(load_file(unet_path))
            unet.eval()
            metrics["onnx_parity_unet"] = export.export_sam_unet(
                unet, out_dir / "unet_encoder.onnx", out_dir / "unet_decoder.onnx"
            )
        metrics.update(evaluate_onnx(out_dir, val_scenes))
    metrics["cpu_s_total"] = time.process_time() - t0
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    log(json.dumps({k: v for k, v in metrics.items() if k.startswith("iou") or k.startswith("unet_iou")}))
    return metrics


def evaluate_onnx(out_dir: Path, val_scenes: list[ObjectScene]) -> dict[str, Any]:
    """Held-out IoU of the exported graphs through ``tessera.pipelines.prompting``."""
    from tessera.pipelines.prompting import SamRuntime

    out: dict[str, Any] = {}
    rt = SamRuntime.from_onnx(out_dir / "encoder.onnx", out_dir / "decoder.onnx")
    res = evaluate(lambda im, pt, box: _predict_runtime(rt, im, pt, box), val_scenes)
    out.update(res)
    if (out_dir / "unet_encoder.onnx").exists():
        rt_u = SamRuntime.from_onnx(out_dir / "unet_encoder.onnx", out_dir / "unet_decoder.onnx")
        res_u = evaluate(lambda im, pt, box: _predict_runtime(rt_u, im, pt, box), val_scenes, kinds=("box",))
        out["unet_iou_box"] = res_u["iou_box"]
        out["unet_by_object_kind"] = res_u["by_object_kind"]
    return out


def _predict_runtime(rt: Any, image: np.ndarray, point: np.ndarray | None, box: np.ndarray | None) -> np.ndarray:
    emb = rt.encode(image)
    pts = None if point is None else point.reshape(1, 2)
    labels = None if point is None else np.ones(1, np.float32)
    return rt.predict(emb, points_xy=pts, labels=labels, box_xyxy=box).mask


def install(out_dir: Path, plugin_dir: Path | None = None) -> dict[str, str]:
    """Copy a finished run into the plugin's ``weights/`` (ONNX graphs; safetensors split
    by role) and write the files' sha256 into ``manifest.toml``; returns path -> sha256."""
    import re
    import shutil

    from safetensors.torch import load_file, save_file

    from tessera.pipelines.plugin_system.integrity import sha256_file
    from tessera.plugins.sam.export import split_state_dict

    out_dir = Path(out_dir)
    plugin_dir = Path(plugin_dir) if plugin_dir is not None else Path(__file__).parent
    weights = plugin_dir / "weights"
    weights.mkdir(exist_ok=True)
    for name in ("encoder.onnx", "decoder.onnx", "unet_encoder.onnx", "unet_decoder.onnx", "metrics.json"):
        shutil.copyfile(out_dir / name, weights / name)
    for src, prefix in (("sam_demo.safetensors", ""), ("sam_unet_demo.safetensors", "unet_")):
        parts = split_state_dict(load_file(out_dir / src))
        for role, sd in parts.items():
            save_file({k: v.contiguous() for k, v in sorted(sd.items())}, weights / f"{prefix}{role}.safetensors",
                      metadata={"source": src, "role": role})
    manifest = plugin_dir / "manifest.toml"
    text = manifest.read_text(encoding="utf-8")
    sums = {}
    for path in re.findall(r'path = "(weights/[^"]+)"', text):
        digest = sha256_file(plugin_dir / path)
        sums[path] = digest
        text = re.sub(rf'(path = "{re.escape(path)}"\nsha256 = ")[0-9a-f]{{64}}(")', rf"\g<1>{digest}\g<2>", text)
    manifest.write_text(text, encoding="utf-8")
    return sums


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--stages", default="sam,unet,export")
    ap.add_argument("--sam-steps", type=int, default=None)
    ap.add_argument("--unet-steps", type=int, default=None)
    ap.add_argument("--train-scenes", type=int, default=None)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--install", action="store_true",
                    help="only copy a finished run in --out into the plugin's weights/ and manifest")
    ap.add_argument("--extra-phase", action="append", default=None, metavar="STEPS:LR",
                    help="a further SAM phase (repeatable); default: the recipe's")
    args = ap.parse_args(argv)
    if args.install:
        for path, digest in install(args.out).items():
            print(digest, path)
        return
    recipe = Recipe.quick() if args.quick else Recipe()
    changes = {
        "sam_steps": args.sam_steps,
        "unet_steps": args.unet_steps,
        "n_train_scenes": args.train_scenes,
    }
    recipe = replace(recipe, **{k: v for k, v in changes.items() if v is not None})
    if args.extra_phase is not None:
        phases = tuple((int(s), float(lr)) for s, lr in (p.split(":") for p in args.extra_phase))
        recipe = replace(recipe, sam_extra_phases=phases)
    train(args.out, seed=args.seed, quick=args.quick, stages=tuple(args.stages.split(",")),
          recipe=recipe, eval_every=args.eval_every)


if __name__ == "__main__":
    main()
