"""Error types that mlic raises for bad input.

Every error a user can cause (a malformed manifest, a missing image, a broken
artifact) is an ``MlicError``, so that callers can catch one type and the CLI
can print the message without a traceback. Messages name the place (file,
line, field) and what was expected.
"""

from __future__ import annotations


class MlicError(Exception):
    """Base class of every error mlic raises for bad input."""


class SchemaError(MlicError, ValueError):
    """A label schema is inconsistent, or targets do not fit it."""


class DataError(MlicError, ValueError):
    """A data source is malformed, or refers to images that cannot be read."""


class ArtifactError(MlicError):
    """An artifact directory is missing, incomplete or corrupt."""


class ConfigError(MlicError, ValueError):
    """An option has a value that mlic does not accept."""


class MissingExtraError(MlicError, ImportError):
    """An optional part of mlic (serving, ONNX) is used without its extra installed; the message names it."""
