"""Problems that would fail every trial, caught before a sweep writes anything.

* The data: a missing image folder or latent file would fail each trial in turn, and so
  would ``budget.fid_samples`` above the number of images there are (the reference
  statistics are of that many real images).
* The memory budget: if even the smallest configuration of the space is estimated over
  ``memory.budget_gb``, every trial would be rejected; say so now, in one line.
* The trial budget: the short runs themselves train at ``budget.batch_size`` on this
  machine's device; if the smallest configuration would not fit there, say so now.

"Smallest" is found cheaply: every numeric parameter at the end of its range that gives
the smaller model (low, but high for ``patch_size``), categorical ones as in the base.
Only if that is over budget are the categorical choices tried, one parameter at a time,
keeping the choice with the smallest estimate.
"""

from __future__ import annotations

from dicesearch.data.verify import verify_data
from dicesearch.errors import DataError, SpecError, one_line
from dicesearch.sweep.lifecycle.gate import estimate_memory
from dicesearch.sweep.space.distributions import ChoiceParam
from dicesearch.sweep.space.search_space import SearchSpace


def _image_count(data) -> int | None:
    """How many images (or latents) the sweep's data holds, read cheaply; None if unknown."""
    if data.kind in ("digits", "folder"):
        from dicesearch.data import load_dataset

        return len(load_dataset(data))
    if data.path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(data.path), framework="pt") as handle:
            return handle.get_slice("labels").get_shape()[0] if "labels" in handle.keys() else None
    import numpy as np

    with np.load(data.path, allow_pickle=False) as arrays:
        return len(arrays["labels"]) if "labels" in arrays.files else None


def check_data(space: SearchSpace) -> None:
    """Raise DataError naming the file, the line and ``data.path`` if the sweep's data cannot be
    read, or ``budget.fid_samples`` if it asks for more reference images than the data holds."""
    data = space.config.data
    try:
        if data.kind == "latents":
            from dicesearch.data.latentfile import check_latent_path

            check_latent_path(data.path)
            if not data.path.is_file():
                raise DataError(
                    f"latent file {data.path}: no such file; write it with `dicesearch encode` or fix the path"
                )
        verify_data(data)  # every file decoded once (cached by size and mtime): a bad one would fail every trial
        count = _image_count(data)
    except DataError as error:
        raise DataError(f"{space.where('data', 'path')}: {error}") from None
    except Exception as exc:  # an unreadable latent file: the trials would fail on it too
        raise DataError(f"{space.where('data', 'path')}: cannot read {data.path}: {type(exc).__name__}: {one_line(exc)}") from None
    wanted = space.config.budget.fid_samples
    if count is not None and wanted > count:
        raise DataError(
            f"{space.where('budget', 'fid_samples')}: {wanted:,} reference images asked for, but the data ({data.kind}) holds "
            f"{count:,}; use at most {count:,}"
        )


def _smallest_values(space: SearchSpace) -> dict:
    values = {}
    for name, tokens, dist in space.config.ordered_parameters():
        if isinstance(dist, ChoiceParam):
            continue  # as in the base, unless the budget needs otherwise
        low, high = dist.values()
        values[name] = high if tokens[-1] == "patch_size" else low
    return values


def check_budget_reachable(space: SearchSpace) -> None:
    """Raise SpecError if no configuration of ``space`` fits the memory budget."""
    sweep = space.config
    batch = sweep.memory_batch

    def estimate(values: dict) -> float | None:
        try:
            spec = space.apply(values)
        except SpecError:
            return None  # not a valid model; other choices may be
        return estimate_memory(spec, sweep.memory, batch).get("memory_estimated_gb")

    values = _smallest_values(space)
    best = estimate(values)
    if best is None or best <= sweep.memory.budget_gb:
        return
    for name, _, dist in space.config.ordered_parameters():
        if not isinstance(dist, ChoiceParam):
            continue
        for choice in dist.choice:
            trial_values = {**values, name: choice}
            gb = estimate(trial_values)
            if gb is not None and gb < best:
                best, values = gb, trial_values
                if best <= sweep.memory.budget_gb:
                    return
    described = ", ".join(f"{k}={v}" for k, v in values.items()) or "the base spec"
    raise SpecError(
        f"{space.where('memory', 'budget_gb')}: no configuration of this space fits {sweep.memory.budget_gb:g} GiB: "
        f"the smallest found ({described}) needs {best:.1f} GiB at batch {batch} {sweep.memory.precision}; "
        "raise memory.budget_gb, lower memory.batch_size, or shrink the parameter ranges"
    )


def check_trial_memory(space: SearchSpace, device: str = "auto") -> None:
    """Raise SpecError naming ``budget.batch_size`` if even the smallest configuration's short
    run (at the trial batch, fp16 on CUDA and fp32 elsewhere, as trials train) is estimated
    over the memory of the device the trials run on."""
    from dicesearch.devices import resolve_device
    from dicesearch.model.limits import device_memory_bytes
    from dicesearch.sweep.space.config import MemoryBudget

    torch_device = resolve_device(device)
    available = device_memory_bytes(torch_device)
    if available is None:
        return
    batch = space.config.budget.batch_size
    precision = "fp16" if torch_device.type == "cuda" else "fp32"
    try:
        spec = space.apply(_smallest_values(space))
    except SpecError:
        return  # the smallest corner is not a valid model; trials will say why
    needed = estimate_memory(spec, MemoryBudget(budget_gb=available / 2**30, precision=precision), batch).get("memory_estimated_gb")
    if needed is not None and needed * 2**30 > available:
        raise SpecError(
            f"{space.where('budget', 'batch_size')}: a trial at batch {batch:,} needs an estimated {needed:,.1f} GiB ({precision}, "
            f"the smallest configuration), more than the {available / 2**30:,.1f} GiB of {torch_device.type} memory here; "
            "lower budget.batch_size"
        )
