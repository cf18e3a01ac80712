"""Reproduce the shipped demo weights: synthetic chest CTs -> airway and artery-vein nets.

``train(out_dir, seed=0)`` (``tessera train airway-av``):

1. renders ``n_train`` + ``n_val`` synthetic CTs (``tessera.pipelines.synthetic.ct``;
   seeds derived from ``seed``, the held-out ones never seen in training);
2. trains the demo airway network on random cubes (half centred on airway centreline
   points of a random branch, so thin peripheral branches are seen as often as the
   trachea) with the paper's loss terms: Dice + BCE on the main and the three deep
   supervision heads, plus lambda * attention distillation;
3. trains the demo artery-vein network the same way on CT + lung context + distance
   to the (true) airway, with Dice + cross-entropy over background/artery/vein;
4. scores both on the held-out volumes through the same two-stage flow as inference
   (``processing.segment_airway_vessels``: sliding window, largest airway
   component, distance prior from the *predicted* airway): ATM'22 TD/BD/DSC/precision
   for the airway, DSC per vessel class;
5. writes safetensors weights and ONNX exports (static cube size, dynamic batch) with
   their torch/ONNX Runtime parity, and ``metrics.json``.

Deterministic for a seed on one machine: every random draw comes from seeded
generators, torch runs with a fixed thread count, and data order is fixed.
CPU time (process time, all threads) is measured and reported, since wall time on a
shared machine says little.
"""

from __future__ import annotations

import json
import math
import time
import types
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tessera.pipelines.progress import NullProgress, ProgressReporter


@dataclass(frozen=True)
class TrainConfig:
    """The recipe. ``quick`` shrinks it to a smoke run (seconds, meaningless metrics)."""

    size: str = "demo"
    n_train: int = 8
    n_val: int = 3
    shape_zyx: tuple[int, int, int] = (96, 192, 192)
    spacing_mm: tuple[float, float, float] = (1.0, 0.7, 0.7)
    steps_airway: int = 320
    steps_av: int = 320
    batch: int = 2
    lr: float = 3e-3
    lr_min: float = 1e-4
    ad_lambda: float = 1.0
    cube_zyx: tuple[int, int, int] | None = None  # None: the size's cube
    base: int | None = None  # None: the size's width
    threads: int = 1  # one thread: on a shared CPU, OpenMP spin-waits burn more CPU than they save
    overlap: float = 0.25


QUICK = TrainConfig(n_train=1, n_val=1, shape_zyx=(32, 64, 64), spacing_mm=(2.5, 1.8, 1.8),
                    steps_airway=2, steps_av=2, cube_zyx=(16, 32, 32), base=2)


# ---------------------------------------------------------------------------------
# A faster 3x3x3 convolution backward for CPU training
# ---------------------------------------------------------------------------------


def _fast_conv_function():
    import torch
    import torch.nn.functional as F

    class Conv3x3(torch.autograd.Function):
        """Same-padded stride-1 3x3x3 convolution with a cheaper weight gradient.

        oneDNN's weight-gradient kernel for 3D convolutions with few channels is ~10x
        slower than its forward on the CPUs here; the same gradient is a convolution of
        the input with the output gradient, batch and channel axes swapped
        (dW[o, i] = sum_n x[n, i] * g[n, o] over shifts), which runs as a fast forward
        convolution. Values equal the reference up to float32 summation order.
        """

        @staticmethod
        def forward(ctx, x, weight, bias):
            ctx.save_for_backward(x, weight)
            ctx.has_bias = bias is not None
            return F.conv3d(x, weight, bias, padding=1)

        @staticmethod
        def backward(ctx, grad):
            x, weight = ctx.saved_tensors
            gx = gw = gb = None
            if ctx.needs_input_grad[0]:
                gx = torch.ops.aten.convolution_backward(
                    grad, x, weight, None, [1, 1, 1], [1, 1, 1], [1, 1, 1], False, [0, 0, 0],
                    1, [True, False, False])[0]
            if ctx.needs_input_grad[1]:
                gw = F.conv3d(x.transpose(0, 1), grad.transpose(0, 1), padding=1).transpose(0, 1)
            if ctx.has_bias and ctx.needs_input_grad[2]:
                gb = grad.sum(dim=(0, 2, 3, 4))
            return gx, gw, gb

    return Conv3x3


def use_fast_conv_backward(model: Any) -> int:
    """Route every same-padded 3x3x3 conv of ``model`` through the faster backward.

    Only the training graph changes (forward values are identical, state dict keys
    too); returns how many convolutions were patched.
    """
    import torch

    fn = _fast_conv_function()

    def forward(self: Any, x: Any) -> Any:
        return fn.apply(x, self.weight, self.bias)

    n = 0
    for m in model.modules():
        if (isinstance(m, torch.nn.Conv3d) and m.kernel_size == (3, 3, 3)
                and m.padding == (1, 1, 1) and m.stride == (1, 1, 1) and m.groups == 1
                and m.dilation == (1, 1, 1)):
            m.forward = types.MethodType(forward, m)
            n += 1
    return n


# ---------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------


@dataclass
class Case:
    """One synthetic volume with everything training and scoring need (model grid)."""

    seed: int
    hu: np.ndarray  # int16 ZYX
    labels: np.ndarray  # uint8 ZYX
    ct: np.ndarray  # float32 windowed
    lungs: np.ndarray  # bool
    distance: np.ndarray  # uint8 distance to the true airway
    centrelines: list[np.ndarray]  # airway branch voxels (inside the lumen)
    spacing_mm: tuple[float, float, float]


def make_case(path: Path, seed: int, cfg: TrainConfig) -> Case:
    import nibabel as nib

    from tessera.pipelines.synthetic.ct import synth_ct
    from tessera.plugins.airway_av.processing import airway_distance, lung_mask, window_hu

    truth = synth_ct(path, shape_zyx=cfg.shape_zyx, spacing_mm=cfg.spacing_mm, seed=seed)
    hu = np.asarray(nib.load(truth.image_path).dataobj).transpose(2, 1, 0).astype(np.int16)
    labels = np.asarray(nib.load(truth.labels_path).dataobj).transpose(2, 1, 0).astype(np.uint8)
    airway = labels == 1
    return Case(
        seed=seed, hu=np.ascontiguousarray(hu), labels=np.ascontiguousarray(labels),
        ct=window_hu(hu), lungs=lung_mask(hu, cfg.spacing_mm),
        distance=airway_distance(airway, cfg.spacing_mm),
        centrelines=[c for c in truth.branch_voxels("airway", within=airway) if len(c)],
        spacing_mm=tuple(cfg.spacing_mm),
    )


def _coords(shape: tuple[int, ...], start: np.ndarray, cube: tuple[int, int, int]) -> np.ndarray:
    """Coordinate channels (3, D, H, W) of a cube at ``start`` in a volume of ``shape``."""
    out = np.empty((3, *cube), dtype=np.float32)
    for axis in range(3):
        n = shape[axis]
        line = (np.arange(start[axis], start[axis] + cube[axis], dtype=np.float32)
                * np.float32(2.0 / max(n - 1, 1)) - np.float32(1.0))
        view = [1, 1, 1]
        view[axis] = cube[axis]
        out[axis] = np.broadcast_to(line.reshape(view), cube)
    return out


class PatchSampler:
    """Random training cubes (image channels + coordinates, targets), deterministic."""

    def __init__(self, cases: list[Case], role: str, cube: tuple[int, int, int],
                 rng: np.random.Generator) -> None:
        self.cases, self.role, self.cube, self.rng = cases, role, cube, rng
        self._vessel_idx = {}
        if role == "artery-vein":
            for i, c in enumerate(cases):
                self._vessel_idx[i] = {v: np.flatnonzero(c.labels.ravel() == v) for v in (2, 3)}
        self._lung_boxes = []
        for c in cases:
            zz, yy, xx = np.nonzero(c.lungs)
            self._lung_boxes.append(np.array([[zz.min(), yy.min(), xx.min()],
                                              [zz.max(), yy.max(), xx.max()]]))

    def _centre(self, i: int) -> np.ndarray:
        rng, case = self.rng, self.cases[i]
        u = rng.random()
        if self.role == "airway":
            if u < 0.6:  # a random branch, then a random point on its centreline
                branch = case.centrelines[rng.integers(len(case.centrelines))]
                return branch[rng.integers(len(branch))]
        else:
            for v, p in ((2, 0.35), (3, 0.7)):
                idx = self._vessel_idx[i][v]
                if u < p and len(idx):
                    return np.array(np.unravel_index(idx[rng.integers(len(idx))], case.labels.shape))
        lo, hi = self._lung_boxes[i]
        return np.array([rng.integers(lo[k], hi[k] + 1) for k in range(3)])

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """One cube: input (C + 3, D, H, W) float32, target (D, H, W) uint8 classes."""
        i = int(self.rng.integers(len(self.cases)))
        case = self.cases[i]
        shape = np.asarray(case.labels.shape)
        cube = np.asarray(self.cube)
        centre = self._centre(i) + self.rng.integers(-cube // 4, cube // 4 + 1)
        start = np.clip(centre - cube // 2, 0, np.maximum(shape - cube, 0))
        sl = tuple(slice(int(s), int(s) + int(n)) for s, n in zip(start, cube, strict=True))
        # intensity jitter: contrast and brightness of the windowed CT
        ct = case.ct[sl] * np.float32(self.rng.uniform(0.95, 1.05)) + np.float32(
            self.rng.uniform(-0.02, 0.02))
        if self.role == "airway":
            channels = [ct]
            target = (case.labels[sl] == 1).astype(np.uint8)
        else:
            channels = [ct, case.lungs[sl].astype(np.float32),
                        case.distance[sl].astype(np.float32) / np.float32(255.0)]
            lab = case.labels[sl]
            target = np.where(lab == 2, 1, np.where(lab == 3, 2, 0)).astype(np.uint8)
        x = np.concatenate([np.stack(channels), _coords(tuple(shape), start, self.cube)])
        return x.astype(np.float32), target

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        items = [self.sample() for _ in range(n)]
        return np.stack([a for a, _ in items]), np.stack([b for _, b in items])


# ---------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------


def build_net(role: str, cfg: TrainConfig) -> Any:
    from tessera.plugins.airway_av.model import build_model

    overrides = {}
    if cfg.cube_zyx is not None:
        overrides["cube_zyx"] = tuple(cfg.cube_zyx)
    if cfg.base is not None:
        overrides["base"] = cfg.base
    return build_model(cfg.size, role, **overrides)


def train_net(role: str, cases: list[Case], cfg: TrainConfig, *, seed: int,
              progress: ProgressReporter) -> tuple[Any, list[dict[str, float]]]:
    """Train one network; returns it (eval mode) and the loss log every 10 steps."""
    import torch

    from tessera.plugins.airway_av.model import total_loss

    torch.manual_seed(seed)
    net = build_net(role, cfg)
    use_fast_conv_backward(net)
    steps = cfg.steps_airway if role == "airway" else cfg.steps_av
    sampler = PatchSampler(cases, role, net.config.cube_zyx, np.random.default_rng(seed))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return cfg.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * t))

    weights = None if role == "airway" else torch.tensor([1.0, 2.0, 2.0])
    log: list[dict[str, float]] = []
    net.train()
    progress.start(steps, f"training {role}")
    running: dict[str, float] = {}
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        x_np, y_np = sampler.batch(cfg.batch)
        x = torch.from_numpy(x_np)
        if role == "airway":
            y = torch.from_numpy(y_np[:, None].astype(np.float32))
        else:
            y = torch.from_numpy(y_np.astype(np.int64))
        loss, parts = total_loss(net, x, y, ad_lambda=cfg.ad_lambda, class_weights=weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for k, v in parts.items():
            running[k] = running.get(k, 0.0) + v
        if (step + 1) % 10 == 0 or step + 1 == steps:
            n = 10 if (step + 1) % 10 == 0 else (step + 1) % 10
            log.append({"step": step + 1, **{k: round(v / n, 5) for k, v in running.items()}})
            running = {}
        progress.advance(1)
    return net.eval(), log


# ---------------------------------------------------------------------------------
# Scoring and export
# ---------------------------------------------------------------------------------


def torch_predictor(net: Any, *, two_class_sigmoid: bool) -> Any:
    """A window predictor (numpy in, probabilities out) around a trained network."""
    import torch

    from tessera.plugins.airway_av.model import ProbabilityModel

    served = ProbabilityModel(net).eval()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            p = served(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()
        return np.concatenate([1.0 - p, p], axis=1) if two_class_sigmoid else p

    return predict


def evaluate(airway_net: Any, av_net: Any, cases: list[Case], cfg: TrainConfig) -> dict[str, Any]:
    """Held-out scores through the inference flow, per volume and their means."""
    from tessera.pipelines.metrics.atm import score_airway
    from tessera.pipelines.metrics.overlap import dice, precision
    from tessera.plugins.airway_av.processing import segment_airway_vessels

    per_volume = []
    for case in cases:
        out = segment_airway_vessels(
            case.hu, case.spacing_mm,
            airway_predictor=torch_predictor(airway_net, two_class_sigmoid=True),
            av_predictor=torch_predictor(av_net, two_class_sigmoid=False),
            window_zyx=airway_net.config.cube_zyx, overlap=cfg.overlap, batch_size=2)
        pred, truth = out["labels"], case.labels
        air = score_airway(pred == 1, truth == 1, case.spacing_mm,
                           truth_branches_zyx=case.centrelines)
        row = {"seed": case.seed, "airway_dsc": air["dsc"], "airway_precision": air["precision"],
               "airway_td": air["tree_length_detected"], "airway_bd": air["branches_detected"]}
        for name, v in (("artery", 2), ("vein", 3)):
            row[f"{name}_dsc"] = dice(pred == v, truth == v)
            row[f"{name}_precision"] = precision(pred == v, truth == v)
        per_volume.append({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
    keys = [k for k in per_volume[0] if k != "seed"]
    means = {k: round(float(np.mean([r[k] for r in per_volume])), 4) for k in keys}
    return {"mean": means, "per_volume": per_volume}


def export(net: Any, role: str, out_dir: Path, size: str) -> dict[str, Any]:
    """safetensors + ONNX (static cube, dynamic batch) of the served model; parity."""
    import torch
    from safetensors.torch import save_file

    from tessera.pipelines.engines import export_onnx
    from tessera.plugins.airway_av.model import ProbabilityModel

    stem = {"airway": "airway", "artery-vein": "artery_vein"}[role] + f"_{size}"
    served = ProbabilityModel(net).eval()
    weights = out_dir / f"{stem}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in served.state_dict().items()}, str(weights),
              metadata={"role": role, "size": size, "cube_zyx": json.dumps(net.config.cube_zyx)})
    example = torch.rand(1, net.input_channels, *net.config.cube_zyx, generator=torch.Generator()
                         .manual_seed(0))
    report = export_onnx(served, {"input": example}, out_dir / f"{stem}.onnx",
                         output_names=["probabilities"], dynamic_batch=True)
    return {"onnx": report.path.name, "safetensors": weights.name, "exporter": report.exporter,
            "opset": report.opset, "dynamic_batch": report.dynamic_batch,
            "parity_max_abs_diff": report.max_abs_diff, "sha256_onnx": report.sha256}


def train(out_dir: Path, *, seed: int = 0, quick: bool = False,
          progress: ProgressReporter | None = None, config: TrainConfig | None = None
          ) -> dict[str, Any]:
    """Train both demo networks on synthetic CTs; write weights, exports and metrics.

    Returns the held-out metrics (means over the validation volumes), the CPU and
    wall time, the parameter counts and the export parity.
    """
    import torch

    from tessera.plugins.airway_av.model import count_parameters

    progress = progress or NullProgress()
    cfg = config or (QUICK if quick else TrainConfig())
    out_dir = Path(out_dir)
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    timing: dict[str, float] = {}

    def lap(name: str, cpu: float, wall: float) -> tuple[float, float]:
        timing[f"{name}_cpu_s"] = round(time.process_time() - cpu, 1)
        timing[f"{name}_wall_s"] = round(time.perf_counter() - wall, 1)
        return time.process_time(), time.perf_counter()

    train_seeds = [seed * 1000 + 100 + i for i in range(cfg.n_train)]
    val_seeds = [seed * 1000 + 900 + i for i in range(cfg.n_val)]
    progress.start(len(train_seeds) + len(val_seeds), "synthetic CTs")
    cases = []
    for s in train_seeds + val_seeds:
        cases.append(make_case(out_dir / "data" / f"ct_{s}.nii.gz", s, cfg))
        progress.advance(1)
    train_cases, val_cases = cases[: cfg.n_train], cases[cfg.n_train:]
    c, w = lap("data", cpu0, wall0)

    airway_net, airway_log = train_net("airway", train_cases, cfg, seed=seed, progress=progress)
    c, w = lap("train_airway", c, w)
    av_net, av_log = train_net("artery-vein", train_cases, cfg, seed=seed + 1, progress=progress)
    c, w = lap("train_av", c, w)
    scores = evaluate(airway_net, av_net, val_cases, cfg)
    c, w = lap("evaluate", c, w)
    exports = {role: export(net, role, out_dir, cfg.size)
               for role, net in (("airway", airway_net), ("artery-vein", av_net))}
    c, w = lap("export", c, w)
    timing["total_cpu_s"] = round(time.process_time() - cpu0, 1)
    timing["total_wall_s"] = round(time.perf_counter() - wall0, 1)
    progress.close()

    record = {
        "config": asdict(replace(cfg)), "seed": seed, "train_seeds": train_seeds,
        "val_seeds": val_seeds, "heldout": scores, "timing": timing, "exports": exports,
        "parameters": {"airway": count_parameters(airway_net),
                       "artery-vein": count_parameters(av_net)},
        "loss_log": {"airway": airway_log, "artery-vein": av_log},
        "torch": torch.__version__, "threads": cfg.threads,
    }
    (out_dir / "training.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    return {
        **{f"heldout_{k}": v for k, v in scores["mean"].items()},
        "cpu_minutes": round(timing["total_cpu_s"] / 60, 1),
        "wall_minutes": round(timing["total_wall_s"] / 60, 1),
        "parameters_airway": record["parameters"]["airway"],
        "parameters_artery_vein": record["parameters"]["artery-vein"],
        "parity_airway": exports["airway"]["parity_max_abs_diff"],
        "parity_artery_vein": exports["artery-vein"]["parity_max_abs_diff"],
    }
