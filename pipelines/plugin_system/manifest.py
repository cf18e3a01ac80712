"""The plugin manifest (``manifest.toml``): what a model is, what it eats, what it gives.

The manifest is data, validated here with pydantic (``extra="forbid"``, a description
on every field, as npe2 does) so a typo fails with the field name and the file
instead of being ignored. Python code a plugin supplies is named by ``python_name``
strings in ``[hooks]`` and imported only when used (listing plugins never imports
torch).

A plugin folder, whoever wrote it, has the same shape::

    my_plugin/
        manifest.toml     # this schema
        __init__.py       # empty or light: no torch import
        model.py          # torch definition + checkpoint key mapping (train extra)
        processing.py     # numpy pre/post-processing for its task kind (core deps only)
        train.py          # reproducible recipe for the shipped weights
        MODEL_CARD.md
        weights/          # ONNX and safetensors files named in [[files]]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tessera.pipelines.errors import PluginError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TaskKind = Literal[
    "tile-classify",
    "segment-2d",
    "segment-3d",
    "prompt-segment",
    "detect-classify",
    "spectra-regress",
]
TASK_KINDS: tuple[str, ...] = TaskKind.__args__  # type: ignore[attr-defined]

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
_HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PYTHON_NAME = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*)?$")


def _check_python_name(value: str | None) -> str | None:
    if value is None:
        return None
    if not _PYTHON_NAME.match(value.lstrip(".")):
        msg = f"not a python name like 'package.module:function': {value!r}"
        raise ValueError(msg)
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OutputClass(_Strict):
    """One output class (or label value) and how the viewer draws it."""

    name: str = Field(description="Class name in the user's words, e.g. 'malignant'.")
    colour: Annotated[str, Field(description="Display colour as #RRGGBB.")]
    description: str = Field(default="", description="What this class means, for the dock.")

    @field_validator("colour")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not _HEX_COLOUR.match(value):
            msg = f"colour must look like '#a1b2c3', got {value!r}"
            raise ValueError(msg)
        return value.lower()


class ModelFile(_Strict):
    """A file the plugin ships or downloads: ONNX graph, safetensors weights, ..."""

    path: str = Field(description="Path relative to the plugin folder, POSIX separators.")
    sha256: str = Field(description="Hex SHA-256 of the file; a mismatch refuses the file.")
    role: str = Field(
        default="model",
        description="What the file is for: 'model', or e.g. 'encoder'/'decoder' (SAM), "
        "'airway'/'artery-vein' (two-stage CT).",
    )
    format: Literal["onnx", "safetensors", "pytorch"] = Field(
        description="File format. 'pytorch' files load with weights_only=True only."
    )
    size_variant: str = Field(
        default="demo",
        description="Which architecture size the file belongs to ('demo', 'base', 'large'...).",
    )

    @field_validator("path")
    @classmethod
    def _relative_inside(cls, value: str) -> str:
        p = PurePosixPath(value)
        if p.is_absolute() or ".." in p.parts or "\\" in value or value.startswith("~"):
            msg = f"file path must be relative and stay inside the plugin folder, got {value!r}"
            raise ValueError(msg)
        return value

    @field_validator("sha256")
    @classmethod
    def _sha(cls, value: str) -> str:
        value = value.lower()
        if not _SHA256.match(value):
            msg = "sha256 must be 64 hex digits"
            raise ValueError(msg)
        return value


class InputSpec(_Strict):
    """What the model consumes, before the plugin's preprocessing turns it into tensors."""

    size_px: list[int] = Field(
        description="Model input size along the spatial axes (YX for tiles, ZYX for 3D "
        "patches, the energy grid length for spectra).",
        min_length=1,
        max_length=3,
    )
    channels: list[str] = Field(
        default_factory=lambda: ["R", "G", "B"],
        description="Channel names the model expects, in order (e.g. R,G,B or HU).",
    )
    target_mpp: float | None = Field(
        default=None, gt=0, description="Pixel size the model was trained at, µm/px (slides)."
    )
    target_magnification: float | None = Field(
        default=None,
        gt=0,
        description="Objective power the model was trained at (e.g. 20); used when target_mpp "
        "is unset, assuming 10/magnification µm/px.",
    )
    target_spacing_mm: list[float] | None = Field(
        default=None, description="Voxel spacing the model was trained at, mm (ZYX volumes)."
    )
    scale: float = Field(
        default=1.0 / 255.0, description="Multiply raw values by this before mean/std."
    )
    mean: list[float] | None = Field(default=None, description="Per-channel mean after scale.")
    std: list[float] | None = Field(default=None, description="Per-channel std after scale.")
    value_window: tuple[float, float] | None = Field(
        default=None, description="Clip raw values to [lo, hi] and map to [0, 1] (e.g. HU)."
    )
    overlap: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Fraction of overlap between windows."
    )
    batch_size: int = Field(default=16, ge=1, description="Preferred inference batch size.")

    @model_validator(mode="after")
    def _mean_std_match(self) -> InputSpec:
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and len(values) != len(self.channels):
                msg = f"{name} has {len(values)} values for {len(self.channels)} channels"
                raise ValueError(msg)
        if self.std is not None and any(s <= 0 for s in self.std):
            msg = "std values must be positive"
            raise ValueError(msg)
        return self

    @property
    def mpp(self) -> float | None:
        """Target µm/px, from target_mpp or from the magnification (10x ~ 1 µm/px)."""
        if self.target_mpp is not None:
            return self.target_mpp
        if self.target_magnification is not None:
            return 10.0 / self.target_magnification
        return None


class OutputSpec(_Strict):
    """What the model gives back."""

    kind: Literal["probabilities", "labels", "mask", "regression", "embedding"] = Field(
        description="Per-tile class probabilities, a label image, a binary mask, a "
        "regressed value, or an embedding (SAM encoder)."
    )
    classes: list[OutputClass] = Field(
        default_factory=list, description="Output classes in model order (label value = index)."
    )
    heads: dict[str, list[OutputClass]] = Field(
        default_factory=dict,
        description="Optional extra classification heads by name (e.g. BreakHis subtypes).",
    )
    unit: str | None = Field(default=None, description="Unit of a regressed value (e.g. eV).")
    positive_class: str | None = Field(
        default=None,
        description="The class a heatmap and summary are about (e.g. 'malignant').",
    )

    @model_validator(mode="after")
    def _positive_known(self) -> OutputSpec:
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            msg = "class names must be unique"
            raise ValueError(msg)
        if self.positive_class is not None and self.positive_class not in names:
            msg = f"positive_class {self.positive_class!r} is not one of {names}"
            raise ValueError(msg)
        return self


class Hooks(_Strict):
    """Python the plugin supplies, as ``python_name`` strings, imported lazily.

    A name is ``module:attribute``. A module starting with '.' is relative to the
    plugin package (``.model:build_model``), so a plugin folder imported by path works
    the same as an installed one.
    """

    model: str | None = Field(
        default=None,
        description="Builds the torch module: f(size: str, **kwargs) -> nn.Module, called with "
        "the file's size_variant and the role's [models.<role>] kwargs.",
    )
    convert_checkpoint: str | None = Field(
        default=None,
        description="Maps a foreign state dict (timm, Hugging Face, official) to the model's keys.",
    )
    processing: str | None = Field(
        default=None, description="Module with the task kind's pre/post-processing hooks."
    )
    train: str | None = Field(
        default=None,
        description="Reproduces the shipped weights: f(out_dir: Path, *, seed: int, quick: bool, "
        "progress) -> dict of metrics.",
    )
    example_inputs: str | None = Field(
        default=None,
        description="Model inputs for validation and benchmarks when random ones make no sense "
        "(prompt codes, labels): f(role: str, batch: int) -> dict[str, np.ndarray].",
    )

    @field_validator("model", "convert_checkpoint", "processing", "train", "example_inputs")
    @classmethod
    def _python_name(cls, value: str | None) -> str | None:
        return _check_python_name(value)


class RoleSpec(_Strict):
    """How the model of one role (``[models.<role>]``) is called, whichever engine runs it.

    The ONNX graph's input/output names must equal ``inputs``/``outputs``; the torch
    engine feeds ``inputs`` positionally to ``forward`` and names its outputs (a tensor,
    a tuple in order, or a dict) with ``outputs``. The defaults match the task-kind
    processing defaults (one ``input``, one ``logits``).
    """

    inputs: list[str] = Field(
        default_factory=lambda: ["input"], min_length=1, description="Input tensor names, in order."
    )
    outputs: list[str] = Field(
        default_factory=lambda: ["logits"],
        min_length=1,
        description="Output tensor names, in order.",
    )
    build: str | None = Field(
        default=None,
        description="python_name building this role's torch module, when it is not hooks.model.",
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments for the model hook (num_classes...)."
    )
    parity_atol: float = Field(
        default=1e-4,
        gt=0,
        description="Largest allowed |torch - ONNX| output difference, added to 1e-3 x the "
        "output's largest magnitude (validation and export checks).",
    )

    @field_validator("build")
    @classmethod
    def _python_name(cls, value: str | None) -> str | None:
        return _check_python_name(value)


class Manifest(_Strict):
    """Everything about one model plugin that can be known without running code."""

    schema_version: Literal[1] = Field(default=1, description="Manifest format version.")
    id: str = Field(description="Unique slug, e.g. 'breast-vit' (lowercase, digits, '-').")
    name: str = Field(description="Display name.")
    version: str = Field(description="Plugin version (semantic versioning).")
    task: TaskKind = Field(description="Task kind; decides which runner drives the plugin.")
    summary: str = Field(description="One line for `tessera plugins list`.")
    licence: str = Field(description="SPDX licence of the code and weights.")
    intended_use: str = Field(description="What it is for, and what it is not for.")
    model_card: str = Field(default="MODEL_CARD.md", description="Model card, relative path.")
    citation: str = Field(default="", description="Paper the architecture comes from.")
    authors: list[str] = Field(default_factory=list, description="Who made it.")
    input: InputSpec = Field(description="Input specification.")
    output: OutputSpec = Field(description="Output specification.")
    files: list[ModelFile] = Field(default_factory=list, description="Model files.")
    hooks: Hooks = Field(default_factory=Hooks, description="Python hooks.")
    models: dict[str, RoleSpec] = Field(
        default_factory=dict,
        description="Per-role call interface ([models.model], [models.encoder]...); a role "
        "without a table uses RoleSpec's defaults.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Plugin-specific settings its own hooks validate (architecture name, "
        "stain normalisation, thresholds...).",
    )

    @model_validator(mode="after")
    def _files_unique(self) -> Manifest:
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            msg = "files: each path may be listed once"
            raise ValueError(msg)
        return self

    @field_validator("id")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _SLUG.match(value):
            msg = f"id must be a lowercase slug like 'breast-vit', got {value!r}"
            raise ValueError(msg)
        return value

    def role_spec(self, role: str = "model") -> RoleSpec:
        """The call interface of ``role`` (defaults when the manifest declares none)."""
        return self.models.get(role) or RoleSpec()

    def file(self, role: str = "model", fmt: str | None = None, size_variant: str | None = None) -> ModelFile:
        """The file with ``role`` (and format/size when given); PluginError when none."""
        for f in self.files:
            if f.role == role and (fmt is None or f.format == fmt) and (
                size_variant is None or f.size_variant == size_variant
            ):
                return f
        msg = f"plugin {self.id!r} has no {fmt or ''} file with role {role!r}".replace("  ", " ")
        raise PluginError(msg)


def parse_manifest(text: str, *, source: str | Path) -> Manifest:
    """Validate manifest TOML text; errors name ``source`` and the offending field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"manifest is not valid TOML ({exc}); fix the syntax"
        raise PluginError(msg, path=source) from exc
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        msg = f"invalid manifest field '{where}': {first['msg']}{more}"
        raise PluginError(msg, path=source) from exc


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a ``manifest.toml`` file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read the manifest ({exc.strerror or exc})"
        raise PluginError(msg, path=path) from exc
    return parse_manifest(text, source=path)
