"""Reproduces the shipped demo weights: a tiny SAM and a tiny SAM-UNet on synthetic objects.

Recipe (one seed gives one set of batches, whatever the device or number of workers):

1. data: ``tessera.pipelines.synthetic.objects`` scenes (H&E-like cells and glands,
   CT-like organs and vessels, ultrasound-like lesions and vessels; low contrast, faint
   boundaries, speckle), 256 x 256 px, 4000 for training (rendered in blocks of 200 from
   their own seeds, so in parallel) and 150 held-out from another seed. Augmentation:
   flips/90° turns, crops to a random aspect ratio, blur by down/up-sampling. Each scene
   reaches the encoder resized exactly as the runtime resizes a region (longest side to
   512 px, PIL bilinear, padded bottom/right); each step's batch is a pure function of
   (seed, phase, step), so ``--workers`` processes make the same batches faster.
2. tiny SAM ("demo" config of ``model.py``: ViT 128-d, 8 blocks, 4 global, 512 px input,
   32 x 32 embeddings, 128 x 128 mask logits; the official decoder at 128-d): per step
   one prompt layout for the batch (box; one positive point; two points; box + point),
   prompts laid out exactly as the ONNX runtime sends them. Loss as SAM: 20 x focal + dice
   on the single-mask output, the same on the best of the three multimask outputs, and
   MSE of the IoU head; masks compared with the truth at 256 x 256 (scene pixels). 2700
   steps of 8 images x 4 objects at 4e-4, 150-step warm-up, cosine decay, AdamW (weight
   decay 0.05), gradient norm clipped at 1.
   Why 512 px: at 256 px input (16 x 16 tokens, 64 x 64 mask logits, 4 scene pixels per
   logit) the held-out box IoU stalled at 0.825 after 4500 steps; thin vessels, 2-6 px
   wide, were the loss (0.57). SAM itself resizes every image to its 1024 px input.
3. tiny SAM-UNet: the tiny SAM's ViT frozen, its prompt encoder and decoder as a start
   (the medical token and its hypernetwork from SAM's single-mask token and MLP);
   a slim ResNet branch (one basic block per stage, 16-128 channels) with adapters, the
   multi-scale fusion and the medical token trained with box prompts (20 x focal + dice),
   600 steps of the same batches' size.
4. export: encoder and decoder ONNX graphs (``export.py``), safetensors, held-out IoU
   through the ONNX Runtime path exactly as users get it.

Run: ``tessera train sam --out DIR [--device cuda] [--workers N]`` or
``python -m tessera.plugins.sam.train --out DIR`` (``--quick`` for a smoke run at 256 px;
``--stages export`` exports and evaluates a finished run); ``--install`` copies the
results into the plugin's ``weights/`` and writes their sha256 into ``manifest.toml``.
The shipped weights were trained with ``--device cuda --workers 14`` on one H200 (314 s
wall for both networks) and exported and evaluated here on the CPU. On a CPU the same
recipe costs about 11 CPU-s a SAM step and 12 a SAM-UNet step (one thread, measured):
~10 CPU-hours. Finished phases are kept in DIR and reused by a rerun with the same recipe. Runs are deterministic on the CPU; on a
GPU two runs differ in the last digits (MODEL_CARD.md gives a rerun's IoU).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.progress import NullProgress, ProgressReporter
from tessera.pipelines.prompting.transforms import preprocess, resize_longest_side
from tessera.pipelines.synthetic.objects import (
    ObjectScene,
    centre_point,
    make_scenes,
    mask_box,
    sample_box,
    sample_points,
)

IMG = 256  # side of the synthetic scenes (px); the encoder input is Recipe.img_size
PROMPT_KINDS = ("box", "point", "points", "box+point")
PROMPT_WEIGHTS = (0.35, 0.35, 0.15, 0.15)


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of one training run."""

    n_train_scenes: int = 4000
    n_val_scenes: int = 150
    # encoder input: scenes are resized to it exactly as the runtime resizes a region
    # (longest side, PIL bilinear), so 512 gives 32 x 32 embeddings and 128 x 128 mask
    # logits for a 256 px scene (2 px per mask pixel instead of 4 at 256)
    img_size: int = 512
    sam_steps: int = 2700
    # further SAM phases after the first: (steps, peak lr), each a fresh AdamW with a short
    # warm-up and a cosine decay (a warm restart), data drawn from its own seeded stream
    sam_extra_phases: tuple[tuple[int, float], ...] = ()
    phase_warmup: int = 50
    unet_steps: int = 600
    batch_images: int = 8
    objects_per_image: int = 4
    loss_px: int = 256  # masks are compared with the (area-averaged) truth at this size
    lr: float = 4e-4
    unet_lr: float = 5e-4
    weight_decay: float = 0.05
    warmup: int = 150
    focal_weight: float = 20.0

    @classmethod
    def quick(cls) -> Recipe:
        return cls(n_train_scenes=24, n_val_scenes=6, sam_steps=6, unet_steps=4, batch_images=2,
                   objects_per_image=2, warmup=2, sam_extra_phases=((3, 1e-4),), img_size=256, loss_px=128)


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


def _encoder_input(img: np.ndarray, hw: tuple[int, int], size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The valid part of a padded scene resized as ``transforms.preprocess`` resizes a
    region, padded bottom/right: uint8 (size, size, 3) and the resized (h, w).
    Normalising happens on the training device (uint8 is a quarter of the bytes to move)."""
    resized = resize_longest_side(img[: hw[0], : hw[1]], size)
    rh, rw = resized.shape[:2]
    out = np.zeros((size, size, 3), np.uint8)
    out[:rh, :rw] = resized
    return out, (rh, rw)


def make_batch(
    rng: np.random.Generator, scenes: list[ObjectScene], recipe: Recipe, kind: str
) -> dict[str, np.ndarray]:
    """Encoder inputs (B, 3, S, S) uint8 (S = ``recipe.img_size``, zero padding) with their
    valid (h, w), prompts in input pixels (B*K, N, 2)/(B*K, N), boolean targets
    (B*K, IMG, IMG) in scene pixels (the scene frame is the input frame scaled by IMG / S)."""
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
        inp, rhw = _encoder_input(img, hw, recipe.img_size)
        images.append(inp)
        valid.append(rhw)
        scale = np.array([rhw[1] / hw[1], rhw[0] / hw[0]], np.float32)
        for i in chosen:
            mask = lab == i
            c, lb = _prompt(rng, kind, mask, lab)
            coords.append(c * scale)
            labels.append(lb)
            targets.append(mask)
    return {
        "images": np.stack(images).transpose(0, 3, 1, 2),
        "coords": np.stack(coords).astype(np.float32),
        "labels": np.stack(labels).astype(np.float32),
        "targets": np.stack(targets),
        "valid_hw": np.array(valid, np.int64),
    }


# Data workers: a batch is a pure function of (seed, stream, step), so any number of
# worker processes (``--workers``) yields the same batches in the same order; the scenes
# reach forked workers through this module global instead of being pickled per task.
_WORKER_SCENES: list[ObjectScene] = []


def _step_batch(job: tuple[int, int, int, Recipe, str | None],
                scenes: list[ObjectScene] | None = None) -> tuple[str, dict[str, np.ndarray]]:
    seed, stream, step, recipe, kind = job
    rng = np.random.default_rng([seed, stream, step])
    kind = kind or str(rng.choice(PROMPT_KINDS, p=PROMPT_WEIGHTS))
    return kind, make_batch(rng, _WORKER_SCENES if scenes is None else scenes, recipe, kind)


def batches(
    scenes: list[ObjectScene], recipe: Recipe, seed: int, stream: int, steps: int, kind: str | None,
    pool: Any | None = None,
) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """The training batches of one phase, in step order; ``kind`` None draws a prompt
    layout per step. ``pool``: a fork-started multiprocessing pool made by
    :func:`share_scenes` with these scenes (batches then come from its workers)."""
    jobs = ((seed, stream, step, recipe, kind) for step in range(steps))
    if pool is None:
        return (_step_batch(job, scenes) for job in jobs)
    return _prefetched(pool, jobs)


def _prefetched(pool: Any, jobs: Iterator[Any], per_worker: int = 4) -> Iterator[Any]:
    """Results of ``jobs`` from ``pool`` in order, at most ``per_worker`` batches per
    worker ahead of the consumer (``Pool.imap`` runs ahead without bound: gigabytes of
    batches when the workers outpace the GPU)."""
    from collections import deque

    pending: deque[Any] = deque()
    depth = per_worker * pool._processes  # the pool's size: multiprocessing exposes it no other way
    for job in jobs:
        pending.append(pool.apply_async(_step_batch, (job,)))
        if len(pending) >= depth:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def share_scenes(scenes: list[ObjectScene], workers: int) -> Any | None:
    """A pool of ``workers`` forked data workers that see ``scenes`` (None for 0 or 1:
    batches are then made in this process). Start it before CUDA is initialised."""
    global _WORKER_SCENES
    if workers <= 1:
        return None
    import multiprocessing as mp

    _WORKER_SCENES = scenes
    return mp.get_context("fork").Pool(workers)


def training_scenes(seed: int, n: int, workers: int = 0, block: int = 200) -> list[ObjectScene]:
    """``n`` training scenes rendered in blocks of ``block`` (block b from seed
    ``20_000 + 1000 * seed + b``), so they can be rendered in parallel; the held-out
    scenes come from seed ``seed + 10_000``."""
    jobs = [(20_000 + 1000 * seed + b, min(block, n - b * block)) for b in range(math.ceil(n / block))]
    if workers <= 1:
        return [s for job in jobs for s in make_scenes(*job)]
    import multiprocessing as mp

    with mp.get_context("fork").Pool(workers) as pool:
        return [s for part in pool.starmap(make_scenes, jobs) for s in part]


# ---------------------------------------------------------------------------------------
# losses and schedule
# ---------------------------------------------------------------------------------------
def _target(masks: Any, px: int) -> Any:
    """(M, IMG, IMG) truth tensor -> (M, 1, px, px) coverage fractions (area average)."""
    import torch.nn.functional as F

    t = masks.unsqueeze(1)
    return F.adaptive_avg_pool2d(t, px) if px != t.shape[-1] else t


def _lr_at(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))


def _normalise_padded(images: Any, valid_hw: np.ndarray) -> Any:
    """uint8-valued (B, 3, S, S) tensor -> normalised on the 0-255 scale with the padding
    outside each image's valid (h, w) zero, as ``transforms.preprocess`` pads after
    normalising."""
    import torch

    x = images.float()
    mean = torch.tensor([123.675, 116.28, 103.53], device=x.device).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375], device=x.device).view(1, 3, 1, 1)
    out = (x - mean) / std
    for b, (h, w) in enumerate(valid_hw):
        out[b, :, int(h):, :] = 0
        out[b, :, :, int(w):] = 0
    return out


def _to_device(batch: dict[str, np.ndarray], device: Any) -> dict[str, Any]:
    """Batch arrays as tensors on ``device`` (images normalised, valid_hw left as numpy)."""
    import torch

    out: dict[str, Any] = {k: torch.from_numpy(v).to(device, non_blocking=True)
                           for k, v in batch.items() if k != "valid_hw"}
    out["x"] = _normalise_padded(out.pop("images"), batch["valid_hw"])
    out["targets"] = out["targets"].float()
    return out


# ---------------------------------------------------------------------------------------
# training loops
# ---------------------------------------------------------------------------------------
def _phase_tag(recipe: Recipe, seed: int, phase: int) -> str:
    phases = [(recipe.sam_steps, recipe.lr), *recipe.sam_extra_phases][: phase + 1]
    return json.dumps({"seed": seed, "phases": phases, "batch": recipe.batch_images,
                       "objects": recipe.objects_per_image, "scenes": recipe.n_train_scenes,
                       "img_size": recipe.img_size, "loss_px": recipe.loss_px})


@dataclass
class Trainer:
    """Where and how batches are made and the networks run: ``device`` (``cpu``,
    ``cuda``), an optional pool of data workers (:func:`share_scenes`), progress and log."""

    device: str = "cpu"
    pool: Any | None = None
    progress: ProgressReporter = field(default_factory=NullProgress)
    log: Callable[[str], None] = print


def train_sam(
    scenes: list[ObjectScene], recipe: Recipe, seed: int, run: Trainer,
    val_scenes: list[ObjectScene] | None = None, eval_every: int = 500,
    checkpoint: Path | None = None, phase_dir: Path | None = None,
) -> Any:
    """All SAM phases; after each, the weights go to ``phase_dir/sam_demo.phase<i>.safetensors``
    (tagged with the recipe), and a later run with the same recipe starts after the last
    finished phase instead of redoing it (each phase is deterministic on the CPU)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from tessera.plugins.sam.model import build_sam

    torch.manual_seed(seed)
    model = build_sam("demo", img_size=recipe.img_size).to(run.device).train()
    phases = [(recipe.sam_steps, recipe.lr, recipe.warmup), *((s, lr, recipe.phase_warmup)
                                                              for s, lr in recipe.sam_extra_phases)]
    for i, (steps, lr, warmup) in enumerate(phases):
        saved = None if phase_dir is None else phase_dir / f"sam_demo.phase{i}.safetensors"
        if saved is not None and saved.exists():
            with safe_open(str(saved), "pt") as fh:
                tag = (fh.metadata() or {}).get("recipe")
            if tag == _phase_tag(recipe, seed, i):
                model.load_state_dict(load_file(saved, device=str(run.device)))
                run.log(f"sam phase {i}: reusing {saved.name}")
                continue
        stream = batches(scenes, recipe, seed, 1 + i, steps, None, run.pool)
        _train_sam_phase(model, stream, recipe, steps, lr, warmup, run, val_scenes, eval_every, checkpoint, phase=i)
        if saved is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, saved,
                      metadata={"recipe": _phase_tag(recipe, seed, i)})
    return model.eval()


def _train_sam_phase(
    model: Any, stream: Iterator[tuple[str, dict[str, np.ndarray]]], recipe: Recipe, steps: int, lr: float,
    warmup: int, run: Trainer, val_scenes: list[ObjectScene] | None, eval_every: int, checkpoint: Path | None,
    phase: int,
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
    run.progress.start(steps, f"training tiny SAM (phase {phase + 1})")
    t0, w0 = time.process_time(), time.perf_counter()
    running = 0.0
    for step, (_kind, batch) in enumerate(stream):
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, lr, warmup)
        b = _to_device(batch, run.device)
        emb = model.image_encoder(b["x"]).repeat_interleave(recipe.objects_per_image, 0)
        target = _target(b["targets"], recipe.loss_px)
        sparse = model.prompt_encoder.embed_points(b["coords"], b["labels"])
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
        run.progress.advance(1)
        if step % 50 == 0 or step == steps - 1:
            value = float(loss.detach())
            running = 0.9 * running + 0.1 * value if step else value
            run.log(f"sam phase {phase} step {step} loss {running:.4f} cpu {time.process_time() - t0:.0f}s "
                    f"wall {time.perf_counter() - w0:.0f}s")
        if val_scenes and eval_every and ((step + 1) % eval_every == 0 or step == steps - 1):
            model.eval()
            res = evaluate(lambda im, pt, box: predict_torch(model, im, pt, box), val_scenes)
            run.log(f"sam phase {phase} step {step + 1} held-out iou box {res['iou_box']:.4f} "
                    f"point {res['iou_point']:.4f}")
            if checkpoint is not None:
                from safetensors.torch import save_file

                save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, checkpoint)
            model.train()
    run.progress.close()


def train_sam_unet(sam: Any, scenes: list[ObjectScene], recipe: Recipe, seed: int, run: Trainer) -> Any:
    import torch
    import torch.nn.functional as F

    from tessera.plugins.sam.sam_unet import (
        SamUNet,
        mask_losses,
        sam_unet_state_from_sam,
    )

    torch.manual_seed(seed + 7)
    cfg = demo_unet_config(recipe.img_size)
    model = SamUNet(cfg)
    model.load_state_dict(sam_unet_state_from_sam({k: v.cpu() for k, v in sam.state_dict().items()}, model))
    with torch.no_grad():  # the medical token and its hypernetwork start as SAM's single-mask ones
        model.mask_decoder.med_token.weight.copy_(model.mask_decoder.sam_mask_decoder.mask_tokens.weight[:1])
        model.mask_decoder.hf_mlp.load_state_dict(
            model.mask_decoder.sam_mask_decoder.output_hypernetworks_mlps[0].state_dict()
        )
    model.freeze_vit()
    model.to(run.device).train()
    model.vit.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe.unet_lr, weight_decay=recipe.weight_decay)
    run.progress.start(recipe.unet_steps, "training tiny SAM-UNet")
    t0, w0 = time.process_time(), time.perf_counter()
    running = 0.0
    k = recipe.objects_per_image
    for step, (_kind, batch) in enumerate(batches(scenes, recipe, seed, 100, recipe.unet_steps, "box", run.pool)):
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, recipe.unet_steps, recipe.unet_lr, recipe.warmup)
        b = _to_device(batch, run.device)
        emb, multi = model.encode(b["x"])
        emb, multi = emb.repeat_interleave(k, 0), multi.repeat_interleave(k, 0)
        target = _target(b["targets"], recipe.loss_px)
        sparse = model.prompts.embed_points(b["coords"], b["labels"])
        dense = model.prompts.no_mask_dense(sparse.shape[0])
        logits = model.mask_decoder(emb, model.prompts.get_dense_pe(), sparse, dense, multi)
        up = F.interpolate(logits, (recipe.loss_px, recipe.loss_px), mode="bilinear", align_corners=False)
        loss = mask_losses(up, target, cfg.focal_weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        run.progress.advance(1)
        if step % 50 == 0 or step == recipe.unet_steps - 1:
            value = float(loss.detach())
            running = 0.9 * running + 0.1 * value if step else value
            run.log(f"unet step {step} loss {running:.4f} cpu {time.process_time() - t0:.0f}s "
                    f"wall {time.perf_counter() - w0:.0f}s")
    run.progress.close()
    return model.eval()


def demo_unet_config(img_size: int | None = None) -> Any:
    """The tiny SAM-UNet: the demo SAM plus a slim ResNet branch (at ``img_size`` input)."""
    from tessera.plugins.sam.sam_unet import UNET_CONFIGS

    cfg = UNET_CONFIGS["demo"]
    return cfg if img_size is None else replace(cfg, sam=replace(cfg.sam, img_size=img_size))


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
    """A torch prediction for a scene through the runtime's preprocessing and prompt
    layout and the official ONNX mask selection (best multimask output for two prompt
    tokens or fewer, the single-mask output otherwise)."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    size = model.config.img_size
    h, w = image.shape[:2]
    x, tf = preprocess(image, size)
    with torch.no_grad():
        emb = model.image_encoder(torch.from_numpy(x).to(device))
        if box is not None:
            coords, labels = box.reshape(1, 2, 2), np.array([[2, 3]], np.float32)
        else:
            coords = np.concatenate([point.reshape(1, 2), np.zeros((1, 2), np.float32)])[None]
            labels = np.array([[1, -1]], np.float32)
        coords = tf.to_input(coords)  # the (0, 0) padding point stays at (0, 0)
        c, lab = torch.from_numpy(coords).to(device), torch.from_numpy(labels).to(device)
        sparse = model.prompt_encoder.embed_points(c, lab)
        dense = model.prompt_encoder.no_mask_dense(1)
        masks, iou_pred = model.mask_decoder.predict_masks(emb, model.prompt_encoder.get_dense_pe(), sparse, dense)
        idx = 0 if c.shape[1] > 2 else 1 + int(torch.argmax(iou_pred[0, 1:]))
        up = F.interpolate(masks[:, idx : idx + 1], (size, size), mode="bilinear", align_corners=False)
        rh, rw = tf.resized_hw
        up = F.interpolate(up[..., :rh, :rw], (h, w), mode="bilinear", align_corners=False)
    return (up[0, 0] > 0).cpu().numpy()


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
    device: str = "cpu",
    workers: int = 0,
) -> dict[str, Any]:
    """Train the tiny SAM and SAM-UNet, export them, and measure held-out IoU through
    ONNX Runtime. Writes into ``out_dir``: ``sam_demo.safetensors``, ``encoder.onnx``,
    ``decoder.onnx``, ``sam_unet_demo.safetensors``, ``unet_encoder.onnx``,
    ``unet_decoder.onnx``, ``metrics.json``; returns the metrics.

    ``device`` ``cuda`` trains on a GPU (same recipe and batches; not bit-identical to a
    CPU run); ``workers`` > 1 makes batches in that many forked processes (same batches)."""
    import torch
    from safetensors.torch import load_file, save_file

    from tessera.pipelines.engines.devices import torch_device
    from tessera.plugins.sam.model import Sam, sam_config

    device = str(torch_device(device))  # a clear error for a GPU that is not there
    if device == "cpu":
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
    else:  # TF32 matmuls: the networks are small, and the held-out IoU is measured after export
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    progress = progress or NullProgress()
    recipe = recipe or (Recipe.quick() if quick else Recipe())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"seed": seed, "quick": quick, "recipe": recipe.__dict__, "device": device}
    t0, w0 = time.process_time(), time.perf_counter()
    training = bool({"sam", "unet"} & set(stages))
    if not training and (out_dir / "metrics.json").exists():  # export only: keep the training run's record
        before = json.loads((out_dir / "metrics.json").read_text())
        before = before.get("metrics", before) if "plugin" in before else before  # `tessera train`'s record
        metrics = {**metrics, **before}
    train_scenes = training_scenes(seed, recipe.n_train_scenes, workers) if training else []
    val_scenes = make_scenes(seed + 10_000, recipe.n_val_scenes)
    log(f"{len(train_scenes)} training scenes, {len(val_scenes)} held-out, cpu {time.process_time() - t0:.0f}s "
        f"wall {time.perf_counter() - w0:.0f}s")
    pool = share_scenes(train_scenes, workers)  # forked before CUDA starts
    if device != "cpu":
        metrics["device_name"] = torch.cuda.get_device_name(torch.device(device))
    run = Trainer(device=device, pool=pool, progress=progress, log=log)
    sam_cfg = sam_config("demo", img_size=recipe.img_size)
    try:
        sam_path = out_dir / "sam_demo.safetensors"
        if "sam" in stages:
            sam = train_sam(train_scenes, recipe, seed, run, val_scenes[:30], eval_every,
                            checkpoint=out_dir / "sam_demo.partial.safetensors", phase_dir=out_dir)
            save_file({k: v.detach().cpu().contiguous() for k, v in sam.state_dict().items()}, sam_path,
                      metadata={"config": json.dumps(sam_cfg.to_dict()), "variant": "demo"})
        sam = Sam(sam_cfg)
        sam.load_state_dict(load_file(sam_path))
        sam.eval()
        if training:
            metrics["cpu_s_sam"] = time.process_time() - t0
            metrics["wall_s_sam"] = time.perf_counter() - w0

        unet_cfg = demo_unet_config(recipe.img_size)
        unet_path = out_dir / "sam_unet_demo.safetensors"
        if "unet" in stages:
            unet = train_sam_unet(sam, train_scenes, recipe, seed, run)
            save_file({k: v.detach().cpu().contiguous() for k, v in unet.state_dict().items()}, unet_path,
                      metadata={"config": json.dumps(unet_cfg.to_dict()), "variant": "demo-unet"})
    finally:
        if pool is not None:
            pool.terminate()
    if training:
        metrics["cpu_s_total_training"] = time.process_time() - t0
        metrics["wall_s_total_training"] = time.perf_counter() - w0

    if "export" in stages:
        from tessera.plugins.sam import export
        from tessera.plugins.sam.sam_unet import SamUNet

        parity = export.export_sam(sam, out_dir / "encoder.onnx", out_dir / "decoder.onnx")
        metrics["onnx_parity_sam"] = parity
        if unet_path.exists():
            unet = SamUNet(unet_cfg)
            unet.load_state_dict(load_file(unet_path))
            unet.eval()
            metrics["onnx_parity_unet"] = export.export_sam_unet(
                unet, out_dir / "unet_encoder.onnx", out_dir / "unet_decoder.onnx"
            )
        metrics.update(evaluate_onnx(out_dir, val_scenes))
    metrics["cpu_s_total" if training else "cpu_s_export_and_evaluation"] = time.process_time() - t0
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    log(json.dumps({k: v for k, v in metrics.items() if k.startswith("iou") or k.startswith("unet_iou")}))
    return metrics


def evaluate_onnx(out_dir: Path, val_scenes: list[ObjectScene]) -> dict[str, Any]:
    """Held-out IoU of the exported graphs through ``tessera.pipelines.prompting``."""
    from tessera.pipelines.prompting import SamRuntime

    out: dict[str, Any] = {}
    rt = SamRuntime.from_onnx(out_dir / "encoder.onnx", out_dir / "decoder.onnx")
    encode = _last_encoding(rt.encode)
    res = evaluate(lambda im, pt, box: _predict_runtime(rt, encode(im), pt, box), val_scenes)
    out.update(res)
    if (out_dir / "unet_encoder.onnx").exists():
        rt_u = SamRuntime.from_onnx(out_dir / "unet_encoder.onnx", out_dir / "unet_decoder.onnx")
        encode_u = _last_encoding(rt_u.encode)
        res_u = evaluate(lambda im, pt, box: _predict_runtime(rt_u, encode_u(im), pt, box), val_scenes,
                         kinds=("box",))
        out["unet_iou_box"] = res_u["iou_box"]
        out["unet_by_object_kind"] = res_u["by_object_kind"]
    return out


def _last_encoding(encode: Callable[[np.ndarray], Any]) -> Callable[[np.ndarray], Any]:
    """``encode`` remembering the last image's result: :func:`evaluate` prompts every
    object of a scene in turn, and the encoder should run once per scene, as in the app."""
    last: dict[int, Any] = {}

    def cached(image: np.ndarray) -> Any:
        if id(image) not in last:
            last.clear()
            last[id(image)] = encode(image)
        return last[id(image)]

    return cached


def _predict_runtime(rt: Any, emb: Any, point: np.ndarray | None, box: np.ndarray | None) -> np.ndarray:
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
    ap.add_argument("--eval-every", type=int, default=500, help="held-out check every N steps (0: none)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--workers", type=int, default=0, help="processes making batches (same batches)")
    ap.add_argument("--batch-images", type=int, default=None)
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
        "batch_images": args.batch_images,
    }
    recipe = replace(recipe, **{k: v for k, v in changes.items() if v is not None})
    if args.extra_phase is not None:
        phases = tuple((int(s), float(lr)) for s, lr in (p.split(":") for p in args.extra_phase))
        recipe = replace(recipe, sam_extra_phases=phases)
    train(args.out, seed=args.seed, quick=args.quick, stages=tuple(args.stages.split(",")),
          recipe=recipe, eval_every=args.eval_every, device=args.device, workers=args.workers)


if __name__ == "__main__":
    main()
