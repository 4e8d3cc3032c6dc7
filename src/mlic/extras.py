"""Optional dependencies: serving, ONNX and streaming are extras of the package, checked before they are used.

``pip install -e .`` trains, evaluates and predicts; ``.[serve]`` adds the
HTTP server (FastAPI, uvicorn, python-multipart), ``.[onnx]`` the ONNX export
and runtime (onnx, onnxscript, onnxruntime), ``.[stream]`` packed shards in
folders and on S3 (litdata, boto3), ``.[track]`` the experiment trackers of
``mlic train --logger`` (TensorBoard, MLflow), ``.[all]`` all four. A missing
extra is a ``MissingExtraError`` that names it, raised before anything is
imported.
"""

from __future__ import annotations

import importlib.util

from mlic.errors import MissingExtraError

EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn", "python_multipart"),
    "onnx": ("onnx", "onnxscript", "onnxruntime"),
    "stream": ("litdata", "boto3"),
    "track": ("tensorboard", "mlflow"),
}
"""The modules each extra installs (import names)."""


def require(extra: str, purpose: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise ``MissingExtraError`` naming ``extra`` unless all of its modules can be imported.

    ``modules``: only these of the extra's modules (``--logger tensorboard`` needs no MLflow).
    """
    missing = [m for m in modules or EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(
            f"{purpose} needs the {extra!r} extra ({', '.join(missing)} not installed): "
            f"pip install 'mlic[{extra}]'"
        )
