"""The multi-branch eDOS CNN of Yang et al. (torch; needs the ``train`` extra).

Input ``edos``: float32 ``[N, 4000, 9, 6]`` (energies x orbitals x atomic channels, the layout
of ``tessera.pipelines.catalysis.layout``). Output ``e_ads``: float32 ``[N]``, the adsorption
energy in eV.

Architecture (paper size, MODELS.md section 5): one branch per orbital, nine branches with
unshared weights, each seeing that orbital's DOS on all 6 atomic channels as a 6-channel 1D
signal::

    3 x [Conv1d(17, k=10, 'same') + ReLU] -> Conv1d(17, k=2, stride 2) + ReLU -> AvgPool(22)
      -> Dropout(0.3) -> Flatten -> Dense 256 tanh -> Dense 128 tanh -> Dense 1

then the nine branch outputs are concatenated -> Dense 256, 512, 128 (ReLU) -> Dense 1.
'same' padding follows Keras for an even kernel (4 left, 5 right), the flatten is
position-major (channels last) as in Keras, and the strided convolution has a ReLU as in the
authors' code. Trained with MSE and Adam (lr 1e-3).

The demo size keeps that structure at a cost a shared laptop CPU trains in minutes: the energy
axis is first averaged in bins of 32 points (0.16 eV — coarser than a DFT DOS deserves, but
finer than every feature of the synthetic eDOS it is trained on, whose narrowest states are
0.3 eV wide), 8 filters (kernel 10 = 1.6 eV), AvgPool(3) (0.64 eV positions for the dense
layers) and dense layers of 64/32 (branches) and 64/128/32 (head). Use the paper size for
real DFT data.

The output is de-standardised inside the model (``target_mean_ev``/``target_std_ev``
buffers), so ONNX and torch both return eV.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tessera.pipelines.catalysis.layout import N_CHANNELS, N_ENERGY, N_ORBITALS


@dataclass(frozen=True)
class SacCnnConfig:
    """Sizes of the network; ``PAPER`` and ``DEMO`` are the two shipped variants."""

    input_pool: int = 1
    filters: int = 17
    kernel: int = 10
    n_conv: int = 3
    pool: int = 22
    dropout: float = 0.3
    branch_dense: tuple[int, ...] = (256, 128)
    head_dense: tuple[int, ...] = (256, 512, 128)

    @property
    def branch_length(self) -> int:
        """Positions per branch after input pooling, the strided conv and the average pool."""
        return (N_ENERGY // self.input_pool // 2) // self.pool


PAPER = SacCnnConfig()
DEMO = SacCnnConfig(input_pool=32, filters=8, pool=3, branch_dense=(64, 32), head_dense=(64, 128, 32))
SIZES: dict[str, SacCnnConfig] = {"paper": PAPER, "demo": DEMO}


class OrbitalBranches(nn.Module):
    """The nine orbital branches, run together: ``[N, 9, 6, L]`` -> ``[N, 9]``.

    Unshared weights per branch, implemented as grouped convolutions (``groups=9``: branch k
    convolves only orbital k's 6 channels) and batched per-branch dense layers. This is the
    same function as nine separate branch modules, computed in one kernel call per layer
    instead of nine (several times faster on a CPU). ``branch_state_dict(k)`` extracts one
    branch's weights.
    """

    def __init__(self, cfg: SacCnnConfig) -> None:
        super().__init__()
        self.kernel = cfg.kernel
        b, f = N_ORBITALS, cfg.filters
        chans = [N_CHANNELS] + [f] * cfg.n_conv
        self.convs = nn.ModuleList(
            nn.Conv1d(b * chans[i], b * chans[i + 1], cfg.kernel, groups=b) for i in range(cfg.n_conv)
        )
        self.down = nn.Conv1d(b * f, b * f, 2, stride=2, groups=b)
        self.pool = nn.AvgPool1d(cfg.pool)
        self.dropout = nn.Dropout(cfg.dropout)
        self.length = cfg.branch_length
        sizes = [f * cfg.branch_length, *cfg.branch_dense, 1]
        self.dense_weight = nn.ParameterList(
            nn.Parameter(torch.empty(b, sizes[i], sizes[i + 1])) for i in range(len(sizes) - 1)
        )
        self.dense_bias = nn.ParameterList(
            nn.Parameter(torch.empty(b, sizes[i + 1])) for i in range(len(sizes) - 1)
        )
        for w, bias in zip(self.dense_weight, self.dense_bias, strict=True):
            bound = 1.0 / w.shape[1] ** 0.5  # nn.Linear's default initialisation, per branch
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [N, 9, 6, L]
        n = x.shape[0]
        x = x.reshape(n, N_ORBITALS * N_CHANNELS, x.shape[-1])
        left, right = (self.kernel - 1) // 2, self.kernel // 2  # Keras 'same'
        for conv in self.convs:
            x = F.relu(conv(F.pad(x, (left, right))))
        x = F.relu(self.down(x))
        x = self.dropout(self.pool(x))  # [N, 9 * filters, length]
        x = x[..., : self.length].reshape(n, N_ORBITALS, -1, self.length)
        x = x.transpose(2, 3).flatten(2)  # per branch, position-major (Keras channels-last)
        last = len(self.dense_weight) - 1
        for i, (w, bias) in enumerate(zip(self.dense_weight, self.dense_bias, strict=True)):
            x = torch.einsum("nbi,bio->nbo", x, w) + bias
            if i < last:
                x = torch.tanh(x)
        return x.squeeze(-1)


class SacCnn(nn.Module):
    """Nine orbital branches + dense head; ``edos [N, 4000, 9, 6]`` -> ``e_ads [N]`` (eV)."""

    def __init__(self, cfg: SacCnnConfig = DEMO) -> None:
        super().__init__()
        self.cfg = cfg
        self.branches = OrbitalBranches(cfg)
        sizes = [N_ORBITALS, *cfg.head_dense]
        self.head = nn.ModuleList(nn.Linear(sizes[i], sizes[i + 1]) for i in range(len(sizes) - 1))
        self.out = nn.Linear(sizes[-1], 1)
        self.register_buffer("input_scale", torch.ones(()))
        self.register_buffer("target_mean_ev", torch.zeros(()))
        self.register_buffer("target_std_ev", torch.ones(()))

    def pool_energy(self, edos: torch.Tensor) -> torch.Tensor:
        """``[N, 4000, 9, 6]`` -> ``[N, 9, 6, 4000 / input_pool]`` (energy last, binned)."""
        x = edos.permute(0, 2, 3, 1)
        if self.cfg.input_pool > 1:
            n, o, c, e = x.shape
            x = x.reshape(n, o, c, e // self.cfg.input_pool, self.cfg.input_pool).mean(-1)
        return x

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised prediction from pooled input ``[N, 9, 6, L]`` (training uses this)."""
        feats = self.branches(x * self.input_scale)
        for layer in self.head:
            feats = F.relu(layer(feats))
        return self.out(feats).squeeze(1)

    def forward(self, edos: torch.Tensor) -> torch.Tensor:
        z = self.forward_pooled(self.pool_energy(edos))
        return z * self.target_std_ev + self.target_mean_ev


def build_model(size: str = "demo", **overrides: object) -> SacCnn:
    """The model at ``size`` ('paper' or 'demo'); keyword overrides change single sizes."""
    try:
        cfg = SIZES[size]
    except KeyError:
        msg = f"unknown size {size!r}; choose from {', '.join(SIZES)}"
        raise ValueError(msg) from None
    if overrides:
        cfg = SacCnnConfig(**{**asdict(cfg), **overrides})
    return SacCnn(cfg)
