"""Reproducible recipe for the shipped demo weights (torch + timm; the ``train`` extra).

``train(out_dir, *, seed=0, quick=False, progress=None) -> metrics`` is what
``tessera train breast-vit`` calls. Deterministic on CPU for a seed (torch seeded,
deterministic algorithms, a fixed thread count; all data from stateless generators).

1. Data (``pipelines/synthetic``): ``N_PATIENTS`` synthetic patients, the eight BreakHis
   subtypes in turn, each with their own tissue and stain; split by patient (25 % held
   out, stratified by subtype). Tiles are what the slide runner feeds the model:
   ``TILE_PX`` pixels at ``MPP`` µm/px (the manifest's ``input``), the 100x BreakHis-like
   magnification. Patient tiles (BreakHis subtypes and normal breast) come from fields
   rendered at that pixel size with JPEG artefacts of a random quality; slide tiles come
   from synthetic slides (normal breast with a tumour; glass, tissue edges and tumour
   borders), rendered at 0.25 µm/px and reduced 4x exactly as the SVS pyramid is, on the
   runner's tile grid and on a grid shifted by half a tile.
2. Model: the ``demo`` ViT (``model.py``), two heads. Benign/malignant: cross-entropy
   against a soft target, the tumour share of the tile's tissue (1 or 0 for patient
   tiles), label smoothing 0.05, so a tile is called malignant when most of its tissue
   is tumour, the definition the slide heatmap is scored with. Subtypes: cross-entropy,
   weight 0.5, only for tiles that have one. AdamW (lr 6e-4, weight decay 0.05), linear
   warm-up then cosine decay, batch 64, random flips and 90-degree rotations.
3. Held-out evaluation: tiles of held-out patients (accuracy, confusion matrices for
   both heads), BreakHis-like 700 x 460 patches at 100x of held-out patients rendered
   directly (no pyramid), classified by the mean of their 24 tiles, and tiles of
   held-out slides.
4. Export: ``breast_vit_demo.safetensors`` and ``breast_vit_demo.onnx`` (the PLUGINS
   export helper: dynamic batch, ONNX Runtime parity), ``metrics.json``.

``publish(run_dir)`` copies a run's weights into ``weights/`` and writes their sha256
into ``manifest.toml``.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.plugin_system.integrity import sha256_file
from tessera.pipelines.progress import NullProgress, ProgressReporter

PLUGIN_DIR = Path(__file__).resolve().parent
ONNX_NAME = "breast_vit_demo.onnx"
SAFETENSORS_NAME = "breast_vit_demo.safetensors"
SIZE = "demo"
THREADS = 2  # fixed: CPU matmul results depend on the thread count


@dataclass(frozen=True)
class Recipe:
    """Every number of the recipe (quick runs shrink the counts, not the method)."""

    n_patients: int = 40  # BreakHis-like patients, 5 per subtype
    n_normal: int = 8  # normal-breast "patients" (benign, no subtype)
    held_out_fraction: float = 0.25
    fields_per_patient: int = 4
    field_tiles: int = 4  # a field is field_tiles x field_tiles tiles
    n_train_slides: int = 12
    n_held_slides: int = 2
    slide_size_px: int = 6144  # at 0.25 µm/px: 1.5 mm slides
    slide_offsets_px: tuple[int, ...] = (0, 56)  # training grids (target px): aligned, half-shifted
    held_patches_per_patient: int = 2
    epochs: int = 5
    batch: int = 64
    lr: float = 6e-4
    weight_decay: float = 0.05
    warmup_steps: int = 60
    label_smoothing: float = 0.05
    subtype_weight: float = 0.5
    max_steps: int | None = None

    @classmethod
    def quick(cls) -> Recipe:
        return cls(n_patients=16, n_normal=2, fields_per_patient=1, field_tiles=1,
                   n_train_slides=1, n_held_slides=1, slide_size_px=1024,
                   held_patches_per_patient=1, epochs=1, batch=8, warmup_steps=2, max_steps=3)


# ---- data ----------------------------------------------------------------------------------


@dataclass
class TileSet:
    """Tiles (uint8 [N, H, W, 3]) with labels: malignant (0/1: at least half of the
    tile's tissue is tumour), target (the tumour share of the tile's tissue, the soft
    training target), subtype (-1: none), group (patient or slide id)."""

    tiles: np.ndarray
    malignant: np.ndarray
    target: np.ndarray
    subtype: np.ndarray
    group: np.ndarray

    @classmethod
    def concat(cls, parts: list[TileSet]) -> TileSet:
        parts = [p for p in parts if len(p.tiles)]
        return cls(*[np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("tiles", "malignant", "target", "subtype", "group")])

    def __len__(self) -> int:
        return int(self.tiles.shape[0])


def _split_field(img: np.ndarray, tile: int) -> np.ndarray:
    n = img.shape[0] // tile
    m = img.shape[1] // tile
    return img[: n * tile, : m * tile].reshape(n, tile, m, tile, 3).transpose(0, 2, 1, 3, 4).reshape(
        -1, tile, tile, 3)


def patient_tiles(patient: Any, recipe: Recipe, *, tile_px: int, mpp: float,
                  group: int) -> TileSet:
    """Tiles from ``fields_per_patient`` random fields of one synthetic patient, rendered
    at the model's µm/px with JPEG artefacts of a random quality (75-95)."""
    from tessera.pipelines.synthetic.breakhis import render_view
    from tessera.pipelines.synthetic.histology import BREAKHIS_SUBTYPES, sub_seed

    scene = patient.scene()
    subtype = BREAKHIS_SUBTYPES.index(patient.subtype) if patient.subtype in BREAKHIS_SUBTYPES else -1
    rng = np.random.default_rng(sub_seed(patient.seed, "train-fields"))
    side = recipe.field_tiles * tile_px
    tiles = []
    for _ in range(recipe.fields_per_patient):
        centre = (float(rng.uniform(500, 19_500)), float(rng.uniform(500, 19_500)))
        quality = int(rng.integers(75, 96))
        img = render_view(scene, centre, mpp, (side, side), jpeg_quality=quality)
        tiles.append(_split_field(img, tile_px))
    t = np.concatenate(tiles)
    n = len(t)
    return TileSet(t, np.full(n, int(patient.malignant), np.int64),
                   np.full(n, float(patient.malignant), np.float32),
                   np.full(n, subtype, np.int64), np.full(n, group, np.int64))


def slide_tiles(seed: int, recipe: Recipe, *, tile_px: int, mpp: float, group: int,
                offsets_px: tuple[int, ...] = (0,), min_tissue: float = 0.1) -> TileSet:
    """Tiles of a synthetic slide on the runner's grid (target-frame multiples of the
    tile), and on grids shifted by ``offsets_px`` (more tumour-border cases), read like
    level 1 of its SVS: rendered at 0.25 µm/px, 4x area-averaged, JPEG quality 90."""
    from tessera.pipelines.synthetic.breakhis import jpeg_roundtrip
    from tessera.pipelines.synthetic.histology import BREAKHIS_SUBTYPES, LABEL_GLASS, LABEL_TUMOUR
    from tessera.pipelines.synthetic.slide import slide_scene
    from tessera.pipelines.writers.tiff_pyramid import area_reduce

    l0_mpp = 0.25
    factor = round(mpp / l0_mpp)
    size = recipe.slide_size_px
    scene = slide_scene((size, size), seed)
    sub = BREAKHIS_SUBTYPES.index(scene.layout.malignant.name)
    n_cells = math.ceil(size / factor / tile_px)
    l0_tile = tile_px * factor
    parts = []
    for off in offsets_px:
        # tissue and tumour shares from the truth on an 8x8 sub-grid of each tile
        k = 8
        c = (off + (np.arange(n_cells * k) + 0.5) * (tile_px / k)) * mpp
        lab = scene.labels(c[:, None], c[None, :]).reshape(n_cells, k, n_cells, k)
        tissue = (lab != LABEL_GLASS).mean(axis=(1, 3))
        tumour = (lab == LABEL_TUMOUR).mean(axis=(1, 3))
        rows, cols = np.nonzero(tissue >= min_tissue)
        tiles = np.empty((len(rows), tile_px, tile_px, 3), np.uint8)
        o = off * factor
        for i, (r, cc) in enumerate(zip(rows, cols, strict=True)):
            fine = scene.render(int(r) * l0_tile + o, int(cc) * l0_tile + o, l0_tile, l0_tile,
                                mpp=l0_mpp)
            tiles[i] = jpeg_roundtrip(area_reduce(fine, factor), 90)
        share = (tumour[rows, cols] / np.maximum(tissue[rows, cols], 1e-6)).astype(np.float32)
        mal = (share >= 0.5).astype(np.int64)
        parts.append(TileSet(tiles, mal, share, np.where(mal == 1, sub, -1).astype(np.int64),
                             np.full(len(rows), group, np.int64)))
    return TileSet.concat(parts)


def held_out_patches(patient: Any, recipe: Recipe, *, tile_px: int) -> list[np.ndarray]:
    """BreakHis-like 700 x 460 patches at 100x (1 µm/px), rendered directly (no pyramid),
    each cut into its 24 (4 x 6) whole tiles."""
    from tessera.pipelines.synthetic.breakhis import PATCH_SIZE_YX, magnification_mpp, render_view
    from tessera.pipelines.synthetic.histology import sub_seed

    rng = np.random.default_rng(sub_seed(patient.seed, "held-out-patches"))
    out = []
    for _ in range(recipe.held_patches_per_patient):
        centre = (float(rng.uniform(500, 19_500)), float(rng.uniform(500, 19_500)))
        img = render_view(patient.scene(), centre, magnification_mpp(100), PATCH_SIZE_YX)
        oy, ox = (img.shape[0] % tile_px) // 2, (img.shape[1] % tile_px) // 2
        out.append(_split_field(img[oy:, ox:], tile_px))
    return out


# ---- training --------------------------------------------------------------------------------


def _augment(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random flips and 90-degree rotations (tissue has no up or left)."""
    out = batch.copy()
    for i in range(len(out)):
        t = out[i]
        if rng.random() < 0.5:
            t = t[:, ::-1]
        out[i] = np.rot90(t, int(rng.integers(4)))
    return out


def _to_tensor(tiles: np.ndarray, manifest: Any):
    """uint8 [N, H, W, 3] -> float32 NCHW with the manifest's scale/mean/std (the same
    numbers the processing hook uses at inference)."""
    import torch

    spec = manifest.input
    x = torch.from_numpy(np.ascontiguousarray(tiles)).float().permute(0, 3, 1, 2)
    x = x * spec.scale
    mean = torch.tensor(spec.mean or [0.0] * 3).view(1, 3, 1, 1)
    std = torch.tensor(spec.std or [1.0] * 3).view(1, 3, 1, 1)
    return (x - mean) / std


def predict(model: Any, tiles: np.ndarray, manifest: Any, batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(P(malignant) [N], subtype probabilities [N, 8]) from the torch model."""
    import torch

    ps, ss = [], []
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(tiles), batch):
            logits, sub = model(_to_tensor(tiles[i : i + batch], manifest))
            ps.append(torch.softmax(logits, 1)[:, 1].numpy())
            ss.append(torch.softmax(sub, 1).numpy())
    if not ps:
        return np.zeros(0, np.float32), np.zeros((0, 8), np.float32)
    return np.concatenate(ps), np.concatenate(ss)


def confusion(truth: np.ndarray, pred: np.ndarray, k: int) -> list[list[int]]:
    """k x k counts, rows = truth, columns = prediction."""
    m = np.zeros((k, k), np.int64)
    np.add.at(m, (truth, pred), 1)
    return m.tolist()


@dataclass
class Data:
    """Everything the recipe trains and evaluates on."""

    train: TileSet
    held_tiles: TileSet  # tiles of held-out patients (BreakHis subtypes and normal)
    held_slides: TileSet | None  # tiles of held-out slides
    held_patches: list[tuple[Any, np.ndarray]]  # (patient, its 24 tiles) per 700x460 patch
    train_patients: list[Any]
    held_patients: list[Any]


def make_data(recipe: Recipe, seed: int, *, tile_px: int, mpp: float,
              progress: ProgressReporter) -> Data:
    """Render the training and held-out tiles (see the module docstring), split by
    patient and by slide."""
    from tessera.pipelines.synthetic.breakhis import make_patients, split_by_patient
    from tessera.pipelines.synthetic.histology import sub_seed

    patients = make_patients(recipe.n_patients, sub_seed(seed, "breast-vit-patients"))
    normal = make_patients(recipe.n_normal, sub_seed(seed, "breast-vit-normal"),
                           subtypes=("normal",))
    train_p, held_p = split_by_patient(patients, recipe.held_out_fraction, seed)
    train_n, held_n = split_by_patient(normal, recipe.held_out_fraction, seed)
    slide_seeds = [sub_seed(seed, "breast-vit-slide", i) & 0x7FFFFFFF
                   for i in range(recipe.n_train_slides + recipe.n_held_slides)]
    progress.start(len(patients) + len(normal) + len(slide_seeds) + len(held_p),
                   "rendering synthetic tiles")
    train_parts, held_parts = [], []
    for i, p in enumerate(patients + normal):
        ts = patient_tiles(p, recipe, tile_px=tile_px, mpp=mpp, group=i)
        (held_parts if (p in held_p or p in held_n) else train_parts).append(ts)
        progress.advance()
    slide_train, slide_held = [], []
    for j, s in enumerate(slide_seeds):
        is_train = j < recipe.n_train_slides
        ts = slide_tiles(s, recipe, tile_px=tile_px, mpp=mpp, group=1000 + j,
                         offsets_px=recipe.slide_offsets_px if is_train else (0,))
        (slide_train if is_train else slide_held).append(ts)
        progress.advance()
    patches = []
    for p in held_p:
        patches += [(p, tiles) for tiles in held_out_patches(p, recipe, tile_px=tile_px)]
        progress.advance()
    progress.close()
    return Data(
        train=TileSet.concat(train_parts + slide_train),
        held_tiles=TileSet.concat(held_parts),
        held_slides=TileSet.concat(slide_held) if slide_held else None,
        held_patches=patches,
        train_patients=train_p + train_n,
        held_patients=held_p + held_n,
    )


def fit(train_set: TileSet, recipe: Recipe, seed: int, manifest: Any,
        progress: ProgressReporter) -> tuple[Any, list[float]]:
    """Train the demo ViT on ``train_set``; returns (model in eval mode, losses per step)."""
    import torch

    from tessera.pipelines.synthetic.histology import BREAKHIS_SUBTYPES, sub_seed
    from tessera.plugins.breast_vit.model import build_model

    torch.manual_seed(seed)
    model = build_model(SIZE, num_classes=2, num_subtypes=len(BREAKHIS_SUBTYPES))
    is_decayed = {n: p.ndim > 1 and "pos_embed" not in n for n, p in model.named_parameters()}
    params = dict(model.named_parameters())
    opt = torch.optim.AdamW(
        [{"params": [params[n] for n, d in is_decayed.items() if d],
          "weight_decay": recipe.weight_decay},
         {"params": [params[n] for n, d in is_decayed.items() if not d], "weight_decay": 0.0}],
        lr=recipe.lr,
    )
    steps_per_epoch = max(1, len(train_set) // recipe.batch)
    total = steps_per_epoch * recipe.epochs
    if recipe.max_steps is not None:
        total = min(total, recipe.max_steps)

    def lr_at(step: int) -> float:
        if step < recipe.warmup_steps:
            return recipe.lr * (step + 1) / recipe.warmup_steps
        t = (step - recipe.warmup_steps) / max(1, total - recipe.warmup_steps)
        return recipe.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    rng = np.random.default_rng(sub_seed(seed, "breast-vit-order"))
    eps = recipe.label_smoothing
    ce_sub = torch.nn.CrossEntropyLoss(ignore_index=-1, label_smoothing=recipe.label_smoothing)
    progress.start(total, "training the demo ViT")
    step, losses = 0, []
    model.train()
    while step < total:
        order = rng.permutation(len(train_set))
        for b in range(steps_per_epoch):
            if step >= total:
                break
            idx = np.sort(order[b * recipe.batch : (b + 1) * recipe.batch])
            x = _to_tensor(_augment(train_set.tiles[idx], rng), manifest)
            t = torch.from_numpy(train_set.target[idx]) * (1 - eps) + eps / 2  # soft, smoothed
            ys = torch.from_numpy(train_set.subtype[idx])
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            logits, sub = model(x)
            logp = torch.log_softmax(logits, dim=1)
            loss = -(t * logp[:, 1] + (1 - t) * logp[:, 0]).mean()
            if bool((ys >= 0).any()):
                loss = loss + recipe.subtype_weight * ce_sub(sub, ys)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
            progress.advance()
    progress.close()
    return model.eval(), losses


def evaluate(model: Any, data: Data, manifest: Any) -> dict[str, Any]:
    """Held-out metrics: tiles of held-out patients, their 700 x 460 patches (mean of
    the tile probabilities), tiles of held-out slides (accuracy, Dice)."""
    from tessera.pipelines.synthetic.histology import BREAKHIS_SUBTYPES

    metrics: dict[str, Any] = {}
    held = data.held_tiles
    p_tiles, s_tiles = predict(model, held.tiles, manifest)
    pred = (p_tiles >= 0.5).astype(np.int64)
    metrics["held_out_tile_accuracy"] = float(np.mean(pred == held.malignant))
    metrics["held_out_tile_confusion"] = confusion(held.malignant, pred, 2)
    has_sub = held.subtype >= 0
    sub_pred = s_tiles.argmax(1)
    metrics["held_out_subtype_accuracy"] = float(np.mean(sub_pred[has_sub] == held.subtype[has_sub]))
    metrics["held_out_subtype_confusion"] = confusion(held.subtype[has_sub], sub_pred[has_sub], 8)
    truth, guess, sub_truth, sub_guess = [], [], [], []
    for p, tiles in data.held_patches:
        pm, sm = predict(model, tiles, manifest)
        truth.append(int(p.malignant))
        guess.append(int(pm.mean() >= 0.5))
        sub_truth.append(BREAKHIS_SUBTYPES.index(p.subtype))
        sub_guess.append(int(sm.mean(0).argmax()))
    if truth:
        t, g = np.array(truth), np.array(guess)
        metrics["held_out_patch_accuracy"] = float(np.mean(t == g))
        metrics["held_out_patch_confusion"] = confusion(t, g, 2)
        metrics["held_out_patch_subtype_accuracy"] = float(np.mean(np.array(sub_truth) == sub_guess))
    if data.held_slides is not None and len(data.held_slides):
        hs = data.held_slides
        ps, _ = predict(model, hs.tiles, manifest)
        sp = (ps >= 0.5).astype(np.int64)
        tp = int(np.sum((sp == 1) & (hs.malignant == 1)))
        metrics["held_out_slide_tile_accuracy"] = float(np.mean(sp == hs.malignant))
        metrics["held_out_slide_tile_dice"] = 2 * tp / max(1, int(sp.sum() + hs.malignant.sum()))
        metrics["held_out_slide_tile_confusion"] = confusion(hs.malignant, sp, 2)
    return metrics


def train(
    out_dir: str | Path,
    *,
    seed: int = 0,
    quick: bool = False,
    progress: ProgressReporter | None = None,
    recipe: Recipe | None = None,
) -> dict[str, Any]:
    """Generate the data, train, evaluate on held-out patients and slides, export.

    Returns the metrics (also in ``out_dir/metrics.json``); writes the safetensors and
    ONNX files into ``out_dir``.
    """
    import torch
    from safetensors.torch import save_file

    from tessera.pipelines.engines.export import export_onnx
    from tessera.pipelines.plugin_system.manifest import load_manifest
    from tessera.pipelines.synthetic.histology import BREAKHIS_SUBTYPES
    from tessera.plugins.breast_vit.model import size_config

    recipe = recipe or (Recipe.quick() if quick else Recipe())
    progress = progress or NullProgress()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(PLUGIN_DIR / "manifest.toml")
    tile_px = int(manifest.input.size_px[-1])
    mpp = float(manifest.input.target_mpp)
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    threads_before = torch.get_num_threads()
    det_before = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    try:
        data = make_data(recipe, seed, tile_px=tile_px, mpp=mpp, progress=progress)
        t_data = time.process_time() - t_cpu
        model, losses = fit(data.train, recipe, seed, manifest, progress)
        t_fit = time.process_time() - t_cpu - t_data
        metrics = evaluate(model, data, manifest)
        metrics.update({
            "train_tiles": len(data.train),
            "train_malignant_fraction": float(data.train.malignant.mean()),
            "held_out_tiles": len(data.held_tiles),
            "held_out_patches": len(data.held_patches),
            "held_out_slide_tiles": len(data.held_slides) if data.held_slides is not None else 0,
            "train_patients": [p.id for p in data.train_patients],
            "held_out_patients": [p.id for p in data.held_patients],
            "steps": len(losses),
            "final_loss": float(np.mean(losses[-20:])) if losses else None,
            "cpu_seconds_data": round(t_data, 1),
            "cpu_seconds_train": round(t_fit, 1),
            "threads": THREADS,
            "recipe": asdict(recipe),
            "architecture": {"size": SIZE, **size_config(SIZE)},
            "subtypes": list(BREAKHIS_SUBTYPES),
        })
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(out_dir / SAFETENSORS_NAME), metadata={"format": "pt", "size": SIZE})
        example = {"input": _to_tensor(data.held_tiles.tiles[:2], manifest)}
        report = export_onnx(model, example, out_dir / ONNX_NAME,
                             output_names=["logits", "subtype_logits"], opset=17)
        metrics["onnx_parity_max_abs_diff"] = report.max_abs_diff
        metrics["onnx_exporter"] = report.exporter
        metrics["onnx_opset"] = report.opset
        metrics["files"] = {
            name: {"sha256": sha256_file(out_dir / name), "bytes": (out_dir / name).stat().st_size}
            for name in (ONNX_NAME, SAFETENSORS_NAME)
        }
        metrics["cpu_seconds_total"] = round(time.process_time() - t_cpu, 1)
        metrics["wall_seconds_total"] = round(time.perf_counter() - t_wall, 1)
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        return metrics
    finally:
        torch.set_num_threads(threads_before)
        torch.use_deterministic_algorithms(det_before)


def publish(run_dir: str | Path) -> None:
    """Copy a finished run's weights and metrics into ``weights/`` and the weights'
    sha256 into the manifest."""
    run_dir = Path(run_dir)
    weights = PLUGIN_DIR / "weights"
    weights.mkdir(exist_ok=True)
    manifest_path = PLUGIN_DIR / "manifest.toml"
    text = manifest_path.read_text(encoding="utf-8")
    text = re.sub(r"\n\[\[files\]\]\n(?:[^\[\n][^\n]*\n)*", "\n", text)  # drop old entries
    blocks = []
    for name, fmt in ((ONNX_NAME, "onnx"), (SAFETENSORS_NAME, "safetensors")):
        shutil.copyfile(run_dir / name, weights / name)
        blocks.append(f'[[files]]\npath = "weights/{name}"\nsha256 = "{sha256_file(weights / name)}"\n'
                      f'role = "model"\nformat = "{fmt}"\nsize_variant = "{SIZE}"\n')
    marker = "\n[models.model]"
    text = text.replace(marker, "\n" + "\n".join(blocks) + marker, 1)
    manifest_path.write_text(text, encoding="utf-8")
    record = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    metrics = record.get("metrics", record)  # `tessera train` wraps the recipe's metrics
    (weights / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    card_path = PLUGIN_DIR / "MODEL_CARD.md"
    card = card_path.read_text(encoding="utf-8")
    start, end = "<!-- metrics:start -->", "<!-- metrics:end -->"
    head, rest = card.split(start, 1)
    card_path.write_text(head + start + "\n" + metrics_markdown(metrics) + end
                         + rest.split(end, 1)[1], encoding="utf-8")


def _matrix(rows: list[list[int]], names: list[str]) -> str:
    out = ["| truth \\ predicted | " + " | ".join(names) + " |",
           "|---|" + "---:|" * len(names)]
    out += [f"| {n} | " + " | ".join(str(v) for v in row) + " |"
            for n, row in zip(names, rows, strict=True)]
    return "\n".join(out)


def metrics_markdown(m: dict[str, Any]) -> str:
    """The model card's results section from a run's metrics."""
    subtypes = [s.replace("_", " ") for s in m["subtypes"]]
    files_ = "\n".join(f"- `weights/{k}`: {v['bytes'] / 2**20:.2f} MiB, sha256 `{v['sha256']}`"
                        for k, v in m["files"].items())
    return f"""
## Results on held-out synthetic data (seed 0)

| held-out set | n | accuracy |
|---|---:|---:|
| BreakHis-like 700 x 460 patches at 100x (mean of 24 tiles) | {m['held_out_patches']} | {m['held_out_patch_accuracy']:.3f} |
| tiles of held-out patients (112 px, 1 µm/px) | {m['held_out_tiles']} | {m['held_out_tile_accuracy']:.3f} |
| tiles of held-out slides | {m['held_out_slide_tiles']} | {m.get('held_out_slide_tile_accuracy', float('nan')):.3f} (Dice {m.get('held_out_slide_tile_dice', float('nan')):.3f}) |
| subtype, patches / tiles | | {m.get('held_out_patch_subtype_accuracy', float('nan')):.3f} / {m['held_out_subtype_accuracy']:.3f} |

Held-out patients: {", ".join(m["held_out_patients"])}.

Confusion, held-out patient tiles (benign / malignant):

{_matrix(m["held_out_tile_confusion"], ["benign", "malignant"])}

Confusion, held-out patches:

{_matrix(m["held_out_patch_confusion"], ["benign", "malignant"])}

Subtype confusion, held-out patient tiles:

{_matrix(m["held_out_subtype_confusion"], subtypes)}

Training: {m['train_tiles']} tiles ({100 * m['train_malignant_fraction']:.0f}% malignant), {m['steps']} steps;
CPU time {m['cpu_seconds_data']:.0f} s rendering data + {m['cpu_seconds_train']:.0f} s training
({m['cpu_seconds_total']:.0f} s in all, {m['threads']} threads; wall time {m['wall_seconds_total']:.0f} s on a shared
2-core machine). ONNX export: {m['onnx_exporter']} exporter, opset {m['onnx_opset']}, max |torch - ONNX Runtime|
{m['onnx_parity_max_abs_diff']:.1e}.

{files_}

"""
