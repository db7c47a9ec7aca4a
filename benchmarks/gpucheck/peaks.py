"""Peak dense tensor-core FLOP/s of common GPUs, for model FLOP utilisation (MFU).

fp16/bf16 inputs with fp32 accumulation (what PyTorch's autocast matmuls use), without
structured sparsity, from NVIDIA's datasheets and architecture whitepapers. GeForce cards
accumulate in fp32 at half their fp16-accumulate rate, so an RTX 3090 counts 71, not 142.
"""

from __future__ import annotations

import re

# (name as it appears in torch.cuda.get_device_name(), TFLOP/s); matched as a whole word,
# first match wins, so the more specific names come first
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("B200", 2250.0),
    ("GH200", 989.4),
    ("H200 NVL", 835.0),
    ("H200", 989.4),
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.4),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10", 125.0),
    ("RTX 6000 Ada", 364.2),
    ("RTX A6000", 154.8),
    ("RTX 4090", 165.2),
    ("RTX 3090 Ti", 80.0),
    ("RTX 3090", 71.0),
    ("V100", 125.0),
    ("T4", 65.0),
)


def peak_tflops(device_name: str) -> tuple[float, str] | None:
    """(TFLOP/s, the table entry that matched) for ``device_name``, or None if it is not listed."""
    for key, tflops in PEAK_TFLOPS:
        if re.search(rf"(?<![\w]){re.escape(key)}(?![\w])", device_name):
            return tflops, key
    return None
