"""Running a network over images: the one batch runner, and the two runtimes side by side.

- ``batches``: ``run_batches``, used by ``Predictor``, evaluation, the server
  and training's final threshold pass;
- ``torch_runtime``: the artifact's PyTorch ``Classifier``;
- ``onnx_runtime``: the artifact's ``model.onnx`` under ONNX Runtime (the ``onnx`` extra);
- ``runtimes``: both by name (``load_network``).
"""

from mlic.inference.batches import Network, Outputs, run_batches
from mlic.inference.runtimes import RUNTIMES, load_network

__all__ = ["RUNTIMES", "Network", "Outputs", "load_network", "run_batches"]
