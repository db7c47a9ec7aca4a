"""Problems that would fail every trial, caught before a sweep writes anything.

* The data: a missing image folder or latent file would fail each trial in turn.
* The memory budget: if even the smallest configuration of the space is estimated over
  ``memory.budget_gb``, every trial would be rejected; say so now, in one line.

"Smallest" is found cheaply: every numeric parameter at the end of its range that gives
the smaller model (low, but high for ``patch_size``), categorical ones as in the base.
Only if that is over budget are the categorical choices tried, one parameter at a time,
keeping the choice with the smallest estimate.
"""

from __future__ import annotations

from dicesearch.errors import DataError, SpecError
from dicesearch.sweep.distributions import ChoiceParam
from dicesearch.sweep.gate import estimate_memory
from dicesearch.sweep.search_space import SearchSpace


def check_data(space: SearchSpace) -> None:
    """Raise DataError naming the file and ``data.path`` if the sweep's data cannot be read."""
    data = space.config.data
    try:
        if data.kind == "folder":
            from dicesearch.data import load_dataset

            load_dataset(data)
        elif data.kind == "latents":
            from dicesearch.data.latentfile import check_latent_path

            check_latent_path(data.path)
            if not data.path.is_file():
                raise DataError(
                    f"latent file {data.path}: no such file; write it with `dicesearch encode` or fix the path"
                )
    except DataError as error:
        raise DataError(f"{space.source}: data.path: {error}") from None


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
        f"{space.source}: memory.budget_gb: no configuration of this space fits {sweep.memory.budget_gb:g} GiB: "
        f"the smallest found ({described}) needs {best:.1f} GiB at batch {batch} {sweep.memory.precision}; "
        "raise memory.budget_gb, lower memory.batch_size, or shrink the parameter ranges"
    )
