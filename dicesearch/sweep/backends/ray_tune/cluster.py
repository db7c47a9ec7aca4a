"""The Ray runtime a Ray sweep runs on: join ``ray_address`` or start a local one, and say early
what cannot work (an unreachable address, more CPUs or GPUs per trial than there are)."""

from __future__ import annotations

import logging
import os
import socket

from rich.console import Console

from dicesearch.errors import SpecError
from dicesearch.sweep.space.config import SweepConfig


def cluster_address(config: SweepConfig) -> str | None:
    """The file's ``ray_address``, else Ray's own ``RAY_ADDRESS`` convention, else None (local)."""
    return config.ray_address or os.environ.get("RAY_ADDRESS")


def connect(config: SweepConfig, source: str) -> bool:
    """Connect to the sweep's cluster or start a local runtime; False if Ray was already up."""
    import ray

    if ray.is_initialized():
        return False
    address = cluster_address(config)
    where = f"{source}: ray_address" if config.ray_address else "the RAY_ADDRESS environment variable"
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address:
        check_reachable(address, where)
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SpecError(
                f"{where}: cannot join the Ray cluster at {address} ({first_line(exc)}); "
                "check that `ray status` works there, or remove the address to run on a local runtime"
            ) from None
    else:
        # all of this machine's CPUs and GPUs; a small object store: trials exchange only
        # configurations and metrics, never tensors
        ray.init(include_dashboard=False, object_store_memory=256 * 2**20, **quiet)
    return True


def check_resources(config: SweepConfig, source: str, device: str, console: Console, local: bool) -> None:
    """Requests that cannot work, said now: a trial asking for more than the runtime has would
    wait forever, and a CUDA trial without a GPU share would fail every time."""
    import ray

    total = ray.cluster_resources()
    if config.gpus_per_trial == 0 and device.startswith("cuda"):
        raise SpecError(
            f"{source}: gpus_per_trial: 0 hides every GPU from the trials, but --device {device} asks for one; "
            "set gpus_per_trial (1, or 0.5 for two trials per GPU)"
        )
    if config.gpus_per_trial == 0 and total.get("GPU", 0) and device == "auto":
        console.print("[yellow]note:[/] gpus_per_trial is 0, so trials train on CPUs although the Ray runtime has GPUs", highlight=False)
    short = [
        f"{field}: {asked:g} but the Ray runtime has {total.get(kind, 0):g} {kind}s"
        for field, kind, asked in (("cpus_per_trial", "CPU", config.cpus_per_trial), ("gpus_per_trial", "GPU", config.gpus_per_trial))
        if asked > total.get(kind, 0)
    ]
    if not short:
        return
    if local:
        raise SpecError(f"{source}: {'; '.join(short)}; ask for less per trial, or set ray_address to a cluster that has them")
    console.print(f"[yellow]warning:[/] {'; '.join(short)} now; trials wait until the cluster grows", highlight=False)


def check_reachable(address: str, where: str, timeout_s: float = 10.0) -> None:
    """Fail in seconds, not minutes (ray.init retries an unreachable address for a long time)."""
    if address == "auto":
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise SpecError(f"{where}: '{address}' is not host:port (or ray://host:port, or auto); e.g. 10.0.0.5:6379")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise SpecError(
            f"{where}: no Ray cluster answers at {address} ({exc.strerror or exc}); start one there with "
            "`ray start --head`, fix the address, or remove it to run on a local runtime"
        ) from None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
