"""What the check runs on: the GPU, its driver, torch, CUDA and cuDNN, and the host."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass

import reporting
import torch

from gpucheck.peaks import peak_tflops


@dataclass(frozen=True)
class Environment:
    device: torch.device
    gpu: str  # torch.cuda.get_device_name(), or "none"
    driver: str
    torch: str
    cuda: str  # the CUDA torch was built with
    cudnn: str
    gpu_memory_gib: float | None
    capability: str
    peak: tuple[float, str] | None  # (dense fp16/bf16 TFLOP/s, table entry) for MFU
    host: str

    @property
    def reduced(self) -> bool:
        """No CUDA: the check runs its reduced form (small configs, no CUDA columns)."""
        return self.device.type != "cuda"

    @property
    def bf16(self) -> bool:
        return self.reduced or torch.cuda.is_bf16_supported()

    def lines(self) -> list[tuple[str, str]]:
        peak = f"{self.peak[0]:g} TFLOP/s dense fp16/bf16 (table entry '{self.peak[1]}')" if self.peak else "not in the table: MFU not computed"
        rows = [
            ("GPU", self.gpu),
            ("driver", self.driver),
            ("torch", self.torch),
            ("CUDA (torch build)", self.cuda),
            ("cuDNN", self.cudnn),
            ("GPU memory", f"{self.gpu_memory_gib:.1f} GiB" if self.gpu_memory_gib else "n/a"),
            ("compute capability", self.capability),
            ("peak for MFU", peak if not self.reduced else "n/a (CPU)"),
            ("host", self.host),
        ]
        return rows


def driver_version() -> str:
    """The NVIDIA driver, from nvidia-smi (or NVML), or why it is unknown."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # noqa: BLE001 - NVML is optional
        return "unknown (no nvidia-smi or NVML)"


def _host() -> str:
    """The host, in the words of benchmarks/reporting.py (as every benchmark prints it)."""
    return (
        f"{platform.machine()} ({reporting.cpu_name()}), {os.cpu_count()} CPU cores, {reporting.load_line()}, "
        f"{torch.get_num_threads()} torch threads"
    )


def detect(device: str | None = None) -> Environment:
    """Describe ``device`` (default: cuda if available, else cpu)."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cudnn = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "n/a"
    if dev.type != "cuda":
        return Environment(dev, "none (CPU only: reduced form)", "n/a", torch.__version__, str(torch.version.cuda), cudnn, None, "n/a", None, _host())
    props = torch.cuda.get_device_properties(dev)
    name = torch.cuda.get_device_name(dev)
    return Environment(
        device=dev,
        gpu=name,
        driver=driver_version(),
        torch=torch.__version__,
        cuda=str(torch.version.cuda),
        cudnn=cudnn,
        gpu_memory_gib=props.total_memory / 2**30,
        capability=f"{props.major}.{props.minor}",
        peak=peak_tflops(name),
        host=_host(),
    )
