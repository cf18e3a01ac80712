"""Every error Tessera raises on purpose, in one place.

Each error carries the file it is about (when there is one) and a message that says
what to do, so the CLI can print it as a single line and the viewer as a notification.
Errors also inherit the built-in exception a caller would naturally catch
(``CorruptFile`` is an ``OSError``, ``PluginError`` a ``ValueError``), as zarr does.
"""

from __future__ import annotations

from os import PathLike


class TesseraError(Exception):
    """Base of all deliberate Tessera errors: one line, naming the file and the remedy."""

    def __init__(self, message: str, *, path: str | PathLike[str] | None = None) -> None:
        self.path = None if path is None else str(path)
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class UnsupportedFile(TesseraError, ValueError):
    """No reader takes this file (unknown format or an unsupported variant of one)."""


class CorruptFile(TesseraError, OSError):
    """A reader recognised the format but the content is damaged (truncated, bad tiles...)."""


class PluginError(TesseraError, ValueError):
    """A plugin cannot be found, loaded or validated (bad manifest, missing hook...)."""


class ModelFileRefused(PluginError):
    """A model or plugin file was refused for safety: pickles, escaping paths, bad checksums."""


class EngineError(TesseraError, RuntimeError):
    """An inference engine cannot be created or run (missing runtime, bad model file)."""


class MissingDependency(TesseraError, ImportError):
    """An optional dependency (an extra such as ``tessera[gui]`` or ``[train]``) is not installed."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the '{package}' package; install it with "
            f"`pip install 'tessera[{extra}]'`"
        )
        self.package = package
        self.extra = extra


__all__ = [
    "CorruptFile",
    "EngineError",
    "MissingDependency",
    "ModelFileRefused",
    "PluginError",
    "TesseraError",
    "UnsupportedFile",
]
