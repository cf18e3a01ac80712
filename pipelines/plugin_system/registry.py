"""Finding plugins and resolving their hooks, without running their code until asked.

Where plugins come from, in increasing precedence (a later source shadows an earlier
one with the same id, and the shadowing is reported by ``scan_plugins`` and
``tessera plugins list``):

1. built-in: entry points in the group ``tessera.plugins`` declared by Tessera itself;
2. third-party: the same entry-point group declared by any other installed distribution;
3. user: plugins imported with ``tessera plugins import`` into ``user_plugin_dir()``.

So a plugin the user imported on purpose (a retrained breast-vit, say) wins over the
installed one of the same id, and an installed package can provide a newer version of
a built-in model. Two providers at the same level with the same id are ambiguous: both
are left out and reported as a discovery error naming them, rather than one picked by
installation order. A folder given by path (``get_plugin("./my_plugin")``) is used as is.

An entry point's value is the *package* that holds ``manifest.toml``. Listing locates
that package with ``importlib.util.find_spec`` and reads the manifest as data: no plugin
module is executed (and so torch is never imported) until a hook is resolved.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from tessera.pipelines.errors import MissingDependency, PluginError, TesseraError
from tessera.pipelines.plugin_system.integrity import resolve_inside, verify_sha256
from tessera.pipelines.plugin_system.locations import user_plugin_dir
from tessera.pipelines.plugin_system.manifest import Manifest, load_manifest

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "tessera.plugins"
MANIFEST_NAME = "manifest.toml"
_OWN_DISTRIBUTION = "tessera"
# Packages of the `train` extra: a hook failing to import one of them is a missing extra,
# not a broken plugin.
_TRAIN_EXTRA_PACKAGES = frozenset(
    {"torch", "torchvision", "timm", "monai", "segment_anything", "onnxscript"}
)

OriginKind = Literal["built-in", "entry-point", "user", "path"]
_PRECEDENCE: dict[str, int] = {"built-in": 0, "entry-point": 1, "user": 2, "path": 3}


@dataclass(frozen=True)
class PluginOrigin:
    """Where a plugin was found: its kind and a human-readable detail (distribution, folder)."""

    kind: OriginKind
    detail: str


class Plugin:
    """One model plugin: its validated manifest, its folder, and lazily resolved hooks."""

    def __init__(
        self,
        manifest: Manifest,
        root: Path,
        *,
        origin: PluginOrigin,
        package: str | None = None,
    ) -> None:
        self.manifest = manifest
        self.id = manifest.id
        self.root = root
        self.origin = origin
        # The import name hooks starting with '.' are relative to: the installed package
        # for entry-point plugins, a private name for folders loaded by file location.
        self._package = package
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Plugin({self.id!r}, {self.manifest.version}, {self.origin.kind}: {self.root})"

    # Plugins travel to dask.distributed workers (pickled); engines do not: a worker calls
    # create_engine(plugin) itself and gets its own per-process cached session.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        if self.origin.kind not in ("built-in", "entry-point"):
            state["_package"] = None  # the private package name is per process
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    # ------------------------------------------------------------------ files
    def file_path(
        self, role: str = "model", fmt: str | None = None, size_variant: str | None = None
    ) -> Path:
        """Absolute path of a model file, after checking it stays in the folder and its sha256.

        Raises PluginError when the manifest lists no such file or it is missing, and
        ModelFileRefused when it escapes the plugin folder or its sha256 differs.
        """
        entry = self.manifest.file(role, fmt, size_variant)
        path = resolve_inside(self.root, entry.path)
        verify_sha256(path, entry.sha256)
        return path

    @property
    def model_card_path(self) -> Path:
        return self.root / self.manifest.model_card

    def model_card_summary(self) -> str:
        """First paragraph of the model card (headings skipped); '' when there is none."""
        try:
            text = self.model_card_path.read_text(encoding="utf-8")
        except OSError:
            return ""
        paragraph: list[str] = []
        in_comment = False
        for raw in text.splitlines():
            line = raw.strip()
            if line.startswith("<!--"):
                in_comment = "-->" not in line
                continue
            if in_comment:
                in_comment = "-->" not in line
                continue
            if not line or line.startswith("#"):
                if paragraph:
                    break
                continue
            paragraph.append(line)
        return " ".join(paragraph)

    # ------------------------------------------------------------------ hooks
    def hook(self, name: str) -> Callable[..., Any] | ModuleType | None:
        """The object ``manifest.hooks.<name>`` names, imported now; None when not declared.

        MissingDependency when the hook needs the train extra (torch...) and it is not
        installed; PluginError when it cannot be imported for any other reason.
        """
        if name not in type(self.manifest.hooks).model_fields:
            known = ", ".join(type(self.manifest.hooks).model_fields)
            msg = f"unknown hook {name!r}; hooks are: {known}"
            raise PluginError(msg, path=self.manifest_path)
        python_name = getattr(self.manifest.hooks, name)
        if python_name is None:
            return None
        return self.resolve(python_name, what=f"hook {name!r}")

    def processing(self) -> ModuleType | None:
        """The plugin's processing module (``hooks.processing``), or None."""
        module = self.hook("processing")
        if module is not None and not isinstance(module, ModuleType):
            msg = f"hooks.processing must name a module, not {module!r}"
            raise PluginError(msg, path=self.manifest_path)
        return module

    def resolve(self, python_name: str, *, what: str = "python name") -> Any:
        """Import ``module[:attr.path]``; a leading '.' is relative to the plugin package."""
        module_name, _, attr_path = python_name.partition(":")
        try:
            if module_name.startswith("."):
                package = self._import_package()
                module = importlib.import_module(module_name, package=package)
            else:
                module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            top = (exc.name or "").split(".")[0]
            if top in _TRAIN_EXTRA_PACKAGES:
                raise MissingDependency(
                    top, "train", f"plugin {self.id!r} {what} ({python_name})"
                ) from exc
            msg = f"{what} {python_name!r} cannot be imported: {exc}"
            raise PluginError(msg, path=self.manifest_path) from exc
        except TesseraError:
            raise
        except Exception as exc:
            msg = f"{what} {python_name!r} failed to import: {type(exc).__name__}: {exc}"
            raise PluginError(msg, path=self.manifest_path) from exc
        obj: Any = module
        for part in filter(None, attr_path.split(".")):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                msg = f"{what} {python_name!r}: {module.__name__} has no attribute {part!r}"
                raise PluginError(msg, path=self.manifest_path) from None
        return obj

    def _import_package(self) -> str:
        """Make the plugin folder importable as a package; return its import name."""
        with self._lock:
            if self._package is None:
                digest = hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:10]
                self._package = f"_tessera_plugin_{self.id.replace('-', '_')}_{digest}"
            name = self._package
            if name in sys.modules:
                return name
            if self.origin.kind in ("built-in", "entry-point"):
                importlib.import_module(name)
                return name
            # A folder loaded by path: register it under a private package name by file
            # location, so its modules import each other relatively as installed ones do.
            init = self.root / "__init__.py"
            if init.is_file():
                spec = importlib.util.spec_from_file_location(
                    name, init, submodule_search_locations=[str(self.root)]
                )
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[name]
                    raise
            else:
                spec = ModuleSpec(name, None, is_package=True)
                spec.submodule_search_locations = [str(self.root)]
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
            return name


# ---------------------------------------------------------------------- discovery
@dataclass
class DiscoveryError:
    """A plugin source that could not be loaded (bad manifest, ambiguous id...)."""

    source: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


@dataclass
class PluginScan:
    """Everything discovery found: the usable plugins, the shadowed ones, the failures."""

    plugins: dict[str, Plugin] = field(default_factory=dict)
    shadowed: list[tuple[Plugin, Plugin]] = field(default_factory=list)  # (hidden, winner)
    errors: list[DiscoveryError] = field(default_factory=list)


def load_plugin_folder(path: str | Path, *, origin: PluginOrigin | None = None) -> Plugin:
    """A Plugin from a folder holding ``manifest.toml`` (or the manifest file itself)."""
    path = Path(path).expanduser()
    if path.name == MANIFEST_NAME and path.is_file():
        path = path.parent
    if path.suffix.lower() == ".zip" and path.is_file():
        msg = "a packaged plugin must be imported first: tessera plugins import " + str(path)
        raise PluginError(msg, path=path)
    if not (path / MANIFEST_NAME).is_file():
        msg = f"not a plugin folder: no {MANIFEST_NAME} in it"
        raise PluginError(msg, path=path)
    root = path.resolve()
    manifest = load_manifest(root / MANIFEST_NAME)
    return Plugin(manifest, root, origin=origin or PluginOrigin("path", str(root)))


def _entry_point_plugin(ep: importlib.metadata.EntryPoint) -> Plugin:
    dist = getattr(ep, "dist", None)
    dist_name = dist.metadata["Name"] if dist is not None else "?"
    dist_version = dist.version if dist is not None else "?"
    kind: OriginKind = "built-in" if _normalise(dist_name) == _OWN_DISTRIBUTION else "entry-point"
    where = f"entry point {ep.name!r} of {dist_name} {dist_version}"
    if ep.attr:
        msg = f"{where}: the value must be a package holding {MANIFEST_NAME}, not {ep.value!r}"
        raise PluginError(msg)
    try:
        spec = importlib.util.find_spec(ep.module)
    except (ImportError, ValueError) as exc:
        msg = f"{where}: cannot locate package {ep.module!r} ({exc})"
        raise PluginError(msg) from exc
    if spec is None or not spec.submodule_search_locations:
        msg = f"{where}: {ep.module!r} is not an installed package"
        raise PluginError(msg)
    roots = [Path(p) for p in spec.submodule_search_locations if (Path(p) / MANIFEST_NAME).is_file()]
    if not roots:
        msg = f"{where}: package {ep.module!r} has no {MANIFEST_NAME}"
        raise PluginError(msg)
    root = roots[0].resolve()
    manifest = load_manifest(root / MANIFEST_NAME)
    if manifest.id != ep.name:
        msg = (
            f"{where}: the entry-point name must equal the manifest id {manifest.id!r}; "
            f"rename one of them"
        )
        raise PluginError(msg, path=root / MANIFEST_NAME)
    origin = PluginOrigin(kind, f"{dist_name} {dist_version}")
    return Plugin(manifest, root, origin=origin, package=ep.module)


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _candidates(errors: list[DiscoveryError]) -> list[Plugin]:
    found: list[Plugin] = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            found.append(_entry_point_plugin(ep))
        except TesseraError as exc:
            errors.append(DiscoveryError(f"entry point {ep.name} = {ep.value}", str(exc)))
    folder = user_plugin_dir()
    if folder.is_dir():
        for sub in sorted(folder.iterdir()):
            if sub.name.startswith(".") or not sub.is_dir():
                continue  # staging folders of an import in progress, stray files
            try:
                found.append(load_plugin_folder(sub, origin=PluginOrigin("user", str(sub))))
            except TesseraError as exc:
                errors.append(DiscoveryError(str(sub), str(exc)))
    return found


def scan_plugins() -> PluginScan:
    """Discover every plugin; the winner per id follows the documented precedence."""
    scan = PluginScan()
    by_id: dict[str, list[Plugin]] = {}
    for plugin in _candidates(scan.errors):
        same = by_id.setdefault(plugin.id, [])
        if any(p.root == plugin.root for p in same):
            continue  # the same folder reached twice (duplicate metadata on sys.path)
        same.append(plugin)
    for plugin_id, providers in by_id.items():
        top = max(_PRECEDENCE[p.origin.kind] for p in providers)
        winners = [p for p in providers if _PRECEDENCE[p.origin.kind] == top]
        if len(winners) > 1:
            names = "; ".join(f"{p.origin.kind} {p.origin.detail} ({p.root})" for p in winners)
            msg = f"plugin id {plugin_id!r} is provided more than once: {names}; remove one"
            scan.errors.append(DiscoveryError(plugin_id, msg))
            continue
        winner = winners[0]
        scan.plugins[plugin_id] = winner
        for p in providers:
            if p is not winner:
                scan.shadowed.append((p, winner))
                log.info("plugin %r from %s is shadowed by %s", plugin_id, p.root, winner.root)
    scan.plugins = dict(sorted(scan.plugins.items()))
    return scan


def list_plugins() -> list[Plugin]:
    """Every usable plugin, sorted by id. Reads manifests only: never imports torch."""
    scan = scan_plugins()
    for err in scan.errors:
        log.warning("plugin not loaded: %s", err)
    return list(scan.plugins.values())


def _looks_like_path(value: str) -> bool:
    return (
        "/" in value
        or "\\" in value
        or value.startswith(".")
        or value.startswith("~")
        or value.endswith((".toml", ".zip"))
        or Path(value).is_dir()
    )


def get_plugin(id_or_path: str | Path) -> Plugin:
    """The plugin with this id, or the plugin folder at this path; PluginError otherwise."""
    if isinstance(id_or_path, Path) or _looks_like_path(id_or_path):
        return load_plugin_folder(id_or_path)
    scan = scan_plugins()
    plugin = scan.plugins.get(id_or_path)
    if plugin is not None:
        return plugin
    related = [e for e in scan.errors if id_or_path in e.source or repr(id_or_path) in e.message]
    if related:
        msg = f"plugin {id_or_path!r} cannot be loaded: {related[0]}"
        raise PluginError(msg)
    known = ", ".join(scan.plugins) or "none installed"
    msg = (
        f"unknown plugin {id_or_path!r} (known: {known}); see `tessera plugins list`, or "
        "`tessera plugins import PATH` to add one"
    )
    raise PluginError(msg)
