"""Peak GPU memory of one training step, estimated without a GPU and without allocating the model.

The parts, one idea each (``estimate.py`` has the full account of what is modelled):

* ``estimate``: :func:`estimate_training_memory` and :class:`MemoryEstimate`, the front;
* ``sizes``: parameter counts and the closed-form categories, the model built on meta;
* ``traced``: one training step on fake tensors under PyTorch's ``MemTracker``;
* ``cuda_autocast``: CUDA autocast's dtypes for CPU autocast, so saved tensors have CUDA's sizes;
* ``analytic``: closed-form activations, the fallback when tracing fails.
"""

from dicesearch.analysis.memory.analytic import analytic_activation_bytes
from dicesearch.analysis.memory.estimate import CUDA_CONTEXT_BYTES, MemoryEstimate, estimate_training_memory
from dicesearch.analysis.memory.sizes import Optimizer, Precision, closed_form_bytes

__all__ = [
    "CUDA_CONTEXT_BYTES",
    "MemoryEstimate",
    "Optimizer",
    "Precision",
    "analytic_activation_bytes",
    "closed_form_bytes",
    "estimate_training_memory",
]
