"""SAM to ONNX: the image encoder alone, and the prompt decoder with the official interface.

Decoder graph (as segment-anything's ``scripts/export_onnx_model.py``):

inputs
    ``image_embeddings`` float32 ``[1, 256, S, S]`` (S = 64 for 1024 px input; the
    demo weights use 128 channels and S = 16);
    ``point_coords`` float32 ``[1, N, 2]`` (x, y in encoder-input pixels);
    ``point_labels`` float32 ``[1, N]``: -1 padding, 0 negative, 1 positive, 2/3 box
    corners; ``mask_input`` float32 ``[1, 1, 4S, 4S]``; ``has_mask_input`` float32
    ``[1]``; ``orig_im_size`` float32 ``[2]`` (h, w of the image before resizing).
The batch axis of the per-prompt tensors is symbolic (``batch``, 1 in the official
use): several images' embeddings, each with its own prompts, may go through at once;
``has_mask_input`` and ``orig_im_size`` are shared.

outputs
    ``masks`` ``[1, M, h, w]`` logits at the original size; ``iou_predictions``
    ``[1, M]``; ``low_res_masks`` ``[1, M, 4S, 4S]``. With ``return_single_mask``
    (default, as the official notebook) M = 1 and the mask is chosen as the official
    export does: for more than two prompt tokens the single-mask output, otherwise the
    multimask output with the best predicted IoU.

SAM-UNet's decoder takes one more input, ``multi_scale_feature`` ``[1, 32, 4S, 4S]``
(a second encoder output), and returns SAM's stability score as ``iou_predictions``
(it has no IoU head).

The TorchScript exporter is used because the graph has data-dependent sizes
(``orig_im_size`` drives the crop and the final resize) exactly as the official export;
the encoder uses it too, for the same opset and behaviour.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tessera.plugins.sam.model import Sam
from tessera.plugins.sam.sam_unet import SamUNet

OPSET = 17
DECODER_INPUTS = ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size"]
DECODER_OUTPUTS = ["masks", "iou_predictions", "low_res_masks"]


def stability_score(logits: Tensor, threshold: float = 0.0, offset: float = 1.0) -> Tensor:
    """IoU between the masks thresholded at ``threshold ± offset`` (SAM's quality proxy)."""
    inter = (logits > threshold + offset).flatten(-2).sum(-1).float()
    union = (logits > threshold - offset).flatten(-2).sum(-1).float()
    return inter / union.clamp(min=1.0)


class _Postprocess(nn.Module):
    """Low-res logits -> logits at ``orig_im_size``: upsample to the input size, drop the
    padding, resize to the original size (``resize="longest"``); or resize straight to
    the original size (``resize="squash"``, MedSAM)."""

    def __init__(self, img_size: int, resize: Literal["longest", "squash"]) -> None:
        super().__init__()
        self.img_size = img_size
        self.resize = resize

    def forward(self, masks: Tensor, orig_im_size: Tensor) -> Tensor:
        h, w = orig_im_size[0].to(torch.int64), orig_im_size[1].to(torch.int64)
        if self.resize == "squash":
            return F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)
        masks = F.interpolate(masks, (self.img_size, self.img_size), mode="bilinear", align_corners=False)
        size = orig_im_size.to(torch.float32)
        scale = self.img_size / torch.max(size)
        pre = torch.floor(size * scale + 0.5).to(torch.int64)
        masks = masks[..., : pre[0], : pre[1]]
        return F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)


def _select(masks: Tensor, scores: Tensor, num_points: Any) -> tuple[Tensor, Tensor]:
    """The official single-mask choice: token 0 when there are more than 2.5 prompt
    tokens, else the multimask output with the best predicted IoU."""
    n_tokens = scores.shape[1]
    reweight = torch.tensor([[1000.0] + [0.0] * (n_tokens - 1)], dtype=scores.dtype)
    score = scores + (num_points - 2.5) * reweight
    best = torch.argmax(score, dim=1)
    idx = torch.arange(masks.shape[0])
    return masks[idx, best].unsqueeze(1), scores[idx, best].unsqueeze(1)


def _prompts(pe: nn.Module, coords: Tensor, labels: Tensor, mask_input: Tensor, has_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Sparse point embeddings and the dense embedding (the mask's when ``has_mask`` is
    1, the learned no-mask embedding when 0), as the official export computes them."""
    sparse = pe.embed_points(coords, labels)
    no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
    dense = has_mask * pe.embed_masks(mask_input) + (1 - has_mask) * no_mask
    return sparse, dense


class SamDecoderOnnx(nn.Module):
    """Prompt encoder + mask decoder + postprocessing with the official ONNX interface."""

    def __init__(self, model: Sam, *, return_single_mask: bool = True,
                 resize: Literal["longest", "squash"] | None = None) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.return_single_mask = return_single_mask
        if resize is None:
            resize = "squash" if model.config.preprocessing == "medsam" else "longest"
        self.post = _Postprocess(model.config.img_size, resize)

    def forward(
        self,
        image_embeddings: Tensor,
        point_coords: Tensor,
        point_labels: Tensor,
        mask_input: Tensor,
        has_mask_input: Tensor,
        orig_im_size: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        sparse, dense = _prompts(self.prompt_encoder, point_coords, point_labels, mask_input, has_mask_input)
        masks, scores = self.mask_decoder.predict_masks(
            image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense
        )
        if self.return_single_mask:
            masks, scores = _select(masks, scores, point_coords.shape[1])
        return self.post(masks, orig_im_size), scores, masks


class SamUNetDecoderOnnx(nn.Module):
    """SAM-UNet's decoder with the official interface plus ``multi_scale_feature``
    (state-dict keys as SAM-UNet's: ``prompt_encoder.sam_prompt_encoder.*``,
    ``mask_decoder.*``)."""

    def __init__(self, model: SamUNet) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.post = _Postprocess(model.config.sam.img_size, "longest")

    def forward(
        self,
        image_embeddings: Tensor,
        multi_scale_feature: Tensor,
        point_coords: Tensor,
        point_labels: Tensor,
        mask_input: Tensor,
        has_mask_input: Tensor,
        orig_im_size: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        pe = self.prompt_encoder.sam_prompt_encoder
        sparse, dense = _prompts(pe, point_coords, point_labels, mask_input, has_mask_input)
        masks = self.mask_decoder(image_embeddings, pe.get_dense_pe(), sparse, dense, multi_scale_feature)
        return self.post(masks, orig_im_size), stability_score(masks), masks


class SamEncoderOnnx(nn.Module):
    """The image encoder alone: ``image`` -> ``image_embeddings`` (keys ``image_encoder.*``)."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.image_encoder = model.image_encoder

    def forward(self, image: Tensor) -> Tensor:
        return self.image_encoder(image)


class SamUNetEncoderOnnx(nn.Module):
    """SAM-UNet's encoder side: ``image`` -> (``image_embeddings``, ``multi_scale_feature``),
    with SAM-UNet's keys (``image_encoder.sam_img_encoder.*``, ``resnet.*``, adapters)."""

    def __init__(self, model: SamUNet) -> None:
        super().__init__()
        self.image_encoder = model.image_encoder
        self.resnet = model.resnet
        self.adapters_in = model.adapters_in
        self.adapters_bridge = model.adapters_bridge
        self.embedding_encoder = model.embedding_encoder

    @property
    def vit(self) -> nn.Module:
        return self.image_encoder.sam_img_encoder

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        return SamUNet.encode(self, image)  # type: ignore[arg-type]  # same attributes as SamUNet


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
            dynamic_axes: dict[str, dict[int, str]] | None) -> None:
    if dynamic_axes is not None:
        dynamic_axes = {k: v for k, v in dynamic_axes.items() if k in inputs or k in outputs}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(), args, str(tmp), input_names=inputs, output_names=outputs,
            opset_version=OPSET, dynamo=False, dynamic_axes=dynamic_axes, do_constant_folding=True,
        )
    tmp.replace(path)


def _decoder_example(img: int, dim: int, *, n_points: int = 3, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = img // 16
    return {
        "image_embeddings": torch.randn(1, dim, s, s, generator=g),
        "point_coords": torch.rand(1, n_points, 2, generator=g) * img,
        "point_labels": torch.tensor([[1.0] + [0.0] * (n_points - 2) + [-1.0]])[:, :n_points],
        "mask_input": torch.randn(1, 1, 4 * s, 4 * s, generator=g),
        "has_mask_input": torch.tensor([1.0]),
        "orig_im_size": torch.tensor([img * 0.75, float(img)]),
    }


def export_encoder(model: Sam | SamUNet, path: Path) -> None:
    """The image encoder: ``image`` ``[1, 3, img, img]`` normalised -> ``image_embeddings``
    (and ``multi_scale_feature`` for SAM-UNet)."""
    if isinstance(model, SamUNet):
        img = model.config.sam.img_size
        _export(SamUNetEncoderOnnx(model), (torch.zeros(1, 3, img, img),), path, ["image"],
                ["image_embeddings", "multi_scale_feature"], None)
    else:
        img = model.config.img_size
        _export(SamEncoderOnnx(model), (torch.zeros(1, 3, img, img),), path, ["image"],
                ["image_embeddings"], None)


def export_decoder(model: Sam | SamUNet, path: Path, *, return_single_mask: bool = True) -> None:
    """The prompt decoder with the official inputs/outputs (see the module docstring)."""
    axes = {"image_embeddings": {0: "batch"}, "multi_scale_feature": {0: "batch"},
            "point_coords": {0: "batch", 1: "num_points"}, "point_labels": {0: "batch", 1: "num_points"},
            "mask_input": {0: "batch"}, "masks": {0: "batch", 2: "height", 3: "width"},
            "iou_predictions": {0: "batch"}, "low_res_masks": {0: "batch"}}
    if isinstance(model, SamUNet):
        img, dim = model.config.sam.img_size, model.config.sam.prompt_dim
        ex = _decoder_example(img, dim)
        s = img // 16
        ex = {"image_embeddings": ex["image_embeddings"],
              "multi_scale_feature": torch.randn(1, dim // 8, 4 * s, 4 * s),
              **{k: v for k, v in ex.items() if k != "image_embeddings"}}
        module: nn.Module = SamUNetDecoderOnnx(model)
    else:
        ex = _decoder_example(model.config.img_size, model.config.prompt_dim)
        module = SamDecoderOnnx(model, return_single_mask=return_single_mask)
    _export(module, tuple(ex.values()), path, list(ex), DECODER_OUTPUTS, axes)


def _ort(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def decoder_parity(model: Sam | SamUNet, decoder_path: Path, *, seed: int = 0) -> dict[str, float]:
    """Max |torch - onnxruntime| per output over prompt sets the runtime sends (one point
    + padding, a box, point + box, three points with a mask input) and two image sizes."""
    is_unet = isinstance(model, SamUNet)
    cfg = model.config.sam if is_unet else model.config
    img, dim = cfg.img_size, cfg.prompt_dim
    module = SamUNetDecoderOnnx(model) if is_unet else SamDecoderOnnx(model)
    sess = _ort(decoder_path)
    g = torch.Generator().manual_seed(seed)
    s = img // 16
    worst = {name: 0.0 for name in DECODER_OUTPUTS}
    prompts = [
        ([[0.3, 0.4], [0.0, 0.0]], [1, -1], 0.0),
        ([[0.1, 0.2], [0.7, 0.6]], [2, 3], 0.0),
        ([[0.4, 0.5], [0.1, 0.2], [0.7, 0.6]], [1, 2, 3], 0.0),
        ([[0.3, 0.4], [0.5, 0.5], [0.0, 0.0]], [1, 0, -1], 1.0),
    ]
    for coords01, labels, has_mask in prompts:
        for orig in ((img * 0.75, float(img)), (float(img) * 1.3, img * 0.5)):
            feed = {
                "image_embeddings": torch.randn(1, dim, s, s, generator=g),
                "point_coords": torch.tensor([coords01], dtype=torch.float32) * img,
                "point_labels": torch.tensor([labels], dtype=torch.float32),
                "mask_input": torch.randn(1, 1, 4 * s, 4 * s, generator=g),
                "has_mask_input": torch.tensor([has_mask]),
                "orig_im_size": torch.tensor(orig, dtype=torch.float32),
            }
            if is_unet:
                feed = {"image_embeddings": feed.pop("image_embeddings"),
                        "multi_scale_feature": torch.randn(1, dim // 8, 4 * s, 4 * s, generator=g), **feed}
            with torch.no_grad():
                ref = module(*feed.values())
            got = sess.run(DECODER_OUTPUTS, {k: v.numpy() for k, v in feed.items()})
            for name, r, o in zip(DECODER_OUTPUTS, ref, got, strict=True):
                if tuple(r.shape) != tuple(o.shape):
                    msg = f"{name}: torch shape {tuple(r.shape)} but onnxruntime {o.shape}"
                    raise AssertionError(msg)
                worst[name] = max(worst[name], float(np.max(np.abs(r.numpy() - o))))
    return worst


def encoder_parity(model: Sam | SamUNet, encoder_path: Path, *, seed: int = 0) -> dict[str, float]:
    """Max |torch - onnxruntime| of the encoder outputs on a random normalised image."""
    is_unet = isinstance(model, SamUNet)
    img = model.config.sam.img_size if is_unet else model.config.img_size
    x = torch.randn(1, 3, img, img, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = model.encode(x) if is_unet else (model.image_encoder(x),)
    sess = _ort(encoder_path)
    names = [o.name for o in sess.get_outputs()]
    got = sess.run(names, {"image": x.numpy()})
    return {n: float(np.max(np.abs(r.numpy() - o))) for n, r, o in zip(names, ref, got, strict=True)}


def export_sam(model: Sam, encoder_path: Path, decoder_path: Path) -> dict[str, Any]:
    """Export both graphs and return their parity with torch."""
    model = model.eval()
    export_encoder(model, encoder_path)
    export_decoder(model, decoder_path)
    return {"encoder": encoder_parity(model, encoder_path), "decoder": decoder_parity(model, decoder_path)}


def export_sam_unet(model: SamUNet, encoder_path: Path, decoder_path: Path) -> dict[str, Any]:
    model = model.eval()
    export_encoder(model, encoder_path)
    export_decoder(model, decoder_path)
    return {"encoder": encoder_parity(model, encoder_path), "decoder": decoder_parity(model, decoder_path)}


# ---------------------------------------------------------------------------------------
# the torch engine's view: one module per role, keys = that role's part of the checkpoint
# ---------------------------------------------------------------------------------------
ENCODER_PREFIXES = ("image_encoder.", "resnet.", "adapters_in.", "adapters_bridge.", "embedding_encoder.")
DECODER_PREFIXES = ("prompt_encoder.", "mask_decoder.")


def build_model(size: str = "demo") -> Sam | SamUNet:
    """The whole model of a size: SAM ("demo", "vit_b", "vit_l", "vit_h", "vit_t",
    "medsam") or SAM-UNet ("demo-unet", "res34", "res50")."""
    from tessera.plugins.sam.model import CONFIGS, build_sam
    from tessera.plugins.sam.sam_unet import UNET_CONFIGS, build_sam_unet

    if size in CONFIGS:
        return build_sam(size)
    key = size.removeprefix("unet-")
    if key == "demo-unet" or key in UNET_CONFIGS:
        return build_sam_unet("demo" if key == "demo-unet" else key)
    msg = f"unknown SAM size {size!r}; known: {', '.join([*CONFIGS, 'demo-unet', *UNET_CONFIGS])}"
    raise ValueError(msg)


def build_role(size: str = "demo", role: str = "encoder") -> nn.Module:
    """The plugin's model hook: the ``encoder`` or ``decoder`` graph of a size as a torch
    module with the ONNX graph's inputs and outputs, so the torch engine runs the same
    prompts the ONNX one does."""
    model = build_model(size)
    if role == "encoder":
        return SamUNetEncoderOnnx(model) if isinstance(model, SamUNet) else SamEncoderOnnx(model)
    if role == "decoder":
        return SamUNetDecoderOnnx(model) if isinstance(model, SamUNet) else SamDecoderOnnx(model)
    msg = f"the SAM plugin has roles 'encoder' and 'decoder', not {role!r}"
    raise ValueError(msg)


def split_state_dict(state_dict: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """A whole-model state dict -> {"encoder": ..., "decoder": ...} (the shipped files)."""
    out: dict[str, dict[str, Tensor]] = {"encoder": {}, "decoder": {}}
    for k, v in state_dict.items():
        if k.startswith(ENCODER_PREFIXES):
            out["encoder"][k] = v
        elif k.startswith(DECODER_PREFIXES):
            out["decoder"][k] = v
        else:
            msg = f"{k}: not part of a SAM or SAM-UNet checkpoint"
            raise ValueError(msg)
    return out


def convert_checkpoint(state_dict: dict[str, Tensor], role: str | None = None) -> dict[str, Tensor]:
    """The plugin's convert hook: an official SAM / MedSAM / MobileSAM / SAM-UNet
    checkpoint (bare, ``{"model": ...}`` or DataParallel) -> the keys of ``role``'s module
    (all keys when ``role`` is None)."""
    from tessera.plugins.sam.sam_unet import convert_checkpoint as unwrap

    sd = unwrap(state_dict)
    if role is None:
        return sd
    return split_state_dict(sd)[role]
