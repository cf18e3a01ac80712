"""Reproduce the shipped demo weights: synthetic chest CTs -> airway and artery-vein nets.

``train(out_dir, seed=0)`` (``tessera train airway-av``):

1. renders ``n_train`` + ``n_val`` synthetic CTs (``tessera.pipelines.synthetic.ct``;
   seeds derived from ``seed``, the held-out ones never seen in training);
2. trains the demo airway network on random cubes (half centred on airway centreline
   points of a random branch, so thin peripheral branches are seen as often as the
   trachea) with the paper's loss terms: Dice + BCE on the main and the three deep
   supervision heads, plus lambda * attention distillation;
3. trains the demo artery-vein network the same way on CT + lung context + distance
   to the (true) airway + the CT in a vessel window, with Dice + class-weighted
   cross-entropy over background/artery/vein plus an artery-vs-vein cross-entropy on
   the vessel voxels (cubes centred on artery and on vein voxels, 40 % each). The
   first recipe (CT in the [-1000, 400] window only, no separation term, 360 steps)
   collapsed to "every vessel is a vein" (held-out artery DSC 0.0): the 50-110 HU
   between arteries and veins is a fourteenth of that window, under the lung-vessel
   contrast; in the vessel window it is a sixth;
4. scores both on the held-out volumes through the same two-stage flow as inference
   (``processing.segment_airway_vessels``: sliding window, largest airway
   component, distance prior from the *predicted* airway): ATM'22 TD/BD/DSC/precision
   for the airway, DSC per vessel class;
5. writes safetensors weights and ONNX exports (static cube size, dynamic batch) with
   their torch/ONNX Runtime parity, and ``metrics.json``.

``python -m tessera.plugins.airway_av.train OUT --roles artery-vein`` retrains one
network and reuses the other's weights from OUT (role seeds are fixed per role).

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
from tessera.plugins.airway_av.processing import VESSEL_WINDOW, window_hu


@dataclass(frozen=True)
class TrainConfig:
    """The recipe. ``quick`` shrinks it to a smoke run (seconds, meaningless metrics)."""

    size: str = "demo"
    n_train: int = 8
    n_val: int = 3
    shape_zyx: tuple[int, int, int] = (96, 192, 192)
    spacing_mm: tuple[float, float, float] = (1.0, 0.7, 0.7)
    steps_airway: int = 1000
    steps_av: int = 1000
    batch: int = 2
    lr: float = 3e-3
    lr_min: float = 1e-4
    ad_lambda: float = 1.0
    cube_zyx: tuple[int, int, int] | None = None  # None: the size's cube
    base: int | None = None  # None: the size's width
    threads: int = 1  # per process; on a shared CPU, OpenMP spin-waits burn more than they save
    parallel: bool = True  # the two networks train at once, one process (core) each
    exporter: str = "auto"  # ONNX exporter (export_onnx): auto = dynamo, else TorchScript
    overlap: float = 0.25
    # artery-vein recipe: cross-entropy class weights (background, artery, vein), the
    # weight of the artery-vs-vein term on vessel voxels (model.foreground_separation_loss;
    # without it the net settled in "every vessel is a vein", artery DSC 0), and the
    # shares of cubes centred on an artery / a vein voxel (the rest: anywhere in the lungs)
    av_class_weights: tuple[float, float, float] = (1.0, 2.0, 2.0)
    av_separation_weight: float = 1.0
    av_centre_shares: tuple[float, float] = (0.4, 0.4)
    # share of artery-vein cubes centred anywhere in the volume (heart, spine, ribs, chest
    # wall), so that contrast-bright tissue outside the lungs is seen as background
    av_body_share: float = 0.1


QUICK = TrainConfig(n_train=1, n_val=1, shape_zyx=(32, 64, 64), spacing_mm=(2.5, 1.8, 1.8),
                    steps_airway=2, steps_av=2, cube_zyx=(16, 32, 32), base=2, parallel=False,
                    exporter="torchscript")


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


def render_case(path: Path, seed: int, cfg: TrainConfig) -> Path:
    """Write one synthetic CT (and its truth) for training; returns its truth JSON path.

    A rendering already in place with the same seed, shape and spacing is reused (the
    generator is deterministic, so it would come out the same).
    """
    from tessera.pipelines.synthetic.ct import load_truth, synth_ct

    graph = path.with_name(path.name.removesuffix(".nii.gz") + "_truth.json")
    if graph.is_file():
        try:
            old = load_truth(graph)
        except (OSError, ValueError, KeyError):
            old = None
        if (old is not None and old.seed == seed and tuple(old.shape_zyx) == tuple(cfg.shape_zyx)
                and np.allclose(old.spacing_mm, cfg.spacing_mm) and old.image_path.is_file()
                and old.labels_path.is_file()):
            return graph
    return synth_ct(path, shape_zyx=cfg.shape_zyx, spacing_mm=cfg.spacing_mm, seed=seed).graph_path


def load_case(graph_path: Path) -> Case:
    """A rendered CT with its priors (lung mask, distance to the true airway) computed."""
    import nibabel as nib

    from tessera.pipelines.synthetic.ct import load_truth
    from tessera.plugins.airway_av.processing import airway_distance, lung_mask, window_hu

    truth = load_truth(graph_path)
    hu = np.asarray(nib.load(truth.image_path).dataobj).transpose(2, 1, 0).astype(np.int16)
    labels = np.asarray(nib.load(truth.labels_path).dataobj).transpose(2, 1, 0).astype(np.uint8)
    airway = labels == 1
    spacing = tuple(float(v) for v in truth.spacing_mm)
    return Case(
        seed=truth.seed, hu=np.ascontiguousarray(hu), labels=np.ascontiguousarray(labels),
        ct=window_hu(hu), lungs=lung_mask(hu, spacing), distance=airway_distance(airway, spacing),
        centrelines=[c for c in truth.branch_voxels("airway", within=airway) if len(c)],
        spacing_mm=spacing,  # type: ignore[arg-type]
    )


def make_case(path: Path, seed: int, cfg: TrainConfig) -> Case:
    """Render and load one synthetic CT."""
    return load_case(render_case(path, seed, cfg))


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
                 rng: np.random.Generator,
                 vessel_shares: tuple[float, float] = (0.4, 0.4), body_share: float = 0.0
                 ) -> None:
        self.cases, self.role, self.cube, self.rng = cases, role, cube, rng
        self.vessel_shares, self.body_share = vessel_shares, body_share
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
            share_artery, share_vein = self.vessel_shares
            for v, p in ((2, share_artery), (3, share_artery + share_vein)):
                idx = self._vessel_idx[i][v]
                if u < p and len(idx):
                    return np.array(np.unravel_index(idx[rng.integers(len(idx))], case.labels.shape))
            if u >= 1.0 - self.body_share:
                return np.array([rng.integers(n) for n in case.labels.shape])
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
        contrast = np.float32(self.rng.uniform(0.95, 1.05))
        brightness = np.float32(self.rng.uniform(-0.02, 0.02))
        ct = case.ct[sl] * contrast + brightness
        if self.role == "airway":
            channels = [ct]
            target = (case.labels[sl] == 1).astype(np.uint8)
        else:
            vessel = window_hu(case.hu[sl], VESSEL_WINDOW) * contrast + brightness
            channels = [ct, case.lungs[sl].astype(np.float32),
                        case.distance[sl].astype(np.float32) / np.float32(255.0), vessel]
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
    sampler = PatchSampler(cases, role, net.config.cube_zyx, np.random.default_rng(seed),
                           vessel_shares=tuple(cfg.av_centre_shares),  # type: ignore[arg-type]
                           body_share=cfg.av_body_share)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return cfg.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * t))

    weights = None if role == "airway" else torch.tensor(cfg.av_class_weights)
    separation = 0.0 if role == "airway" else cfg.av_separation_weight
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
        loss, parts = total_loss(net, x, y, ad_lambda=cfg.ad_lambda, class_weights=weights,
                                 separation_weight=separation)
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


def export(net: Any, role: str, out_dir: Path, size: str, exporter: str = "auto") -> dict[str, Any]:
    """safetensors + ONNX (static cube, dynamic batch) of the served model; parity."""
    import torch
    from safetensors.torch import save_file

    from tessera.pipelines.engines import export_onnx
    from tessera.plugins.airway_av.model import ProbabilityModel

    stem = weights_stem(role, size)
    served = ProbabilityModel(net).eval()
    weights = out_dir / f"{stem}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in served.state_dict().items()}, str(weights),
              metadata={"role": role, "size": size, "cube_zyx": json.dumps(net.config.cube_zyx)})
    example = torch.rand(1, net.input_channels, *net.config.cube_zyx, generator=torch.Generator()
                         .manual_seed(0))
    report = export_onnx(served, {"input": example}, out_dir / f"{stem}.onnx",
                         output_names=["probabilities"], dynamic_batch=True,
                         exporter=exporter)  # type: ignore[arg-type]
    return {"onnx": report.path.name, "safetensors": weights.name, "exporter": report.exporter,
            "opset": report.opset, "dynamic_batch": report.dynamic_batch,
            "parity_max_abs_diff": report.max_abs_diff, "sha256_onnx": report.sha256}


class _QueueProgress:
    """Progress from a training worker process, sent to the parent as queue messages."""

    def __init__(self, queue: Any, role: str) -> None:
        self.queue, self.role = queue, role

    def start(self, total: int | None, description: str = "") -> None:
        self.queue.put(("start", self.role, total))

    def advance(self, n: int = 1) -> None:
        self.queue.put(("advance", self.role, n))

    def close(self) -> None:
        pass


def _train_worker(role: str, graph_paths: list[str], cfg: TrainConfig, seed: int,
                  weights_path: str, queue: Any) -> None:
    """One role's training in its own single-threaded process (spawned)."""
    import torch
    from safetensors.torch import save_file

    from tessera.plugins.airway_av.model import ProbabilityModel

    try:
        torch.set_num_threads(cfg.threads)
        cpu0 = time.process_time()
        cases = [load_case(Path(p)) for p in graph_paths]
        net, log = train_net(role, cases, cfg, seed=seed, progress=_QueueProgress(queue, role))
        state = ProbabilityModel(net).state_dict()
        save_file({k: v.detach().contiguous() for k, v in state.items()}, weights_path)
        queue.put(("done", role, {"log": log, "cpu_s": time.process_time() - cpu0}))
    except BaseException as exc:  # the parent must hear about it, not wait forever
        queue.put(("error", role, f"{type(exc).__name__}: {exc}"))
        raise


ROLES = ("airway", "artery-vein")


def weights_stem(role: str, size: str) -> str:
    """File stem of a role's exports: ``airway_demo``, ``artery_vein_demo``."""
    return {"airway": "airway", "artery-vein": "artery_vein"}[role] + f"_{size}"


def _load_trained(role: str, cfg: TrainConfig, path: Path) -> Any:
    """A network of ``role`` with the weights of an earlier run's safetensors file."""
    from safetensors.torch import load_file

    if not path.is_file():
        msg = (f"{path}: no {role} weights to reuse; train that role too (roles={ROLES}) "
               "or copy the earlier run's files into the output folder")
        raise FileNotFoundError(msg)
    net = build_net(role, cfg)
    state = load_file(str(path))
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items()})
    return net.eval()


def _train_roles(roles: list[str], graph_paths: list[Path], cfg: TrainConfig, seed: int,
                 out_dir: Path, progress: ProgressReporter
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The networks of ``roles``: two at once in single-threaded processes, or in this one.

    Role seeds are fixed (airway ``seed``, artery-vein ``seed + 1``) whichever roles are
    trained, so training one role alone gives the same weights as training both.
    """
    import multiprocessing as mp

    role_seeds = {role: seed + ROLES.index(role) for role in roles}
    steps = {"airway": cfg.steps_airway, "artery-vein": cfg.steps_av}
    nets: dict[str, Any] = {}
    info: dict[str, Any] = {}
    if not cfg.parallel or len(roles) == 1:
        for role, role_seed in role_seeds.items():
            cpu0 = time.process_time()
            cases = [load_case(p) for p in graph_paths]
            nets[role], log = train_net(role, cases, cfg, seed=role_seed, progress=progress)
            info[role] = {"log": log, "cpu_s": time.process_time() - cpu0}
        return nets, info
    ctx = mp.get_context("spawn")  # no fork after torch/OpenMP initialised
    queue = ctx.Queue()
    weights = {role: out_dir / f".{role}.worker.safetensors" for role in roles}
    procs = {
        role: ctx.Process(target=_train_worker, name=f"train-{role}",
                          args=(role, [str(p) for p in graph_paths], cfg, role_seed,
                                str(weights[role]), queue))
        for role, role_seed in role_seeds.items()
    }
    for p in procs.values():
        p.start()
    progress.start(sum(steps[r] for r in roles), "training " + " + ".join(roles))
    pending = set(roles)
    try:
        while pending:
            kind, role, payload = queue.get()
            if kind == "advance":
                progress.advance(payload)
            elif kind == "done":
                info[role] = payload
                pending.discard(role)
            elif kind == "error":
                msg = f"training the {role} network failed: {payload}"
                raise RuntimeError(msg)
    finally:
        for p in procs.values():
            p.join(timeout=None if not pending else 1)
            if p.is_alive():
                p.terminate()
    for role in roles:
        nets[role] = _load_trained(role, cfg, weights[role])
        weights[role].unlink()
    return nets, info


def train(out_dir: Path, *, seed: int = 0, quick: bool = False,
          progress: ProgressReporter | None = None, config: TrainConfig | None = None,
          roles: tuple[str, ...] | list[str] = ROLES) -> dict[str, Any]:
    """Train both demo networks on synthetic CTs; write weights, exports and metrics.

    ``roles``: the networks to train; any other role's weights are reused from the
    ``<stem>.safetensors`` an earlier run with the same seed and recipe left in
    ``out_dir`` (its training log and CPU time are carried over from that run's
    ``training.json`` and marked as reused). Role seeds do not depend on which roles
    are trained, so the result equals training both.

    Returns the held-out metrics (means over the validation volumes), the CPU time
    (this process and the training workers; ``recipe_cpu_minutes`` adds the reused
    roles' training) and wall time, the parameter counts and the export parity.
    """
    import torch

    from tessera.plugins.airway_av.model import count_parameters

    progress = progress or NullProgress()
    cfg = config or (QUICK if quick else TrainConfig())
    out_dir = Path(out_dir)
    unknown = [r for r in roles if r not in ROLES]
    if not roles or unknown:
        msg = f"roles must be a non-empty subset of {ROLES}, got {list(roles)}"
        raise ValueError(msg)
    roles = [r for r in ROLES if r in roles]
    reused = [r for r in ROLES if r not in roles]
    previous: dict[str, Any] = {}
    if reused and (out_dir / "training.json").is_file():
        previous = json.loads((out_dir / "training.json").read_text(encoding="utf-8"))
    reused_nets = {r: _load_trained(r, cfg, out_dir / f"{weights_stem(r, cfg.size)}.safetensors")
                   for r in reused}
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
    graphs = []
    for s in train_seeds + val_seeds:
        graphs.append(render_case(out_dir / "data" / f"ct_{s}.nii.gz", s, cfg))
        progress.advance(1)
    c, w = lap("data", cpu0, wall0)

    nets, info = _train_roles(roles, graphs[: cfg.n_train], cfg, seed, out_dir, progress)
    in_workers = cfg.parallel and len(roles) > 1
    c, w = lap("train", c, w)
    for role in roles:
        timing[f"train_{role}_cpu_s"] = round(info[role]["cpu_s"], 1)
    reused_cpu = 0.0
    for role in reused:
        nets[role] = reused_nets[role]
        old_cpu = previous.get("timing", {}).get(f"train_{role}_cpu_s")
        info[role] = {"log": previous.get("loss_log", {}).get(role, []), "reused": True,
                      "cpu_s": old_cpu}
        timing[f"train_{role}_cpu_s (reused)"] = old_cpu
        reused_cpu += float(old_cpu or 0.0)
    airway_net, av_net = nets["airway"], nets["artery-vein"]
    val_cases = [load_case(g) for g in graphs[cfg.n_train:]]
    scores = evaluate(airway_net, av_net, val_cases, cfg)
    c, w = lap("evaluate", c, w)
    exports = {role: export(net, role, out_dir, cfg.size, cfg.exporter)
               for role, net in (("airway", airway_net), ("artery-vein", av_net))}
    c, w = lap("export", c, w)
    worker_cpu = sum(info[r]["cpu_s"] for r in roles) if in_workers else 0.0
    timing["total_cpu_s"] = round(time.process_time() - cpu0 + worker_cpu, 1)
    timing["recipe_cpu_s"] = round(timing["total_cpu_s"] + reused_cpu, 1)
    timing["total_wall_s"] = round(time.perf_counter() - wall0, 1)
    progress.close()

    record = {
        "config": asdict(replace(cfg)), "seed": seed, "train_seeds": train_seeds,
        "val_seeds": val_seeds, "heldout": scores, "timing": timing, "exports": exports,
        "parameters": {"airway": count_parameters(airway_net),
                       "artery-vein": count_parameters(av_net)},
        "loss_log": {role: info[role]["log"] for role in info},
        "trained_roles": roles,
        "reused_roles": {r: {"weights": f"{weights_stem(r, cfg.size)}.safetensors",
                             "from_run_config": previous.get("config")} for r in reused},
        "torch": torch.__version__, "threads": cfg.threads,
    }
    (out_dir / "training.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    return {
        **{f"heldout_{k}": v for k, v in scores["mean"].items()},
        "cpu_minutes": round(timing["total_cpu_s"] / 60, 1),
        "recipe_cpu_minutes": round(timing["recipe_cpu_s"] / 60, 1),
        "wall_minutes": round(timing["total_wall_s"] / 60, 1),
        "parameters_airway": record["parameters"]["airway"],
        "parameters_artery_vein": record["parameters"]["artery-vein"],
        "parity_airway": exports["airway"]["parity_max_abs_diff"],
        "parity_artery_vein": exports["artery-vein"]["parity_max_abs_diff"],
    }


def main(argv: list[str] | None = None) -> None:
    """``python -m tessera.plugins.airway_av.train OUT [--seed N] [--roles ROLE ...]``.

    ``tessera train airway-av`` trains both roles; this entry point can train one role
    and reuse the other's weights from ``OUT`` (see ``train``).
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tessera.plugins.airway_av.train",
                                     description=main.__doc__)
    parser.add_argument("out", type=Path, help="output folder (weights, exports, metrics)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a few steps only (smoke run)")
    parser.add_argument("--roles", nargs="+", choices=ROLES, default=list(ROLES),
                        help="networks to train; the others are reused from OUT")
    args = parser.parse_args(argv)
    metrics = train(args.out, seed=args.seed, quick=args.quick, roles=args.roles)
    (Path(args.out) / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    print(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
